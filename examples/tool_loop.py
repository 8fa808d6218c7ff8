"""A tool loop to the end: the model calls tools, we run them and send the results back, until it answers.

    python examples/tool_loop.py

Against the local server (the default) or any provider in OPENAI_BASE_URL / OPENAI_API_KEY /
STREAMLITE_MODEL. `result.message` is the assistant turn to send back, with everything a provider
needs to continue (tool call ids, Gemini's thought signatures, OpenRouter's reasoning_details);
`streamlite.tool_result(call, value)` answers one call.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# The tool: its schema for the model, and the Python that runs it
###############################################################################

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "a city name"}},
            "required": ["location"],
        },
    },
}]


def get_weather(location: str) -> Dict[str, Any]:
    return {"location": location, "temperature_c": 21, "sky": "clear"}


def run_tool(call: streamlite.ToolCall) -> Any:
    if call.name != "get_weather":
        return {"error": "no such tool: %s" % call.name}
    try:
        arguments = call.parsed_arguments()
        return get_weather(str(arguments.get("location", "")))
    except (streamlite.ProtocolError, AttributeError) as exc:  # bad JSON from the model: tell it
        return {"error": str(exc)}


###############################################################################
# The loop: stream a turn; if it calls tools, run them and go round again
###############################################################################

#: Rounds of tool calls before giving up (a model that never stops calling tools).
MAX_ROUNDS = 5


def tool_loop(client: streamlite.Client, model: str) -> None:
    messages: List[Dict[str, Any]] = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    for _ in range(MAX_ROUNDS):
        with client.stream(messages, model=model, tools=TOOLS) as stream:
            for delta in stream:
                if isinstance(delta, streamlite.ContentDelta):
                    print(delta.text, end="", flush=True)
        result = stream.completion
        messages.append(result.message)  # the assistant turn, exactly as it must go back
        if not result.tool_calls:
            print("\nfinal answer: %d characters, finish_reason %s" % (len(result.content), result.finish_reason))
            return
        for call in result.tool_calls:
            value = run_tool(call)
            print("\ntool call %s: %s(%s) -> %s" % (call.id, call.name, call.arguments, value))
            messages.append(streamlite.tool_result(call, value))
    print("\nstopped: the model still called tools after %d rounds" % MAX_ROUNDS)


if __name__ == "__main__":
    sys.exit(run(tool_loop))
