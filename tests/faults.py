"""The scripted fault-injection server and its actions; they live in loopback.py (the one module
of loopback servers for the tests) and are re-exported here under their old names."""

from loopback import (  # noqa: F401
    FaultServer,
    Request,
    call,
    close,
    fill_backlog,
    flood,
    hold,
    repeat,
    reset,
    send,
    sleep,
    trickle,
)

__all__ = ["FaultServer", "Request", "call", "close", "flood", "hold", "repeat", "reset", "send", "sleep",
           "trickle", "fill_backlog"]
