"""Tool calls: fragments stream as ToolCallDelta; the Completion holds whole calls."""

from _common import client_and_model

TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]

with client_and_model() as (client, model):
    result = client.complete("Find stories about lighthouses", model=model, tools=TOOLS)
    for call in result.tool_calls:
        print("tool call %s: %s(%r)" % (call.id, call.name, call.parsed_arguments()))
    print("finish_reason:", result.finish_reason)
