"""Issue 13's promises for the connection pool, retries and batch, under attack (a review found
each of these broken): an on_retry hook that raises inside a batch, leaving a batch early while
a worker waits for its answer or sleeps before a retry, stale idle connections on descriptors
numbered past 1024, close() while streams run. Every server is a bounded loopback FaultServer on
127.0.0.1; a call that could hang runs in a daemon thread joined with a timeout.
"""

import asyncio
import gc
import os
import resource
import sys
import threading
import time
import warnings
import weakref

import pytest

import streamlite
from loopback import FaultServer, chunked, close, hold, reset, response_head, send, sleep

KEY = "sk-test-findings-pool-0123456789"
SSE = b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
OK_CLOSE = response_head(200, length=len(SSE)) + SSE  # Connection: close
OK_KEEP = response_head(200, chunked=True, keep_alive=True) + b"".join(chunked(SSE))  # reusable
BUSY = response_head(503, "Service Unavailable", ctype="application/json", headers=["Retry-After: 0"],
                     length=2) + b"{}"
RATE_LIMITED = response_head(429, "Too Many Requests", ctype="application/json", headers=["Retry-After: 1"],
                             length=2) + b"{}"

MODES = ["sync", "async"]


def prompt_of(request):
    return request.json()["messages"][-1]["content"]


def make_client(mode, url, **options):
    options = dict(dict(api_key=KEY, proxy="", read_timeout=10), **options)
    return (streamlite.Client if mode == "sync" else streamlite.AsyncClient)(url, **options)


def run_batch(mode, client, prompts, on_result=None, **options):
    """Every BatchResult of client.batch / aclient.abatch (stops when on_result returns True)."""
    results = []
    if mode == "sync":
        gen = client.batch(prompts, **options)
        for result in gen:
            results.append(result)
            if on_result is not None and on_result(result):
                break
        gen.close()  # what dropping it does at once on CPython; PyPy waits for its GC otherwise
        return results

    async def go():
        gen = client.abatch(prompts, **options)
        try:
            async for result in gen:
                results.append(result)
                if on_result is not None and on_result(result):
                    break
        finally:
            await gen.aclose()

    asyncio.run(go())
    return results


def in_thread(fn, timeout):
    """Run fn() in a daemon thread; (finished, value or exception)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), box.get("value")


# 1. batch: an on_retry hook that raises hangs the batch (or loses requests silently) ##########


@pytest.mark.parametrize("mode", MODES)
def test_batch_does_not_hang_when_on_retry_raises(mode):
    """A worker whose request's on_retry hook raises dies without telling the plan: the plan
    keeps counting that request as in flight, so the other worker waits for it forever and the
    batch never ends (the hook's exception is only printed by threading.excepthook, or swallowed
    by gather in abatch). Expected: the batch ends, either raising the hook's error or giving
    that request a failed BatchResult."""

    def script(index, request):
        return [send(BUSY if prompt_of(request) == "bad" else OK_CLOSE), close()]

    def hook(attempt, error, delay):
        raise RuntimeError("the on_retry hook failed")

    with FaultServer(script, max_connections=20, lifetime=15) as server:
        client = make_client(mode, server.url, max_retries=1, on_retry=hook)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            finished, value = in_thread(lambda: run_batch(mode, client, ["bad", "good"], concurrency=2), 6.0)
        assert finished, "the batch hung after an on_retry hook raised"
        if not isinstance(value, BaseException):
            ids = sorted(result.custom_id for result in value)
            assert ids == ["line-1", "line-2"], "a request vanished without a result: %r" % (ids,)


@pytest.mark.parametrize("mode", MODES)
def test_batch_never_drops_a_request_silently_when_on_retry_raises(mode):
    """Every worker's hook raises: the batch 'ends' with no result and no exception at all."""

    def hook(attempt, error, delay):
        raise RuntimeError("the on_retry hook failed")

    with FaultServer([send(BUSY), close()], max_connections=20, lifetime=15) as server:
        client = make_client(mode, server.url, max_retries=1, on_retry=hook)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            finished, value = in_thread(lambda: run_batch(mode, client, ["a", "b"], concurrency=2), 6.0)
        assert finished
        assert isinstance(value, BaseException) or len(value) == 2, (
            "batch ended with %r: the requests were lost without a result or an error" % (value,))


# 2. Client.batch: leaving the loop early does not stop the workers ############################


def batch_threads():
    return [thread for thread in threading.enumerate() if thread.name == "streamlite-batch"]


def test_leaving_batch_early_stops_a_worker_waiting_for_its_response():
    """README: "Leaving the loop early stops the workers." A worker still waiting for its
    response head is inside client.stream() (not yet in `streams`), so stop() cannot close it:
    leaving the loop blocks 5 s (the join), then returns with the worker thread and its socket
    still alive until read_timeout. (AsyncClient.abatch cancels its tasks: it holds.)"""
    gc.disable()
    try:
        def script(index, request):
            return [send(OK_CLOSE), close()] if prompt_of(request) == "fast" else [hold(12)]

        with FaultServer(script, max_connections=4, lifetime=15) as server:
            client = make_client("sync", server.url, read_timeout=10)
            started = time.monotonic()
            finished, value = in_thread(lambda: run_batch("sync", client, ["slow", "fast"], lambda r: True,
                                                          concurrency=2), 12.0)
            left = time.monotonic() - started
            assert finished and not isinstance(value, BaseException)
            assert left < 3.0, "leaving the batch loop took %.1f s" % left  # it was the 5 s join's
            slow = [index for index, request in enumerate(server.requests) if prompt_of(request) == "slow"]
            assert server.wait_peer_closed(slow[0] if slow else 0, timeout=1.0), "the held request's socket stayed open"
            for thread in batch_threads():  # stop() has joined them; any left is ending at most
                thread.join(2.0)
            assert not batch_threads(), "a batch worker is still running after the loop was left"
    finally:
        gc.enable()


def test_leaving_batch_early_sends_no_more_requests():
    """A worker sleeping on a Retry-After inside the client's retry loop is not woken by
    stop(): after the caller has left the loop (and the 5 s join gave up), it wakes and sends
    the request again. Expected: no request goes out once the loop was left."""

    def script(index, request):
        return [send(OK_CLOSE if prompt_of(request) == "fast" else RATE_LIMITED), close()]

    with FaultServer(script, max_connections=20, lifetime=15) as server:
        client = make_client("sync", server.url, max_retries=3)
        finished, value = in_thread(lambda: run_batch("sync", client, ["limited", "fast"], lambda r: True,
                                                      concurrency=2), 12.0)
        assert finished and not isinstance(value, BaseException)
        sent_when_left = len(server.requests)
        time.sleep(1.5)  # past the server's Retry-After: 1: a worker still waiting would send now
        assert len(server.requests) == sent_when_left, (
            "%d request(s) sent after the batch loop was left" % (len(server.requests) - sent_when_left))


# 3. Stale idle connections are not detected once the socket's descriptor is >= 1024 ##########


def test_stale_connection_detected_with_high_file_descriptors():
    """_SyncConnection.is_stale uses select.select(), which raises ValueError for a descriptor
    >= FD_SETSIZE (1024); the ValueError is taken as "not stale". In a process with more than
    ~1000 files open (any busy server), an idle connection the server closed is reused: with
    max_retries=0 the call fails with "the server closed the connection before responding"
    (with retries, it costs a retry and an on_retry report). README: a stale idle connection
    is closed and another used; "Neither is a retry". (AsyncClient checks at_eof(): it holds.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("RLIMIT_NOFILE too low to open 1100 descriptors")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        with FaultServer([send(OK_KEEP), sleep(0.2), close()], max_connections=4, lifetime=15) as server:
            with make_client("sync", server.url, max_retries=0) as client:
                assert client.complete("a").content == "ok"
                assert server.wait_ended(1, timeout=3)  # the server closed the idle connection
                time.sleep(0.1)
                completion = client.complete("b")  # must go out on a new connection
                assert completion.content == "ok"
                assert completion.stats.retries == 0
    finally:
        for fd in filler:
            os.close(fd)


# 4. close()/aclose() while streams run: their connections go back into the closed client #####


@pytest.mark.parametrize("mode", MODES)
def test_connections_of_streams_ending_after_close_are_closed(mode):
    """close() (aclose()) only drains the idle connections present at that moment; streams
    running then put theirs back into the pool when they end, so a closed client that is still
    referenced (a module-level client, an object attribute) keeps those sockets open
    indefinitely (they expire only when a later request looks at the pool). Expected: once
    closed, a connection coming back is closed (or close() marks the client so)."""
    gc.disable()
    try:
        head = response_head(200, chunked=True, keep_alive=True)
        script = [send(head), sleep(0.4)] + [send(piece) for piece in chunked(SSE)] + [hold(8)]
        with FaultServer(script, max_connections=3, lifetime=15) as server:
            client = make_client(mode, server.url)
            if mode == "sync":
                threads = [threading.Thread(target=client.complete, args=("hi",)) for _ in range(3)]
                for thread in threads:
                    thread.start()
                assert server.wait_connections(3)
                time.sleep(0.1)
                client.close()  # from another thread, while the three streams run
                for thread in threads:
                    thread.join(5)
            else:
                async def go():
                    tasks = [asyncio.ensure_future(client.acomplete("hi")) for _ in range(3)]
                    while server.connections < 3:
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.1)
                    await client.aclose()  # while the three streams run
                    await asyncio.gather(*tasks)
                    await asyncio.sleep(0.5)  # the loop still runs: asyncio.run's own cleanup is not what is tested
                    return [server.wait_peer_closed(index, timeout=0) for index in range(3)]

                assert all(asyncio.run(go())), (
                    "the closed client still holds the connections of streams that ended after aclose()")
            assert all(server.wait_peer_closed(index, timeout=1.0) for index in range(3)), (
                "the closed client still holds the connections of streams that ended after close()")
            del client
    finally:
        gc.enable()


# close() while the request waits for its answer ##############################################


def test_aclose_from_another_task_while_the_request_waits_for_its_answer():
    """An AsyncStream exists before its request goes out (it is sent on `async with`), so
    aclose() from another task can come while the request waits for the response head: the
    opening side gets APIConnectionError at once ("the stream was closed"), not after
    read_timeout, and the socket is closed. (A sync Stream is returned only once its head came;
    the sync side of this is Client.batch's early exit, tested above.)"""
    with FaultServer([hold(12)], lifetime=15) as server:
        client = make_client("async", server.url, read_timeout=10, max_retries=0)

        async def go():
            astream = client.astream("hi")

            async def closer():
                while server.connections < 1:
                    await asyncio.sleep(0.01)
                await astream.aclose()

            task = asyncio.ensure_future(closer())
            try:
                async with astream:
                    pass
            finally:
                await task

        started = time.monotonic()
        with pytest.raises(streamlite.APIConnectionError) as raised:
            asyncio.run(go())
        took = time.monotonic() - started
        assert "closed" in str(raised.value)
        assert took < 3.0, "the close took effect only after %.1f s" % took
        assert server.wait_peer_closed(0, 2.0), "the socket stayed open"


# Races of close() and cancellation with a request under way (a second review) #####


EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
ERR_400 = response_head(400, "Bad Request", ctype="application/json", length=2, keep_alive=True) + b"{}"


def aclient(url, **options):
    return streamlite.AsyncClient(url, **dict(dict(api_key=KEY, proxy="", max_retries=0, read_timeout=5), **options))


async def read_counting(stream, got):
    """Read `stream` to its end in `async with`, counting deltas in got["deltas"] (a typed
    error goes in got["error"])."""
    try:
        async with stream:
            async for _ in stream:
                got["deltas"] += 1
    except streamlite.StreamliteError as exc:
        got["error"] = exc


# 1. aclose() from another task, once the answer's head is in but before the opening task resumed ###


def test_aclose_after_the_head_arrived_is_not_ignored():
    """AsyncStream._open runs the request in a task of its own (link.opening). When that task
    has already finished (the head is in: completion.request_id is set) but the task that awaits
    it has not resumed yet, aclose() from another task calls opening.cancel() (a no-op on a done
    task), marks the stream closed and returns. The first task then resumes, takes the response
    and reads the whole stream: aclose() was ignored, and a later aclose() is a no-op."""
    head = response_head(200, headers=["x-request-id: req_1"], length=len(EVENT) * 5 + 14)
    script = [send(head)] + [a for _ in range(5) for a in (sleep(0.2), send(EVENT))]
    script += [send(b"data: [DONE]\n\n"), hold(3)]
    got = {"deltas": 0}

    async def go(url):
        stream = aclient(url).astream("hi")
        task = asyncio.ensure_future(read_counting(stream, got))
        while stream.completion.request_id is None:  # the head has arrived, in the opening task
            await asyncio.sleep(0)
        await stream.aclose()
        await asyncio.wait_for(task, 5)

    with FaultServer(script, max_connections=2, lifetime=10) as server:
        asyncio.run(go(server.url))
    assert got["deltas"] == 0, "the stream was read to its end after aclose(): %d deltas" % got["deltas"]


# 2. aclose() from another task while the stream waits to send its request again ###############


def test_aclose_during_a_resend_pause_sends_nothing_more():
    """The first answer breaks (reset) before any delta: _async_deltas sleeps (backoff), then
    sends the request again, all inside __anext__ (link.reading). aclose() from another task
    then only aborts the old, already released response: the sleep goes on, the request is sent
    again and the new answer read to its end. The sync Stream.close() wakes link.pause instead."""
    script = [[send(response_head(200, length=1000)), send(b": ping\n\n"), sleep(0.05), reset()],
              [send(OK_CLOSE), close()]]
    got = {"deltas": 0}

    async def go(url):
        stream = aclient(url, max_retries=2).astream("hi")
        task = asyncio.ensure_future(read_counting(stream, got))
        await asyncio.sleep(0.2)  # the first answer broke; the stream waits before sending again
        await stream.aclose()
        await asyncio.wait_for(task, 5)

    with FaultServer(script, max_connections=3, lifetime=10) as server:
        asyncio.run(go(server.url))
        connections = server.connections
    assert connections == 1, "the request was sent again after aclose()"
    assert got["deltas"] == 0 and isinstance(got.get("error"), streamlite.APIConnectionError), got


# 3. the outer task cancelled once the opening task has its response ##########################


def test_cancel_after_the_head_arrived_closes_the_connection():
    """The task in `async with client.astream(...)` is cancelled when the opening task already
    holds the response: _open calls opener.cancel() (a no-op) and re-raises CancelledError, and
    the response in opener.result() is never released: its connection stays open (until the GC
    finds the task; then an "unclosed transport" ResourceWarning)."""

    async def go(server):
        stream = aclient(server.url).astream("hi")
        task = asyncio.ensure_future(stream.__aenter__())
        while stream.completion.request_id is None:
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.05)
        closed = server.wait_peer_closed(0, 0.5)
        del task
        return closed

    head = response_head(200, headers=["x-request-id: req_1"], chunked=True, keep_alive=True)
    with FaultServer([send(head), hold(5)], max_connections=2, lifetime=10) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            closed = asyncio.run(go(server))
    assert closed, "the connection of a cancelled open stayed open"


# 4. a failed async open leaves a reference cycle that keeps the client and its pool ############


def test_failed_async_open_leaves_no_cycle_holding_the_client():
    """_open's frame keeps `opener`, the task that failed, which keeps the exception, whose
    traceback holds _open's frame: a cycle. With the GC off (or until it runs) a dropped client
    and its pooled connections live on; the idle connection is not closed."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        async def go(server):
            client = aclient(server.url)
            held = client.astream("a")
            await held.__aenter__()  # connection 0
            try:
                await client.acomplete("x")  # connection 1: a 400
            except streamlite.APIError:
                pass
            async for _ in held:  # connection 0 goes back to the pool
                pass
            del held
            ref = weakref.ref(client)
            del client
            if hasattr(sys, "pypy_version_info"):  # no reference counting: only the GC frees it
                for _ in range(3):
                    gc.collect()
            await asyncio.sleep(0.05)
            return ref() is None, server.wait_peer_closed(0, 0.3)

        with FaultServer([[send(OK_KEEP), hold(3)], [send(ERR_400), hold(3)]], max_connections=3, lifetime=10) as server:
            freed, closed = asyncio.run(go(server))
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()
    assert freed, "a dropped AsyncClient is kept by a reference cycle after a failed call"
    assert closed, "its idle pooled connection was not closed when it was dropped"


# 5. leaving Client.batch early while a worker reads an error body ##############################


def test_batch_early_exit_interrupts_a_worker_reading_an_error_body():
    """_sync_open reads a non-2xx body (http_error) with link.opening None and link.response not
    yet set: link.interrupt() reaches nothing. Leaving the batch waits stop()'s 5 s join, then
    returns with the worker thread still blocked (up to read_timeout)."""
    stalled = response_head(503, "Service Unavailable", ctype="application/json", length=100) + b'{"error":'

    def script(index, request):
        if request.json()["messages"][-1]["content"] == "slow":
            return [send(stalled), hold(12)]
        return [sleep(0.3), send(OK_CLOSE), close()]

    with FaultServer(script, max_connections=4, lifetime=20) as server:
        client = streamlite.Client(server.url, api_key=KEY, proxy="", max_retries=0, read_timeout=10)
        results = client.batch(["slow", "fast"], concurrency=2)
        first = next(results)
        assert first.custom_id == "line-2"
        started = time.monotonic()
        results.close()
        took = time.monotonic() - started
        alive = [thread for thread in threading.enumerate() if thread.name == "streamlite-batch" and thread.is_alive()]
        server.release()
    assert took < 2.0, "leaving the batch took %.1f s" % took
    assert not alive, "a batch worker is still running after the batch was left"
