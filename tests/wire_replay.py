"""Replay of recorded Responses / legacy completions bodies (tests/data/responses, tests/data/completions)
over real HTTP on 127.0.0.1, shared by test_responses.py and test_completions_api.py.

The server answers POST /<corpus>/<name>/<size>/v1/<endpoint> with the body of <name>.sse in
chunks of <size> bytes (0: whole), with the status and headers of <name>.json, and records each
request (path and JSON body)."""

import asyncio
import http.server
import json
import pathlib
import threading

import streamlite

DATA = pathlib.Path(__file__).parent / "data"
KEY = "sk-SENTINEL-wire-replay-8b1f"
CHUNKINGS = {"whole": 0, "7-bytes": 7, "1-byte": 1}


def names(corpus):
    return sorted(p.stem for p in (DATA / corpus).glob("*.sse"))


def meta(corpus, name):
    return json.loads((DATA / corpus / (name + ".json")).read_text(encoding="utf-8"))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        corpus, name, size = self.path.split("/")[1:4]
        self.server.requests.append({"path": self.path, "body": json.loads(body)})
        info = meta(corpus, name)
        data = (DATA / corpus / (name + ".sse")).read_bytes()
        self.send_response(info["status"])
        for key, value in info["headers"].items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = int(size) or len(data) or 1
        try:
            # several chunks per write: a 1-byte chunking stays 1-byte on the wire, but fast
            out = []
            for start in range(0, len(data), step):
                piece = data[start : start + step]
                out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
                if len(out) >= 64:
                    self.wfile.write(b"".join(out))
                    self.wfile.flush()
                    out = []
            out.append(b"0\r\n\r\n")
            self.wfile.write(b"".join(out))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class ReplayServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # a client closing early resets the connection: expected

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def run_sync(base, api, prompt="hi", **kwargs):
    """(deltas, completion, error) of one call through Client.stream."""
    client = streamlite.Client(base, KEY, max_retries=0, read_timeout=10)
    deltas, error = [], None
    stream = None
    try:
        with client.stream(prompt, model="m", api=api, **kwargs) as stream:
            for delta in stream:
                deltas.append(delta)
    except streamlite.StreamliteError as exc:
        error = exc
    completion = stream.completion if (stream is not None and error is None) else None
    return deltas, completion, error


def run_async(base, api, prompt="hi", **kwargs):
    async def go():
        client = streamlite.AsyncClient(base, KEY, max_retries=0, read_timeout=10)
        deltas, error, stream = [], None, None
        try:
            async with client.astream(prompt, model="m", api=api, **kwargs) as stream:
                async for delta in stream:
                    deltas.append(delta)
        except streamlite.StreamliteError as exc:
            error = exc
        return deltas, (stream.completion if (stream is not None and error is None) else None), error

    return asyncio.run(go())


def summary(completion):
    if completion is None:
        return dict(content="", reasoning="", refusal=None, finish_reason=None, tool_calls=[], usage=None, choices=0)
    return dict(
        content=completion.content,
        reasoning=completion.reasoning,
        refusal=completion.refusal,
        finish_reason=completion.finish_reason,
        tool_calls=[dict(index=t.index, id=t.id, name=t.name, arguments=t.arguments) for t in completion.tool_calls],
        usage=dict(completion.usage.raw) if completion.usage else None,
        choices=len(completion.choices),
    )


def check(corpus, name, deltas, completion, error):
    """The Completion (or the error and its .partial) and the deltas match <name>.json."""
    info = meta(corpus, name)
    expected = info["expected"]
    result = completion if error is None else error.partial
    got = summary(result)
    for key, value in got.items():
        assert value == expected[key], (key, value, expected[key])
    if "usage_fields" in expected:
        usage = result.usage if result is not None else None
        fields = None if usage is None else {k: getattr(usage, k) for k in expected["usage_fields"] or {}}
        assert fields == expected["usage_fields"]
    for key in ("id", "model", "created"):
        if key in expected:
            assert getattr(result, key) == expected[key], key
    for per in expected.get("per_choice", []):
        choice = result.choices[per["index"]]
        assert (choice.content, choice.finish_reason) == (per["content"], per["finish_reason"])
    wanted = expected.get("error")
    if wanted is None:
        assert error is None, error
    elif wanted["message"] == "incomplete stream":
        assert isinstance(error, streamlite.APIConnectionError), error
    else:
        assert isinstance(error, streamlite.APIError), error
        assert (error.message, error.code) == (wanted["message"], wanted.get("code"))
        if info["status"] >= 400:
            assert error.status == info["status"]
    if error is not None:
        assert KEY not in str(error) and KEY not in repr(error)
        if info["status"] < 400:
            assert error.partial is not None
    # the deltas handed out are exactly what the Completion holds
    text = lambda kind: "".join(d.text for d in deltas if isinstance(d, kind) and d.choice == 0)
    assert text(streamlite.ContentDelta) == got["content"]
    assert text(streamlite.ReasoningDelta) == got["reasoning"]
    assert (text(streamlite.RefusalDelta) or None) == got["refusal"]
    finishes = [d for d in deltas if isinstance(d, streamlite.Finish) and d.choice == 0]
    assert [d.reason for d in finishes] == ([got["finish_reason"]] if got["finish_reason"] else [])
    for call in got["tool_calls"]:
        pieces = [d for d in deltas if isinstance(d, streamlite.ToolCallDelta) and d.index == call["index"]]
        assert "".join(d.arguments for d in pieces) == call["arguments"]
        assert [d.id for d in pieces if d.id][:1] == [call["id"]]
