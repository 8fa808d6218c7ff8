"""A loopback chat-completions server for batch tests and the batch benchmark: it enforces a rate
limit (a sliding window; over it, 429 with Retry-After), answers after a fixed delay, and fails
on request: a prompt containing "fail-always" gets 400, "flaky" gets 500 on its first try, "cut"
gets a stream that breaks off after some text, "slow" waits `slow_delay` before its answer.

Every request is recorded (arrival time, prompt, status) so tests can count starts per window
and answers per prompt. The server stops by itself after `lifetime` seconds.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "BatchServer"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        messages = body.get("messages") or []
        prompt = messages[-1].get("content", "") if messages else ""
        if not isinstance(prompt, str):
            prompt = json.dumps(prompt)
        server = self.server
        status, wait = server.admit(prompt)
        if status == 429:
            self._send_json(429, {"error": {"message": "rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                            {"Retry-After": str(max(1, int(wait + 0.999))), "retry-after-ms": str(int(wait * 1000) + 1)})
            return
        if status != 200:
            self._send_json(status, {"error": {"message": "injected failure %d" % status, "code": "injected"}}, {})
            return
        time.sleep(server.delay + (server.slow_delay if "slow" in prompt else 0.0))
        text = "echo: " + prompt
        number = server.count_answer(prompt)
        chunks = [
            {"id": "chatcmpl-%d" % number, "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model") or "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": text[:5]}, "finish_reason": None}]},
            {"id": "chatcmpl-%d" % number, "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model") or "m",
             "choices": [{"index": 0, "delta": {"content": text[5:]}, "finish_reason": None}]},
            {"id": "chatcmpl-%d" % number, "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model") or "m",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "chatcmpl-%d" % number, "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model") or "m",
             "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
        ]
        cut = "cut" in prompt
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("x-request-id", "req-%d" % number)
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks[: 1 if cut else None]:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        if not cut:
            self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _send_json(self, status, obj, headers):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class BatchServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, *, limit=None, window=1.0, delay=0.0, slow_delay=0.0, throttle_first=0, retry_after=0.5, lifetime=60.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.throttle_first = throttle_first  # the first N requests get 429 with Retry-After `retry_after`
        self.retry_after = retry_after
        self.limit = limit  # requests admitted per sliding `window` seconds (None: no limit)
        self.window = window
        self.delay = delay
        self.slow_delay = slow_delay
        self.lock = threading.Lock()
        self.admitted = []  # arrival times of admitted requests
        self.log = []  # (arrival time, prompt, status) of every request
        self.answers = {}  # prompt -> number of whole answers started
        self.flaky_seen = set()
        self.numbers = 0
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.shutdown)
        self.timer.daemon = True

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1" % self.server_address[1]

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.shutdown()
        self.server_close()

    def admit(self, prompt):
        """(status, seconds until a slot frees) for a request arriving now."""
        now = time.monotonic()
        with self.lock:
            if self.throttle_first > 0:
                self.throttle_first -= 1
                self.log.append((now, prompt, 429))
                return 429, self.retry_after
            if self.limit is not None:
                self.admitted = [t for t in self.admitted if t > now - self.window]
                if len(self.admitted) >= self.limit:
                    self.log.append((now, prompt, 429))
                    return 429, self.admitted[0] + self.window - now
                self.admitted.append(now)
            status = 200
            if "fail-always" in prompt:
                status = 400
            elif "flaky" in prompt and prompt not in self.flaky_seen:
                self.flaky_seen.add(prompt)
                status = 500
            self.log.append((now, prompt, status))
            return status, 0.0

    def count_answer(self, prompt):
        with self.lock:
            self.answers[prompt] = self.answers.get(prompt, 0) + 1
            self.numbers += 1
            return self.numbers

    def statuses(self, status):
        with self.lock:
            return [entry for entry in self.log if entry[2] == status]
