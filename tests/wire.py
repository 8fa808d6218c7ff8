"""Streams and a recording server for conversation tests (tool loops, -c, chat, attachments).

`Recording(replies)` is a FaultServer (tests/faults.py) on 127.0.0.1 that answers the N-th
request with replies[N] (the last one repeated) and keeps every request: `bodies()` gives their
JSON bodies. Each reply is a whole HTTP response built by `sse(...)` (close-delimited, so no
connection is reused); a reply may also be a list of fault actions (send, sleep, hold ...).
"""

import asyncio
import json

import streamlite
from faults import FaultServer, send

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def event(chunk):
    return b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n"


def sse(*chunks, done=True):
    """A whole event-stream response: the chunks, then [DONE]."""
    return HEAD + b"".join(event(chunk) for chunk in chunks) + (b"data: [DONE]\n\n" if done else b"")


def delta(choice_delta, finish=None, index=0, **top):
    return dict({"object": "chat.completion.chunk", "choices": [
        {"index": index, "delta": choice_delta, "finish_reason": finish}]}, **top)


def text_reply(text, finish="stop"):
    """A plain reply: the text in two pieces, then the finish reason and usage."""
    half = len(text) // 2
    return sse(delta({"role": "assistant", "content": text[:half]}), delta({"content": text[half:]}),
               delta({}, finish), {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})


SIGNATURE = "Rxzj5lV3nUl8kG1SXf72qGZLnZUGocqP3VRXyrsME9Ct=="

# A turn that carries every round-trip field at once: OpenRouter reasoning with reasoning_details
# (streamed in pieces, a signature at the end), then two Gemini-style tool calls without index,
# the first with extra_content.google.thought_signature, arguments cut in two for the second.
TOOL_TURN = sse(
    delta({"role": "assistant", "content": "", "reasoning": "Check",
           "reasoning_details": [{"type": "reasoning.text", "text": "Check", "format": "anthropic-claude-v1", "index": 0}]}),
    delta({"content": "", "reasoning": " the sky.",
           "reasoning_details": [{"type": "reasoning.text", "text": " the sky.", "format": "anthropic-claude-v1", "index": 0,
                                  "signature": "sig-abc"}]}),
    delta({"tool_calls": [
        {"extra_content": {"google": {"thought_signature": SIGNATURE}}, "id": "function-call-1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"location\":\"Sydney\"}"}},
        {"id": "function-call-2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"loca"}}]}),
    delta({"tool_calls": [{"id": "function-call-2", "function": {"arguments": "tion\":\"Auckland\"}"}}]}),
    delta({}, "tool_calls"),
)

# What the assistant message of TOOL_TURN must be, sent back exactly so
TOOL_TURN_MESSAGE = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "function-call-1", "type": "function", "extra_content": {"google": {"thought_signature": SIGNATURE}},
         "function": {"name": "get_weather", "arguments": "{\"location\":\"Sydney\"}"}},
        {"id": "function-call-2", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"location\":\"Auckland\"}"}},
    ],
    "reasoning_details": [{"type": "reasoning.text", "text": "Check the sky.", "format": "anthropic-claude-v1",
                           "index": 0, "signature": "sig-abc"}],
}

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


class Recording(FaultServer):
    def __init__(self, replies, *, max_connections=8, lifetime=20.0):
        replies = list(replies)

        def script(index, request):
            reply = replies[min(index, len(replies) - 1)]
            return reply if isinstance(reply, list) else [send(reply)]

        super().__init__(script, max_connections=max_connections, lifetime=lifetime)

    def bodies(self):
        return [json.loads(request.body) for request in self.requests]


def run_complete(kind, url, messages, **options):
    """client.complete / await aclient.acomplete, the same call through either client."""
    if kind == "sync":
        return streamlite.Client(url, "sk-test-wire", proxy="").complete(messages, **options)

    async def go():
        client = streamlite.AsyncClient(url, "sk-test-wire", proxy="")
        return await client.acomplete(messages, **options)

    return asyncio.run(go())
