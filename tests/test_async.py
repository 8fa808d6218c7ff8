"""AsyncClient against real servers on 127.0.0.1: cancellation closes the connection, many
streams share one loop, timeouts and errors behave as in the sync client."""

import asyncio
import time

import pytest

import streamlite
from loopback import FaultServer, close, hold, send
from server import ChatServer, reply_for

KEY = "sk-SENTINEL-async-5e0b"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\n'


def HoldingServer():
    """Sends one event and then nothing; records when the client's side of the socket closed
    (server.peer_closed_at[0], after server.wait_peer_closed())."""
    return FaultServer([send(HEAD + b"%x\r\n%s\r\n" % (len(EVENT), EVENT)), hold()], lifetime=10.0)


def test_cancelling_the_task_mid_stream_closes_the_connection():
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

    with HoldingServer() as server:
        cancelled_at = asyncio.run(run())
        server.wait_peer_closed(0, timeout=10)
        closed_at = server.peer_closed_at.get(0)
    assert [d.text for d in got] == ["first"]
    assert closed_at is not None, "the client never closed the connection"
    assert closed_at - cancelled_at < 2.0


def test_leaving_the_loop_early_closes_the_connection():

    async def run():
        client = streamlite.AsyncClient(server.url, KEY, read_timeout=30)
        async with client.astream("hi") as stream:
            async for delta in stream:
                assert delta.text == "first"
                break
        return time.monotonic()

    with HoldingServer() as server:
        left_at = asyncio.run(run())
        server.wait_peer_closed(0, timeout=10)
        closed_at = server.peer_closed_at.get(0)
    assert closed_at is not None and closed_at - left_at < 2.0


def test_idle_read_timeout_keeps_the_partial_result():
    async def run():
        client = streamlite.AsyncClient(server.url, KEY, read_timeout=0.3)
        stream = client.astream("hi")
        async with stream:
            async for _ in stream:
                pass

    with HoldingServer() as server:
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
    body = b'{"error":{"message":"slow down","type":"rate_limit","code":"rate_limited"}}'
    reply = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
             b"x-request-id: req_42\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    with FaultServer([send(reply), close()], lifetime=10.0) as server:
        url = server.url
        with pytest.raises(streamlite.APIError) as caught:
            asyncio.run(streamlite.AsyncClient(url, KEY, max_retries=0).acomplete("hi"))
    error = caught.value
    assert (error.status, error.message, error.code, error.request_id) == (429, "slow down", "rate_limited", "req_42")
    assert KEY not in str(error) and KEY not in repr(error)
