"""Token usage: the client asks for it (stream_options.include_usage) and it arrives last.

    python examples/usage.py
"""

from __future__ import annotations

import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# Stream: the Usage delta comes after the last piece of text
###############################################################################


def count_tokens(client: streamlite.Client, model: str) -> None:
    usage: Optional[streamlite.Usage] = None
    with client.stream("Count to five", model=model) as stream:
        for delta in stream:
            if isinstance(delta, streamlite.Usage):
                usage = delta
    show(usage)


###############################################################################
# Print it: a field the provider did not send is None
###############################################################################


def show(usage: Optional[streamlite.Usage]) -> None:
    if usage is None:
        print("the server sent no usage")
        return
    print("prompt %s, completion %s, total %s, reasoning %s, cached %s" % (
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
        usage.reasoning_tokens, usage.cached_tokens))


if __name__ == "__main__":
    sys.exit(run(count_tokens))
