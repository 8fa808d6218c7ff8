"""streamlite against the floor and its peers, side by side in one run on this machine.

    python3 tests/benchmarks/bench.py                 # everything, a few minutes
    python3 tests/benchmarks/bench.py --quick         # smaller counts, for a smoke run
    python3 tests/benchmarks/bench.py --json out.json # also write the figures as JSON

A loopback server (a separate process, so it does not share the GIL with the clients) streams
OpenAI-style `chat.completion.chunk` events of about 250 bytes with 4 characters of content
each: a burst of N events as fast as it can, or a paced stream (one event every 5 ms) whose
events carry their send time (`x_sent_ns`, time.perf_counter_ns(): CLOCK_MONOTONIC on Linux,
one clock for all processes). Both with chunked transfer encoding (one HTTP chunk per event,
as real servers send) and with a close-delimited body.

Each client runs in its own process (so CPU and peak RSS are its own): the raw-socket floor
written here (hand-written request, recv, de-chunk, split lines, json.loads, take the content:
the least any Python client must do), streamlite yielding typed deltas without accumulation,
streamlite accumulating a Completion, and, when installed, the openai SDK, httpx + httpx-sse,
and requests with iter_lines(). Every client's content is checked against the server's.

Figures: import time (`python -c "import X"` minus `python -c pass`, median), CPU per event and
chunks per second on the burst, added latency from send to yield on the paced stream, peak RSS
over 1,000,000 events without accumulation (and at 10 % of them, to show it is flat), 64
concurrent streams from threads. Each figure is also given as a ratio to the floor's.

Sequential requests: N streams one after another from one client to examples/server.py's
ChatServer (in its own process), over HTTP and over HTTPS (tests/data/certs): how many
connections the server accepted (its own counter) and the time to first token of request 1
against the median of requests 2..N. A client that keeps its connection alive opens one and pays
the connect (and TLS handshake) once; the raw-socket floor here does. The openai SDK when installed.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEXT = "Streaming tokens arrive a few characters at a time, just like real models send them!"
PIECE = 4
PERIOD = len(TEXT) // PIECE
assert len(TEXT) % PIECE == 0
PACE = 0.005
PEERS = ("openai", "httpx_sse", "requests")

# -------------------------------------------------------------------------------------------
# The server
# -------------------------------------------------------------------------------------------


def _event(i, stamp=None):
    """One content event, about 250 bytes like OpenAI's (their `obfuscation` pads them too)."""
    piece = TEXT[PIECE * (i % PERIOD) : PIECE * (i % PERIOD) + PIECE]
    chunk = {
        "id": "chatcmpl-Bench0123456789abcdefghijklmn", "object": "chat.completion.chunk",
        "created": 1767225600, "model": "gpt-4.1-mini-2025-04-14", "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
        "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}],
        "obfuscation": "x" * 8,
    }
    if stamp is not None:
        chunk["x_sent_ns"] = stamp
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def expected_content(n):
    return TEXT * (n // PERIOD) + TEXT[: PIECE * (n % PERIOD)]


_TAIL = (
    b'data: {"id":"chatcmpl-Bench","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4.1-mini",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-Bench","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4.1-mini",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
    b"data: [DONE]\n\n"
)


def _frame(data, chunked):
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data


def _handle(conn):
    with conn:
        conn.settimeout(600)
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        # the path says what to send: /{burst|paced}/{chunked|close}/{N}/v1/chat/completions
        _, kind, framing, count = head.split(b" ")[1].split(b"/")[:4]
        chunked, count = framing == b"chunked", int(count)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     + (b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n") + b"\r\n")
        try:
            if kind == b"burst":
                _send_burst(conn, count, chunked)
            else:
                _send_paced(conn, count, chunked)
            conn.sendall(_frame(_TAIL, chunked) + (b"0\r\n\r\n" if chunked else b""))
            if chunked:  # let the client close first: no reset of what it has not read yet
                conn.settimeout(30)
                while conn.recv(65536):
                    pass
            else:
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(30)
                while conn.recv(65536):
                    pass
        except OSError:
            pass


def _send_burst(conn, count, chunked):
    period = b"".join(_frame(_event(i), chunked) for i in range(PERIOD))
    block = period * max(1, 65536 // len(period))
    per_block = PERIOD * max(1, 65536 // len(period))
    sent = 0
    while sent + per_block <= count:
        conn.sendall(block)
        sent += per_block
    conn.sendall(b"".join(_frame(_event(i), chunked) for i in range(sent, count)))


def _send_paced(conn, count, chunked):
    start = time.perf_counter()
    for i in range(count):
        wait = start + i * PACE - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        conn.sendall(_frame(_event(i, time.perf_counter_ns()), chunked))


def serve():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    listener.settimeout(1800)  # the benchmark ends it; this bounds a forgotten one
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


# -------------------------------------------------------------------------------------------
# The clients: each returns an iterator of (content piece, raw chunk or None)
# -------------------------------------------------------------------------------------------

BODY = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def floor_client(base_url, stamps):
    """The least a Python client must do: request, recv, de-chunk, split lines, json.loads."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    path = "/" + base_url.split("//")[1].split("/", 1)[1] + "/chat/completions"
    body = json.dumps(BODY).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), port.encode(), len(body), body))
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    chunked = b"transfer-encoding: chunked" in head.lower()
    raw = b""  # de-chunked bytes not yet split into lines
    loads = json.loads
    ended = False
    try:
        while not ended:
            if chunked:  # take every complete chunk in the buffer
                pos, pieces = 0, [raw]
                while True:
                    newline = buffer.find(b"\r\n", pos)
                    if newline < 0:
                        break
                    size = int(buffer[pos:newline], 16)
                    if len(buffer) < newline + 2 + size + 2:
                        break
                    if size == 0:
                        ended = True
                        break
                    pieces.append(buffer[newline + 2 : newline + 2 + size])
                    pos = newline + 2 + size + 2
                raw, buffer = b"".join(pieces), buffer[pos:]
            else:
                raw, buffer = raw + buffer, b""
            *lines, raw = raw.split(b"\n")
            for line in lines:
                if line[:6] == b"data: ":
                    if line[6:] == b"[DONE]":
                        return
                    chunk = loads(line[6:])
                    choices = chunk["choices"]
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            yield content, chunk if stamps else None
            if ended:
                return
            data = sock.recv(65536)
            if not data:
                return
            buffer += data
    finally:
        sock.close()


def streamlite_client(base_url, stamps, accumulate=False):
    import streamlite

    client = streamlite.Client(base_url, "sk-bench", proxy="")
    ContentDelta = streamlite.ContentDelta
    with client.stream("hi", model="gpt-4.1-mini", accumulate=accumulate) as stream:
        for delta in stream:
            if type(delta) is ContentDelta:
                yield delta.text, stream.last_chunk if stamps else None
    if accumulate:
        assert stream.completion.content == expected_content(stream.completion.content.__len__() // PIECE)


def streamlite_accumulating_client(base_url, stamps):
    return streamlite_client(base_url, stamps, accumulate=True)


def openai_client(base_url, stamps):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    for chunk in client.chat.completions.create(model="gpt-4.1-mini", messages=BODY["messages"], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content, {"x_sent_ns": getattr(chunk, "x_sent_ns", None)} if stamps else None


def httpx_sse_client(base_url, stamps):
    import httpx
    from httpx_sse import connect_sse

    with httpx.Client(timeout=600) as client:
        with connect_sse(client, "POST", base_url + "/chat/completions", json=BODY,
                         headers={"Authorization": "Bearer sk-bench"}) as source:
            for event in source.iter_sse():
                if event.data == "[DONE]":
                    break
                chunk = json.loads(event.data)
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    yield chunk["choices"][0]["delta"]["content"], chunk if stamps else None


def requests_client(base_url, stamps):
    import requests

    with requests.post(base_url + "/chat/completions", json=BODY, stream=True, timeout=600,
                       headers={"Authorization": "Bearer sk-bench"}) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: "):
                if line == b"data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    yield chunk["choices"][0]["delta"]["content"], chunk if stamps else None


CLIENTS = {
    "floor": floor_client,
    "streamlite": streamlite_client,
    "streamlite+acc": streamlite_accumulating_client,
    "openai": openai_client,
    "httpx-sse": httpx_sse_client,
    "requests": requests_client,
}
NEEDS = {"openai": ("openai",), "httpx-sse": ("httpx", "httpx_sse"), "requests": ("requests",),
         "streamlite": ("streamlite",), "streamlite+acc": ("streamlite",)}


def _rss_kb():
    """Peak RSS of this process in kB. On Linux from /proc (VmHWM): ru_maxrss also counts the
    parent's peak when the child was spawned with vfork, so it may not be the client's own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS


def run_client(name, base_url, mode, count):
    """In a child process: stream once, print a JSON line of figures."""
    make = CLIENTS[name]
    for module in NEEDS.get(name, ()):  # import time is measured on its own, not here
        __import__(module)
    digest, length, latencies, rss_at_tenth = hashlib.sha256(), 0, [], None
    stamps = mode == "paced"
    now = time.perf_counter_ns
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    pieces = 0
    for text, chunk in make(base_url, stamps):
        if stamps:
            received = now()
            latencies.append(received - chunk["x_sent_ns"])
        digest.update(text.encode())
        length += len(text)
        pieces += 1
        if pieces == count // 10:
            rss_at_tenth = _rss_kb()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "wall": wall, "length": length, "sha": digest.hexdigest(), "latencies_ns": latencies,
            "rss_kb": _rss_kb(), "rss_at_tenth_kb": rss_at_tenth}


def run_threads(name, base_url, threads, count):
    """In a child process: `threads` concurrent streams; all must come back whole."""
    make = CLIENTS[name]
    results, errors = [None] * threads, []

    def one(i):
        try:
            results[i] = "".join(text for text, _ in make(base_url, False))
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            errors.append(repr(exc))

    wall = time.perf_counter()
    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    wall = time.perf_counter() - wall
    intact = sum(1 for r in results if r == expected_content(count))
    return {"wall": wall, "intact": intact, "errors": errors[:3], "error_count": len(errors)}


# -------------------------------------------------------------------------------------------
# Sequential requests on one client: connection reuse and time to first token
# -------------------------------------------------------------------------------------------

CERTS = os.path.join(ROOT, "tests", "data", "certs")
SEQUENTIAL_WORDS = 20
SEQUENTIAL_CLIENTS = ("floor", "streamlite", "openai")


def chat_server(scheme):
    """In a child process: examples/server.py's ChatServer; prints its URL, then for each line on
    stdin its counters as JSON; stops at the end of stdin."""
    import ssl

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from server import ChatServer

    tls = None
    if scheme == "https":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(CERTS, "good.pem"), os.path.join(CERTS, "good.key"))
    with ChatServer(reasoning=False, words=SEQUENTIAL_WORDS, tls=tls) as server:
        print(server.url, flush=True)
        for _ in sys.stdin:
            print(json.dumps({"connections_opened": server.connections_opened, "requests": len(server.requests)}),
                  flush=True)


def _floor_sequential(base_url, count, ca_file):
    """A keep-alive raw-socket client: one connection, request after request on it."""
    import ssl

    scheme, rest = base_url.split("://")
    host, port = rest.split("/")[0].split(":")
    path = ("/" + rest.split("/", 1)[1] + "/chat/completions").encode()
    body = json.dumps(dict(BODY, model="bench")).encode()
    request = (b"POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer sk-bench\r\nContent-Length: %d\r\n\r\n%s"
               % (path, host.encode(), port.encode(), len(body), body))
    sock, buffer = None, b""

    def recv():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    for _ in range(count):
        started = time.perf_counter()
        if sock is None:
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = ssl.create_default_context(cafile=ca_file).wrap_socket(sock, server_hostname=host)
        sock.sendall(request)
        while b"\r\n\r\n" not in buffer:
            buffer += recv()
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"chunked" in head.lower(), head
        first, text, raw = None, [], b""
        while True:  # de-chunk to the last chunk; split lines; take the content
            while b"\r\n" not in buffer:
                buffer += recv()
            size_line, _, rest = buffer.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += recv()
            raw, buffer = raw + rest[:size], rest[size + 2:]
            *lines, raw = raw.split(b"\n")
            for line in lines:
                if line[:6] == b"data: " and line[6:] != b"[DONE]":
                    choices = json.loads(line[6:])["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        first = first or time.perf_counter()
                        text.append(choices[0]["delta"]["content"])
            if size == 0:
                break
        if b"connection: close" in head.lower():
            sock.close()
            sock = None
        yield first - started, "".join(text)
    if sock is not None:
        sock.close()


def _streamlite_sequential(base_url, count, ca_file):
    import streamlite

    client = streamlite.Client(base_url, "sk-bench", proxy="", ca_file=ca_file)
    try:
        for _ in range(count):
            started = time.perf_counter()
            first, text = None, []
            with client.stream("hi", model="bench") as stream:
                for delta in stream:
                    if type(delta) is streamlite.ContentDelta:
                        first = first or time.perf_counter()
                        text.append(delta.text)
            yield first - started, "".join(text)
    finally:
        getattr(client, "close", lambda: None)()  # a Client without keep-alive has no close()


def _openai_sequential(base_url, count, ca_file):
    import openai

    http_client = openai.DefaultHttpxClient(verify=ca_file or True, trust_env=False)
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, http_client=http_client)
    try:
        for _ in range(count):
            started = time.perf_counter()
            first, text = None, []
            for chunk in client.chat.completions.create(model="bench", messages=BODY["messages"], stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    text.append(chunk.choices[0].delta.content)
            yield first - started, "".join(text)
    finally:
        client.close()


SEQUENTIAL = {"floor": _floor_sequential, "streamlite": _streamlite_sequential, "openai": _openai_sequential}


def run_sequential(name, base_url, count):
    """In a child process: `count` streams one after another; the time to first token of each."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from server import reply_for

    for module in NEEDS.get(name, ()):
        __import__(module)
    ca_file = os.path.join(CERTS, "ca.pem") if base_url.startswith("https") else None
    want = reply_for([], words=SEQUENTIAL_WORDS)
    ttft, wall = [], time.perf_counter()
    for seconds, text in SEQUENTIAL[name](base_url, count, ca_file):
        if text != want:
            raise SystemExit("%s returned the wrong content: %r" % (name, text[:80]))
        ttft.append(seconds)
    return {"ttft_s": ttft, "wall": time.perf_counter() - wall}


def measure_sequential(count, available):
    """Per scheme and client: connections opened and time to first token, request 1 vs 2..N."""
    report = {}
    for scheme in ("http", "https"):
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_chatserver", scheme], env=_env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()

            def counters():
                server.stdin.write("\n")
                server.stdin.flush()
                return json.loads(server.stdout.readline())

            rows = {}
            for name in SEQUENTIAL_CLIENTS:
                if name != "floor" and name not in available:
                    continue
                before = counters()
                figures = _child(["_sequential", name, url, str(count)])
                after = counters()
                ttft = figures["ttft_s"]
                rows[name] = {"connections": after["connections_opened"] - before["connections_opened"],
                              "requests": after["requests"] - before["requests"], "first_ttft_ms": ttft[0] * 1000,
                              "rest_ttft_ms": statistics.median(ttft[1:]) * 1000 if len(ttft) > 1 else None,
                              "wall_s": figures["wall"]}
            report[scheme] = rows
        finally:
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    return report


# -------------------------------------------------------------------------------------------
# The harness
# -------------------------------------------------------------------------------------------


def _env():
    """streamlite from this checkout, its bytecode cached as it is for any installed module."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _child(args, timeout=900):
    env = _env()
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("child %s failed: %s" % (args, out.stderr[-2000:]))
    return json.loads(out.stdout.splitlines()[-1])


def _import_ms(statement, runs):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT, env=_env())
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure_imports(runs, available):
    # compile once, so that no measured process pays for it (an installed module is compiled too)
    subprocess.run([sys.executable, "-c", "import streamlite"], check=True, cwd=ROOT, env=_env())
    statements = {"baseline": "import http.client, json, ssl, dataclasses", "floor": "import socket, json",
                  "streamlite": "import streamlite", "openai": "import openai",
                  "httpx-sse": "import httpx, httpx_sse", "requests": "import requests"}
    # interleave the runs so that drift in machine load hits every statement alike
    samples = {name: [] for name in statements if name in available or name in ("baseline", "floor", "streamlite")}
    samples["pass"] = []
    for _ in range(runs):
        for name in samples:
            samples[name].append(_import_ms(statements.get(name, "pass"), 1))
    empty = statistics.median(samples.pop("pass"))
    return {name: statistics.median(times) - empty for name, times in samples.items()}


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events in the burst")
    parser.add_argument("--paced", type=int, default=400, help="events in the paced stream (5 ms apart)")
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--thread-events", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is kept)")
    parser.add_argument("--import-runs", type=int, default=21)
    parser.add_argument("--sequential", type=int, default=30, metavar="N", help="sequential streams on one client")
    parser.add_argument("--only-sequential", action="store_true", help="run only the sequential-requests case")
    parser.add_argument("--quick", action="store_true", help="small counts, every figure: a minute")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness works (the tests run it)")
    parser.add_argument("--clients", help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    if args.quick:
        args.events, args.paced, args.rss_events, args.thread_events = 20_000, 100, 100_000, 200
        args.repeat, args.import_runs = 1, 5
    if args.smoke:
        args.events, args.paced, args.rss_events, args.threads, args.thread_events = 2_000, 10, 5_000, 8, 100
        args.repeat, args.import_runs, args.sequential = 1, 1, 4

    import importlib.util

    available, skipped = [], []
    for name in CLIENTS:
        if args.clients and name not in args.clients.split(",") and name != "floor":
            continue
        if name.startswith("streamlite") or all(importlib.util.find_spec(m) for m in NEEDS.get(name, ())):
            available.append(name)
        else:
            skipped.append(name)
    if skipped:
        print("skipped (not installed): %s" % ", ".join(skipped))

    if args.only_sequential:
        report = {"sequential": measure_sequential(args.sequential, available)}
        _print_sequential(report)
        return
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_serve"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        report = _run_all(args, available, "http://127.0.0.1:%d" % port)
    finally:
        server.kill()
        server.wait(10)
    report["sequential"] = measure_sequential(args.sequential, available)
    report["skipped"] = skipped
    report["machine"] = {"python": platform.python_implementation() + " " + platform.python_version(),
                         "cpus": os.cpu_count(), "platform": platform.platform()}
    report["args"] = vars(args)
    _print_report(report, available)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)


def _run_all(args, available, root):
    report = {"imports_ms": measure_imports(args.import_runs, available)}
    report["burst"], report["latency"] = {}, {}
    for framing in ("chunked", "close"):
        burst = {}
        for name in available:
            runs = []
            for _ in range(args.repeat if name.startswith(("floor", "streamlite")) else 1):
                figures = _child(["_client", name, "%s/burst/%s/%d/v1" % (root, framing, args.events), "burst",
                                  str(args.events)])
                _check(name, figures, args.events)
                runs.append(figures)
            cpu = statistics.median(r["cpu"] for r in runs)
            wall = statistics.median(r["wall"] for r in runs)
            burst[name] = {"cpu_s": cpu, "cpu_us_per_event": cpu / args.events * 1e6, "events_per_s": args.events / wall}
        report["burst"][framing] = burst
        latency = {}
        for name in available:
            figures = _child(["_client", name, "%s/paced/%s/%d/v1" % (root, framing, args.paced), "paced", str(args.paced)])
            _check(name, figures, args.paced)
            ms = [value / 1e6 for value in figures["latencies_ns"]]
            latency[name] = {"p50_ms": _percentile(ms, 0.5), "p99_ms": _percentile(ms, 0.99), "max_ms": max(ms)}
        report["latency"][framing] = latency
    report["rss"] = {}
    for name in ("floor", "streamlite"):
        figures = _child(["_client", name, "%s/burst/chunked/%d/v1" % (root, args.rss_events), "burst", str(args.rss_events)])
        _check(name, figures, args.rss_events)
        report["rss"][name] = {"peak_mb": figures["rss_kb"] / 1024, "at_tenth_mb": figures["rss_at_tenth_kb"] / 1024}
    report["threads"] = {}
    for name in ("floor", "streamlite"):
        report["threads"][name] = _child(["_threads", name, "%s/burst/chunked/%d/v1" % (root, args.thread_events),
                                          str(args.threads), str(args.thread_events)])
    return report


def _check(name, figures, count):
    want = expected_content(count)
    if figures["length"] != len(want) or figures["sha"] != hashlib.sha256(want.encode()).hexdigest():
        raise SystemExit("%s returned the wrong content (%d characters, %d expected)" % (name, figures["length"], len(want)))


def _print_report(report, available):
    floor = report["imports_ms"]["floor"]
    base = report["imports_ms"]["baseline"]
    print("\nimport (ms over `python -c pass`; ratio to `import http.client, json, ssl, dataclasses`)")
    for name, ms in report["imports_ms"].items():
        print("  %-16s %7.1f ms  %5.2fx" % (name, ms, ms / base if base > 0 else float("nan")))
    del floor
    for framing in ("chunked", "close"):
        burst = report["burst"][framing]
        print("\nburst of %d events, %s body (CPU median of runs; ratio to the floor)" % (report["args"]["events"], framing))
        print("  %-16s %10s %10s %12s %7s" % ("client", "CPU s", "us/event", "events/s", "ratio"))
        for name in available:
            row = burst[name]
            print("  %-16s %10.3f %10.2f %12.0f %6.2fx" % (name, row["cpu_s"], row["cpu_us_per_event"], row["events_per_s"],
                                                         row["cpu_s"] / burst["floor"]["cpu_s"]))
        latency = report["latency"][framing]
        print("\npaced stream (one event every 5 ms), %s body: send-to-yield latency" % framing)
        print("  %-16s %9s %9s %9s %14s" % ("client", "p50 ms", "p99 ms", "max ms", "p50 - floor"))
        for name in available:
            row = latency[name]
            print("  %-16s %9.3f %9.3f %9.3f %11.3f ms" % (name, row["p50_ms"], row["p99_ms"], row["max_ms"],
                                                         row["p50_ms"] - latency["floor"]["p50_ms"]))
    print("\npeak RSS over %d events, no accumulation" % report["args"]["rss_events"])
    for name, row in report["rss"].items():
        print("  %-16s %7.1f MB (%.1f MB at 10 %%)  %+.1f MB vs floor" % (name, row["peak_mb"], row["at_tenth_mb"],
                                                                   row["peak_mb"] - report["rss"]["floor"]["peak_mb"]))
    print("\n%d concurrent streams from threads, %d events each" % (report["args"]["threads"], report["args"]["thread_events"]))
    for name, row in report["threads"].items():
        print("  %-16s %d/%d intact, %d errors, %.2f s" % (name, row["intact"], report["args"]["threads"],
                                                          row["error_count"], row["wall"]))
    _print_sequential(report)


def _print_sequential(report):
    for scheme, rows in report["sequential"].items():
        count = max((row["requests"] for row in rows.values()), default=0)
        print("\n%d sequential streams on one client, %s: connections the server accepted; time to first token"
              % (count, scheme.upper()))
        print("  %-16s %11s %12s %18s" % ("client", "connections", "TTFT #1 ms", "TTFT #2..N median"))
        for name, row in rows.items():
            rest = "%15.3f ms" % row["rest_ttft_ms"] if row["rest_ttft_ms"] is not None else "%18s" % "-"
            print("  %-16s %11d %12.3f %s" % (name, row["connections"], row["first_ttft_ms"], rest))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_serve"]:
        serve()
    elif sys.argv[1:2] == ["_client"]:
        print(json.dumps(run_client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    elif sys.argv[1:2] == ["_chatserver"]:
        chat_server(sys.argv[2])
    elif sys.argv[1:2] == ["_sequential"]:
        print(json.dumps(run_sequential(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif sys.argv[1:2] == ["_threads"]:
        print(json.dumps(run_threads(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
