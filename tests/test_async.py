"""AsyncClient against real servers on 127.0.0.1: cancellation closes the connection, many
streams share one loop, timeouts and errors behave as in the sync client."""

import asyncio
import socket
import threading
import time

import pytest

import streamlite
from server import ChatServer, reply_for

KEY = "sk-SENTINEL-async-5e0b"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\n'


class HoldingServer:
    """Sends one event and then nothing; records when the client's side of the socket closed."""

    def __init__(self, bound=10.0):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(bound)
        self.closed_at = None
        self.bound = bound
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1" % self.listener.getsockname()[1]

    def _run(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(self.bound)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(HEAD + b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
            try:
                while conn.recv(65536):
                    pass
                self.closed_at = time.monotonic()
            except OSError:
                self.closed_at = time.monotonic()
        self.listener.close()


def test_cancelling_the_task_mid_stream_closes_the_connection():
    server = HoldingServer()
    got = []

    async def consume(client):
        async with client.astream("hi") as stream:
            async for delta in stream:
                got.append(delta)

    async def run():
        client = streamlite.AsyncClient(server.url, KEY, read_timeout=30)
        task = asyncio.ensure_future(consume(client))
        while not got:
            await asyncio.sleep(0.005)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled_at

    cancelled_at = asyncio.run(run())
    server.thread.join(10)
    assert [d.text for d in got] == ["first"]
    assert server.closed_at is not None, "the client never closed the connection"
    assert server.closed_at - cancelled_at < 2.0


def test_leaving_the_loop_early_closes_the_connection():
    server = HoldingServer()

    async def run():
        client = streamlite.AsyncClient(server.url, KEY, read_timeout=30)
        async with client.astream("hi") as stream:
            async for delta in stream:
                assert delta.text == "first"
                break
        return time.monotonic()

    left_at = asyncio.run(run())
    server.thread.join(10)
    assert server.closed_at is not None and server.closed_at - left_at < 2.0


def test_idle_read_timeout_keeps_the_partial_result():
    server = HoldingServer()

    async def run():
        client = streamlite.AsyncClient(server.url, KEY, read_timeout=0.3)
        stream = client.astream("hi")
        async with stream:
            async for _ in stream:
                pass

    started = time.monotonic()
    with pytest.raises(streamlite.APITimeoutError) as caught:
        asyncio.run(run())
    elapsed = time.monotonic() - started
    assert caught.value.which == "read"
    assert 0.25 < elapsed < 3.0
    assert caught.value.partial is not None and caught.value.partial.content == "first"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_many_concurrent_streams_in_one_loop_keep_their_content():
    with ChatServer(pace=0.001) as server:

        async def one(client, i):
            text = []
            async with client.astream("hi %d" % i) as stream:
                async for delta in stream:
                    if isinstance(delta, streamlite.ContentDelta):
                        text.append(delta.text)
            return "".join(text), stream.completion

        async def run():
            client = streamlite.AsyncClient(server.url, KEY)
            return await asyncio.gather(*[one(client, i) for i in range(32)])

        results = asyncio.run(run())
    assert len(results) == 32
    for text, completion in results:
        assert text == reply_for([]) == completion.content
        assert completion.finish_reason == "stop"


def test_http_error_is_the_same_typed_error_as_sync():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    body = b'{"error":{"message":"slow down","type":"rate_limit","code":"rate_limited"}}'

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                         b"x-request-id: req_42\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/v1" % listener.getsockname()[1]
    with pytest.raises(streamlite.APIError) as caught:
        asyncio.run(streamlite.AsyncClient(url, KEY, max_retries=0).acomplete("hi"))
    thread.join(10)
    error = caught.value
    assert (error.status, error.message, error.code, error.request_id) == (429, "slow down", "rate_limited", "req_42")
    assert KEY not in str(error) and KEY not in repr(error)
