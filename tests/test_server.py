"""The local OpenAI-compatible server (examples/server.py), tested with the standard library only.

http.client and raw sockets against a ChatServer on 127.0.0.1: keep-alive and its idle timeout,
`Connection: close`, the request and connection counters, 200 clients at once, every fault, the
end of a tool loop, legacy completions and the Responses API (event order, shapes, usage).
"""

import http.client
import json
import os
import pathlib
import selectors
import socket
import ssl
import subprocess
import sys
import time

import pytest

import server as server_module
from server import REASONING, STORY, TOOL_QUERY, ChatServer, RecordedRequest, reply_for, tool_reply

TIMEOUT = 10.0
CERTS = pathlib.Path(__file__).parent / "data" / "certs"
USER = [{"role": "user", "content": "Tell me a story"}]
TOOLS_CHAT = [{"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
TOOLS_RESPONSES = [{"type": "function", "name": "search", "description": "Search the web",
                    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]
ENDPOINTS = {
    "/v1/chat/completions": {"messages": USER},
    "/v1/completions": {"prompt": "Once upon a time"},
    "/v1/responses": {"input": "Tell me a story"},
}


###############################################################################
# Helpers: HTTP by hand
###############################################################################


def post(conn, path, body, headers=None):
    """POST JSON on an http.client connection: (response, its whole body)."""
    conn.request("POST", path, json.dumps(body), dict({"Content-Type": "application/json"}, **(headers or {})))
    response = conn.getresponse()
    return response, response.read()


def sse(body):
    """[(event name or None, data text)] of an event stream body."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def chunks_of(body):
    """The JSON objects of a chat or completions stream, and whether it ended with [DONE]."""
    events = sse(body)
    done = bool(events) and events[-1][1] == "[DONE]"
    return [json.loads(data) for _, data in events if data != "[DONE]"], done


def raw_request(path, body, headers=(), version="HTTP/1.1"):
    data = json.dumps(body).encode()
    head = ["POST %s %s" % (path, version), "Host: 127.0.0.1", "Content-Type: application/json",
            "Content-Length: %d" % len(data)] + list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class RawResponse:
    """A response read off a raw socket: status, headers, body, how it ended."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def _fill(self):
        piece = self.sock.recv(65536)
        if not piece:
            self.eof = True
        self.buffer += piece

    def _line(self):
        while b"\r\n" not in self.buffer:
            if self.eof:
                return None
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, size):
        while len(self.buffer) < size and not self.eof:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read(self):
        """Read one response. .complete is False when the body was cut off."""
        status_line = self._line()
        assert status_line is not None, "the server closed before answering"
        self.status = int(status_line.split()[1])
        self.headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body, self.complete = b"", False
        if self.headers.get("transfer-encoding") == "chunked":
            while True:
                line = self._line()
                if line is None:
                    return self
                size = int(line, 16)
                if size == 0:
                    self.complete = self._line() == b""
                    return self
                piece = self._take(size + 2)
                self.body += piece[:size]
                if len(piece) < size + 2:
                    return self
        elif "content-length" in self.headers:
            length = int(self.headers["content-length"])
            self.body = self._take(length)
            self.complete = len(self.body) == length
        else:
            while not self.eof:
                self._fill()
            self.body, self.buffer, self.complete = self.buffer, b"", True
        return self

    def closed_by_server(self, within):
        """True if the server closes the connection (and sends nothing more) within `within` s."""
        self.sock.settimeout(within)
        try:
            self._fill()
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)
        assert self.buffer == b"", "the server sent more than one response: %r" % self.buffer[:200]
        return self.eof


def connect(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    return sock, RawResponse(sock)


@pytest.fixture
def srv():
    with ChatServer() as server:
        yield server


###############################################################################
# Keep-alive, counters, Connection: close, idle timeout
###############################################################################


def test_one_connection_serves_many_requests_and_each_is_recorded(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        answers = []
        for path, body in ENDPOINTS.items():
            for stream in (True, False):
                response, data = post(conn, path + "?trace=1", dict(body, stream=stream), {"X-Trace-Id": "T%d" % len(answers)})
                answers.append((response.status, response.getheader("Content-Type"), data))
        conn.request("GET", "/v1/models")
        missing = conn.getresponse()
        assert missing.status == 404 and json.loads(missing.read())["error"]["type"] == "invalid_request_error"
    finally:
        conn.close()
    assert [status for status, _, _ in answers] == [200] * 6
    assert [kind.split(";")[0] for _, kind, _ in answers] == ["text/event-stream", "application/json"] * 3
    assert srv.connections_opened == 1
    requests = srv.requests
    assert len(requests) == 7 and all(isinstance(r, RecordedRequest) for r in requests)
    assert [r.connection for r in requests] == [1] * 7
    assert [r.method for r in requests] == ["POST"] * 6 + ["GET"]
    assert [r.path for r in requests[:6:2]] == [path + "?trace=1" for path in ENDPOINTS]
    assert requests[-1].path == "/v1/models" and requests[-1].body is None
    assert [r.headers["x-trace-id"] for r in requests[:6]] == ["T%d" % i for i in range(6)]
    assert all(name == name.lower() for r in requests for name in r.headers)
    assert requests[0].body == dict(ENDPOINTS["/v1/chat/completions"], stream=True)
    assert requests[5].body == dict(ENDPOINTS["/v1/responses"], stream=False)


def test_connections_are_numbered_in_the_order_they_open(srv):
    first, second = (http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT) for _ in range(2))
    try:
        post(first, "/v1/chat/completions", {"messages": USER})
        post(second, "/v1/chat/completions", {"messages": USER})
        post(first, "/v1/chat/completions", {"messages": USER, "stream": True})
    finally:
        first.close()
        second.close()
    assert srv.connections_opened == 2
    assert [r.connection for r in srv.requests] == [1, 2, 1]


def test_connection_close_from_the_client_is_honoured(srv):
    sock, reader = connect(srv)
    with sock:
        sock.sendall(raw_request("/v1/chat/completions", {"messages": USER, "stream": True}))
        kept = reader.read()
        assert kept.status == 200 and kept.complete and "connection" not in kept.headers
        assert not reader.closed_by_server(0.3)  # a keep-alive connection stays open
        sock.sendall(raw_request("/v1/chat/completions", {"messages": USER, "stream": True}, ["Connection: close"]))
        last = reader.read()
        assert last.status == 200 and last.complete and last.headers["connection"] == "close"
        assert chunks_of(last.body)[1] is True
        assert reader.closed_by_server(TIMEOUT)
    assert srv.connections_opened == 1 and len(srv.requests) == 2


def test_an_http_1_0_client_gets_a_close_delimited_stream(srv):
    sock, reader = connect(srv)
    with sock:
        sock.sendall(raw_request("/v1/chat/completions", {"messages": USER, "stream": True}, version="HTTP/1.0"))
        response = reader.read()
    assert response.status == 200 and response.headers["connection"] == "close"
    assert "transfer-encoding" not in response.headers and reader.eof
    chunks, done = chunks_of(response.body)
    assert done and "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == STORY


def test_the_server_closes_a_connection_idle_for_keep_alive_timeout():
    with ChatServer(keep_alive_timeout=0.3) as server:
        sock, reader = connect(server)
        with sock:
            sock.sendall(raw_request("/v1/completions", {"prompt": "hi"}))
            response = reader.read()
            assert response.status == 200 and response.headers["keep-alive"] == "timeout=0.3"
            started = time.monotonic()
            assert reader.closed_by_server(TIMEOUT)
            idle = time.monotonic() - started
        assert 0.2 <= idle < 5.0
        # a connection that keeps talking is not cut off: three requests 0.1 s apart outlast 0.3 s
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            for _ in range(4):
                response, _ = post(conn, "/v1/chat/completions", {"messages": USER, "stream": True})
                assert response.status == 200
                time.sleep(0.1)
        finally:
            conn.close()
        assert server.connections_opened == 2
        assert [r.connection for r in server.requests] == [1, 2, 2, 2, 2]


def test_without_keep_alive_timeout_no_keep_alive_header_and_the_connection_stays(srv):
    sock, reader = connect(srv)
    with sock:
        sock.sendall(raw_request("/v1/chat/completions", {"messages": USER}))
        response = reader.read()
        assert response.status == 200 and "keep-alive" not in response.headers
        assert not reader.closed_by_server(0.5)
        assert srv.open_connections == 1


def test_stop_ends_idle_keep_alive_connections_at_once():
    server = ChatServer().start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        assert post(conn, "/v1/chat/completions", {"messages": USER})[0].status == 200
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
        assert server.open_connections == 0
    finally:
        conn.close()


def test_a_reused_connection_answers_without_waiting_for_a_delayed_ack(srv):
    """TCP_NODELAY: with Nagle, the first event written after the headers waits for the client's
    delayed ACK (40 ms or more on Linux) on every request but the first of a connection."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    times = []
    try:
        for _ in range(8):
            started = time.perf_counter()
            response, _ = post(conn, "/v1/chat/completions", {"messages": USER, "stream": True, "max_tokens": 3})
            times.append(time.perf_counter() - started)
            assert response.status == 200
    finally:
        conn.close()
    assert srv.connections_opened == 1
    assert min(times[1:]) < 0.02  # with Nagle every one of them takes 40 ms or more


def test_the_request_record_keeps_only_the_last_ones(monkeypatch):
    monkeypatch.setattr(server_module, "MAX_RECORDED", 5)
    with ChatServer() as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            for i in range(8):
                post(conn, "/v1/chat/completions", {"messages": USER, "seed": i})
        finally:
            conn.close()
        assert [r.body["seed"] for r in server.requests] == [3, 4, 5, 6, 7]


def test_two_hundred_clients_connect_before_the_server_accepts_and_all_are_served():
    """The listen backlog holds them all: socketserver's default (5) would drop most SYNs."""
    clients = 200
    server = ChatServer(words=5, reasoning=False)  # listening, not yet accepting
    socks = []
    try:
        for _ in range(clients):
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(2.0)  # a dropped SYN is retried after 1 s, then 3 s: this fails then
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(raw_request("/v1/chat/completions", {"messages": USER, "stream": True}, ["Connection: close"]))
            sock.setblocking(False)
        server.start()
        selector = selectors.DefaultSelector()
        received = {sock: b"" for sock in socks}
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                piece = key.fileobj.recv(65536)
                received[key.fileobj] += piece
                if not piece:
                    selector.unregister(key.fileobj)
        selector.close()
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    finished = [data for data in received.values() if data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")]
    assert len(finished) == clients
    assert server.connections_opened == clients and len(server.requests) == clients
    assert sorted(r.connection for r in server.requests) == list(range(1, clients + 1))


###############################################################################
# Faults
###############################################################################


def test_fail_first_answers_the_first_requests_with_the_status_and_retry_after():
    with ChatServer(fail_first=2, fail_status=503, retry_after=0.5) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            answers = [post(conn, "/v1/chat/completions", {"messages": USER, "stream": True}) for _ in range(3)]
        finally:
            conn.close()
    for response, data in answers[:2]:
        assert response.status == 503 and response.getheader("Retry-After") == "0.5"
        error = json.loads(data)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    response, data = answers[2]
    assert response.status == 200 and response.getheader("Retry-After") is None and chunks_of(data)[1]
    assert server.connections_opened == 1  # an error answer keeps the connection


def test_fail_first_defaults_to_429_rate_limit_without_retry_after():
    with ChatServer(fail_first=1) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            first, body = post(conn, "/v1/responses", {"input": "hi"})
            second, _ = post(conn, "/v1/responses", {"input": "hi"})
        finally:
            conn.close()
    assert first.status == 429 and first.getheader("Retry-After") is None
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert second.status == 200


@pytest.mark.parametrize("path", list(ENDPOINTS))
@pytest.mark.parametrize("status,code", [(401, "invalid_api_key"), (429, "rate_limit_exceeded"), (500, None)])
def test_fail_models_answer_their_status_with_an_openai_error(srv, path, status, code):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, path, dict(ENDPOINTS[path], model="fail-%d" % status, stream=True))
        after, _ = post(conn, path, dict(ENDPOINTS[path], stream=True))
    finally:
        conn.close()
    assert response.status == status and response.getheader("Content-Type") == "application/json"
    error = json.loads(data)["error"]
    assert error["code"] == code and error["message"] and error["param"] is None
    assert error["type"] == ("server_error" if status == 500 else "requests" if status == 429 else "invalid_request_error")
    assert after.status == 200 and srv.connections_opened == 1


def test_fail_models_send_retry_after_when_the_server_has_one():
    with ChatServer(retry_after=2) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            response, _ = post(conn, "/v1/chat/completions", {"messages": USER, "model": "fail-429"})
        finally:
            conn.close()
    assert response.status == 429 and response.getheader("Retry-After") == "2"


@pytest.mark.parametrize("model", ["midstream-error", "fail-response"])
def test_midstream_error_in_chat_and_completions(srv, model):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        chat, chat_body = post(conn, "/v1/chat/completions", {"messages": USER, "model": model, "stream": True})
        legacy, legacy_body = post(conn, "/v1/completions", {"prompt": "x", "model": model, "stream": True})
        after, _ = post(conn, "/v1/chat/completions", {"messages": USER, "stream": True})
    finally:
        conn.close()
    assert chat.status == legacy.status == after.status == 200 and srv.connections_opened == 1
    chunks, done = chunks_of(chat_body)
    assert not done and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]] == ["Here", " is", " a"]
    error = {"message": server_module.SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": "internal_error"}
    assert chunks[-1] == {"error": error}
    chunks, done = chunks_of(legacy_body)
    assert not done and [c["choices"][0]["text"] for c in chunks[:-1]] == ["Here", " is", " a"]
    assert chunks[-1] == {"error": error}


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_cutoff_closes_the_connection_in_the_middle_of_the_stream(srv, path):
    sock, reader = connect(srv)
    with sock:
        sock.sendall(raw_request(path, dict(ENDPOINTS[path], model="cutoff", stream=True)))
        response = reader.read()
        assert response.status == 200 and not response.complete and reader.eof
    events = sse(response.body)
    assert events and all(data != "[DONE]" for _, data in events)
    texts = [json.loads(data) for _, data in events]
    if path == "/v1/responses":
        assert [e["delta"] for e in texts if e["type"] == "response.output_text.delta"] == ["Here", " is", " a"]
        assert texts[-1]["type"] == "response.output_text.delta"
    elif path == "/v1/completions":
        assert [c["choices"][0]["text"] for c in texts] == ["Here", " is", " a"]
    else:
        assert [c["choices"][0]["delta"]["content"] for c in texts] == ["", "Here", " is", " a"]


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_faults_without_stream(srv, path):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, path, dict(ENDPOINTS[path], model="midstream-error"))
    finally:
        conn.close()
    assert response.status == 500 and json.loads(data)["error"]["type"] == "server_error"
    sock, reader = connect(srv)
    with sock:
        sock.sendall(raw_request(path, dict(ENDPOINTS[path], model="cutoff")))
        cut = reader.read()
    assert cut.status == 200 and not cut.complete and reader.eof and 0 < len(cut.body) < int(cut.headers["content-length"])


def test_responses_midstream_error_is_an_error_event(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/responses", {"input": "hi", "model": "midstream-error", "stream": True})
    finally:
        conn.close()
    events = sse(data)
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta", "error"]
    error = json.loads(events[-1][1])
    assert error == {"type": "error", "code": "internal_error", "message": server_module.SERVER_ERROR_MESSAGE,
                     "param": None, "sequence_number": 7}


def test_responses_fail_response_ends_with_response_failed(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/responses", {"input": "hi", "model": "fail-response", "stream": True})
    finally:
        conn.close()
    events = [json.loads(d) for _, d in sse(data)]
    assert [e["type"] for e in events[-4:]] == ["response.output_text.delta"] * 3 + ["response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["usage"] is None
    assert failed["error"] == {"code": "server_error", "message": server_module.SERVER_ERROR_MESSAGE}
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "Here is a"


###############################################################################
# The end of a tool loop
###############################################################################


def test_chat_answers_a_tool_result_with_text_not_another_call(srv):
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42 degrees and sunny"},
    ]
    expected = "The tool returned: 42 degrees and sunny"
    assert reply_for(messages) == tool_reply("42 degrees and sunny") == expected
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        _, streamed = post(conn, "/v1/chat/completions", {"messages": messages, "tools": TOOLS_CHAT, "stream": True})
        _, whole = post(conn, "/v1/chat/completions", {"messages": messages, "tools": TOOLS_CHAT})
        _, first_turn = post(conn, "/v1/chat/completions", {"messages": USER, "tools": TOOLS_CHAT})
    finally:
        conn.close()
    chunks, done = chunks_of(streamed)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert done and "".join(d.get("content") or "" for d in deltas) == expected
    assert not any("tool_calls" in d for d in deltas) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    message = json.loads(whole)["choices"][0]
    assert message["finish_reason"] == "stop" and message["message"]["content"] == expected
    assert "tool_calls" not in message["message"]
    first = json.loads(first_turn)["choices"][0]  # before the tool result: a call
    assert first["finish_reason"] == "tool_calls"
    assert json.loads(first["message"]["tool_calls"][0]["function"]["arguments"]) == {"query": TOOL_QUERY}


def test_responses_answer_a_function_call_output_with_a_message(srv):
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
             {"type": "function_call", "call_id": "call_1", "name": "search", "arguments": "{\"query\": \"x\"}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "42 degrees"}]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        _, data = post(conn, "/v1/responses", {"input": items, "tools": TOOLS_RESPONSES, "stream": True})
    finally:
        conn.close()
    events = [json.loads(d) for _, d in sse(data)]
    assert not any(e.get("item", {}).get("type") == "function_call" for e in events)
    completed = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and [o["type"] for o in completed["output"]] == ["message"]
    assert completed["output"][0]["content"][0]["text"] == "The tool returned: 42 degrees"
    assert completed["usage"]["input_tokens"] == 1 + 2 + 2  # "Weather?", the arguments, the output


###############################################################################
# Legacy completions
###############################################################################


def test_completions_stream_shapes_echo_logprobs_n_and_usage(srv):
    body = {"prompt": ["Once upon", "a time"], "n": 2, "echo": True, "logprobs": 2, "max_tokens": 4,
            "suffix": "The end.", "stream": True, "stream_options": {"include_usage": True}, "model": "m1"}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/completions", body)
    finally:
        conn.close()
    assert response.status == 200
    chunks, done = chunks_of(data)
    assert done
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["model"] == "m1" and chunk["id"] == chunks[0]["id"]
        assert chunk["id"].startswith("cmpl-") and isinstance(chunk["created"], int)
    *text_chunks, usage = chunks
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}
    texts, finishes = {}, {}
    for chunk in text_chunks:
        (choice,) = chunk["choices"]
        assert set(choice) == {"index", "text", "logprobs", "finish_reason"} and chunk["usage"] is None
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["finish_reason"] is not None:
            finishes[choice["index"]] = choice["finish_reason"]
        elif choice["text"]:
            logprobs = choice["logprobs"]
            assert "".join(logprobs["tokens"]) == choice["text"]
            assert len(logprobs["token_logprobs"]) == len(logprobs["tokens"]) == len(logprobs["text_offset"])
            for value, top in zip(logprobs["token_logprobs"], logprobs["top_logprobs"]):
                assert value is None and top is None or value < 0 and len(top) == 2
    assert texts == {0: "Once uponHere is a short", 1: "Once uponHere is a short",
                     2: "a timeHere is a short", 3: "a timeHere is a short"}
    assert finishes == {0: "length", 1: "length", 2: "length", 3: "length"}


def test_completions_without_stream_is_one_text_completion(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/completions", {"prompt": "Say something", "logprobs": 1})
    finally:
        conn.close()
    obj = json.loads(data)
    assert response.status == 200 and obj["object"] == "text_completion"
    (choice,) = obj["choices"]
    assert choice["text"] == STORY and choice["finish_reason"] == "stop" and choice["index"] == 0
    assert "".join(choice["logprobs"]["tokens"]) == STORY
    offsets = choice["logprobs"]["text_offset"]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(offsets) == len(STORY.split())
    assert obj["usage"] == {"prompt_tokens": 2, "completion_tokens": 58, "total_tokens": 60}


def test_completions_refuse_messages_like_openai(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/completions", {"messages": USER, "stream": True})
    finally:
        conn.close()
    assert response.status == 400
    assert json.loads(data)["error"] == {"message": "Unrecognized request argument supplied: messages",
                                         "type": "invalid_request_error", "param": None, "code": None}


###############################################################################
# Responses
###############################################################################

MESSAGE_EVENTS = ["response.output_item.added", "response.content_part.added"] + [
    "response.output_text.delta"] * 58 + ["response.output_text.done", "response.content_part.done",
                                          "response.output_item.done"]


def responses_stream(server, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/responses", dict(body, stream=True))
    finally:
        conn.close()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    events = sse(data)
    assert all(data != "[DONE]" for _, data in events)
    parsed = [json.loads(data) for _, data in events]
    assert [name for name, _ in events] == [e["type"] for e in parsed]
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    return parsed


def test_responses_text_stream(srv):
    events = responses_stream(srv, {"input": "Tell me a story", "instructions": "Be brief.", "model": "m2"})
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"] + MESSAGE_EVENTS + ["response.completed"]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["id"].startswith("resp_") and created["object"] == "response" and created["model"] == "m2"
    assert created["instructions"] == "Be brief."
    added = events[2]
    assert added["output_index"] == 0 and added["item"] == {
        "id": added["item"]["id"], "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_")
    assert events[3]["part"] == {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0 for e in deltas)
    assert "".join(e["delta"] for e in deltas) == STORY == events[-4]["text"]
    assert events[-3]["part"]["text"] == STORY
    done_item = events[-2]["item"]
    assert done_item["status"] == "completed" and done_item["content"][0]["text"] == STORY
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["output"] == [done_item]
    assert completed["id"] == created["id"] and completed["created_at"] == created["created_at"]
    assert completed["usage"] == {"input_tokens": 6, "input_tokens_details": {"cached_tokens": 0},
                                  "output_tokens": 58, "output_tokens_details": {"reasoning_tokens": 0},
                                  "total_tokens": 64}


def test_responses_reasoning_summary_then_message(srv):
    events = responses_stream(srv, {"input": "hi", "reasoning": {"effort": "low", "summary": "auto"}})
    words = len(REASONING.split())
    assert [e["type"] for e in events] == (
        ["response.created", "response.in_progress", "response.output_item.added",
         "response.reasoning_summary_part.added"] + ["response.reasoning_summary_text.delta"] * words
        + ["response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
           "response.output_item.done"] + MESSAGE_EVENTS + ["response.completed"])
    assert events[2]["item"] == {"id": events[2]["item"]["id"], "type": "reasoning", "summary": []}
    reasoning_deltas = [e for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert "".join(e["delta"] for e in reasoning_deltas) == REASONING
    assert all(e["summary_index"] == 0 and e["output_index"] == 0 for e in reasoning_deltas)
    summary = [{"type": "summary_text", "text": REASONING}]
    completed = events[-1]["response"]
    assert completed["output"][0]["summary"] == summary and completed["output"][1]["type"] == "message"
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "reasoning"), (1, "message")]
    assert completed["usage"]["output_tokens"] == words + 58
    assert completed["usage"]["output_tokens_details"] == {"reasoning_tokens": words}
    assert completed["reasoning"] == {"effort": "low", "summary": "auto"}


def test_responses_function_call(srv):
    events = responses_stream(srv, {"input": [{"role": "user", "content": "Find stories"}], "tools": TOOLS_RESPONSES})
    types = [e["type"] for e in events]
    arguments = json.dumps({"query": TOOL_QUERY}, separators=(",", ":"))
    pieces = -(-len(arguments) // 8)
    assert types == ["response.created", "response.in_progress", "response.output_item.added"] + [
        "response.function_call_arguments.delta"] * pieces + [
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    item = events[2]["item"]
    assert item["type"] == "function_call" and item["arguments"] == "" and item["status"] == "in_progress"
    assert item["id"].startswith("fc_") and item["call_id"].startswith("call_") and item["name"] == "search"
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert all(e["item_id"] == item["id"] for e in deltas) and "".join(e["delta"] for e in deltas) == arguments
    assert events[-3]["arguments"] == arguments and events[-3]["name"] == "search"
    done = events[-2]["item"]
    assert done == dict(item, arguments=arguments, status="completed")
    assert events[-1]["response"]["output"] == [done]
    assert events[-1]["response"]["usage"]["output_tokens"] == pieces


def test_responses_max_output_tokens_ends_incomplete(srv):
    events = responses_stream(srv, {"input": "hi", "max_output_tokens": 5})
    assert events[-1]["type"] == "response.incomplete"
    response = events[-1]["response"]
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "Here is a short story."
    assert response["usage"]["output_tokens"] == 5
    assert not any(e["type"] == "response.completed" for e in events)


def test_responses_without_stream_is_the_response_object(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        response, data = post(conn, "/v1/responses", {"input": "hi", "reasoning": {"effort": "high"}})
    finally:
        conn.close()
    obj = json.loads(data)
    assert response.status == 200 and obj["object"] == "response" and obj["status"] == "completed"
    assert [o["type"] for o in obj["output"]] == ["reasoning", "message"]
    assert obj["output"][0]["summary"] == []  # no summary asked for
    assert obj["output"][1]["content"][0]["text"] == STORY
    assert obj["usage"]["output_tokens_details"]["reasoning_tokens"] == len(REASONING.split())


###############################################################################
# TLS, command line
###############################################################################


def test_https_keep_alive():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(CERTS / "good.pem"), str(CERTS / "good.key"))
    client_context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    with ChatServer(tls=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=TIMEOUT, context=client_context)
        try:
            for _ in range(3):
                response, data = post(conn, "/v1/chat/completions", {"messages": USER, "stream": True})
                assert response.status == 200 and chunks_of(data)[1]
        finally:
            conn.close()
        assert server.connections_opened == 1


def test_command_line_flags():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "server.py")
    process = subprocess.Popen(
        [sys.executable, script, "--port", "0", "--pace", "0", "--fail-first", "1", "--fail-status", "500",
         "--retry-after", "1.5", "--keep-alive-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = process.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            failed, _ = post(conn, "/v1/chat/completions", {"messages": USER})
            served, _ = post(conn, "/v1/chat/completions", {"messages": USER})
        finally:
            conn.close()
        assert failed.status == 500 and failed.getheader("Retry-After") == "1.5"
        assert served.status == 200 and served.getheader("Keep-Alive") == "timeout=2"
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)
    bad = subprocess.run([sys.executable, script, "--port", "0", "--fail-status", "200"],
                         capture_output=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and b"fail_status" in bad.stderr
