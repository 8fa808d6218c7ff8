"""Plain streaming: print the answer piece by piece, the moment each piece arrives.

    python examples/stream_text.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# Stream: each ContentDelta is a piece of the answer
###############################################################################


def tell_story(client: streamlite.Client, model: str) -> None:
    with client.stream("Tell me a short story", model=model) as stream:
        for delta in stream:
            if isinstance(delta, streamlite.ContentDelta):
                print(delta.text, end="", flush=True)
    print()


###############################################################################
# Run: against OPENAI_BASE_URL when set, else the local server
###############################################################################

if __name__ == "__main__":
    sys.exit(run(tell_story))
