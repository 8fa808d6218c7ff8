"""Loopback servers for the tests: real sockets on 127.0.0.1, OS-chosen ports, daemon threads.

Every server here is bounded: it accepts at most `max_connections` connections, every socket
operation has a timeout (`io_timeout`), and it stops by itself `lifetime` seconds after it
started. Use each one as a context manager: leaving the block stops and joins it.

- LoopbackServer: the shared base (accept loop, optional TLS, records, waits, stop). A subclass
  says what to do with each connection in handle(conn, index).
- FaultServer: a scripted server. Each connection first has its request read (head and
  Content-Length body), then runs a script: a list of actions such as send(bytes), sleep(s),
  trickle(bytes, interval), reset() (an RST through SO_LINGER 0), close(), hold() (wait for
  release(), the peer closing, or the server's lifetime), repeat(bytes, ...), flood(bytes, total)
  and call(fn). Scripts are one list for every connection, a list of lists (one per connection,
  the last one reused), or a callable (index, request) -> list. `read_request=False` sends
  before reading anything (a server that does not speak the client's protocol).
- ReplayServer: answers each request with (status, headers, body) given by a function of the
  request, the body sent as HTTP chunks of a given size (a replay of recorded streams).
- RecordingServer: answers with replies in turn and records every request (as FaultServer does;
  request["path"], request["headers"], request["body"] give the parsed form).
- Proxy: a forward proxy (CONNECT tunnels and absolute-form requests) to 127.0.0.1 only.
- Silent: a listener nobody accepts from; refused_port(): a port where connecting is refused;
  fill_backlog() (full_backlog() for a with block): a listener whose accept queue is full
  (connecting hangs).
- server_context(name): an ssl server context from tests/data/certs (made by its make_certs.py).

The servers record the requests, when each connection was accepted and ended, how many bytes
each was sent, when the peer closed a held connection, and what a handler raised (`errors`).
"""

import contextlib
import http
import json
import pathlib
import select
import socket
import ssl
import struct
import threading
import time
from urllib.parse import urlsplit

__all__ = [
    "CERTS",
    "FaultServer",
    "LoopbackServer",
    "Proxy",
    "RecordingServer",
    "ReplayServer",
    "Request",
    "Silent",
    "Stop",
    "chunked",
    "http_head",
    "read_request",
    "refused_port",
    "replay_script",
    "server_context",
    "call",
    "close",
    "flood",
    "hold",
    "repeat",
    "reset",
    "send",
    "sleep",
    "trickle",
    "fill_backlog",
    "full_backlog",
    "response_head",
]


# Actions ####################################################################


class _Action:
    pass


class send(_Action):
    """Send these bytes (all at once)."""

    def __init__(self, data):
        self.data = data if isinstance(data, bytes) else data.encode("utf-8")


class sleep(_Action):
    """Pause (cut short when the server stops)."""

    def __init__(self, seconds):
        self.seconds = seconds


class trickle(_Action):
    """Send `data` a piece of `size` bytes every `interval` seconds."""

    def __init__(self, data, interval, size=1):
        self.data = data if isinstance(data, bytes) else data.encode("utf-8")
        self.interval = interval
        self.size = size


class repeat(_Action):
    """Send `data` again and again, `interval` seconds apart, at most `count` times
    (None: until the peer goes away or the server stops)."""

    def __init__(self, data, interval=0.0, count=None):
        self.data = data if isinstance(data, bytes) else data.encode("utf-8")
        self.interval = interval
        self.count = count


class flood(_Action):
    """Send `data` back to back until `total` bytes are sent or the peer goes away."""

    def __init__(self, data, total):
        self.data = data
        self.total = total


class call(_Action):
    """Run fn() in the connection's thread (e.g. wait on a barrier shared by connections)."""

    def __init__(self, fn):
        self.fn = fn


class reset(_Action):
    """Abort the connection: SO_LINGER 0 then close, so the peer gets an RST."""


class close(_Action):
    """Close the connection normally (FIN)."""


class hold(_Action):
    """Keep the connection open until release(), the peer closing it, or `timeout`."""

    def __init__(self, timeout=None):
        self.timeout = timeout


# Requests ###################################################################

CERTS = pathlib.Path(__file__).resolve().parent / "data" / "certs"


def server_context(name):
    """An ssl server context for tests/data/certs/<name>.pem and .key (or a path without its suffix)."""
    base = str(name) if "/" in str(name) else str(CERTS / str(name))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base + ".pem", base + ".key")
    return context


class Stop(Exception):
    """The server is stopping or a bound ran out: end the connection quietly."""


class Request:
    """One request as a server read it.

    `headers` maps lower-cased names to values (the last one wins); `header_list` keeps the
    (name, value) pairs as sent. request["path"], request["headers"] and request["body"] (the
    body parsed as JSON) give the recorded form some tests compare."""

    def __init__(self, line, header_list, body, at):
        self.line = line
        self.method, self.target, self.version = (line.split(" ", 2) + ["", ""])[:3]
        self.header_list = header_list
        self.headers = {name.lower(): value for name, value in header_list}
        self.body = body
        self.at = at

    def header(self, name):
        """The value of header `name` if it came once, a list if it came more often, else None."""
        values = [value for key, value in self.header_list if key.lower() == name.lower()]
        return values[0] if len(values) == 1 else values or None

    def json(self):
        return json.loads(self.body)

    def __getitem__(self, key):
        return {"path": lambda: self.target, "headers": lambda: self.headers, "body": self.json}[key]()

    def __repr__(self):
        return "Request(line=%r, headers=%r, body=%r)" % (self.line, self.header_list, self.body)


def read_request(conn, timeout=5.0, limit=1 << 20):
    """One HTTP request head and its Content-Length body from `conn`. Raises ConnectionResetError
    when the peer closes first, Stop when `timeout` or `limit` bytes run out."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline or len(data) > limit:
            raise Stop()
        piece = conn.recv(65536)
        if not piece:
            raise ConnectionResetError("the client closed before the end of the request head (%r)" % data[:80])
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    header_list = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        header_list.append((name.strip(), value.strip()))
    request = Request(lines[0], header_list, body, None)
    length = int(request.headers.get("content-length") or 0)
    while len(body) < length:
        if time.monotonic() > deadline:
            raise Stop()
        piece = conn.recv(65536)
        if not piece:
            raise ConnectionResetError("the client closed in the middle of the request body")
        body += piece
    request.body, request.at = body, time.monotonic()
    return request


# Bytes on the wire ##########################################################


def chunked(body, size=None):
    """`body` as HTTP/1.1 chunks of `size` bytes (None: one chunk), with the last chunk."""
    step = size or len(body) or 1
    return [b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step]) for i in range(0, len(body), step)] + [
        b"0\r\n\r\n"
    ]


def http_head(status=200, reason=None, headers=()):
    """A response head: the status line (the standard reason unless given), `headers` as
    (name, value) pairs or "Name: value" lines."""
    if reason is None:
        reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
    lines = ["HTTP/1.1 %d %s" % (status, reason)]
    lines += [item if isinstance(item, str) else "%s: %s" % item for item in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_head(status=200, reason="OK", ctype="text/event-stream", headers=(), length=None, chunked=False,
                  keep_alive=False):
    """A response head from its parts ("Name: value" header lines; reason None: no reason
    phrase); `Connection: close` unless keep_alive."""
    lines = ["HTTP/1.1 %d %s" % (status, reason)] if reason is not None else ["HTTP/1.1 %d" % status]
    if ctype:
        lines.append("Content-Type: " + ctype)
    lines.extend(headers)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append("Content-Length: %d" % length)
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# Servers ####################################################################


class LoopbackServer:
    """The shared base: see the module docstring. `url` is the base URL to give a Client (ends
    in `path`, /v1 unless given). With `tls` (an ssl server context) each connection is wrapped first; a refused
    handshake is recorded in `errors`. With allow_errors=False, leaving the block cleanly asserts
    that no handler raised."""

    def __init__(self, *, max_connections=1, lifetime=20.0, io_timeout=5.0, tls=None, backlog=64,
                 allow_errors=True, path="/v1"):
        self.path = path
        self.max_connections = max_connections
        self.lifetime = lifetime
        self.io_timeout = io_timeout
        self.tls = tls
        self.allow_errors = allow_errors
        self._stop = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._sockets = []
        self.requests = []
        self.accepted_at = []  # monotonic time each connection was accepted, in order
        self.ended_at = {}  # index -> when the server was done with it
        self._sent = {}  # index -> bytes sent (see `sent`)
        self.peer_closed_at = {}  # index -> when the peer was seen closing (during hold/flood)
        self.errors = []  # (index, exception) raised by a handler other than the peer leaving
        self._peer_closed = {}  # index -> threading.Event
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(backlog)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.started = time.monotonic()
        self._acceptor = threading.Thread(target=self._accept_loop, name="loopback-accept", daemon=True)
        self._acceptor.start()

    # public ---------------------------------------------------------------

    @property
    def url(self):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls is not None else "http", self.port, self.path)

    @property
    def connections(self):
        with self._lock:
            return len(self.accepted_at)

    accepted = connections

    @property
    def sent(self):
        """Connection index -> the bytes sent on it so far."""
        with self._lock:
            return dict(self._sent)

    @property
    def failures(self):
        """The exceptions in `errors`, without their connection index."""
        with self._lock:
            return [exc for _, exc in self.errors]

    def release(self):
        """Let every hold() action go on."""
        self._release.set()

    def wait_peer_closed(self, index=0, timeout=5.0):
        """Whether the peer closed connection `index` (seen by a hold or flood) within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:  # looked at once at least, also with timeout 0
            with self._lock:
                event = self._peer_closed.get(index)
            if event is not None:
                return event.wait(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def wait_connections(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while self.connections < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connections >= count

    def wait_ended(self, count=None, timeout=5.0):
        """Wait until `count` connections (default: all accepted) have been finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                want = len(self.accepted_at) if count is None else count
                if len(self.ended_at) >= want:
                    return True
            time.sleep(0.01)
        return False

    def stop(self, timeout=5.0):
        """Stop accepting, wake every held connection, join the threads; whether all stopped."""
        self._stop.set()
        self._release.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes a waiting accept() at once (Linux)
        except OSError:
            pass
        self._acceptor.join(timeout)
        with self._lock:
            threads = list(self._threads)
            sockets = list(self._sockets)
        for thread in threads:
            thread.join(timeout)
        for sock in sockets:  # normally already closed by their handler
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._listener.close()
        except OSError:
            pass
        return not self._acceptor.is_alive() and not any(thread.is_alive() for thread in threads)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        stopped = self.stop()
        if exc_type is None:
            assert stopped, "a test server did not stop"
            if not self.allow_errors:
                assert not self.errors, "the test server failed: %r" % self.errors

    def handle(self, conn, index):  # pragma: no cover - subclasses say what to do
        raise NotImplementedError

    # internals ------------------------------------------------------------

    def _deadline_passed(self):
        return self._stop.is_set() or time.monotonic() - self.started > self.lifetime

    def _accept_loop(self):
        try:
            while not self._deadline_passed():
                with self._lock:
                    if len(self.accepted_at) >= self.max_connections:
                        break
                try:
                    conn, _ = self._listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                with self._lock:
                    index = len(self.accepted_at)
                    self.accepted_at.append(time.monotonic())
                    self._peer_closed[index] = threading.Event()
                    self._sockets.append(conn)
                    thread = threading.Thread(
                        target=self._handle, args=(conn, index), name="loopback-%d" % index, daemon=True
                    )
                    self._threads.append(thread)
                thread.start()
        finally:
            try:
                self._listener.close()  # further connection attempts are refused
            except OSError:
                pass

    def _handle(self, conn, index):
        conn.settimeout(self.io_timeout)
        with self._lock:
            self._sent[index] = 0
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)  # a refused handshake raises here
                with self._lock:
                    self._sockets.append(conn)
            self.handle(conn, index)
        except (ConnectionError, BrokenPipeError):
            self._note_peer_closed(index)
        except Stop:
            pass
        except Exception as exc:  # a timeout of our own, a broken barrier: for the test to see
            with self._lock:
                self.errors.append((index, exc))
        finally:
            with self._lock:
                self.ended_at[index] = time.monotonic()
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, request):
        with self._lock:
            self.requests.append(request)

    def _send(self, conn, index, data, step=1 << 18):
        """sendall in slices, so that io_timeout bounds each slice's progress rather than the
        whole; counts what went out in `sent` even when the peer goes away half way."""
        view = memoryview(data)
        for start in range(0, len(view), step):
            if self._deadline_passed():
                raise Stop()
            piece = view[start : start + step]
            conn.sendall(piece)
            with self._lock:
                self._sent[index] += len(piece)
        return len(view)

    def _note_peer_closed(self, index):
        with self._lock:
            self.peer_closed_at.setdefault(index, time.monotonic())
            event = self._peer_closed[index]
        event.set()

    def _hold(self, conn, index, timeout):
        end = time.monotonic() + (timeout if timeout is not None else self.lifetime)
        conn.settimeout(0.02)
        try:
            while time.monotonic() < end and not self._release.is_set() and not self._deadline_passed():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    self._note_peer_closed(index)
                    return
        finally:
            conn.settimeout(self.io_timeout)


class FaultServer(LoopbackServer):
    """A scripted server: see the module docstring."""

    def __init__(self, script, *, read_request=True, **options):
        self._script = script
        self._read_first = read_request
        super().__init__(**options)

    def _actions_for(self, index, request):
        script = self._script
        if callable(script):
            return list(script(index, request))
        if script and isinstance(script[0], (list, tuple)):
            return list(script[min(index, len(script) - 1)])
        return list(script)

    def handle(self, conn, index):
        request = None
        if self._read_first:
            try:
                request = read_request(conn, self.io_timeout)
            except ConnectionError as exc:
                if self.allow_errors:
                    raise  # the peer left: noted in peer_closed_at
                raise RuntimeError(str(exc)) from exc  # a strict server sees a client that sent nothing
            self._record(request)
        for action in self._actions_for(index, request):
            if self._deadline_passed():
                break
            if isinstance(action, send):
                self._send(conn, index, action.data)
            elif isinstance(action, sleep):
                self._stop.wait(action.seconds)
            elif isinstance(action, trickle):
                for start in range(0, len(action.data), action.size):
                    self._send(conn, index, action.data[start : start + action.size])
                    if self._stop.wait(action.interval):
                        raise Stop()
            elif isinstance(action, repeat):
                done = 0
                while action.count is None or done < action.count:
                    self._send(conn, index, action.data)
                    done += 1
                    if action.interval and self._stop.wait(action.interval):
                        raise Stop()
            elif isinstance(action, flood):
                flooded = 0
                while flooded < action.total:
                    flooded += self._send(conn, index, action.data[: action.total - flooded])
            elif isinstance(action, reset):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            elif isinstance(action, close):
                conn.close()
                return
            elif isinstance(action, hold):
                self._hold(conn, index, action.timeout)
            elif isinstance(action, call):
                action.fn()
            else:  # pragma: no cover - a mistake in a test
                raise TypeError("unknown action %r" % (action,))


def replay_script(status, headers, body, size=None, reason=None):
    """The actions that send a response head with Transfer-Encoding: chunked and `body` in
    chunks of `size` bytes (None: one chunk), each chunk in its own send, then close."""
    headers = list(headers) + [("Transfer-Encoding", "chunked")]
    return [send(http_head(status, reason, headers))] + [send(piece) for piece in chunked(body, size)] + [close()]


class ReplayServer(FaultServer):
    """Answers each request with `respond(request)` -> (status, headers, body, chunk size),
    the body sent chunked in pieces of that size (see replay_script)."""

    def __init__(self, respond, **options):
        super().__init__(lambda index, request: replay_script(*respond(request)), **options)


class RecordingServer(FaultServer):
    """Answers the requests in turn with `replies` (one reply per connection as bytes or a list
    of actions; the last one is reused), or with replies(index, request) -> bytes or actions, and
    records every request in `requests` (request["body"] is the parsed JSON)."""

    def __init__(self, replies, **options):
        def script(index, request):
            reply = replies(index, request) if callable(replies) else replies[min(index, len(replies) - 1)]
            return [send(reply), close()] if isinstance(reply, bytes) else list(reply)

        options.setdefault("max_connections", 16)
        super().__init__(script, **options)

    @property
    def last(self):
        assert len(self.requests) >= 1, "the server received no request"
        return self.requests[-1]


class Proxy(LoopbackServer):
    """A forward proxy: CONNECT tunnels and absolute-form HTTP requests, to 127.0.0.1 only.

    `routes` maps the host names clients ask for to local ports. Every request head the proxy
    receives is recorded; `answer` (bytes, or a function of the request) replaces the
    forwarding, e.g. a 407. `credentials` (user, password) go into url()."""

    def __init__(self, routes, answer=None, credentials=None, **options):
        self.routes = routes
        self.answer = answer
        self.credentials = credentials
        self.tunnelled = bytearray()  # what the client sent through CONNECT tunnels
        options.setdefault("max_connections", 4)
        super().__init__(**options)

    def url(self, credentials=True):
        auth = "%s:%s@" % self.credentials if credentials and self.credentials else ""
        return "http://%s127.0.0.1:%d" % (auth, self.port)

    def handle(self, conn, index):
        try:
            request = read_request(conn, self.io_timeout)
        except ConnectionError as exc:  # a proxy that got no request is a failure to see
            raise RuntimeError(str(exc)) from exc
        self._record(request)
        if self.answer is not None:
            conn.sendall(self.answer(request) if callable(self.answer) else self.answer)
            return
        if request.method == "CONNECT":
            host, _, port = request.target.rpartition(":")
            with self._upstream(host, int(port)) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(conn, upstream, tunnel=True)
        else:
            parts = urlsplit(request.target)
            with self._upstream(parts.hostname, parts.port or 80) as upstream:
                target = parts.path + ("?" + parts.query if parts.query else "")
                lines = ["%s %s %s" % (request.method, target, request.version)]
                lines += ["%s: %s" % item for item in request.header_list if item[0].lower() != "proxy-authorization"]
                upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
                self._relay(conn, upstream, tunnel=False)

    def _upstream(self, host, port):
        assert host in self.routes, "the proxy was asked for %s:%d" % (host, port)
        return socket.create_connection(("127.0.0.1", self.routes[host]), timeout=self.io_timeout)

    def _relay(self, client, upstream, tunnel):
        """Copy bytes both ways until either side closes (or nothing moves for io_timeout)."""
        while not self._deadline_passed():
            ready, _, _ = select.select([client, upstream], [], [], self.io_timeout)
            if not ready:
                raise TimeoutError("the proxied connection went quiet")
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return
                if sock is client and tunnel:
                    self.tunnelled += data
                (upstream if sock is client else client).sendall(data)


class Silent:
    """A listening socket nobody accepts from: `contacted()` tells whether anyone connected.

    A connect completes in the kernel backlog, so once a client call has returned, a
    non-blocking accept() sees any connection it made."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.listener.close()

    def contacted(self):
        self.listener.setblocking(False)
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@contextlib.contextmanager
def refused_port():
    """A port on 127.0.0.1 that is bound but not listening while the block runs: connecting
    to it is refused (and no other program can take it meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()

def fill_backlog(attempts=64, probe_timeout=0.2):
    """A listener with listen(0) whose accept queue is full: connecting to it hangs (Linux drops
    the SYN). Returns (listener, fillers, port); the caller closes them all. Raises AssertionError
    when the queue could not be filled within `attempts` connections."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(probe_timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except (socket.timeout, OSError):
            sock.close()
            return listener, fillers, port
        fillers.append(sock)
    for sock in fillers:
        sock.close()
    listener.close()
    raise AssertionError("could not fill the accept queue of a listen(0) socket in %d connections" % attempts)


@contextlib.contextmanager
def full_backlog():
    """fill_backlog() for the block: yields the port where connecting hangs, closes it all after."""
    listener, fillers, port = fill_backlog()
    try:
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
