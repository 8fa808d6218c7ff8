"""Provider transcripts (tests/data/streams) replayed over real HTTP on 127.0.0.1 in several
chunkings, through the sync and async clients; the Completion or the error must match."""

import asyncio
import http.server
import json
import pathlib
import threading

import pytest

import streamlite

DATA = pathlib.Path(__file__).parent / "data" / "streams"
NAMES = sorted(p.stem for p in DATA.glob("*.sse"))
KEY = "sk-SENTINEL-replay-4d2e"
CHUNKINGS = {"whole": None, "7-bytes": 7, "1-byte": 1}


def test_transcripts_found():
    assert len(NAMES) >= 30


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        name, size = self.path.split("/")[1:3]
        meta = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
        body = (DATA / (name + ".sse")).read_bytes()
        self.send_response(meta["status"])
        for key, value in meta["headers"].items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = int(size) if size != "0" else len(body) or 1
        try:
            for start in range(0, len(body), step):
                piece = body[start : start + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client closing at [DONE] resets the idle keep-alive connection: expected


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _summary(completion):
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


def _check(name, completion, error):
    meta = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
    expected = meta["expected"]
    got = _summary(completion if error is None else error.partial)
    for key, value in got.items():
        assert value == expected[key], key
    for per in expected.get("per_choice", []):
        choice = (completion or error.partial).choices[per["index"]]
        assert (choice.content, choice.finish_reason) == (per["content"], per["finish_reason"])
    wanted = expected.get("error")
    if wanted is None:
        assert error is None
    elif wanted["message"] == "incomplete stream":
        assert isinstance(error, streamlite.APIConnectionError)
    else:
        assert isinstance(error, streamlite.APIError)
        assert (error.message, error.code) == (wanted["message"], wanted.get("code"))
        if meta["status"] >= 400:
            assert error.status == meta["status"]
            assert str(error).startswith(str(meta["status"]))
    if error is not None:
        assert KEY not in str(error) and KEY not in repr(error)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
def test_replay_sync(server, name, chunking):
    size = CHUNKINGS[chunking] or 0
    client = streamlite.Client("%s/%s/%d/v1" % (server, name, size), KEY, max_retries=0, read_timeout=10)
    completion = error = None
    try:
        completion = client.complete("hi", model="m")
    except streamlite.StreamliteError as exc:
        error = exc
    _check(name, completion, error)


@pytest.mark.parametrize("name", NAMES)
def test_replay_async(server, name):
    client = streamlite.AsyncClient("%s/%s/5/v1" % (server, name), KEY, max_retries=0, read_timeout=10)

    async def run():
        try:
            return await client.acomplete("hi", model="m"), None
        except streamlite.StreamliteError as exc:
            return None, exc

    completion, error = asyncio.run(run())
    _check(name, completion, error)
