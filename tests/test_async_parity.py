"""What AsyncClient and AsyncStream have on par with Client and Stream (issue 14): the async
twins of sync-only scenarios, and the shape of the async API."""

import asyncio
import gc
import warnings

import streamlite
from loopback import FaultServer
from test_faults import KEY, _held_stream_script, async_client  # noqa: F401

# Async twins of sync-only scenarios in test_faults.py ########################

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


def test_async_stream_chunks_yields_all_chunks_even_when_several_arrive_in_one_piece():
    """The async twin of test_providers.py's chunks() test: `async for chunk in stream.chunks()`."""
    from test_providers import Recorder, content, finish, sse

    chunks = [content(str(i)) for i in range(5)] + [{"choices": [], "note": "no delta"}, finish()]

    async def scenario(url):
        async with streamlite.AsyncClient(url, KEY).astream("hi") as stream:
            got = [chunk async for chunk in stream.chunks()]
        return stream, got

    with Recorder((200, "text/event-stream", sse(*chunks))) as server:
        stream, got = asyncio.run(scenario(server.url))
    assert got == chunks
    assert stream.completion.content == "01234"


# The async API on par with the sync one (issue 14) ###########################


def test_async_client_is_a_sibling_of_client_with_only_async_methods():
    client = streamlite.AsyncClient("http://127.0.0.1:1/v1", KEY)
    assert not isinstance(client, streamlite.Client)
    assert not hasattr(client, "stream") and not hasattr(client, "complete")
    assert repr(client).startswith("AsyncClient(") and KEY not in repr(client)


def test_async_stream_is_public_and_has_the_stream_attributes():
    assert "AsyncStream" in streamlite.__all__ and "Stream" in streamlite.__all__
    for name in ("chunks", "events", "retries", "last_chunk", "completion", "stats"):
        assert hasattr(streamlite.Stream, name), name
        assert hasattr(streamlite.AsyncStream, name), name
    assert streamlite.AsyncStream.__repr__ is not object.__repr__
