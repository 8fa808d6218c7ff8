"""Connection reuse (keep-alive), through Client and AsyncClient, against a loopback server that
counts connections and requests: sequential streams share one connection, a server that closes
idle connections never sees a request twice, abandoned streams do not poison the next request,
concurrent streams never share a connection, keep_alive=False and close() do what they say."""

import asyncio
import gc
import platform
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import streamlite
from loopback import http_head

TIMEOUT = 20.0  # the server stops by itself after this many seconds


def sse(words, *, model="m"):
    chunks = [{"choices": [{"index": 0, "delta": {"content": word}}]} for word in words]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join("data: %s\n\n" % json.dumps(chunk) for chunk in chunks) + "data: [DONE]\n\n"


class CountingServer:
    """HTTP/1.1 with persistent connections. `connections` counts accepted connections,
    `requests` lists (connection number, request body) in arrival order. `idle_close` makes the
    server close a connection that stays idle that long after a response; `keep_alive_header`
    sends `Keep-Alive: timeout=N`; `close_after` answers with `Connection: close`; `pace`
    spaces the events."""

    def __init__(self, *, idle_close=None, keep_alive_header=None, close_after=False, pace=0.0, hold_done=0.0):
        server = self
        self.connections = 0
        self.requests = []
        self.closed_by_peer = []  # connection numbers whose client closed the connection
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_close or TIMEOUT

            def setup(self):
                super().setup()
                with server.lock:
                    server.connections += 1
                    self.number = server.connections

            def handle_one_request(self):
                self.raw_requestline = None
                try:
                    super().handle_one_request()
                except OSError:
                    self.close_connection = True
                if self.raw_requestline == b"":  # the client closed the connection
                    with server.lock:
                        server.closed_by_peer.append(self.number)

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.number, body, self.headers.get("Connection")))
                words = body["messages"][-1]["content"].split()
                payload = sse(words).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                if keep_alive_header is not None:
                    self.send_header("Keep-Alive", "timeout=%d" % keep_alive_header)
                if close_after:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                events = payload.split(b"\n\n")[:-1]
                try:
                    for event in events:
                        if pace:
                            time.sleep(pace)
                        data = event + b"\n\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                except OSError:  # the client closed the connection mid-stream
                    with server.lock:
                        server.closed_by_peer.append(self.number)
                    self.close_connection = True
                    return
                if hold_done:
                    time.sleep(hold_done)  # [DONE] is out; the end of the body comes later
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        deadline = time.monotonic() + TIMEOUT
        self._server.timeout = 0.05
        while time.monotonic() < deadline and not getattr(self, "_stop", False):
            self._server.handle_request()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1" % self._server.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join(5)
        self._server.server_close()


def options(**extra):
    return dict(dict(api_key="sk-test-keepalive-0123456789", proxy="", max_retries=2, read_timeout=5), **extra)


def run_sync(url, prompts, pause=0.0, **client_options):
    """Stream each prompt in turn with one Client, `pause` seconds apart; return (contents, stats)."""
    contents, stats = [], []
    with streamlite.Client(url, **options(**client_options)) as client:
        for number, prompt in enumerate(prompts):
            if number:
                time.sleep(pause)
            completion = client.complete(prompt, model="m")
            contents.append(completion.content)
            stats.append(completion.stats)
    return contents, stats


def run_async(url, prompts, pause=0.0, **client_options):
    async def go():
        contents, stats = [], []
        async with streamlite.AsyncClient(url, **options(**client_options)) as client:
            for number, prompt in enumerate(prompts):
                if number:
                    await asyncio.sleep(pause)
                completion = await client.acomplete(prompt, model="m")
                contents.append(completion.content)
                stats.append(completion.stats)
        return contents, stats

    return asyncio.run(go())


RUNNERS = {"sync": run_sync, "async": run_async}


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    return RUNNERS[request.param]


PROMPTS = ["one two", "three four five", "six", "seven eight", "nine ten eleven twelve"]


def test_sequential_streams_share_one_connection(run):
    with CountingServer() as server:
        contents, stats = run(server.url, PROMPTS)
    assert contents == ["".join(prompt.split()) for prompt in PROMPTS]
    assert server.connections == 1 and len(server.requests) == len(PROMPTS)
    assert [s.connection_reused for s in stats] == [False] + [True] * (len(PROMPTS) - 1)
    assert all(connection_header is None for _, _, connection_header in server.requests)


def test_keep_alive_false_opens_one_connection_per_request_and_says_close(run):
    with CountingServer() as server:
        contents, stats = run(server.url, PROMPTS[:3], keep_alive=False)
    assert contents == ["onetwo", "threefourfive", "six"]
    assert server.connections == 3
    assert [header for _, _, header in server.requests] == ["close"] * 3
    assert not any(s.connection_reused for s in stats)


def test_a_server_that_closes_idle_connections_never_sees_a_request_twice(run):
    with CountingServer(idle_close=0.2) as server:
        # the server closes each idle connection after 0.2 s, before the next request
        contents, stats = run(server.url, PROMPTS[:3], pause=0.5)
        contents2, stats2 = run(server.url, ["again"])  # and a fresh client still works
    bodies = [json.dumps(body) for _, body, _ in server.requests]
    assert len(bodies) == len(set(bodies)) == 4  # each request arrived exactly once
    assert contents == ["onetwo", "threefourfive", "six"] and contents2 == ["again"]
    assert all(s.retries == 0 and not s.connection_reused for s in stats)
    assert server.connections == 4


def test_idle_timeout_from_the_keep_alive_header_is_honoured(run):
    with CountingServer(keep_alive_header=1) as server:
        client_prompts = ["a b", "c d"]
        if run is run_sync:
            with streamlite.Client(server.url, **options()) as client:
                client.complete(client_prompts[0], model="m")
                time.sleep(0.9)  # past 80 % of the server's 1 s: the connection is not reused
                second = client.complete(client_prompts[1], model="m")
        else:
            async def go():
                async with streamlite.AsyncClient(server.url, **options()) as client:
                    await client.acomplete(client_prompts[0], model="m")
                    await asyncio.sleep(0.9)
                    return await client.acomplete(client_prompts[1], model="m")

            second = asyncio.run(go())
    assert second.content == "cd" and not second.stats.connection_reused
    assert server.connections == 2


def test_connection_close_from_the_server_is_not_reused(run):
    with CountingServer(close_after=True) as server:
        contents, stats = run(server.url, PROMPTS[:3])
    assert contents == ["onetwo", "threefourfive", "six"]
    assert server.connections == 3 and not any(s.connection_reused for s in stats)


def test_an_abandoned_stream_closes_its_connection_and_does_not_poison_the_next(run):
    with CountingServer(pace=0.02) as server:
        if run is run_sync:
            with streamlite.Client(server.url, **options()) as client:
                with client.stream("a b c d e f", model="m") as stream:
                    first = next(iter(stream))
                after = client.complete("g h", model="m")
        else:
            async def go():
                async with streamlite.AsyncClient(server.url, **options()) as client:
                    async with client.astream("a b c d e f", model="m") as stream:
                        first = await stream.__anext__()
                    return first, await client.acomplete("g h", model="m")

            first, after = asyncio.run(go())
    assert first.text == "a"
    assert after.content == "gh" and not after.stats.connection_reused
    assert server.connections == 2 and len(server.requests) == 2


def test_concurrent_streams_never_share_a_connection(run):
    prompts = ["w%d x%d y%d" % (i, i, i) for i in range(8)]
    with CountingServer(pace=0.005) as server:
        if run is run_sync:
            results = [None] * len(prompts)
            with streamlite.Client(server.url, **options()) as client:
                def work(i):
                    results[i] = client.complete(prompts[i], model="m").content

                threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(10)
        else:
            async def go():
                async with streamlite.AsyncClient(server.url, **options()) as client:
                    done = await asyncio.gather(*(client.acomplete(p, model="m") for p in prompts))
                    return [c.content for c in done]

            results = asyncio.run(go())
    assert results == ["".join(p.split()) for p in prompts]
    by_connection = {}
    for number, body, _ in server.requests:
        by_connection.setdefault(number, []).append(body)
    assert server.connections == len(by_connection) >= 2  # in flight together: their own connections


def test_the_end_of_the_body_is_awaited_briefly_after_done(run):
    # [DONE] arrives, the zero-size last chunk 50 ms later: still within the grace, reused
    with CountingServer(hold_done=0.05) as server:
        contents, stats = run(server.url, ["a", "b"])
    assert stats[1].connection_reused and server.connections == 1


def test_close_releases_idle_connections():
    with CountingServer() as server:
        client = streamlite.Client(server.url, **options())
        client.complete("a", model="m")
        client.close()
        deadline = time.monotonic() + 5
        while not server.closed_by_peer and time.monotonic() < deadline:
            time.sleep(0.01)
    assert server.closed_by_peer == [1]


def test_aclose_releases_idle_connections():
    async def go(url):
        client = streamlite.AsyncClient(url, **options())
        await client.acomplete("a", model="m")
        await client.aclose()
        await asyncio.sleep(0.05)

    with CountingServer() as server:
        asyncio.run(go(server.url))
        deadline = time.monotonic() + 5
        while not server.closed_by_peer and time.monotonic() < deadline:
            time.sleep(0.01)
    assert server.closed_by_peer == [1]


def test_module_level_complete_keeps_one_connection_per_call():
    with CountingServer() as server:
        for prompt in ("a", "b"):
            assert streamlite.complete(prompt, model="m", base_url=server.url, **options()).content == prompt
    assert server.connections == 2
    assert [header for _, _, header in server.requests] == ["close", "close"]


def test_a_stream_iterated_without_a_reference_yields_everything_and_leaves_the_connection_reusable():
    with CountingServer() as server:
        with streamlite.Client(server.url, **options()) as client:
            first = [d.text for d in client.stream("a b c", model="m") if isinstance(d, streamlite.ContentDelta)]
            second = [d.text for d in client.stream("d e", model="m") if isinstance(d, streamlite.ContentDelta)]
        module = [d.text for d in streamlite.stream("f g", model="m", base_url=server.url, **options())
                  if isinstance(d, streamlite.ContentDelta)]
    assert (first, second, module) == (["a", "b", "c"], ["d", "e"], ["f", "g"])
    assert server.connections == 2  # the client's two streams shared one; the module-level call has its own


def test_breaking_out_of_a_module_level_stream_closes_its_connection_at_once():
    with CountingServer(pace=0.05) as server:
        for delta in streamlite.stream("a b c d e f g h", model="m", base_url=server.url, **options()):
            break  # no reference to the Stream is left: the socket closes now, not at the next GC
        if platform.python_implementation() == "PyPy":  # no reference counting: freed by the GC
            for _ in range(3):  # the generator's finalizer runs a collection after the object's
                gc.collect()
        deadline = time.monotonic() + 2
        while not server.closed_by_peer and time.monotonic() < deadline:
            time.sleep(0.01)
    assert delta.text == "a" and server.closed_by_peer == [1]


def _keep_alive_response(status, ctype, body):
    return http_head(status, headers=[("Content-Type", ctype), ("Content-Length", str(len(body)))]) + body


_HELLO = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
_FAILED_CALLS = {
    "429": (_keep_alive_response(429, "application/json", b'{"error":{"message":"slow down"}}'), streamlite.APIError),
    "error-event": (_keep_alive_response(200, "text/event-stream", _HELLO + b'data: {"error":{"message":"busy"}}\n\n'),
                    streamlite.APIError),
    "invalid-event": (_keep_alive_response(200, "text/event-stream", _HELLO + b"data: {nope\n\n"), streamlite.ProtocolError),
    "cut-off": (_keep_alive_response(200, "text/event-stream", _HELLO), streamlite.APIConnectionError),
    "two-gzip-layers": (http_head(200, headers=[("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip, gzip"),
                                                ("Content-Length", "4")]) + b"\x1f\x8b\x08\x00", streamlite.ProtocolError),
    "503-two-gzip-layers": (http_head(503, headers=[("Content-Type", "text/html"), ("Content-Encoding", "gzip, gzip"),
                                                    ("Content-Length", "4")]) + b"\x1f\x8b\x08\x00", streamlite.APIError),
    "json-not-json": (_keep_alive_response(200, "application/json", b'{"x": '), streamlite.ProtocolError),
}


def _fail_once(url, use_async, how):
    """One failed call through a client made and dropped here; return the error."""
    options = dict(max_retries=0, read_timeout=2.0, proxy="")
    if use_async:
        async def main():
            client = streamlite.AsyncClient(url, "sk-test", **options)
            if how == "complete":
                await client.acomplete("hi")
            else:
                async with client.astream("hi") as stream:
                    async for _ in stream:
                        pass

        call = lambda: asyncio.run(main())  # noqa: E731
    else:
        def call():
            client = streamlite.Client(url, "sk-test", **options)
            if how == "complete":
                client.complete("hi")
            else:
                for _ in client.stream("hi"):
                    pass
    try:
        call()
    except streamlite.StreamliteError as exc:
        return exc
    return None


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("how", ["complete", "stream"])
@pytest.mark.parametrize("scenario", sorted(_FAILED_CALLS))
def test_a_failed_call_leaves_no_cycle_that_keeps_the_clients_connection_open(use_async, how, scenario):
    """A call that fails on a connection the server keeps alive: once the caller drops the
    error and the client, the connection closes at once, without waiting for the cyclic garbage
    collector (a frame that holds the exception it raises would form a cycle through the
    traceback, keeping every frame above it, the client and its pooled connection)."""
    from loopback import FaultServer, hold, send

    answer, kind = _FAILED_CALLS[scenario]
    with FaultServer([send(answer), hold()]) as server:
        gc.disable()
        try:
            error = _fail_once(server.url, use_async, how)
            assert isinstance(error, kind), repr(error)
            del error
            if platform.python_implementation() == "PyPy":  # no reference counting: the GC frees it
                gc.collect()
            closed = server.wait_peer_closed(0, 1.0)
        finally:
            gc.enable()
    assert closed, "the connection stayed open until a garbage collection"
