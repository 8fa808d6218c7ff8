"""A local OpenAI-compatible server for demos, tests and benchmarks (standard library only).

    python examples/server.py [--host 127.0.0.1] [--port 8000] [--pace 0.05] [--close-delimited]
                              [--keep-alive-timeout S] [--fail-first N] [--fail-status 429]
                              [--retry-after S]

prints its base URL and serves until Ctrl-C. In code it runs in a background thread:

    with ChatServer(pace=0.03) as server:
        client = streamlite.Client(base_url=server.url, api_key="sk-local")

Any key is accepted and none is logged: nothing is logged at all. Everything is deterministic so
tests can check it.

Chat: `POST /v1/chat/completions`
---------------------------------
Answers like OpenAI. With `"stream": true` the body is an event stream of compact JSON chunks: a
role chunk, the reasoning a word at a time under `delta.reasoning_content`, the content a word at
a time, a tool call for the first tool when the request has `tools` (split into fragments), a
finish chunk (`delta: {}`), a usage chunk (`choices: []`) when `stream_options.include_usage` is
true, then `data: [DONE]`. `n` > 1 interleaves the choices. Without `"stream": true` the answer
is one `chat.completion` object.

The content is `reply_for(messages)` (or `bench_content(N)` with `content_events=N`), the
reasoning `reasoning_for(messages)`, and a token is a word (a content event with
`content_events`). `max_tokens` or `max_completion_tokens` cuts the content short with
`finish_reason: "length"`.

Tool loops end: when the last message has role "tool", the content is `tool_reply(its content)`,
"The tool returned: <content>", with `finish_reason: "stop"` and never another tool call.

Legacy completions: `POST /v1/completions`
------------------------------------------
`prompt` (a string or a list of strings; each gets `n` choices, index `prompt * n + j`), `stream`,
`n`, `max_tokens` (cuts the text short with `finish_reason: "length"`; no default limit, where
OpenAI's is 16), `echo` (the prompt comes first, in its own chunk), `suffix` (accepted, ignored),
`logprobs` (an int k: every chunk's `logprobs` is `{"tokens", "token_logprobs", "top_logprobs",
"text_offset"}`, deterministic, with max(1, min(k, 5)) entries in each `top_logprobs` dict; the
echoed prompt's first token has logprob null), `stream_options.include_usage`. A stream is
`text_completion` chunks `{"id": "cmpl-local-N", "object": "text_completion", "created", "model",
"choices": [{"index", "text", "logprobs", "finish_reason"}]}`, a word at a time, then per choice
a chunk with empty text and the finish reason, a usage chunk (`choices: []`) when asked, then
`data: [DONE]`. Without stream: one `text_completion` object. The text is the same as the chat
content. `messages` instead of `prompt` is a 400 "Unrecognized request argument supplied:
messages", as OpenAI answers.

Responses: `POST /v1/responses`
-------------------------------
OpenAI's Responses API. Input: `input` (a string, or a list of items: `{"role", "content"}`
messages whose content is a string or `input_text` / `output_text` / `input_image` parts,
`function_call` and `function_call_output` items), `instructions`, `tools` (function tools
`{"type": "function", "name", "description", "parameters"}`; chat-style tools work too),
`max_output_tokens`, `stream`, `reasoning` (`{"effort", "summary"}`). A stream is SSE events
`event: <type>` / `data: <json with "type" and "sequence_number" (from 0)>`, no `[DONE]`:

    response.created, response.in_progress                      (the response, in_progress)
    when `reasoning` is given, a reasoning item "rs_local_N" (its summary only when
    `reasoning.summary` is set):
        response.output_item.added {"type": "reasoning", "summary": []}
        response.reasoning_summary_part.added, response.reasoning_summary_text.delta (a word
        at a time), response.reasoning_summary_text.done, response.reasoning_summary_part.done
        response.output_item.done
    when a function tool is given and the last input item is not a function_call_output,
    a function_call item {"id": "fc_local_N", "call_id": "call_local_N_0", "name", "arguments"}:
        response.output_item.added (arguments "", status in_progress),
        response.function_call_arguments.delta (8 characters each),
        response.function_call_arguments.done, response.output_item.done
    else a message item "msg_local_N" (the text is `tool_reply(output)` after a
    function_call_output, else the chat content):
        response.output_item.added, response.content_part.added, response.output_text.delta
        (a word at a time), response.output_text.done, response.content_part.done,
        response.output_item.done
    response.completed (the whole response: "resp_local_N", status, output, usage
    {"input_tokens", "input_tokens_details": {"cached_tokens"}, "output_tokens",
    "output_tokens_details": {"reasoning_tokens"}, "total_tokens"})

`max_output_tokens` counts reasoning words, content words and argument fragments; when it is
smaller than the answer, the items are cut short (status "incomplete") and the stream ends with
`response.incomplete` (`incomplete_details: {"reason": "max_output_tokens"}`). Without stream:
the response object. The input tokens are the words of the instructions and of every item.

Faults (deterministic)
----------------------
- `fail_first=N` (`--fail-first N`): the first N requests the server receives (any path) get
  `fail_status` (default 429, `--fail-status`) with an OpenAI-shaped JSON error body, and a
  `Retry-After: <retry_after>` header when `retry_after` is set (`--retry-after`, seconds, may be
  fractional). The requests after them are answered normally.
- By model name, on every endpoint: `"fail-401"`, `"fail-429"`, `"fail-500"` (any `fail-NNN`
  with NNN in 400..599) answer that status with an OpenAI error body (with `Retry-After` when
  `retry_after` is set). `"midstream-error"` streams a role chunk and 3 content chunks (chat), 3
  text chunks (completions) or the message item's first 3 deltas (responses), then
  `data: {"error": {"message", "type": "server_error", "param": null, "code": "internal_error"}}`
  (responses: an `error` event `{"type": "error", "code": "internal_error", "message",
  "param": null, "sequence_number"}`) and ends the body, with no `[DONE]`. `"cutoff"` streams the
  same first chunks, then closes the connection without the final HTTP chunk or `[DONE]`.
  `"fail-response"` (responses) streams the same first deltas, then `response.failed` whose
  `response.error` is `{"code": "server_error", "message"}`; on chat and completions it is
  `"midstream-error"`. Without stream, `midstream-error` and `fail-response` are a 500 and
  `cutoff` sends the headers (with the whole Content-Length) and half the body, then closes.

HTTP
----
HTTP/1.1 with persistent connections: a connection serves request after request until the client
closes it or sends `Connection: close` (the answer then says `Connection: close` and the server
closes after it). `keep_alive_timeout=S` (`--keep-alive-timeout S`) closes a connection that has
been idle S seconds between requests and advertises `Keep-Alive: timeout=S` (S as given, e.g.
0.5) on every answer; without it an idle connection is closed after 60 s. Streams are one HTTP
chunk per event (`chunked=False`, `--close-delimited`, or an HTTP/1.0 request: the body ends
when the connection closes). Request bodies may be chunked. Every answer has an
`x-request-id: req_local_N` header. The listen backlog holds 1024 pending connections, so
hundreds of clients may connect at once. `tls=ssl_context` serves HTTPS (`server.url` is then
https).

For tests, thread-safe: `server.connections_opened` (TCP connections accepted so far),
`server.open_connections` (open now) and `server.requests`, a list of `RecordedRequest(method,
path, headers, body, connection)` (path with its query, headers a dict with lowercase names,
body the parsed JSON or None, connection the 1-based number of the connection it came on), the
last 10,000.

`stamp=True` adds `"x_sent_ns": time.perf_counter_ns()` to every chunk, read just before the
chunk is written. A client compares it with its own `time.perf_counter_ns()`: exact with the
in-process ChatServer; across processes only where perf_counter is a system-wide clock
(CLOCK_MONOTONIC on Linux; also macOS and Windows), so on the same machine only.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

JSON = Dict[str, Any]

#: The model named in the answer when the request names none.
DEFAULT_MODEL = "local-model"
#: The reasoning of every answer: 13 words, so 13 reasoning tokens.
REASONING = "The user wants a reply. I will keep it short, friendly and complete."
#: The content of every answer: 58 words.
STORY = (
    "Here is a short story. A lighthouse keeper counted ships every night until the sea went "
    "quiet. Then she counted stars instead, one for each ship that never came home. Years later "
    "a child asked her why. She smiled and said that counting is a way of keeping company, and "
    "that the stars had never once been late."
)
#: What a string parameter of a tool call is set to.
TOOL_QUERY = "lighthouse stories"
#: How the answer after a tool result starts.
TOOL_REPLY_PREFIX = "The tool returned: "
#: Content chunks (or deltas) a `midstream-error`, `cutoff` or `fail-response` stream sends first.
FAULT_CHUNKS = 3
#: The message of simulated server errors.
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
#: How many requests `server.requests` keeps.
MAX_RECORDED = 10_000

_BENCH_TEXT = "Streaming tokens arrive a few characters at a time, like real models send them. "
_BENCH_PIECE = 4  # characters of content per benchmark event, about one real token
_BENCH_EVENT_BYTES = 250  # a real OpenAI content event, `data: ` to the blank line
_ARGUMENTS_PIECE = 8  # characters of tool-call arguments per fragment
_MAX_BODY = 16 * 2**20
_BACKLOG = 1024
_SCHEMA_EXAMPLES: Mapping[str, Any] = {
    "string": TOOL_QUERY, "integer": 3, "number": 1.5, "boolean": True, "null": None,
}
_ALTERNATIVES = (" the", " a", " and", " of", " to", " it")


# ---------------------------------------------------------------------------------------------
# The text of an answer
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]], *, words: Optional[int] = None) -> str:
    """The content the server answers: the same short story whatever the messages say.

    `words=N` gives exactly N words instead: the story's words, repeated as often as needed.
    When the last message is a tool result (role "tool"), the answer is `tool_reply(content)`.
    """
    if words is not None and words < 0:
        raise ValueError("words must be 0 or more, got %r" % words)
    last = messages[-1] if messages else None
    if isinstance(last, Mapping) and last.get("role") == "tool":
        return tool_reply(last.get("content"))
    if words is None:
        return STORY
    return " ".join(itertools.islice(itertools.cycle(STORY.split()), words))


def tool_reply(content: Any) -> str:
    """The answer to a tool result: "The tool returned: <its text>" (parts joined, else JSON)."""
    return TOOL_REPLY_PREFIX + _text_of(content)


def reasoning_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reasoning the server streams before the content (the same for every conversation)."""
    return REASONING


def bench_content(events: int) -> str:
    """The content of an answer with `content_events=events`: `_BENCH_PIECE` characters each."""
    size = events * _BENCH_PIECE
    return (_BENCH_TEXT * (size // len(_BENCH_TEXT) + 1))[:size]


def arguments_for(tool: Mapping[str, Any]) -> str:
    """The JSON arguments of a call of this tool: an example value per parameter of its schema.

    Chat tools (`{"type": "function", "function": {"parameters"}}`) and Responses tools
    (`{"type": "function", "parameters"}`) both work. A tool whose schema lists no properties
    gets `{"query": TOOL_QUERY}`.
    """
    function = tool.get("function")
    parameters = (function if isinstance(function, dict) else tool).get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict) or not properties:
        return _dumps({"query": TOOL_QUERY})
    return _dumps(_example_value(parameters, depth=0))


def _example_value(schema: Any, depth: int) -> Any:
    """A value that fits a JSON schema (enum, const, object, array or a scalar type)."""
    if not isinstance(schema, dict) or depth > 8:
        return TOOL_QUERY
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((name for name in kind if name != "null"), "null")
    if kind == "object":
        properties = schema.get("properties")
        items = properties.items() if isinstance(properties, dict) else ()
        return {name: _example_value(value, depth + 1) for name, value in items}
    if kind == "array":
        return [_example_value(schema.get("items"), depth + 1)]
    return _SCHEMA_EXAMPLES.get(kind, TOOL_QUERY) if isinstance(kind, str) else TOOL_QUERY


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _text_of(content: Any) -> str:
    """The text of message content: a string, or the `text` of its parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return "".join(part["text"] for part in content if isinstance(part.get("text"), str))
    return _dumps(content)


def _word_pieces(text: str) -> List[str]:
    """Split text into pieces of one word each, the space before a word kept with it."""
    words = text.split(" ")
    return [piece for piece in words[:1] + [" " + word for word in words[1:]] if piece]


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _count_words(messages: Sequence[Any]) -> int:
    """Prompt tokens: the words of every message's text."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [{"text": content}]
        for part in parts:
            total += _words(part.get("text") if isinstance(part, dict) else None)
    return total


def _split(text: str, size: int) -> List[str]:
    return [text[start:start + size] for start in range(0, len(text), size)]


# ---------------------------------------------------------------------------------------------
# The request and the answer it gets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    pace: float
    chunked: bool
    reasoning: bool
    words: Optional[int]
    content_events: Optional[int]
    stamp: bool
    keep_alive_timeout: Optional[float] = None
    fail_first: int = 0
    fail_status: int = 429
    retry_after: Optional[float] = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it (see `ChatServer.requests`)."""

    method: str
    path: str  # with its query
    headers: Dict[str, str]  # lowercase names
    body: Any  # the parsed JSON, or None
    connection: int  # the 1-based number of the TCP connection it arrived on


class _BadRequest(Exception):
    """The request is not one the server can answer: a 400 with this message."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class _Answer:
    """What one choice says, and how its content is cut into events."""

    reasoning: List[str]
    content: List[str]
    tool_call: Optional[JSON]  # {"id", "name", "arguments"}
    finish_reason: str

    @property
    def tokens(self) -> int:
        arguments = self.tool_call["arguments"] if self.tool_call else ""
        return len(self.reasoning) + len(self.content) + len(_split(arguments, _ARGUMENTS_PIECE))


def _load_json(body: bytes) -> JSON:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise _BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(request, dict):
        raise _BadRequest("Invalid type for request body: expected an object.")
    return request


def _check_ints(request: JSON, names: Sequence[str]) -> None:
    for name in names:
        value = request.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= 1_000_000_000):
            raise _BadRequest("Invalid '%s': expected an integer of 1 or more." % name, name, "invalid_value")


def _parse_request(body: bytes) -> JSON:
    """The JSON body of a chat request, checked as far as this server needs."""
    request = _load_json(body)
    if not isinstance(request.get("messages"), list):
        raise _BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    _check_ints(request, ("n", "max_tokens", "max_completion_tokens"))
    if not isinstance(request.get("tools") or [], list):
        raise _BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    return request


def _content_pieces(options: _Options, messages: Sequence[Any]) -> List[str]:
    last = messages[-1] if messages else None
    if options.content_events is not None and not (isinstance(last, dict) and last.get("role") == "tool"):
        return _split(bench_content(options.content_events), _BENCH_PIECE)
    return _word_pieces(reply_for(messages, words=options.words))


def _answer(request: JSON, options: _Options, call_id: str) -> _Answer:
    messages = request["messages"]
    reasoning = _word_pieces(reasoning_for(messages)) if options.reasoning else []
    content = _content_pieces(options, messages)
    limit = request.get("max_tokens") or request.get("max_completion_tokens")
    if limit is not None and limit < len(content):
        return _Answer(reasoning, content[:limit], None, "length")
    tools = request.get("tools")
    last = messages[-1] if messages else None
    if tools and not (isinstance(last, dict) and last.get("role") == "tool"):
        tool = tools[0] if isinstance(tools[0], dict) else {}
        function: Any = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        call = {"id": call_id, "name": function.get("name") or "tool", "arguments": arguments_for(tool)}
        return _Answer(reasoning, content, call, "tool_calls")
    return _Answer(reasoning, content, None, "stop")


def _usage(messages: Sequence[Any], answers: Sequence[_Answer]) -> JSON:
    prompt = _count_words(messages)
    completion = sum(answer.tokens for answer in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": sum(len(a.reasoning) for a in answers)},
    }


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------

_STREAM_FAULTS = ("midstream-error", "cutoff", "fail-response")


def _fault_status(model: Any) -> Optional[int]:
    """The status of a `fail-NNN` model name (NNN in 400..599), else None."""
    if isinstance(model, str) and model.startswith("fail-") and model[5:].isdigit():
        status = int(model[5:])
        return status if 400 <= status <= 599 else None
    return None


def _status_error(status: int, retry_after: Optional[float]) -> JSON:
    """An OpenAI-shaped error body for a simulated failure with this status."""
    if status == 401:
        return _error_body("Incorrect API key provided. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                           None, "invalid_api_key")
    if status == 429:
        wait = "%gs" % retry_after if retry_after is not None else "1s"
        return _error_body("Rate limit reached for requests. Please try again in %s. (simulated)" % wait,
                           "requests", None, "rate_limit_exceeded")
    if status == 500:
        return _error_body(SERVER_ERROR_MESSAGE, "server_error")
    if status == 503:
        return _error_body("The engine is currently overloaded, please try again later.", "server_error")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return _error_body("Simulated HTTP %d." % status, kind)


def _error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[str] = None) -> JSON:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _midstream_error() -> JSON:
    return {"error": {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "param": None,
                      "code": "internal_error"}}


class _Cut:
    """In a stream of events: close the connection here, without ending the body."""


_CUT = _Cut()
#: An event: (the `event:` name or None, the `data:` text), or _CUT.
_Event = Union[Tuple[Optional[str], str], _Cut]


def _data(obj: Any) -> Tuple[Optional[str], str]:
    return (None, obj if isinstance(obj, str) else _dumps(obj))


def _faulted(chunks: Iterator[JSON], fault: Optional[str], firsts: int) -> Iterator[_Event]:
    """`data:` events of the chunks, then [DONE]; with a fault, the first `firsts` chunks, then it."""
    if fault is None:
        for chunk in chunks:
            yield _data(chunk)
        yield _data("[DONE]")
        return
    for chunk in itertools.islice(chunks, firsts):
        yield _data(chunk)
    yield _CUT if fault == "cutoff" else _data(_midstream_error())


# ---------------------------------------------------------------------------------------------
# Chat: a stream of chunks, or one chat.completion object
# ---------------------------------------------------------------------------------------------


def _choice_deltas(answer: _Answer, index: int) -> Iterator[JSON]:
    """The `choices[0]` objects of one choice's chunks, in order."""

    def choice(delta: JSON, finish_reason: Optional[str] = None) -> JSON:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    yield choice({"role": "assistant", "content": ""})
    for piece in answer.reasoning:
        yield choice({"reasoning_content": piece})
    for piece in answer.content:
        yield choice({"content": piece})
    call = answer.tool_call
    if call is not None:
        function = {"name": call["name"], "arguments": ""}
        yield choice({"tool_calls": [{"index": 0, "id": call["id"], "type": "function", "function": function}]})
        for piece in _split(call["arguments"], _ARGUMENTS_PIECE):
            yield choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield choice({}, answer.finish_reason)


def _interleave(iterators: Sequence[Iterator[JSON]]) -> Iterator[JSON]:
    """One item from each iterator in turn, until all are done (how n > 1 choices arrive)."""
    active = list(iterators)
    while active:
        for iterator in list(active):
            item = next(iterator, None)
            if item is None:
                active.remove(iterator)
            else:
                yield item


def _padding(chunk: JSON) -> str:
    """An `obfuscation` value that makes the chunk's event about _BENCH_EVENT_BYTES long."""
    size = len("data: \n\n") + len(_dumps(chunk)) + len(',"obfuscation":""')
    return ("abcdefghijklmnopqrstuvwxyz" * 10)[: max(0, _BENCH_EVENT_BYTES - size)]


def iter_chunks(request: JSON, answers: Sequence[_Answer], number: int, *, padded: bool = False) -> Iterator[JSON]:
    """The `chat.completion.chunk` objects of streamed answer number `number`."""
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    head = _head(request, number, "chat.completion.chunk")
    pad: Optional[str] = None
    for choice in _interleave([_choice_deltas(answer, i) for i, answer in enumerate(answers)]):
        chunk = dict(head, choices=[choice])
        if include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk but the last
        if padded and "content" in choice["delta"] and "role" not in choice["delta"]:
            pad = _padding(chunk) if pad is None else pad  # every benchmark piece has the same size
            chunk["obfuscation"] = pad
        yield chunk
    if include_usage:
        yield dict(head, choices=[], usage=_usage(request["messages"], answers))


def _fault_chunks(request: JSON, answer: _Answer, number: int) -> Iterator[JSON]:
    """A role chunk, then content chunks (what a faulty chat stream sends before its fault)."""
    head = _head(request, number, "chat.completion.chunk")
    without_reasoning = _Answer([], answer.content, None, answer.finish_reason)
    for choice in _choice_deltas(without_reasoning, 0):
        if "content" in choice["delta"]:
            yield dict(head, choices=[choice])


def completion_object(request: JSON, answers: Sequence[_Answer], number: int) -> JSON:
    """The `chat.completion` object of an answer that is not streamed."""
    choices = []
    for index, answer in enumerate(answers):
        message: JSON = {"role": "assistant", "content": "".join(answer.content), "refusal": None}
        if answer.reasoning:
            message["reasoning_content"] = "".join(answer.reasoning)
        if answer.tool_call is not None:
            function = {"name": answer.tool_call["name"], "arguments": answer.tool_call["arguments"]}
            message["tool_calls"] = [{"id": answer.tool_call["id"], "type": "function", "function": function}]
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": answer.finish_reason})
    usage = _usage(request["messages"], answers)
    return dict(_head(request, number, "chat.completion"), choices=choices, usage=usage)


def _head(request: JSON, number: int, kind: str) -> JSON:
    """The fields every chunk (or the whole object) of answer number `number` starts with."""
    model = request.get("model") or DEFAULT_MODEL
    return {"id": "chatcmpl-local-%d" % number, "object": kind, "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_local"}


# ---------------------------------------------------------------------------------------------
# Legacy completions
# ---------------------------------------------------------------------------------------------


def _parse_completions_request(body: bytes) -> JSON:
    request = _load_json(body)
    if "messages" in request and "prompt" not in request:
        raise _BadRequest("Unrecognized request argument supplied: messages")
    prompt = request.get("prompt")
    if prompt is None:
        raise _BadRequest("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str) and not (
            isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)):
        raise _BadRequest("Invalid type for 'prompt': expected a string or an array of strings.",
                          "prompt", "invalid_type")
    _check_ints(request, ("n", "max_tokens"))
    logprobs = request.get("logprobs")
    if logprobs is not None and (type(logprobs) is not int or not 0 <= logprobs <= 5):
        raise _BadRequest("Invalid 'logprobs': expected an integer from 0 to 5.", "logprobs", "invalid_value")
    return request


def _logprob(token: str, position: int) -> float:
    """A plausible, deterministic log probability of a token."""
    return -round(0.02 + (sum(map(ord, token)) + 7 * position) % 89 / 100.0, 4)


def _logprobs(tokens: Sequence[str], offset: int, top: int, first_is_null: bool = False) -> JSON:
    """The legacy `logprobs` object of these tokens, the first starting at character `offset`."""
    token_logprobs: List[Optional[float]] = []
    top_logprobs: List[Optional[Dict[str, float]]] = []
    offsets = []
    for i, token in enumerate(tokens):
        offsets.append(offset)
        offset += len(token)
        if first_is_null and i == 0:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        logprob = _logprob(token, offset)
        token_logprobs.append(logprob)
        entries = {token: logprob}
        alternatives = (alt for alt in _ALTERNATIVES if alt != token)
        for rank, alt in zip(range(1, max(1, top)), alternatives):
            entries[alt] = round(logprob - 1.5 * rank, 4)
        top_logprobs.append(entries)
    return {"tokens": list(tokens), "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": offsets}


def _completion_choices(request: JSON, options: _Options) -> List[JSON]:
    """Per choice: index, prompt, content pieces, finish_reason."""
    prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
    n = request.get("n") or 1
    content = _content_pieces(options, [])
    limit = request.get("max_tokens")
    finish = "length" if limit is not None and limit < len(content) else "stop"
    pieces = content[:limit] if finish == "length" else content
    return [{"index": p * n + j, "prompt": prompt, "pieces": pieces, "finish_reason": finish}
            for p, prompt in enumerate(prompts) for j in range(n)]


def _completion_usage(request: JSON, choices: Sequence[JSON]) -> JSON:
    prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
    prompt = sum(_words(p) for p in prompts)
    completion = sum(len(c["pieces"]) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion_head(request: JSON, number: int) -> JSON:
    return {"id": "cmpl-local-%d" % number, "object": "text_completion", "created": int(time.time()),
            "model": request.get("model") or DEFAULT_MODEL, "system_fingerprint": "fp_local"}


def _completion_choice_chunks(request: JSON, choice: JSON) -> Iterator[JSON]:
    """The `choices[0]` objects of one legacy completion choice's chunks."""
    logprobs = request.get("logprobs")
    offset = 0
    if request.get("echo") and choice["prompt"]:
        prompt = choice["prompt"]
        tokens = _word_pieces(prompt) or [prompt]
        lp = _logprobs(tokens, 0, logprobs, first_is_null=True) if logprobs is not None else None
        yield {"index": choice["index"], "text": prompt, "logprobs": lp, "finish_reason": None}
        offset = len(prompt)
    for piece in choice["pieces"]:
        lp = _logprobs([piece], offset, logprobs) if logprobs is not None else None
        yield {"index": choice["index"], "text": piece, "logprobs": lp, "finish_reason": None}
        offset += len(piece)
    yield {"index": choice["index"], "text": "", "logprobs": None, "finish_reason": choice["finish_reason"]}


def iter_completion_chunks(request: JSON, options: _Options, number: int) -> Iterator[JSON]:
    """The `text_completion` chunks of a streamed legacy completion, then the usage chunk if asked."""
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    head = _completion_head(request, number)
    choices = _completion_choices(request, options)
    for choice in _interleave([_completion_choice_chunks(request, c) for c in choices]):
        chunk = dict(head, choices=[choice])
        if include_usage:
            chunk["usage"] = None
        yield chunk
    if include_usage:
        yield dict(head, choices=[], usage=_completion_usage(request, choices))


def completions_object(request: JSON, options: _Options, number: int) -> JSON:
    """The `text_completion` object of a legacy completion that is not streamed."""
    choices = _completion_choices(request, options)
    out = []
    for choice in choices:
        chunks = list(_completion_choice_chunks(request, choice))[:-1]
        text = "".join(chunk["text"] for chunk in chunks)
        logprobs = None
        if request.get("logprobs") is not None:
            logprobs = {key: [v for chunk in chunks for v in chunk["logprobs"][key]]
                        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
        out.append({"index": choice["index"], "text": text, "logprobs": logprobs,
                    "finish_reason": choice["finish_reason"]})
    return dict(_completion_head(request, number), choices=out, usage=_completion_usage(request, choices))


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def _parse_responses_request(body: bytes) -> JSON:
    request = _load_json(body)
    items = request.get("input")
    if items is None:
        raise _BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if not isinstance(items, str) and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
        raise _BadRequest("Invalid type for 'input': expected a string or an array of input items.",
                          "input", "invalid_type")
    _check_ints(request, ("max_output_tokens",))
    if not isinstance(request.get("tools") or [], list):
        raise _BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    if request.get("reasoning") is not None and not isinstance(request["reasoning"], dict):
        raise _BadRequest("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
    return request


def _input_items(request: JSON) -> List[JSON]:
    items = request["input"]
    return [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items


def _input_tokens(request: JSON) -> int:
    total = _words(request.get("instructions"))
    for item in _input_items(request):
        kind = item.get("type", "message")
        if kind == "function_call_output":
            total += _words(_text_of(item.get("output")))
        elif kind == "function_call":
            total += _words(item.get("arguments"))
        else:
            total += _words(_text_of(item.get("content")))
    return total


def _function_tool(request: JSON) -> Optional[JSON]:
    """{"name", "arguments"} of the first function tool, or None."""
    for tool in request.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            function: Any = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            return {"name": function.get("name") or "tool", "arguments": arguments_for(tool)}
    return None


def _response_object(request: JSON, number: int, created_at: int, status: str, output: List[JSON],
                     usage: Optional[JSON] = None, error: Optional[JSON] = None,
                     incomplete: Optional[str] = None) -> JSON:
    reasoning = request.get("reasoning") or {}
    return {
        "id": "resp_local_%d" % number, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model") or DEFAULT_MODEL, "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.get("store", True), "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0), "truncation": request.get("truncation", "disabled"),
        "usage": usage, "user": request.get("user"), "metadata": request.get("metadata") or {},
    }


def iter_response_events(request: JSON, options: _Options, number: int,
                         fault: Optional[str] = None) -> Iterator[Union[JSON, _Cut]]:
    """The events of a streamed response, without their sequence numbers (see `_sequenced`)."""
    created_at = int(time.time())
    output: List[JSON] = []
    budget = request.get("max_output_tokens")
    left = budget if budget is not None else -1  # -1: no limit
    reasoning_tokens = output_tokens = 0
    cut = False

    def take(pieces: List[str]) -> List[str]:
        nonlocal left, cut
        if left < 0 or len(pieces) <= left:
            left = left - len(pieces) if left >= 0 else left
            return pieces
        cut, kept, left = True, pieces[:left], 0
        return kept

    def response(status: str, **extra: Any) -> JSON:
        return _response_object(request, number, created_at, status, list(output), **extra)

    yield {"type": "response.created", "response": response("in_progress")}
    yield {"type": "response.in_progress", "response": response("in_progress")}
    items = _input_items(request)
    reasoning = request.get("reasoning")
    if reasoning is not None and fault is None:
        index, item_id = len(output), "rs_local_%d" % number
        pieces = take(_word_pieces(reasoning_for([])))
        reasoning_tokens = output_tokens = len(pieces)
        yield {"type": "response.output_item.added", "output_index": index,
               "item": {"id": item_id, "type": "reasoning", "summary": []}}
        summary = []
        if reasoning.get("summary"):
            text = "".join(pieces)
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            yield dict(where, type="response.reasoning_summary_part.added", part={"type": "summary_text", "text": ""})
            for piece in pieces:
                yield dict(where, type="response.reasoning_summary_text.delta", delta=piece)
            yield dict(where, type="response.reasoning_summary_text.done", text=text)
            yield dict(where, type="response.reasoning_summary_part.done", part={"type": "summary_text", "text": text})
            summary = [{"type": "summary_text", "text": text}]
        output.append({"id": item_id, "type": "reasoning", "summary": summary})
        yield {"type": "response.output_item.done", "output_index": index, "item": output[-1]}
    if left == 0:
        cut = True  # the reasoning took the whole budget: no room for another item
    last = items[-1] if items else {}
    tool = _function_tool(request)
    if tool is not None and last.get("type") != "function_call_output" and fault is None and not cut:
        index = len(output)
        item = {"id": "fc_local_%d" % number, "type": "function_call", "status": "in_progress",
                "arguments": "", "call_id": "call_local_%d_0" % number, "name": tool["name"]}
        pieces = take(_split(tool["arguments"], _ARGUMENTS_PIECE))
        output_tokens += len(pieces)
        arguments = "".join(pieces)
        yield {"type": "response.output_item.added", "output_index": index, "item": dict(item)}
        where = {"item_id": item["id"], "output_index": index}
        for piece in pieces:
            yield dict(where, type="response.function_call_arguments.delta", delta=piece)
        yield dict(where, type="response.function_call_arguments.done", name=tool["name"], arguments=arguments)
        output.append(dict(item, arguments=arguments, status="incomplete" if cut else "completed"))
        yield {"type": "response.output_item.done", "output_index": index, "item": output[-1]}
    elif not cut:
        index, item_id = len(output), "msg_local_%d" % number
        if last.get("type") == "function_call_output":
            text = tool_reply(last.get("output"))
            pieces = _word_pieces(text)
        else:
            pieces = _content_pieces(options, [])
        if fault is not None:
            pieces = pieces[:FAULT_CHUNKS]
        pieces = take(pieces)
        output_tokens += len(pieces)
        text = "".join(pieces)
        item = {"id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        yield {"type": "response.output_item.added", "output_index": index, "item": item}
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        yield dict(where, type="response.content_part.added", part=part)
        for piece in pieces:
            yield dict(where, type="response.output_text.delta", delta=piece, logprobs=[])
        if fault == "cutoff":
            yield _CUT
            return
        if fault == "midstream-error":
            yield {"type": "error", "code": "internal_error", "message": SERVER_ERROR_MESSAGE, "param": None}
            return
        if fault == "fail-response":
            output.append(dict(item, status="incomplete", content=[dict(part, text=text)]))
            error = {"code": "server_error", "message": SERVER_ERROR_MESSAGE}
            yield {"type": "response.failed", "response": response("failed", error=error)}
            return
        yield dict(where, type="response.output_text.done", text=text, logprobs=[])
        done_part = dict(part, text=text)
        yield dict(where, type="response.content_part.done", part=done_part)
        output.append(dict(item, status="incomplete" if cut else "completed", content=[done_part]))
        yield {"type": "response.output_item.done", "output_index": index, "item": output[-1]}
    input_tokens = _input_tokens(request)
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
             "total_tokens": input_tokens + output_tokens}
    if cut:
        yield {"type": "response.incomplete",
               "response": response("incomplete", usage=usage, incomplete="max_output_tokens")}
    else:
        yield {"type": "response.completed", "response": response("completed", usage=usage)}


def _sequenced(events: Iterable[Union[JSON, _Cut]]) -> Iterator[_Event]:
    """SSE events `event: <type>` / `data: <json>` with sequence numbers from 0."""
    for number, event in enumerate(events):
        if isinstance(event, _Cut):
            yield event
        else:
            event = dict({"type": event["type"]}, **event, sequence_number=number)  # "type" first
            yield (event["type"], _dumps(event))


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may stay silent before its thread gives up
    # TCP_NODELAY: an event written right after the headers (or after the last event) goes out at
    # once; with Nagle it waits for the ACK of the previous write, which a client on a reused
    # connection delays by up to 40 ms
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: no request lines on stderr, and so never an Authorization header."""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # in this connection's thread, not the accept loop

    def handle(self) -> None:
        """Serve the connection; a client that went away ends it quietly, without a traceback."""
        try:
            super().handle()
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True

    def handle_one_request(self) -> None:
        """Wait at most keep_alive_timeout for the next request line, then serve it."""
        idle = self.server.options.keep_alive_timeout
        self.connection.settimeout(idle if idle is not None else self.timeout)
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.connection.settimeout(self.timeout)  # the request line arrived: no longer idle
        return super().parse_request()

    def do_GET(self) -> None:
        self._record(None)
        if self._fail_first():
            return
        self._send_not_found("GET")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        self._record(parsed)
        if self._fail_first():
            return
        self._post(body, parsed)

    def _record(self, body: Any) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.record(RecordedRequest(self.command, self.path, headers, body,
                                           self.server.connection_number(self.request)))

    def _fail_first(self) -> bool:
        options = self.server.options
        if not self.server.take_failure():
            return False
        self._send_json(options.fail_status, _status_error(options.fail_status, options.retry_after),
                        retry_after=options.retry_after)
        return True

    def _post(self, body: bytes, parsed: Any) -> None:
        route = self.path.split("?", 1)[0].rstrip("/")
        if route not in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
            return self._send_not_found("POST")
        options = self.server.options
        model = parsed.get("model") if isinstance(parsed, dict) else None
        status = _fault_status(model)
        if status is not None:
            return self._send_json(status, _status_error(status, options.retry_after),
                                   retry_after=options.retry_after)
        fault = model if model in _STREAM_FAULTS else None
        try:
            if route == "/v1/completions":
                request = _parse_completions_request(body)
            elif route == "/v1/responses":
                request = _parse_responses_request(body)
            else:
                request = _parse_request(body)
        except _BadRequest as exc:
            return self._send_json(400, _error_body(str(exc), "invalid_request_error", exc.param, exc.code))
        number = self.server.next_number()
        if fault is not None and not request.get("stream"):
            if fault == "cutoff":
                return self._send_cut_json()
            return self._send_json(500, _error_body(SERVER_ERROR_MESSAGE, "server_error"))
        stream = bool(request.get("stream"))
        if route == "/v1/completions":
            if stream:
                self._send_stream(_faulted(iter_completion_chunks(request, options, number), fault, FAULT_CHUNKS))
            else:
                self._send_json(200, completions_object(request, options, number))
        elif route == "/v1/responses":
            events = iter_response_events(request, options, number, fault)
            if stream:
                self._send_stream(_sequenced(events))
            else:
                final = [event for event in events if isinstance(event, dict)][-1]
                self._send_json(200, final["response"])
        else:
            answers = [_answer(request, options, "call_local_%d_%d" % (number, i)) for i in range(request.get("n") or 1)]
            if not stream:
                self._send_json(200, completion_object(request, answers, number))
            elif fault is not None:
                self._send_stream(_faulted(_fault_chunks(request, answers[0], number), fault, FAULT_CHUNKS + 1))
            else:
                chunks = iter_chunks(request, answers, number, padded=options.content_events is not None)
                self._send_stream(_faulted(chunks, None, 0))

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering a body the server will not read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked_body()
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > _MAX_BODY:
            self.close_connection = True
            self._send_json(413 if length.isdigit() else 400,
                            _error_body("Invalid Content-Length: %.40r." % length, "invalid_request_error"))
            return None
        return self.rfile.read(int(length))

    def _read_chunked_body(self) -> Optional[bytes]:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                size = -1
            if size < 0 or len(body) + size > _MAX_BODY:
                self.close_connection = True
                self._send_json(400, _error_body("Invalid chunked request body.", "invalid_request_error"))
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send_not_found(self, method: str) -> None:
        message = "Invalid URL (%s %s)" % (method, self.path.split("?", 1)[0])
        self._send_json(404, _error_body(message, "invalid_request_error"))

    def _start(self, status: int, headers: Sequence[Tuple[str, str]]) -> None:
        """The status line and headers, with the connection's own (Connection, Keep-Alive)."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("x-request-id", "req_local_%d" % self.server.next_request_id())
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.server.options.keep_alive_timeout is not None:
            self.send_header("Keep-Alive", "timeout=%g" % self.server.options.keep_alive_timeout)
        self.end_headers()

    def _send_json(self, status: int, obj: JSON, retry_after: Optional[float] = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if retry_after is not None:
            headers.append(("Retry-After", "%g" % retry_after))
        self._start(status, headers)
        self.wfile.write(body)

    def _send_cut_json(self) -> None:
        """Headers promising a whole JSON body, half of it, then the connection closes."""
        body = _dumps(dict(_error_body(SERVER_ERROR_MESSAGE, "server_error"), padding="x" * 64)).encode()
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_local_%d" % self.server.next_request_id())
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()

    def _send_stream(self, events: Iterable[_Event]) -> None:
        """Send each event the moment it is ready: one HTTP chunk each, or close-delimited."""
        options, stopping = self.server.options, self.server.stopping
        chunked = options.chunked and self.request_version != "HTTP/1.0"
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:  # HTTP/1.0 style: the body ends when the connection closes
            self.close_connection = True
        self._start(200, headers)
        for number, event in enumerate(events):
            if (number and options.pace and stopping.wait(options.pace)) or stopping.is_set():
                self.close_connection = True  # the server is stopping: cut the stream off
                return
            if isinstance(event, _Cut):
                self.close_connection = True  # the "cutoff" fault: no last chunk, no [DONE]
                return
            name, data = event
            if options.stamp and data.startswith("{"):
                data = data[:-1] + ',"x_sent_ns":%d}' % time.perf_counter_ns()
            text = "data: %s\n\n" % data if name is None else "event: %s\ndata: %s\n\n" % (name, data)
            self._write_event(text.encode("utf-8"), chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write_event(self, payload: bytes, chunked: bool) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    """A thread per connection; every connection is tracked so that stop() can end it."""

    daemon_threads = True
    block_on_close = False  # stop() closes and joins the handler threads itself, with a deadline
    allow_reuse_address = True
    request_queue_size = _BACKLOG  # socketserver's 5 makes hundreds of clients wait for SYN retries

    def __init__(self, address: Tuple[str, int], options: _Options, tls: Optional[ssl.SSLContext] = None) -> None:
        self.options = options
        self.tls = tls
        self.stopping = threading.Event()
        self._numbers = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._open: Dict[Any, Tuple[threading.Thread, int]] = {}
        self.connections_opened = 0
        self.failures = 0
        self.recorded: Deque[RecordedRequest] = collections.deque(maxlen=MAX_RECORDED)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can take seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or failed its TLS handshake) is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], (OSError, ValueError)):
            super().handle_error(request, client_address)

    def get_request(self) -> Tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the connection's thread (_Handler.setup)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def next_number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def next_request_id(self) -> int:
        with self._lock:
            return next(self._request_ids)

    def take_failure(self) -> bool:
        """True for the first `fail_first` calls."""
        with self._lock:
            if self.failures >= self.options.fail_first:
                return False
            self.failures += 1
            return True

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.recorded.append(request)

    def connection_number(self, sock: Any) -> int:
        with self._lock:
            entry = self._open.get(sock)
        return entry[1] if entry else 0

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  daemon=self.daemon_threads)
        with self._lock:
            self.connections_opened += 1
            self._open[request] = (thread, self.connections_opened)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down, then wait up to `timeout` seconds for the threads."""
        with self._lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):  # already closed by its handler
                pass
        deadline = time.monotonic() + timeout
        for _, (thread, _number) in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------------------------
# ChatServer: the server in a background thread
# ---------------------------------------------------------------------------------------------


class ChatServer:
    """A local OpenAI-compatible server: `with ChatServer() as server: server.url`.

    Args:
        host, port: where to listen; port 0 lets the OS choose (see `.port`).
        pace: seconds to wait between events; 0 sends them in one burst.
        chunked: one HTTP chunk per event (Transfer-Encoding: chunked); False ends the body by
            closing the connection instead, as HTTP/1.0 servers do.
        reasoning: stream `reasoning_for(messages)` before the content (chat).
        words: make the content exactly this many words (`reply_for(messages, words=words)`).
        content_events: make the content this many events of a few characters, each event about
            250 bytes like OpenAI's, for benchmarks; the content is `bench_content(N)`.
        stamp: add `"x_sent_ns": time.perf_counter_ns()` to every chunk (see the module doc).
        keep_alive_timeout: close a connection idle this many seconds between requests, and say
            so in a `Keep-Alive: timeout=N` header; None: 60 s, not advertised.
        fail_first, fail_status, retry_after: the first `fail_first` requests get `fail_status`
            with an OpenAI error body, and `Retry-After: retry_after` when it is set (that header
            also goes with the `fail-NNN` model faults).
        tls: an `ssl.SSLContext` (server side) to serve HTTPS.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, pace: float = 0.0, chunked: bool = True,
                 reasoning: bool = True, words: Optional[int] = None, content_events: Optional[int] = None,
                 stamp: bool = False, keep_alive_timeout: Optional[float] = None, fail_first: int = 0,
                 fail_status: int = 429, retry_after: Optional[float] = None,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        for name, value in (("pace", pace), ("words", words), ("content_events", content_events),
                            ("fail_first", fail_first), ("retry_after", retry_after)):
            if value is not None and value < 0:
                raise ValueError("%s must be 0 or more, got %r" % (name, value))
        if keep_alive_timeout is not None and not keep_alive_timeout > 0:
            raise ValueError("keep_alive_timeout must be more than 0, got %r" % (keep_alive_timeout,))
        if not 400 <= fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400-599), got %r" % (fail_status,))
        options = _Options(pace, chunked, reasoning, words, content_events, stamp, keep_alive_timeout,
                           fail_first, fail_status, retry_after)
        self._server = _Server((host, port), options, tls)
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. "http://127.0.0.1:8000/v1"."""
        host = str(self._server.server_address[0])
        scheme = "https" if self._server.tls is not None else "http"
        return "%s://%s:%d/v1" % (scheme, "127.0.0.1" if host in ("", "0.0.0.0") else host, self.port)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far."""
        with self._server._lock:
            return self._server.connections_opened

    @property
    def open_connections(self) -> int:
        """Connections open now (accepted and not yet closed by the server)."""
        return self._server.open_count()

    @property
    def requests(self) -> List[RecordedRequest]:
        """The requests received so far, oldest first (the last MAX_RECORDED): a copy."""
        with self._server._lock:
            return list(self._server.recorded)

    def start(self) -> ChatServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="ChatServer:%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until KeyboardInterrupt (what `python examples/server.py` does)."""
        self._server.serve_forever(0.05)

    def stop(self) -> None:
        """Stop serving, end the open connections and wait (briefly) for their threads."""
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._server.close_connections(timeout=5.0)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python examples/server.py",
                                     description="A local OpenAI-compatible streaming server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 lets the OS choose (default 8000)")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between events (default 0.05)")
    parser.add_argument("--close-delimited", action="store_true", help="end bodies by closing, not chunked")
    parser.add_argument("--no-reasoning", action="store_true", help="send no reasoning")
    parser.add_argument("--words", type=int, help="content of exactly this many words")
    parser.add_argument("--content-events", type=int, metavar="N", help="benchmark content: N small events")
    parser.add_argument("--stamp", action="store_true", help='add "x_sent_ns" to every chunk')
    parser.add_argument("--keep-alive-timeout", type=float, metavar="S",
                        help="close connections idle S seconds (and send Keep-Alive: timeout=S)")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N", help="fail the first N requests")
    parser.add_argument("--fail-status", type=int, default=429, metavar="STATUS",
                        help="the status of those failures (default 429)")
    parser.add_argument("--retry-after", type=float, metavar="S", help="send Retry-After: S with failures")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    try:
        server = ChatServer(args.host, args.port, pace=args.pace, chunked=not args.close_delimited,
                            reasoning=not args.no_reasoning, words=args.words,
                            content_events=args.content_events, stamp=args.stamp,
                            keep_alive_timeout=args.keep_alive_timeout, fail_first=args.fail_first,
                            fail_status=args.fail_status, retry_after=args.retry_after)
    except ValueError as exc:
        print("server.py: error: %s" % exc, file=sys.stderr)
        return 2
    print(server.url, flush=True)
    print("serving; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
