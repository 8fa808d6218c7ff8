"""The async variants of fault scenarios on which AsyncClient disagrees with Client today.

Each scenario is written once, in test_faults.py or test_tls_proxy.py, over the `run` fixture
(tests/clients.py); its sync variant runs there, its async variant here (ONLY_MODE), so that the
rest can be merged green while these fail. When the clients agree, delete the name from
ASYNC_IN_PARITY_FILE in its module and from the imports below: the scenario then runs both ways
where it is written.
"""

from test_faults import (  # noqa: F401
    test_200k_tiny_events_without_accumulating_in_constant_memory,
    test_503_then_200_is_retried_once,
)
from test_tls_proxy import (  # noqa: F401
    certs,
    clean_env,
    no_secret_logged,
    test_proxy_closing_during_connect_is_a_connection_error,
    test_proxy_sending_data_before_the_tunnel_opens_is_a_protocol_error,
)

ONLY_MODE = "async"
