"""A local OpenAI-compatible chat server for demos, tests and benchmarks (standard library only).

    python examples/server.py [--host 127.0.0.1] [--port 8000] [--pace 0.05] [--close-delimited]

prints its base URL and serves until Ctrl-C. In code it runs in a background thread:

    with ChatServer(pace=0.03) as server:
        client = streamlite.Client(base_url=server.url, api_key="sk-local")

`POST /v1/chat/completions` answers like OpenAI. With `"stream": true` the body is an event
stream of compact JSON chunks: a role chunk, the reasoning a word at a time under
`delta.reasoning_content`, the content a word at a time, a tool call for the first tool when the
request has `tools` (split into fragments), a finish chunk (`delta: {}`), a usage chunk
(`choices: []`) when `stream_options.include_usage` is true, then `data: [DONE]`. `n` > 1
interleaves the choices. Without `"stream": true` the answer is one `chat.completion` object.
Any key is accepted and none is logged: nothing is logged at all.

Everything is deterministic so tests can check it: the content is `reply_for(messages)` (or
`bench_content(N)` with `content_events=N`), the reasoning `reasoning_for(messages)`, and a token
is a word (a content event with `content_events`). `max_tokens` or `max_completion_tokens` cuts
the content short with `finish_reason: "length"`.

`stamp=True` adds `"x_sent_ns": time.perf_counter_ns()` to every chunk, read just before the
chunk is written. A client compares it with its own `time.perf_counter_ns()`: exact with the
in-process ChatServer; across processes only where perf_counter is a system-wide clock
(CLOCK_MONOTONIC on Linux; also macOS and Windows), so on the same machine only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

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

_BENCH_TEXT = "Streaming tokens arrive a few characters at a time, like real models send them. "
_BENCH_PIECE = 4  # characters of content per benchmark event, about one real token
_BENCH_EVENT_BYTES = 250  # a real OpenAI content event, `data: ` to the blank line
_ARGUMENTS_PIECE = 8  # characters of tool-call arguments per fragment
_MAX_BODY = 16 * 2**20
_SCHEMA_EXAMPLES: Mapping[str, Any] = {
    "string": TOOL_QUERY, "integer": 3, "number": 1.5, "boolean": True, "null": None,
}


# ---------------------------------------------------------------------------------------------
# The text of an answer
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]], *, words: Optional[int] = None) -> str:
    """The content the server answers: the same short story whatever the messages say.

    `words=N` gives exactly N words instead: the story's words, repeated as often as needed.
    """
    if words is None:
        return STORY
    if words < 0:
        raise ValueError("words must be 0 or more, got %r" % words)
    return " ".join(itertools.islice(itertools.cycle(STORY.split()), words))


def reasoning_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reasoning the server streams before the content (the same for every conversation)."""
    return REASONING


def bench_content(events: int) -> str:
    """The content of an answer with `content_events=events`: `_BENCH_PIECE` characters each."""
    size = events * _BENCH_PIECE
    return (_BENCH_TEXT * (size // len(_BENCH_TEXT) + 1))[:size]


def arguments_for(tool: Mapping[str, Any]) -> str:
    """The JSON arguments of a call of this tool: an example value per parameter of its schema.

    A tool whose schema lists no properties gets `{"query": TOOL_QUERY}`.
    """
    function = tool.get("function")
    parameters = function.get("parameters") if isinstance(function, dict) else None
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


def _word_pieces(text: str) -> List[str]:
    """Split text into pieces of one word each, the space before a word kept with it."""
    words = text.split(" ")
    return [piece for piece in words[:1] + [" " + word for word in words[1:]] if piece]


def _count_words(messages: Sequence[Any]) -> int:
    """Prompt tokens: the words of every message's text."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [{"text": content}]
        for part in parts:
            text = part.get("text") if isinstance(part, dict) else None
            total += len(text.split()) if isinstance(text, str) else 0
    return total


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


def _split(text: str, size: int) -> List[str]:
    return [text[start:start + size] for start in range(0, len(text), size)]


def _parse_request(body: bytes) -> JSON:
    """The JSON body, checked as far as this server needs."""
    try:
        request = json.loads(body)
    except ValueError:
        raise _BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(request, dict):
        raise _BadRequest("Invalid type for request body: expected an object.")
    if not isinstance(request.get("messages"), list):
        raise _BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    for name in ("n", "max_tokens", "max_completion_tokens"):
        value = request.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= 1_000_000_000):
            raise _BadRequest("Invalid '%s': expected an integer of 1 or more." % name, name, "invalid_value")
    if not isinstance(request.get("tools") or [], list):
        raise _BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    return request


def _answer(request: JSON, options: _Options, call_id: str) -> _Answer:
    messages = request["messages"]
    reasoning = _word_pieces(reasoning_for(messages)) if options.reasoning else []
    if options.content_events is not None:
        content = _split(bench_content(options.content_events), _BENCH_PIECE)
    else:
        content = _word_pieces(reply_for(messages, words=options.words))
    limit = request.get("max_tokens") or request.get("max_completion_tokens")
    if limit is not None and limit < len(content):
        return _Answer(reasoning, content[:limit], None, "length")
    tools = request.get("tools")
    if tools:
        tool = tools[0] if isinstance(tools[0], dict) else {}
        function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
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
# The answer as JSON: a stream of chunks, or one chat.completion object
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


def _error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[str] = None) -> JSON:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may stay silent before its thread gives up
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: no request lines on stderr, and so never an Authorization header."""

    def handle(self) -> None:
        """Serve the connection; a client that went away ends it quietly, without a traceback."""
        try:
            super().handle()
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def do_GET(self) -> None:
        self._send_not_found("GET")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is not None:
            self._post(body)

    def _post(self, body: bytes) -> None:
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
            return self._send_not_found("POST")
        try:
            request = _parse_request(body)
        except _BadRequest as exc:
            return self._send_json(400, _error_body(str(exc), "invalid_request_error", exc.param, exc.code))
        options = self.server.options
        number = self.server.next_number()
        answers = [_answer(request, options, "call_local_%d_%d" % (number, i)) for i in range(request.get("n") or 1)]
        if request.get("stream"):
            chunks = iter_chunks(request, answers, number, padded=options.content_events is not None)
            self._send_stream(_dumps(chunk) for chunk in chunks)
        else:
            self._send_json(200, completion_object(request, answers, number))

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering a body the server will not read."""
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > _MAX_BODY:
            self.close_connection = True
            self._send_json(413 if length.isdigit() else 400,
                            _error_body("Invalid Content-Length: %.40r." % length, "invalid_request_error"))
            return None
        return self.rfile.read(int(length))

    def _send_not_found(self, method: str) -> None:
        message = "Invalid URL (%s %s)" % (method, self.path.split("?", 1)[0])
        self._send_json(404, _error_body(message, "invalid_request_error"))

    def _send_json(self, status: int, obj: JSON) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_stream(self, events: Iterable[str]) -> None:
        """Send each event the moment it is ready: one HTTP chunk each, or close-delimited."""
        options, stopping = self.server.options, self.server.stopping
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if options.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:  # HTTP/1.0 style: the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for number, data in enumerate(itertools.chain(events, ["[DONE]"])):
            if (number and options.pace and stopping.wait(options.pace)) or stopping.is_set():
                self.close_connection = True  # the server is stopping: cut the stream off
                return
            if options.stamp and data.startswith("{"):
                data = data[:-1] + ',"x_sent_ns":%d}' % time.perf_counter_ns()
            self._write_event(("data: %s\n\n" % data).encode("utf-8"), options.chunked)
        if options.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write_event(self, payload: bytes, chunked: bool) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    """A thread per connection; every connection is tracked so that stop() can end it."""

    daemon_threads = True
    block_on_close = False  # stop() closes and joins the handler threads itself, with a deadline
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], options: _Options) -> None:
        self.options = options
        self.stopping = threading.Event()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._open: Dict[socket.socket, threading.Thread] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can take seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def next_number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  daemon=self.daemon_threads)
        with self._lock:
            self._open[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down, then wait up to `timeout` seconds for the threads."""
        with self._lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler
                pass
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
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
        reasoning: stream `reasoning_for(messages)` before the content.
        words: make the content exactly this many words (`reply_for(messages, words=words)`).
        content_events: make the content this many events of a few characters, each event about
            250 bytes like OpenAI's, for benchmarks; the content is `bench_content(N)`.
        stamp: add `"x_sent_ns": time.perf_counter_ns()` to every chunk (see the module doc).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, pace: float = 0.0, chunked: bool = True,
                 reasoning: bool = True, words: Optional[int] = None, content_events: Optional[int] = None,
                 stamp: bool = False) -> None:
        for name, value in (("pace", pace), ("words", words), ("content_events", content_events)):
            if value is not None and value < 0:
                raise ValueError("%s must be 0 or more, got %r" % (name, value))
        options = _Options(pace, chunked, reasoning, words, content_events, stamp)
        self._server = _Server((host, port), options)
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. "http://127.0.0.1:8000/v1"."""
        host = str(self._server.server_address[0])
        return "http://%s:%d/v1" % ("127.0.0.1" if host in ("", "0.0.0.0") else host, self.port)

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
                                     description="A local OpenAI-compatible streaming chat server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 lets the OS choose (default 8000)")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between events (default 0.05)")
    parser.add_argument("--close-delimited", action="store_true", help="end bodies by closing, not chunked")
    parser.add_argument("--no-reasoning", action="store_true", help="send no reasoning")
    parser.add_argument("--words", type=int, help="content of exactly this many words")
    parser.add_argument("--content-events", type=int, metavar="N", help="benchmark content: N small events")
    parser.add_argument("--stamp", action="store_true", help='add "x_sent_ns" to every chunk')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    server = ChatServer(args.host, args.port, pace=args.pace, chunked=not args.close_delimited,
                        reasoning=not args.no_reasoning, words=args.words,
                        content_events=args.content_events, stamp=args.stamp)
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
