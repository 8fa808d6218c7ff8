"""The async variants of fault scenarios on which AsyncClient disagrees with Client today.

Each scenario is written once, in test_faults.py or test_tls_proxy.py, over the `run` fixture
(tests/clients.py); its sync variant runs there, its async variant here (ONLY_MODE), so that the
rest can be merged green while these fail. When the clients agree, delete the name from
ASYNC_IN_PARITY_FILE in its module and from the imports below: the scenario then runs both ways
where it is written.
"""

import asyncio
import gc
import warnings

import streamlite
from loopback import FaultServer
from test_faults import (  # noqa: F401
    _held_stream_script,
    async_client,
    test_200k_tiny_events_without_accumulating_in_constant_memory,
    test_503_then_200_is_retried_once,
    test_total_timeout_against_a_flood_of_comments_leaves_nothing_behind,
)
from test_tls_proxy import (  # noqa: F401
    certs,
    clean_env,
    no_secret_logged,
    test_proxy_closing_during_connect_is_a_connection_error,
    test_proxy_sending_data_before_the_tunnel_opens_is_a_protocol_error,
)

ONLY_MODE = "async"


# Async twins of sync-only scenarios in test_faults.py that fail today ########

def test_aclose_ends_iteration_and_closes_the_connection():
    """The async twin of the test above: aclose() for close()."""

    async def scenario(server):
        stream = async_client(server).astream("hi")
        first = await stream.__anext__()
        await stream.aclose()
        await stream.aclose()  # idempotent
        rest = [item async for item in stream]
        return stream, first, rest

    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream, first, rest = asyncio.run(scenario(server))
            gc.collect()
        assert server.wait_peer_closed(0)
    assert first == streamlite.ContentDelta("one") and rest == []
    assert "closed" in repr(stream)
    assert stream.completion.content == "one"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
