"""A local OpenAI-compatible chat server for demos, tests and benchmarks (127.0.0.1, stdlib only).

    python examples/server.py --port 8000 --pace 0.05

Streams like OpenAI: a role chunk, reasoning (`reasoning_content`), content a word at a time, a
tool call when the request has `tools`, a finish chunk, a usage chunk when
`stream_options.include_usage` is true, then `data: [DONE]`.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

REPLY = (
    "Here is a short story. A lighthouse keeper counted ships every night until the sea "
    "went quiet, and then she counted stars instead, one for each ship that never came home."
)
REASONING = "The user wants a reply. I will keep it short, friendly and complete."


def reply_for(messages: List[Dict[str, Any]], *, words: Optional[int] = None) -> str:
    """The deterministic reply the server streams for these messages."""
    if words is None:
        return REPLY
    base = REPLY.split()
    return " ".join(base[i % len(base)] for i in range(words))


def _pieces(text: str) -> List[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def events_for(request: Dict[str, Any], *, reasoning: bool = True) -> Iterator[Dict[str, Any]]:
    """The chunk objects of one streamed reply."""
    model = request.get("model") or "local-model"
    base = {"id": "chatcmpl-local-1", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_local"}

    def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> Dict[str, Any]:
        return dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    yield chunk({"role": "assistant", "content": ""})
    if reasoning:
        for piece in _pieces(REASONING):
            yield chunk({"reasoning_content": piece})
    text = reply_for(request.get("messages") or [])
    limit = request.get("max_tokens") or request.get("max_completion_tokens")
    pieces = _pieces(text)
    finish = "stop"
    if isinstance(limit, int) and limit < len(pieces):
        pieces, finish = pieces[:limit], "length"
    for piece in pieces:
        yield chunk({"content": piece})
    tools = request.get("tools") or []
    if tools and finish == "stop":
        name = tools[0].get("function", {}).get("name", "tool")
        arguments = json.dumps({"query": "lighthouse stories"})
        yield chunk({"tool_calls": [{"index": 0, "id": "call_local_1", "type": "function",
                                     "function": {"name": name, "arguments": ""}}]})
        for start in range(0, len(arguments), 8):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + 8]}}]})
        finish = "tool_calls"
    yield chunk({}, finish)
    if (request.get("stream_options") or {}).get("include_usage"):
        completion = len(pieces) + (len(_pieces(REASONING)) if reasoning else 0)
        yield dict(base, choices=[], usage={
            "prompt_tokens": 12, "completion_tokens": completion, "total_tokens": 12 + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": len(_pieces(REASONING)) if reasoning else 0}})


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet, and never logs a key
        pass

    def _json(self, status: int, obj: Dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._json(404, {"error": {"message": "Unknown path " + self.path, "type": "invalid_request_error", "param": None, "code": "not_found"}})
        try:
            request = json.loads(raw)
        except ValueError:
            return self._json(400, {"error": {"message": "Invalid JSON body", "type": "invalid_request_error", "param": None, "code": None}})
        try:
            self._stream(request)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(self, request: Dict[str, Any]) -> None:
        options = self.server.options
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        chunked = options["chunked"]
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        events = [json.dumps(c, separators=(",", ":")) for c in events_for(request, reasoning=options["reasoning"])]
        for data in events + ["[DONE]"]:
            payload = ("data: %s\n\n" % data).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
            self.wfile.flush()
            if options["pace"]:
                time.sleep(options["pace"])
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    options: Dict[str, Any]


class ChatServer:
    """The server in a background thread: `with ChatServer(pace=0.03) as srv: srv.url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, pace: float = 0.0,
                 chunked: bool = True, reasoning: bool = True) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.options = {"pace": pace, "chunked": chunked, "reasoning": reasoning}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/v1" % self.port

    def start(self) -> "ChatServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - interactive
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--close-delimited", action="store_true")
    args = parser.parse_args()
    server = ChatServer(args.host, args.port, pace=args.pace, chunked=not args.close_delimited)
    print("serving on %s (Ctrl-C stops)" % server.url, flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
