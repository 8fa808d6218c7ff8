"""Tool calls: send `tools`; the fragments stream as ToolCallDelta, the Completion has whole calls.

    python examples/tool_calls.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# The tools, in the OpenAI format: every keyword goes into the request as is
###############################################################################

TOOLS = [{
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to look for"}},
            "required": ["query"],
        },
    },
}]


###############################################################################
# Stream: count the fragments, then print each whole call
###############################################################################


def call_tools(client: streamlite.Client, model: str) -> None:
    with client.stream("Find stories about lighthouses", model=model, tools=TOOLS) as stream:
        fragments = sum(isinstance(delta, streamlite.ToolCallDelta) for delta in stream)
    result = stream.completion
    print("%d fragments, %d tool calls" % (fragments, len(result.tool_calls)))
    for call in result.tool_calls:
        # the arguments are JSON text; parsed_arguments() decodes it (ProtocolError if invalid)
        print("tool call %s: %s(%r)" % (call.id, call.name, call.parsed_arguments()))
    print("finish_reason:", result.finish_reason)


if __name__ == "__main__":
    sys.exit(run(call_tools))
