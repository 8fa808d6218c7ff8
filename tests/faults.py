"""A scripted fault-injection HTTP server on 127.0.0.1 for transport tests (raw sockets, threads).

Each accepted connection first has its request read (head and Content-Length body), then runs a
script: a list of actions such as send(bytes), sleep(s), trickle(bytes, interval), reset() (an
RST through SO_LINGER 0), close(), hold() (wait for release(), the peer closing, or the server's
lifetime), repeat(bytes, ...) and flood(bytes, total). Scripts are given as one list for every
connection, a list of lists (one per connection, the last one reused), or a callable
(index, request) -> list.

The server is bounded: it accepts at most `max_connections` connections, every socket operation
has a timeout, and everything stops by itself after `lifetime` seconds. It records the requests,
when each connection was accepted and ended, how many bytes each was sent, and when the peer
closed a held connection. Use it as a context manager: leaving the block stops and joins it.
"""

import socket
import struct
import threading
import time

__all__ = [
    "FaultServer",
    "Request",
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


# Server #####################################################################


class Request:
    """One request as the server read it."""

    def __init__(self, method, target, version, headers, body, at):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # lower-cased names -> value (the last one wins)
        self.body = body
        self.at = at

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.target)


class _Stop(Exception):
    pass


class FaultServer:
    """See the module docstring. `url` is the base URL to give a Client (ends in /v1)."""

    def __init__(self, script, *, max_connections=1, lifetime=20.0, io_timeout=5.0):
        self._script = script
        self.max_connections = max_connections
        self.lifetime = lifetime
        self.io_timeout = io_timeout
        self._stop = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._sockets = []
        self.requests = []
        self.accepted_at = []  # monotonic time each connection was accepted, in order
        self.ended_at = {}  # index -> when the server was done with it
        self.sent = {}  # index -> bytes sent
        self.peer_closed_at = {}  # index -> when the peer was seen closing (during hold/flood)
        self.errors = []  # (index, exception) raised by a handler other than the peer leaving
        self._peer_closed = {}  # index -> threading.Event
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = "http://127.0.0.1:%d/v1" % self.port
        self.started = time.monotonic()
        self._acceptor = threading.Thread(target=self._accept_loop, name="faults-accept", daemon=True)
        self._acceptor.start()

    # public ---------------------------------------------------------------

    @property
    def connections(self):
        with self._lock:
            return len(self.accepted_at)

    def release(self):
        """Let every hold() action go on."""
        self._release.set()

    def wait_peer_closed(self, index=0, timeout=5.0):
        """Whether the peer closed connection `index` (seen by a hold or flood) within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                event = self._peer_closed.get(index)
            if event is not None:
                return event.wait(max(0.0, deadline - time.monotonic()))
            time.sleep(0.01)
        return False

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
        self._stop.set()
        self._release.set()
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

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

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
                        target=self._handle, args=(conn, index), name="faults-%d" % index, daemon=True
                    )
                    self._threads.append(thread)
                thread.start()
        finally:
            try:
                self._listener.close()  # further connection attempts are refused
            except OSError:
                pass

    def _actions_for(self, index, request):
        script = self._script
        if callable(script):
            return list(script(index, request))
        if script and isinstance(script[0], (list, tuple)):
            return list(script[min(index, len(script) - 1)])
        return list(script)

    def _send(self, conn, index, data, step=1 << 18):
        """sendall in slices, so that io_timeout bounds each slice's progress rather than the
        whole; counts what went out in self.sent even when the peer goes away half way."""
        view = memoryview(data)
        for start in range(0, len(view), step):
            if self._deadline_passed():
                raise _Stop()
            piece = view[start : start + step]
            conn.sendall(piece)
            with self._lock:
                self.sent[index] += len(piece)
        return len(view)

    def _handle(self, conn, index):
        conn.settimeout(self.io_timeout)
        with self._lock:
            self.sent[index] = 0
        try:
            request = self._read_request(conn)
            with self._lock:
                self.requests.append(request)
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
                            raise _Stop()
                elif isinstance(action, repeat):
                    done = 0
                    while action.count is None or done < action.count:
                        self._send(conn, index, action.data)
                        done += 1
                        if action.interval and self._stop.wait(action.interval):
                            raise _Stop()
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
        except (ConnectionError, BrokenPipeError):
            self._note_peer_closed(index)
        except _Stop:
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

    def _read_request(self, conn):
        data = b""
        deadline = time.monotonic() + self.io_timeout
        while b"\r\n\r\n" not in data:
            if time.monotonic() > deadline or len(data) > 1 << 20:
                raise _Stop()
            piece = conn.recv(65536)
            if not piece:
                raise ConnectionResetError("the client closed before sending a request")
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(body) < length:
            if time.monotonic() > deadline:
                raise _Stop()
            piece = conn.recv(65536)
            if not piece:
                raise ConnectionResetError("the client closed in the middle of the request body")
            body += piece
        return Request(method, target, version, headers, body, time.monotonic())


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
