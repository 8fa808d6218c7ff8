"""The README's first command: a live stream from a local server, no key and no network.

    python examples/demo.py

It starts the OpenAI-compatible server in examples/server.py on 127.0.0.1 and streams one
answer through streamlite: the reasoning dimmed, then the answer, then the token usage.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from server import ChatServer  # noqa: E402

###############################################################################
# Print: reasoning dimmed, the answer plain, each piece as it arrives
###############################################################################


def styles() -> Tuple[str, str]:
    """ANSI dim and reset, only on a terminal and only when NO_COLOR is not set."""
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return "\x1b[2m", "\x1b[0m"
    return "", ""


def show(stream: streamlite.Stream) -> None:
    dim, reset = styles()
    last: Optional[type] = None
    for delta in stream:
        if isinstance(delta, streamlite.ReasoningDelta):
            print(dim + delta.text + reset, end="", flush=True)
        elif isinstance(delta, streamlite.ContentDelta):
            if last is streamlite.ReasoningDelta:
                print("\n")  # a blank line between the reasoning and the answer
            print(delta.text, end="", flush=True)
        last = type(delta)
    print()


def show_usage(usage: Optional[streamlite.Usage]) -> None:
    if usage is not None:
        print("\nusage: %s prompt + %s completion = %s tokens (%s of them reasoning)" % (
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.reasoning_tokens))


###############################################################################
# Run: a local server (port chosen by the OS), a client, one streamed answer
###############################################################################


def main() -> int:
    with ChatServer(pace=0.03) as server:
        client = streamlite.Client(base_url=server.url, api_key="sk-local-demo", proxy="")
        with client.stream("Tell me a very short story", model="local-model") as stream:
            show(stream)
        show_usage(stream.completion.usage)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
