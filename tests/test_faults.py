"""Transport faults, one test per scenario, each against a scripted raw-socket server on
127.0.0.1 (FaultServer in tests/loopback.py): timeouts, cut-off bodies, retries, wrong responses,
bounded memory and cleanup. A test that takes `run` runs through both Client and AsyncClient
(tests/clients.py). Every error is checked for its type, when it came, its `.partial` and that the API
key appears nowhere in its text, repr or traceback."""

import asyncio
import gc
import gzip
import json
import platform
import sys
import threading
import time
import traceback
import warnings

import pytest

import streamlite
from loopback import FaultServer, call, close, flood, full_backlog, hold, repeat, reset, response_head, send, sleep, trickle

KEY = "sk-SENTINEL-faults-9f3a"

# Tests that take `run` run through Client and AsyncClient (conftest.py).
SLACK = 1.0  # how much later than its timeout an error may come on a loaded machine
EARLY = 0.05  # how much earlier (timer granularity)


# Bytes on the wire ###########################################################


def sse(obj):
    return b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n"


def delta(text):
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


def finish(reason="stop"):
    return sse({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


DONE = b"data: [DONE]\n\n"
GOOD_BODY = delta("Hello") + delta(", world") + finish() + DONE


head = response_head


def response(body, status=200, reason="OK", ctype="text/event-stream", headers=()):
    """A whole response with a Content-Length."""
    return head(status, reason, ctype, headers, length=len(body)) + body


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def ok_script(body=GOOD_BODY):
    return [send(response(body))]


# Helpers #####################################################################


def client(server, **options):
    settings = dict(connect_timeout=1.0, read_timeout=2.0, max_retries=0)
    settings.update(options)
    return streamlite.Client(server.url if hasattr(server, "url") else server, KEY, **settings)


def go(run, server, call="complete", **options):
    """The scenario through the client `run` drives (sync or async; see tests/clients.py), with
    this file's client settings; returns its Outcome."""
    settings = dict(connect_timeout=1.0, read_timeout=2.0, max_retries=0)
    settings.update(options)
    return run(server.url if hasattr(server, "url") else server, "hi", KEY, call=call, **settings)


def failing_run(run, server, kind, call="complete", **options):
    """The scenario must raise `kind`; returns (error, seconds it took)."""
    outcome = go(run, server, call=call, **options)
    if not isinstance(outcome.error, kind):
        raise AssertionError("expected %s, got %r" % (kind.__name__, outcome.error))
    return outcome.error, outcome.elapsed


def completed(run, server, **options):
    """The scenario must succeed; returns its Completion."""
    outcome = go(run, server, **options)
    if outcome.error is not None:
        raise outcome.error
    return outcome.completion


def assert_clean(error):
    """The API key is nowhere in the error, its repr, its traceback or the errors chained to it."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert KEY not in text
    seen = set()
    current = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        assert KEY not in str(current) and KEY not in repr(current)
        assert all(KEY not in repr(arg) for arg in current.args)
        current = current.__cause__ or current.__context__
    partial = getattr(error, "partial", None)
    assert partial is None or KEY not in repr(partial)


def assert_partial(error, content, finish_reason=None):
    assert error.partial is not None, "an error after the body started must carry .partial"
    assert error.partial.content == content
    assert error.partial.finish_reason == finish_reason


def assert_took(elapsed, timeout):
    assert timeout - EARLY <= elapsed <= timeout + SLACK, "took %.3f s for a %.3f s timeout" % (elapsed, timeout)


# Timeouts ####################################################################


def test_connect_timeout_against_a_full_accept_queue(run):
    with full_backlog() as port:
        error, elapsed = failing_run(run, "http://127.0.0.1:%d/v1" % port, streamlite.APITimeoutError,
                                     connect_timeout=0.3, max_retries=2)
    assert error.which == "connect"
    assert "connect timeout" in str(error) and "127.0.0.1:%d" % port in str(error)
    assert_took(elapsed, 0.3)  # a connect timeout is not retried
    assert error.partial is None
    assert_clean(error)


def test_a_total_timeout_shorter_than_the_connect_timeout_says_total(run):
    with full_backlog() as port:
        options = dict(connect_timeout=5, total_timeout=0.3, max_retries=2)
        error, elapsed = failing_run(run, "http://127.0.0.1:%d/v1" % port, streamlite.APITimeoutError, **options)
    assert error.which == "total"
    assert "total timeout" in str(error) and "127.0.0.1:%d" % port in str(error)
    assert_took(elapsed, 0.3)
    assert_clean(error)


def test_connect_refused_is_a_connection_error(run):
    with FaultServer(ok_script(), max_connections=0) as server:
        server.stop()  # the listener is closed: nothing listens on the port any more
        error, elapsed = failing_run(run, server, streamlite.APIConnectionError, max_retries=0)
    assert not isinstance(error, streamlite.APITimeoutError)
    assert "could not connect to 127.0.0.1:%d" % server.port in str(error)
    assert elapsed < SLACK
    assert error.partial is None
    assert_clean(error)


def test_read_timeout_before_the_first_byte(run):
    with FaultServer([hold()], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APITimeoutError, read_timeout=0.3, max_retries=2)
        assert server.wait_peer_closed(0)
        assert server.connections == 1  # a read timeout is not retried: the request may be running
    assert error.which == "read"
    assert "read timeout" in str(error)
    assert_took(elapsed, 0.3)
    assert_clean(error)


def test_read_timeout_mid_stream_keeps_the_partial(run):
    script = [send(head() + delta("Hello") + delta(" there")), hold()]
    with FaultServer(script) as server:
        outcome = go(run, server, call="stream", read_timeout=0.3)
        first, error = outcome.deltas[0], outcome.error
        assert isinstance(error, streamlite.APITimeoutError), error
        elapsed = outcome.ended_at - outcome.first_at  # from the first delta on
        assert server.wait_peer_closed(0)
    assert first == streamlite.ContentDelta("Hello")
    assert error.which == "read"
    assert_took(elapsed, 0.3)
    assert_partial(error, "Hello there")
    assert_clean(error)


def test_total_timeout_against_a_byte_every_200_ms(run):
    rest = delta(" and steady") + finish() + DONE
    script = [send(head() + delta("slow")), trickle(rest, 0.2)]  # each byte inside the read timeout
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APITimeoutError, read_timeout=1.0, total_timeout=0.8)
        assert server.wait_ended(1)
        assert server.sent[0] < len(head() + delta("slow") + rest)  # it did not live on to the end
    assert error.which == "total"
    assert_took(elapsed, 0.8)
    assert_partial(error, "slow")
    assert_clean(error)


def test_total_timeout_against_endless_100_continue(run):
    """Interim responses slower than the limit on their count (16) runs out: total_timeout
    still bounds the wait (a fast flood is refused by count: test_promises)."""
    script = [repeat(b"HTTP/1.1 100 Continue\r\n\r\n", interval=0.06)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APITimeoutError, read_timeout=1.0, total_timeout=0.5)
        assert server.wait_ended(1)
        assert server.sent[0] > 5 * len(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client did read them
    assert error.which == "total"
    assert_took(elapsed, 0.5)
    assert_clean(error)


def test_total_timeout_against_endless_slow_trailers(run):
    body = chunk(delta("all") + delta(" here") + finish()) + b"0\r\n"
    script = [send(head(chunked=True) + body), repeat(b"X-Trailer: 1\r\n", interval=0.02)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APITimeoutError, call="stream", read_timeout=1.0,
                                     total_timeout=0.6)
    assert error.which == "total"
    assert_took(elapsed, 0.6)
    assert_partial(error, "all here", "stop")
    assert_clean(error)


def test_total_timeout_against_a_flood_of_comments_leaves_nothing_behind(run):
    """The client is busy reading when the deadline passes (not waiting), so the deadline is
    found between two reads: a timeout all the same, and nothing half made is left behind (an
    async read created but never awaited warns when collected). Three tries, as where exactly the
    deadline falls varies."""
    for _ in range(3):
        script = [send(head()), repeat(b": keep-alive\n" * 4096)]
        with FaultServer(script) as server:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                error, elapsed = failing_run(run, server, streamlite.APITimeoutError, total_timeout=0.3)
                gc.collect()
        assert error.which == "total"
        assert_took(elapsed, 0.3)
        assert_clean(error)
        assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_fast_endless_trailers_are_refused(run):
    body = chunk(delta("all") + finish()) + b"0\r\n"
    script = [send(head(chunked=True) + body), repeat(b"X-Trailer: 1\r\n", count=100000)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, read_timeout=1.0, total_timeout=5.0)
    assert "trailer" in str(error)
    assert elapsed < SLACK
    assert_partial(error, "all", "stop")
    assert_clean(error)


# Bodies cut off ##############################################################


def reset_once_read(run, server, text, **options):
    """Stream until `text` has been handed out; only then let the server (held) send its RST,
    so that no data is still unread when it comes (a reset discards unread data). Returns the
    error the stream raises."""
    got = []

    def on_delta(item):
        got.append(item.text)
        if "".join(got) == text:
            server.release()

    error, _ = failing_run(run, server, streamlite.APIConnectionError, call="stream", on_delta=on_delta, **options)
    assert "".join(got) == text
    return error


def test_reset_after_some_content(run):
    script = [send(head() + delta("Hello") + delta(" wor")), hold(), reset()]
    with FaultServer(script, max_connections=3) as server:
        started = time.monotonic()
        error = reset_once_read(run, server, "Hello wor", max_retries=2)
        elapsed = time.monotonic() - started
        assert server.connections == 1
    assert not isinstance(error, streamlite.APITimeoutError)
    assert "connection broke" in str(error) or "reset" in str(error).lower()
    assert elapsed < SLACK
    assert_partial(error, "Hello wor")
    assert_clean(error)


def test_truncated_chunked_body(run):
    # the chunk size promises 4096 bytes; 60-odd come, then the server closes cleanly
    payload = delta("cut")
    script = [send(head(chunked=True) + chunk(delta("before")) + b"1000\r\n" + payload), close()]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APIConnectionError)
    assert not isinstance(error, streamlite.APITimeoutError)
    assert "chunked body" in str(error)
    assert elapsed < SLACK
    assert_partial(error, "beforecut")
    assert_clean(error)


def test_bad_chunk_framing_after_good_chunks_in_one_piece_keeps_them(run):
    """The whole chunks before the bad size line are handed out, then it raises at once (the
    server keeps the connection open: nothing waits for more bytes or a timeout)."""
    wire = head(chunked=True) + chunk(delta("kept")) + chunk(delta(" too")) + b"zz\r\n"
    with FaultServer([send(wire), hold(timeout=10)]) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, read_timeout=5)
        server.release()
    assert "malformed chunked body" in str(error)
    assert elapsed < 2.5
    assert_partial(error, "kept too")
    assert_clean(error)


def test_truncated_content_length_body(run):
    body = delta("half") + finish() + DONE
    script = [send(head(length=len(body)) + body[: len(delta("half")) + 10]), close()]
    with FaultServer(script) as server:
        error, _ = failing_run(run, server, streamlite.APIConnectionError)
    assert "body bytes" in str(error)
    assert_partial(error, "half")
    assert_clean(error)


def test_clean_close_without_done_or_finish_reason(run):
    script = [send(head() + delta("no") + delta(" ending")), close()]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APIConnectionError, max_retries=2)
        assert server.connections == 1
    assert "without [DONE]" in str(error) and "2 events" in str(error)
    assert elapsed < SLACK
    assert_partial(error, "no ending")
    assert_clean(error)


def test_clean_close_after_finish_reason_without_done_is_a_success(run):
    script = [send(head() + delta("fine") + finish("length")), close()]
    with FaultServer(script) as server:
        completion = completed(run, server)
    assert completion.content == "fine" and completion.finish_reason == "length"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_end_of_body_is_found_while_the_server_keeps_the_connection_open(framing, run):
    body = delta("framed") + finish()  # no [DONE]: only the framing says the body is over
    if framing == "chunked":
        reply = head(chunked=True, keep_alive=True) + chunk(body) + b"0\r\n\r\n"
    else:
        reply = head(length=len(body), keep_alive=True) + body
    with FaultServer([send(reply), hold()]) as server:
        start = time.monotonic()
        completion = completed(run, server, read_timeout=2.0)
        elapsed = time.monotonic() - start
        assert server.wait_peer_closed(0)
    assert completion.content == "framed" and completion.finish_reason == "stop"
    assert elapsed < 1.0  # did not wait for the read timeout


def test_error_body_that_stalls_keeps_what_came(run):
    reply = head(503, "Service Unavailable", "text/plain", length=1000) + b"upstream ti"
    with FaultServer([send(reply), hold()], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError, read_timeout=0.3, max_retries=0)
        assert server.wait_peer_closed(0)
    assert error.status == 503 and error.message == "upstream ti"
    assert_took(elapsed, 0.3)
    assert_clean(error)


# Retries #####################################################################


def test_503_then_200_is_retried_once(run):
    busy = response(b'{"error":{"message":"overloaded"}}', 503, "Service Unavailable", "application/json")
    with FaultServer([[send(busy)], ok_script()], max_connections=3) as server:
        outcome = go(run, server, call="stream", max_retries=2)
        assert outcome.error is None, outcome.error
        stream = outcome.stream
        text = "".join(d.text for d in outcome.deltas if isinstance(d, streamlite.ContentDelta))
        assert server.connections == 2
        assert [r.body for r in server.requests][0] == server.requests[1].body
    assert text == "Hello, world"
    assert stream.retries == 1 and stream.completion.stats.retries == 1
    assert stream.completion.finish_reason == "stop"


def test_429_retry_after_ms_is_honoured(run):
    limited = response(b"slow down", 429, "Too Many Requests", "text/plain", ["retry-after-ms: 50"])
    with FaultServer([[send(limited)], ok_script()], max_connections=3) as server:
        completion = completed(run, server, max_retries=1)
        assert server.connections == 2
        gap = server.accepted_at[1] - server.ended_at[0]
    assert completion.content == "Hello, world" and completion.stats.retries == 1
    # 50 ms as asked: not the 375-500 ms of the default first backoff, and not nothing
    assert 0.04 <= gap < 0.3


def test_429_retry_after_seconds_is_honoured(run):
    limited = response(b"slow down", 429, "Too Many Requests", "text/plain", ["Retry-After: 1"])
    with FaultServer([[send(limited)], ok_script()], max_connections=3) as server:
        start = time.monotonic()
        completion = completed(run, server, max_retries=1)
        elapsed = time.monotonic() - start
        assert server.connections == 2
        gap = server.accepted_at[1] - server.ended_at[0]
    assert completion.content == "Hello, world"
    assert 1.0 - EARLY <= gap and elapsed <= 1.0 + SLACK


def test_retry_after_beyond_the_cap_raises_at_once(run):
    limited = response(b"come back tomorrow", 429, "Too Many Requests", "text/plain", ["Retry-After: 121"])
    with FaultServer([send(limited)], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError, max_retries=3)
        assert server.connections == 1
    assert error.status == 429 and error.retry_after == 121.0
    assert "come back tomorrow" in str(error)
    assert elapsed < SLACK
    assert_clean(error)


@pytest.fixture
def local_time_far_from_utc(monkeypatch):
    """The machine's local time zone set five hours behind UTC for the test (POSIX TZ rule)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("usegmt", [True, False], ids=["GMT", "-0000"])
def test_retry_after_as_an_http_date(usegmt, local_time_far_from_utc, run):
    from email.utils import formatdate

    when = formatdate(time.time() + 200, usegmt=usegmt)  # "... GMT" or "... -0000": both UTC
    limited = response(b"later", 429, "Too Many Requests", "text/plain", ["Retry-After: " + when])
    with FaultServer([send(limited)], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError, max_retries=3)
        assert server.connections == 1
    assert 198 <= error.retry_after <= 201  # beyond the 120 s cap: raised at once, with the wait
    assert elapsed < SLACK


def test_retry_after_http_date_in_the_near_future_is_honoured(run):
    from email.utils import formatdate

    start = time.time()
    when = formatdate(int(start) + 2, usegmt=True)
    limited = response(b"slow down", 503, "Service Unavailable", "text/plain", ["Retry-After: " + when])
    with FaultServer([[send(limited)], ok_script()], max_connections=3) as server:
        completion = completed(run, server, max_retries=1)
        assert server.connections == 2
        gap = server.accepted_at[1] - server.ended_at[0]
    assert completion.content == "Hello, world"
    # waited until the date (at least 0.8 s from here), not the 0.5 s default backoff
    assert gap >= int(start) + 2 - start - 0.2


def test_retry_after_beyond_the_total_timeout_raises_at_once(run):
    limited = response(b"busy", 503, "Service Unavailable", "text/plain", ["Retry-After: 5"])
    with FaultServer([send(limited)], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError, max_retries=3, total_timeout=2.0)
        assert server.connections == 1
    assert error.status == 503 and error.retry_after == 5.0
    assert elapsed < 1.0  # neither slept 5 s nor waited for the 2 s deadline
    assert_clean(error)


@pytest.mark.parametrize("status, reason, body, extra, message, code", [
    (500, "Internal Server Error", b'{"error":{"message":"no point"}}', ["x-should-retry: false"], "no point", None),
    (400, "Bad Request", b'{"error":{"message":"bad model","code":"model_not_found"}}', [], "bad model",
     "model_not_found"),
])
def test_not_retried(status, reason, body, extra, message, code, run):
    refused = response(body, status, reason, "application/json", extra)
    with FaultServer([send(refused)], max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError, max_retries=3)
        assert server.connections == 1
    assert (error.status, error.message, error.code) == (status, message, code)
    assert elapsed < SLACK
    assert_clean(error)


def test_x_should_retry_true_on_a_400_is_retried(run):
    refused = response(b'{"error":{"message":"try again"}}', 400, "Bad Request", "application/json",
                       ["x-should-retry: true", "retry-after-ms: 10"])
    with FaultServer([[send(refused)], ok_script()], max_connections=3) as server:
        completion = completed(run, server, max_retries=1)
        assert server.connections == 2
    assert completion.content == "Hello, world" and completion.stats.retries == 1


def test_retries_run_out(run):
    busy = response(b"busy", 502, "Bad Gateway", "text/plain", ["retry-after-ms: 10"])
    with FaultServer([send(busy)], max_connections=5) as server:
        error, _ = failing_run(run, server, streamlite.APIError, max_retries=2)
        assert server.connections == 3  # the first try and two retries
    assert error.status == 502 and error.message == "busy"
    assert_clean(error)


def test_reset_before_any_response_is_retried(run):
    with FaultServer([[reset()], ok_script()], max_connections=3) as server:
        completion = completed(run, server, max_retries=1)
        assert server.connections == 2
    assert completion.content == "Hello, world" and completion.stats.retries == 1


def test_reset_in_the_middle_of_the_response_head_is_retried(run):
    with FaultServer([[send(b"HTTP/1.1 200 OK\r\nContent-Ty"), reset()], ok_script()], max_connections=3) as server:
        completion = completed(run, server, max_retries=1)
        assert server.connections == 2
    assert completion.content == "Hello, world" and completion.stats.retries == 1


def test_resets_before_any_response_run_out_of_retries(run):
    with FaultServer([reset()], max_connections=5) as server:
        error, _ = failing_run(run, server, streamlite.APIConnectionError, max_retries=1)
        assert server.connections == 2
    assert "before responding" in str(error)
    assert error.partial is None
    assert_clean(error)


def test_never_retried_after_the_first_delta(run):
    script = [send(head() + delta("already said")), hold(), reset()]
    with FaultServer(script, max_connections=3) as server:
        error = reset_once_read(run, server, "already said", max_retries=3)
        assert not server.wait_connections(2, timeout=0.3)
        assert server.connections == 1
    assert_partial(error, "already said")
    assert error.partial.stats.retries == 0
    assert_clean(error)


# Wrong responses #############################################################


def test_request_asks_for_identity_encoding_and_an_event_stream(run):
    with FaultServer(ok_script()) as server:
        completed(run, server, model="m")
        (request,) = server.requests
    assert request.method == "POST" and request.target == "/v1/chat/completions"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == "Bearer " + KEY
    assert json.loads(request.body)["stream"] is True


def test_200_html_page_is_a_protocol_error_naming_it(run):
    page = b"<!DOCTYPE html><html><head><title>Hotel WiFi Login</title></head><body>Sign in</body></html>"
    with FaultServer([send(response(page, ctype="text/html; charset=utf-8"))], max_connections=3) as server:
        error, _ = failing_run(run, server, streamlite.ProtocolError, max_retries=2)
        assert server.connections == 1
    assert "text/html" in str(error) and "Hotel WiFi Login" in str(error)
    assert "<title>" not in str(error)
    assert_partial(error, "")
    assert_clean(error)


def test_200_json_error_body_is_an_api_error(run):
    body = json.dumps({"error": {"message": "quota exhausted", "type": "insufficient_quota",
                                 "code": "insufficient_quota"}}).encode()
    with FaultServer([send(response(body, ctype="application/json"))]) as server:
        error, _ = failing_run(run, server, streamlite.APIError)
    assert error.message == "quota exhausted" and error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert "quota exhausted" in str(error)
    assert_clean(error)


def test_4xx_json_body_with_request_id_and_echoed_key(run):
    body = json.dumps({"error": {"message": "Incorrect API key provided: %s." % KEY, "type": "invalid_request_error",
                                 "code": "invalid_api_key"}}).encode()
    reply = response(body, 401, "Unauthorized", "application/json", ["x-request-id: req_abc123"])
    with FaultServer([send(reply)]) as server:
        error, _ = failing_run(run, server, streamlite.APIError)
    assert error.status == 401 and error.code == "invalid_api_key" and error.type == "invalid_request_error"
    assert error.request_id == "req_abc123"
    assert error.message.startswith("Incorrect API key provided:") and "[redacted]" in error.message
    assert str(error).startswith("401 Unauthorized: Incorrect API key provided")
    assert_clean(error)


@pytest.mark.parametrize("name, value, secret", [
    ("x-api-key", "sk-ant-SENTINEL-header-77", "sk-ant-SENTINEL-header-77"),
    ("Authorization", "Bearer tok-SENTINEL-header-88", "tok-SENTINEL-header-88"),
    ("X-Goog-Api-Key", "AIzaSENTINEL-header-99", "AIzaSENTINEL-header-99"),
])
def test_credentials_passed_as_headers_are_redacted_too(name, value, secret, run):
    body = json.dumps({"error": {"message": "bad credentials %s (from %s)" % (secret, value)}}).encode()
    with FaultServer([send(response(body, 401, "Unauthorized", "application/json"))]) as server:
        outcome = run(server.url, "hi", None, call="complete", headers={name: value}, max_retries=0)
        error = outcome.error
        assert isinstance(error, streamlite.APIError), error
    text = str(error) + repr(error) + "".join(traceback.format_exception(type(error), error, None))
    assert secret not in text and "[redacted]" in error.message
    assert error.message.startswith("bad credentials")


def test_4xx_text_body(run):
    reply = response(b"model 'nope' not found\n", 404, "Not Found", "text/plain", ["apim-request-id: az-42"])
    with FaultServer([send(reply)]) as server:
        error, _ = failing_run(run, server, streamlite.APIError)
    assert error.status == 404 and error.message == "model 'nope' not found" and error.code is None
    assert error.request_id == "az-42"
    assert str(error) == "404 Not Found: model 'nope' not found"
    assert_clean(error)


def test_4xx_html_body_shows_its_title(run):
    page = (b"<html><head><title>403 Forbidden</title><style>body{}</style></head>"
            b"<body><center><h1>403 Forbidden</h1></center><hr><center>nginx</center></body></html>")
    reply = response(page, 403, "Forbidden", "text/html", ["x-request-id: edge-7"])
    with FaultServer([send(reply)]) as server:
        error, _ = failing_run(run, server, streamlite.APIError)
    assert error.status == 403 and error.request_id == "edge-7"
    assert str(error) == "403 Forbidden: 403 Forbidden"
    assert "<" not in str(error)
    assert_clean(error)


def test_4xx_empty_body_uses_the_reason(run):
    with FaultServer([send(response(b"", 422, "Unprocessable Entity", None))]) as server:
        error, _ = failing_run(run, server, streamlite.APIError)
    assert error.status == 422 and error.message == "Unprocessable Entity"
    assert_clean(error)


def test_gzip_encoded_event_stream_is_decoded(run):
    body = gzip.compress(GOOD_BODY * 1)
    reply = head(headers=["Content-Encoding: gzip"], chunked=True)
    # the compressed bytes in small chunks: the inflater works incrementally
    pieces = b"".join(chunk(body[i : i + 7]) for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    with FaultServer([send(reply + pieces)]) as server:
        completion = completed(run, server)
    assert completion.content == "Hello, world" and completion.finish_reason == "stop"


def test_a_gzip_body_of_two_members_with_a_large_first_one_is_read_once_to_its_end(run):
    # the first member inflates past one 64 KB piece: the second must be neither lost nor doubled
    padding = b": " + b"p" * 1000 + b"\n\n"
    body = gzip.compress(padding * 200 + GOOD_BODY[: len(GOOD_BODY) // 2]) + gzip.compress(GOOD_BODY[len(GOOD_BODY) // 2 :])
    reply = head(headers=["Content-Encoding: gzip"], chunked=True)
    with FaultServer([send(reply + chunk(body) + b"0\r\n\r\n")]) as server:
        completion = completed(run, server)
    assert completion.content == "Hello, world" and completion.finish_reason == "stop"


def test_a_gzip_bomb_is_inflated_a_piece_at_a_time(run):
    # 64 MB of comment lines squeezed into a few tens of kB, in one piece
    bomb = gzip.compress((b": " + b"x" * 65000 + b"\n") * 1000 + GOOD_BODY, compresslevel=9)
    assert len(bomb) < 200_000
    pieces = streamlite._Inflater("gzip").feed(bomb)
    first = next(pieces)
    assert len(first) <= 65536  # one bounded piece made, the rest not yet
    with FaultServer([send(response(bomb, headers=["Content-Encoding: gzip"]))]) as server:
        tracing = platform.python_implementation() == "CPython"  # PyPy has no tracemalloc
        if tracing:
            import tracemalloc

            tracemalloc.start()
        outcome = go(run, server, call="stream", stream_options=dict(accumulate=False))
        if tracing:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 4_000_000, peak
        assert outcome.error is None, outcome.error
        deltas = outcome.deltas
    assert "".join(d.text for d in deltas if isinstance(d, streamlite.ContentDelta)) == "Hello, world"


def test_inflated_output_is_never_held_back():
    # after each piece of compressed input, everything zlib can make of it so far is out: a
    # piece of exactly the size limit must not leave the rest waiting for the next recv (these
    # levels and piece sizes make zlib stop with output pending, found by search)
    import zlib

    text = b"a" * 400_000
    for level, size in ((1, 286), (1, 287), (6, 64)):
        packed = zlib.compress(text, level)
        inflater, reference = streamlite._Inflater("deflate"), zlib.decompressobj()
        made = expected = 0
        for pos in range(0, len(packed), size):
            piece = packed[pos : pos + size]
            made += sum(len(out) for out in inflater.feed(piece))
            expected += len(reference.decompress(piece))
            assert made == expected, (level, size, pos)
        assert made == len(text)


def test_corrupt_gzip_is_a_protocol_error(run):
    body = gzip.compress(GOOD_BODY)
    broken = body[:10] + bytes(b ^ 0x5A for b in body[10:30]) + body[30:]
    with FaultServer([send(response(broken, headers=["Content-Encoding: gzip"]))]) as server:
        error, _ = failing_run(run, server, streamlite.ProtocolError)
    assert "compressed body is corrupt" in str(error)
    assert_clean(error)


def test_brotli_is_refused_clearly(run):
    with FaultServer([send(response(b"\x8b\x03\x80garbage", headers=["Content-Encoding: br"]))]) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError)
    assert "'br'-encoded" in str(error) and "identity" in str(error)
    assert elapsed < SLACK
    assert_partial(error, "")
    assert_clean(error)


def test_redirect_is_not_followed(run):
    location = "http://127.0.0.1:1/elsewhere/v1/chat/completions"
    reply = response(b"", 307, "Temporary Redirect", None, ["Location: " + location])
    with FaultServer([send(reply)], max_connections=3) as server:
        error, _ = failing_run(run, server, streamlite.APIError, max_retries=2)
        assert server.connections == 1 and len(server.requests) == 1
    assert error.status == 307
    assert "redirect to %s not followed" % location in str(error)
    assert_clean(error)


def test_garbage_instead_of_http_is_a_protocol_error(run):
    with FaultServer([send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), close()], max_connections=3) as server:
        error, _ = failing_run(run, server, streamlite.ProtocolError, max_retries=2)
        assert server.connections == 1
    assert "valid HTTP" in str(error)
    assert_clean(error)


@pytest.mark.parametrize("endless", [b"X-A: " + b"a" * 70000, b"X-A: b\r\n" * 1000], ids=["long line", "many lines"])
def test_an_endless_response_head_is_refused_before_it_ends(endless, run):
    """Neither a huge header nor a flood of short ones waits for the head (or the timeout) to end."""
    script = [send(b"HTTP/1.1 200 OK\r\n" + endless), hold(timeout=10)]
    with FaultServer(script, max_connections=3) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, read_timeout=5)
        server.release()
    assert elapsed < 2.5, "waited %.2f s for a head that never ends" % elapsed
    assert "larger than 65536 bytes" in str(error) or "more than 128 header lines" in str(error)
    assert_clean(error)


def test_100_continue_then_the_real_response(run):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    with FaultServer([send(interim), sleep(0.05), send(response(GOOD_BODY))]) as server:
        completion = completed(run, server)
    assert completion.content == "Hello, world"


# Bounded memory ##############################################################

LIMIT = 64 * 1024


def test_endless_line_without_newline_stops_at_max_event_bytes(run):
    total = 64 * 2**20
    script = [send(head() + b"data: "), flood(b"x" * 65536, total)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, max_event_bytes=LIMIT)
        assert server.wait_ended(1)
        assert server.peer_closed_at  # the client hung up; the server did not finish
        assert server.sent[0] < total // 4  # what the kernel buffers took, not the 64 MB
    assert "longer than the limit of %d bytes" % LIMIT in str(error)
    assert elapsed < SLACK
    assert_partial(error, "")
    assert_clean(error)


def test_giant_event_of_many_lines_stops_at_max_event_bytes(run):
    total = 64 * 2**20
    line = b"data: " + b"y" * 1000 + b"\n"
    script = [send(head() + delta("before")), flood(line * 64, total)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, max_event_bytes=LIMIT)
        assert server.wait_ended(1)
        assert server.sent[0] < total // 4
    assert "%d" % LIMIT in str(error) and "event" in str(error)
    assert elapsed < SLACK
    assert_partial(error, "before")
    assert_clean(error)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_events_before_an_oversized_event_in_the_same_read_are_kept(framing, run):
    """One send: two whole events, then an event over the limit; the server keeps the connection
    open. The two are handed out, then it raises at once (no wait for more bytes or a timeout)."""
    body = delta("first") + delta(" second") + b"data: " + b"z" * 3000 + b"\n\n"  # one read
    wire = head(chunked=True) + chunk(body) if framing == "chunked" else head() + body
    with FaultServer([send(wire), hold(timeout=10)]) as server:
        seen = []
        error, elapsed = failing_run(run, server, streamlite.ProtocolError, call="stream", on_delta=seen.append,
                                     max_event_bytes=2048, read_timeout=5)
        server.release()
    assert [d.text for d in seen] == ["first", " second"]
    assert "limit of 2048 bytes" in str(error)
    assert elapsed < 2.5
    assert_partial(error, "first second")
    assert_clean(error)


DEEP = b"[" * 100000


@pytest.mark.parametrize("wire, kind, partial", [
    (head() + delta("ok") + b"data: " + DEEP + b"\n\n", streamlite.ProtocolError, "ok"),
    (head() + delta("ok") + b"event: error\ndata: " + DEEP + b"\n\n", streamlite.APIError, "ok"),
    (head() + delta("ok") + b'data: {"error": {"detail": ' + DEEP + b"}}\n\n", streamlite.ProtocolError, "ok"),
    (head(ctype="application/json") + DEEP, streamlite.ProtocolError, None),
    (head(400, "Bad Request", ctype="application/json") + DEEP, streamlite.APIError, None),
], ids=["event", "error event", "error object", "200 json", "400 json"])
def test_json_nested_deeper_than_the_parser_goes_is_a_typed_error(wire, kind, partial, run):
    """json.loads raises RecursionError (not ValueError) on deep nesting: still a typed error."""
    with FaultServer([send(wire), close()]) as server:
        error, _ = failing_run(run, server, kind, read_timeout=5)
    assert len(str(error)) < 1000
    if partial is not None:
        assert_partial(error, partial)
    assert_clean(error)


def test_huge_error_body_is_read_only_in_part(run):
    total = 50 * 2**20
    script = [send(head(500, "Internal Server Error", "text/plain", length=total)), flood(b"z" * 65536, total)]
    with FaultServer(script) as server:
        error, elapsed = failing_run(run, server, streamlite.APIError)
        assert server.wait_ended(1)
        assert server.sent[0] < total // 4
    assert error.status == 500
    assert len(error.message) <= streamlite.MAX_ERROR_BODY_BYTES
    assert len(str(error)) < 1000 and str(error).startswith("500 Internal Server Error: zzz")
    assert elapsed < SLACK
    assert_clean(error)


class _MemoryMeter:
    """Memory allocated (peak) and kept (retained) while the block runs: tracemalloc on CPython;
    PyPy has no tracemalloc, so there the GC's own count of memory in use after a full
    collection gives the retained growth, and the peak is not measured."""

    def __enter__(self):
        gc.collect()
        if hasattr(sys, "pypy_version_info"):
            self.tracemalloc = None
            self.base = self._pypy_gc_used()
        else:
            import tracemalloc

            self.tracemalloc = tracemalloc
            tracemalloc.start()
            self.base = tracemalloc.get_traced_memory()[0]
        return self

    @staticmethod
    def _pypy_gc_used():
        return gc.get_stats()._s.total_gc_memory  # the raw numbers behind PyPy's formatted ones

    def __exit__(self, *exc_info):
        if self.tracemalloc is None:
            gc.collect()
            self.retained = self._pypy_gc_used() - self.base
            self.peak = self.retained
        else:
            current, peak = self.tracemalloc.get_traced_memory()
            self.tracemalloc.stop()
            self.retained, self.peak = current - self.base, peak - self.base


def test_200k_tiny_events_without_accumulating_in_constant_memory(run):
    count, measured = 200_000, 20_000
    text = "t" * 100
    batch = 1000
    script = [send(head()), repeat(delta(text) * batch, count=count // batch), send(finish() + DONE)]
    with FaultServer(script) as server:
        seen = 0
        meter = _MemoryMeter()

        def on_delta(item):
            nonlocal seen
            seen += getattr(item, "text", None) == text
            if seen == count - measured and not hasattr(meter, "base"):
                meter.__enter__()  # the last 20k events: 2 MB of text if anything kept them

        outcome = go(run, server, call="stream", on_delta=on_delta, keep=False,
                     stream_options=dict(accumulate=False))
        meter.__exit__(None, None, None)
        assert outcome.error is None, outcome.error
        stream = outcome.stream
        assert server.errors == []
    assert seen == count
    assert meter.retained < 500_000 and meter.peak < 1_000_000, (meter.retained, meter.peak)
    assert stream.completion.content == "" and stream.completion.finish_reason == "stop"
    assert stream.events == count + 2


# Cleanup #####################################################################


def _held_stream_script():
    return [send(head() + delta("one") + delta("two")), hold()]


def test_break_out_of_the_loop_closes_the_connection(run):
    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = go(run, server, call="stream", on_delta=lambda item: True)  # break at the first
            (item,), stream = outcome.deltas, outcome.stream
            gc.collect()
        assert server.wait_peer_closed(0)
    assert item == streamlite.ContentDelta("one")
    assert stream.completion.content == "one"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_close_ends_iteration_and_closes_the_connection():
    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = client(server).stream("hi")
            assert next(stream) == streamlite.ContentDelta("one")
            stream.close()
            stream.close()  # idempotent
            assert list(stream) == []
            gc.collect()
        assert server.wait_peer_closed(0)
    assert "closed" in repr(stream)
    assert stream.completion.content == "one"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_exception_in_the_block_closes_the_connection(run):
    def caller_bug(item):
        raise KeyError("caller bug")

    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(KeyError):
                go(run, server, call="stream", on_delta=caller_bug)
            gc.collect()
        assert server.wait_peer_closed(0)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def async_client(server, **options):
    settings = dict(connect_timeout=1.0, read_timeout=2.0, max_retries=0)
    settings.update(options)
    return streamlite.AsyncClient(server.url, KEY, **settings)


def test_garbage_collected_unfinished_stream_closes_without_warnings():
    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = client(server).stream("hi")
            next(stream)
            del stream
            for _ in range(3):  # PyPy runs a generator's finalizer a collection after the object's
                gc.collect()
        assert server.wait_peer_closed(0)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_garbage_collected_unfinished_async_stream_closes_without_warnings():
    async def scenario(server):
        stream = async_client(server).astream("hi")
        await stream.__anext__()
        del stream
        gc.collect()
        for _ in range(3):  # let the loop run the closing it scheduled
            await asyncio.sleep(0)
        return server.wait_peer_closed(0)

    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            closed = asyncio.run(scenario(server))
            gc.collect()
    assert closed
    assert not [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]


def test_garbage_collected_unstarted_stream_closes_without_warnings():
    with FaultServer(_held_stream_script()) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client(server).stream("hi")  # never iterated, dropped at once
            gc.collect()
        assert server.wait_peer_closed(0)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def _all_at_once_script(connections, pieces):
    """Each connection answers "<prompt>:<i> " for i < pieces: half the answer, then waits until
    all `connections` are open at once, then the rest."""
    barrier = threading.Barrier(connections, timeout=10)

    def script(index, request):
        name = json.loads(request.body)["messages"][0]["content"]
        words = [delta("%s:%d " % (name, i)) for i in range(pieces)]
        return [send(head() + b"".join(words[: pieces // 2])), call(barrier.wait),
                send(b"".join(words[pieces // 2 :]) + finish() + DONE)]

    return script


def test_16_threads_stream_concurrently_with_content_intact():
    threads = 16
    pieces = 40
    with FaultServer(_all_at_once_script(threads, pieces), max_connections=threads) as server:
        c = client(server, read_timeout=10.0)
        results, failures = {}, []

        def worker(number):
            try:
                results[number] = c.complete("thread-%d" % number)
            except Exception as exc:  # reported below
                failures.append(exc)

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(20)
        assert not any(thread.is_alive() for thread in workers)
        assert server.errors == []
        assert server.connections == threads
    assert failures == []
    for number in range(threads):
        expected = "".join("thread-%d:%d " % (number, i) for i in range(pieces))
        assert results[number].content == expected and results[number].finish_reason == "stop"


def test_16_async_streams_in_one_loop_with_content_intact():
    """The async twin of the test above: 16 tasks on one AsyncClient in one loop."""
    tasks = 16
    pieces = 40
    with FaultServer(_all_at_once_script(tasks, pieces), max_connections=tasks) as server:
        c = async_client(server, read_timeout=10.0)

        async def all_at_once():
            return await asyncio.gather(*[c.acomplete("task-%d" % n) for n in range(tasks)])

        results = asyncio.run(all_at_once())
        assert server.errors == []
        assert server.connections == tasks
    for number in range(tasks):
        expected = "".join("task-%d:%d " % (number, i) for i in range(pieces))
        assert results[number].content == expected and results[number].finish_reason == "stop"


# Secrets echoed inside a 200 body, and the partial's counters ##################


@pytest.mark.parametrize("ctype, body", [
    ("text/event-stream", delta("so far") + sse({"error": {"message": "Incorrect API key provided: " + KEY}})),
    ("text/event-stream", delta("so far") + b"data: {not json " + KEY.encode() + b"}\n\n"),
    ("application/json", json.dumps({"error": {"message": "Incorrect API key provided: " + KEY}}).encode()),
])
def test_a_key_echoed_in_the_body_of_a_200_is_redacted(ctype, body, run):
    with FaultServer([send(response(body, ctype=ctype))]) as server:
        error, _ = failing_run(run, server, streamlite.StreamliteError)
    assert "[redacted]" in str(error)
    assert_clean(error)


def test_the_partial_counts_the_bytes_that_arrived(run):
    sent = head() + delta("abc")
    with FaultServer([send(sent), close()]) as server:
        error, _ = failing_run(run, server, streamlite.APIConnectionError)
    stats = error.partial.stats
    assert error.partial.content == "abc"
    assert stats.bytes == len(sent) and stats.events == 1
    assert stats.time_to_first_byte is not None and 0 <= stats.time_to_first_byte <= stats.duration
    assert_clean(error)
