#!/usr/bin/env python3
"""Fuzz every public surface of streamlite with mutated real streams and random bytes.

    python3 tests/fuzz.py --cases 100000 --seed 1             # all surfaces
    python3 tests/fuzz.py --cases 200000 --surfaces sse,chunk   # the pure decoders only
    python3 tests/fuzz.py --cases 2000 --surfaces sync,async,proxy --timeout 1.5
    python3 tests/fuzz.py --replay async:1234 --seed 1         # one case again, verbosely

Inputs: the recorded streams in tests/data/streams/*.sse and
/work/shared/providers/transcripts/*.sse (with their .json sidecars for status and headers),
mutated: byte flips, insertions of SSE/JSON tokens, deletions, truncation, splicing of two
streams, giant numbers, deep nesting, lone surrogates, the API key echoed back, random bytes;
and for the client surfaces a mutated response head (status, reason, 1xx preludes, framing:
Content-Length right/wrong/duplicated/Unicode digits, chunked with odd sizes, extensions and
trailers, close-delimited; gzip/deflate, several members, declared twice; header corruption)
served by one fast in-process loopback server, ended by a close, a reset or a stall.

Surfaces: `sse` (SSEDecoder under random splits), `chunk` (json -> parse_chunk, ChunkDecoder,
Accumulator, Completion, ToolCall.parsed_arguments, Stats), `sync` (Client.stream), `async`
(AsyncClient.astream), `proxy` (a CONNECT tunnel answered with a mutated head).

A case fails on: any exception that is not a StreamliteError (KeyboardInterrupt and
CancelledError aside); a stream that outlives its total_timeout by more than --margin seconds;
a decoder case that takes more than --slow seconds; a socket left open (open file descriptors
of this process, /proc/self/fd, before and after the case; "GC-only" when the cyclic garbage
collector had to close it); a ResourceWarning or "never awaited" RuntimeWarning; the key (or any
prefix of 6+ characters of it) in the str/repr/args/attributes of an error, or of a
partial/completion when the server never put the key in a 2xx body.

Exit status 0 when nothing failed, 1 otherwise (printing the seed and case of each distinct
failure: rerun it with --replay SURFACE:CASE). The case number and seed fix everything.
"""

import argparse
import asyncio
import collections
import gc
import glob
import gzip
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
import warnings
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import streamlite  # noqa: E402

KEY = "sk-SENTINEL-0123456789abcdef"
KEY_PREFIXES = [KEY[:n] for n in range(6, len(KEY) + 1)]
SURFACES = ("sse", "chunk", "sync", "async", "proxy")

# Corpus #######################################################################


def load_corpus():
    paths = sorted(glob.glob(os.path.join(HERE, "data", "streams", "*.sse")))
    paths += sorted(glob.glob("/work/shared/providers/transcripts/*.sse"))
    corpus = []
    for path in paths:
        with open(path, "rb") as f:
            body = f.read()
        meta = {}
        side = path[:-4] + ".json"
        if os.path.exists(side):
            try:
                with open(side) as f:
                    meta = json.load(f)
            except ValueError:
                meta = {}
        corpus.append((os.path.basename(path), body, meta))
    if not corpus:
        raise SystemExit("no corpus: tests/data/streams/*.sse is empty")
    return corpus


# Body mutations ###############################################################

TOKENS = [b"\n", b"\r", b"\r\n", b"\n\n", b":", b"{", b"}", b"[", b"]", b'"', b"\\", b"\x00", b"\xff", b"\xef\xbb\xbf",
          b"data: ", b"data:", b"event: error\n", b"error: x\n", b"retry: 9999999999999999999999\n", b"id: \x00\n",
          b"data: [DONE]\n\n", b"[DONE]", b": keep-alive\n\n", b'\\ud83d', b'\\ude00', b"\\u0000", b"null", b"-1",
          b"1e999", b"NaN", b"Infinity", b'"index":-1', b'"index":1000000000', b'"choices":[]', b'"error":{}',
          b'"tool_calls":[{"index":0}]', b'"finish_reason":"error"', b'"usage":{"completion_tokens":1e400}',
          b"<think>", b"</think>", b"\xed\xa0\xbd", b"\xc3", b"event: response.completed\n",
          b"retry: " + b"9" * 5000 + b"\n", b"retry: \xc2\xb2\n", b"id: " + b"i" * 5000 + b"\n", b"event: " + b"e" * 3000 + b"\n",
          b'"content":"\\ud83d"', b'"arguments":"' + b"[" * 3000 + b'"', b'"index":"\xc2\xb2"', b'"created":1e400']
NUMBERS = [b"9" * 5000, b"1" + b"0" * 4400, b"\xb2", b"1e999", b"-1e999", b"-1", b"1000000000", b"0.5", b"-0",
           b"18446744073709551617", b"1e308", b"NaN", b"true", b'"7"', b"[]", b"{}"]


def giant_number(rng, body):
    spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?", body[:200000])]
    if not spans:
        return body
    start, end = rng.choice(spans)
    return body[:start] + rng.choice(NUMBERS) + body[end:]


def deep(rng):
    depth = rng.choice([50, 500, 990, 1000, 5000, 100000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}"), (b'{"content":[', b"]}")])
    return opener * depth + b"1" + closer * depth * rng.choice([0, 1])


def mutate_body(rng, body, corpus):
    """Return (mutated body, whether the key was put into it)."""
    body = bytearray(body)
    keyed = False
    for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
        op = rng.randrange(15)
        at = rng.randrange(len(body) + 1)
        if op == 0 and body:  # flip a byte
            body[min(at, len(body) - 1)] = rng.randrange(256)
        elif op in (1, 2):
            token = rng.choice(TOKENS)
            if token.endswith(b"\n") and token[:1].isalpha() and rng.random() < 0.7:
                at = body.rfind(b"\n", 0, at) + 1  # a field line: at the start of a line
            body[at:at] = token
        elif op == 3:
            del body[at : at + rng.choice([1, 2, 8, 64, 1024])]
        elif op == 4:
            del body[at:]
        elif op == 5:  # splice with another stream
            other = rng.choice(corpus)[1]
            body = body[:at] + other[rng.randrange(len(other) + 1) :]
        elif op == 6:
            body = bytearray(giant_number(rng, bytes(body)))
        elif op == 7:
            body[at:at] = b"data: " + deep(rng) + b"\n\n" if rng.random() < 0.5 else deep(rng)
        elif op == 8:  # random bytes
            body[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 32, 300])))
        elif op == 9:  # the key, where an echoing server would put it
            body[at:at] = rng.choice([KEY.encode(), b"Bearer " + KEY.encode(), b"?key=" + KEY.encode()])
            keyed = True
        elif op == 10:  # an in-stream error that echoes the key
            err = {"error": {"message": "bad key " + KEY if rng.random() < 0.5 else "x" * rng.choice([70, 190, 480]) + KEY,
                             "code": rng.choice([KEY, 401, None, {"k": KEY}]), "type": rng.choice([KEY, "auth"])}}
            body[at:at] = b"data: " + json.dumps(err).encode() + b"\n\n"
            keyed = True
        elif op == 11:  # a long line
            body[at:at] = b"data: " + rng.choice([b"x", b"<", b"{", b" "]) * rng.choice([2000, 70000, 1 << 20]) + b"\n\n"
        elif op == 12:  # duplicate a span
            span = bytes(body[at : at + rng.choice([10, 100, 1000])])
            body[at:at] = span * rng.choice([2, 10, 100])
        elif op == 13:  # line ends
            body = bytearray(body.replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\n"])))
        else:  # many comments or events
            body[at:at] = rng.choice([b": ping\n", b"data: {}\n\n", b"event: x\n", b"\n"]) * rng.choice([10, 1000, 50000])
    return bytes(body), keyed


def random_body(rng):
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 10, 100, 2000])))


# Heads ########################################################################


def gzip_members(rng, data, count):
    if not data:
        return gzip.compress(b"")
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(count - 1))
    parts, last = [], 0
    for cut in cuts + [len(data)]:
        parts.append(gzip.compress(data[last:cut]))
        last = cut
    return b"".join(parts)


def encode_body(rng, body):
    """(body bytes, Content-Encoding header value or None)."""
    choice = rng.randrange(12)
    if choice == 0:
        return gzip.compress(body), "gzip"
    if choice == 1:
        return gzip_members(rng, body, rng.choice([2, 3])), "gzip"
    if choice == 2:
        return zlib.compress(body), "deflate"
    if choice == 3:
        raw = zlib.compressobj(wbits=-15)
        return raw.compress(body) + raw.flush(), "deflate"
    if choice == 4:
        return gzip.compress(gzip.compress(body)), rng.choice(["gzip, gzip", "gzip"])
    if choice == 5:
        data = gzip.compress(body)
        return data[: rng.randrange(len(data) + 1)], "gzip"
    if choice == 6:
        return body, rng.choice(["br", "zstd", "identity", "gzip", ""])
    return body, None


def chunk_frame(rng, body):
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = min(len(body) - pos, rng.choice([1, 7, 100, 4096, 70000]))
        mode = rng.randrange(20)
        size_text = b"%x" % size
        if mode == 0:
            size_text = b"0" * rng.choice([1, 10, 40]) + size_text
        elif mode == 1:
            size_text += b";ext=" + b"e" * rng.choice([1, 100, 100000])
        elif mode == 2:
            size_text = size_text.upper()
        elif mode == 3:
            size_text = b"%x" % (size + rng.choice([-1, 1, 1000]))
        elif mode == 4:
            size_text = rng.choice([b"", b"-1", b"0x10", b"\xb2", b"f" * 40, b" 5", b"5 "])
        out += size_text + rng.choice([b"\r\n"] * 8 + [b"\n", b"\r"]) + body[pos : pos + size] + b"\r\n"
        pos += size
    if rng.random() < 0.9:
        out += b"0\r\n"
        out += b"".join(b"X-T%d: 1\r\n" % i for i in range(rng.choice([0, 0, 1, 200])))
        out += b"\r\n"
    return bytes(out)


STATUSES = [200] * 12 + [201, 204, 206, 301, 302, 304, 307, 400, 401, 403, 404, 408, 409, 413, 418, 422, 429, 500,
                         502, 503, 504, 529, 599, 100, 199, 999, 0]
CTYPES = ["text/event-stream", "text/event-stream; charset=utf-8", "application/json", "text/html", "text/plain",
          "application/x-ndjson", "", "TEXT/EVENT-STREAM", "text/event-stream; charset=latin-1"]


def build_response(rng, body, meta, keyed):
    """A whole response (head + framed, encoded body) and whether the key is in it anywhere."""
    status = meta.get("status", 200) if rng.random() < 0.6 else rng.choice(STATUSES)
    status_text = str(status)
    r = rng.randrange(40)
    if r == 0:
        status_text = rng.choice(["\xb2\xb2\xb2", "2" * 5000, "0200", "20", "2OO", "-200", " 200", "\u0662\u0660\u0660"])
    reason = rng.choice(["OK", "OK", "", "Bad " + KEY, "\u00e9t\u00e9", "x" * 3000, "OK\x00"]) if r < 8 else "OK"
    key_in_head = "Bad " + KEY == reason
    version = rng.choice(["HTTP/1.1"] * 10 + ["HTTP/1.0", "HTTP/2", "HTTP/1.1x", "ICY"])
    status_line = "%s %s%s" % (version, status_text, (" " + reason) if reason or rng.random() < 0.5 else "")
    headers = []
    for name, value in (meta.get("headers") or {}).items():
        if name.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
            headers.append("%s: %s" % (name, value))
    if not any(h.lower().startswith("content-type") for h in headers) or rng.random() < 0.2:
        headers = [h for h in headers if not h.lower().startswith("content-type")]
        ctype = rng.choice(CTYPES)
        if ctype:
            headers.append("Content-Type: " + ctype)
    body, encoding = encode_body(rng, body)
    if encoding is not None:
        headers.append("Content-Encoding: " + encoding)
        if rng.random() < 0.1:
            headers.append("Content-Encoding: " + rng.choice(["gzip", "identity", "br"]))
    for _ in range(rng.choice([0, 0, 1, 2, 4])):
        extra = rng.randrange(14)
        if extra == 0:
            headers.append("Retry-After: " + rng.choice(["0", "1e308", "-1", "nan", "inf", "99999999999999999999", "\xb2",
                                                         "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                                                         "0.01", "1" * 5000]))
        elif extra == 1:
            headers.append("X-Request-Id: " + KEY)
            key_in_head = True
        elif extra == 2:
            headers.append("Set-Cookie: s=" + KEY)
            key_in_head = True
        elif extra == 3:
            headers.append("Location: https://example.test/" + rng.choice([KEY, "x" * 5000, "\u00e9"]))
            key_in_head = key_in_head or "Location: https://example.test/" + KEY in headers
        elif extra == 4:
            headers.append("X-Bad\x00: v")
        elif extra == 5:
            headers.append(" folded continuation")
        elif extra == 6:
            headers.append("no colon here")
        elif extra == 7:
            headers.extend("X-Many-%d: %s" % (i, "v" * 10) for i in range(rng.choice([100, 200, 2000])))
        elif extra == 8:
            headers.append("X-Long: " + "v" * rng.choice([8000, 70000]))
        elif extra == 9:
            headers.append("retry-after-ms: " + rng.choice(["10", "1e400", "-5", "x"]))
        elif extra == 10:
            headers.append("Connection: " + rng.choice(["close", "keep-alive", "Upgrade"]))
        elif extra == 11:
            headers.append("x-ratelimit-reset-requests: " + rng.choice(["1s", "1e999s", "6m0s", "\xb2"]))
        elif extra == 12:
            headers.append("WWW-Authenticate: Bearer error=\"%s\"" % KEY)
            key_in_head = True
        else:
            headers.append("X-\u00fcnicode: \u00e9")
    framing = rng.randrange(16)
    if framing < 6:
        headers.append("Content-Length: %d" % len(body))
    elif framing < 10:
        headers.append("Transfer-Encoding: chunked")
        body = chunk_frame(rng, body)
    elif framing == 10:
        headers.append("Content-Length: " + rng.choice(["%d" % max(0, len(body) + rng.choice([-50, -1, 1, 50])),
                                                        "\xb2", "9" * 5000, "-1", "1e3", " ", "0x10", "0" * 4400 + "1"]))
    elif framing == 11:
        headers.append("Content-Length: %d" % len(body))
        headers.append("Content-Length: %d" % rng.choice([len(body), len(body) + 1, 0]))
    elif framing == 12:
        headers.append("Content-Length: %d, %d" % (len(body), rng.choice([len(body), 5])))
    elif framing == 13:
        headers.append("Transfer-Encoding: " + rng.choice(["gzip, chunked", "notchunked", "chunked, gzip", "identity",
                                                            "chunked, chunked", "x"]))
        if "chunked" in headers[-1] and rng.random() < 0.7:
            body = chunk_frame(rng, gzip.compress(body) if "gzip, chunked" in headers[-1] else body)
    elif framing == 14:
        headers.append("Transfer-Encoding: chunked")
        headers.append("Content-Length: %d" % len(body))
        body = chunk_frame(rng, body)
    # framing 15: close-delimited
    rng.shuffle(headers) if rng.random() < 0.2 else None
    eol = "\r\n" if rng.random() < 0.9 else "\n"
    head = (status_line + eol + eol.join(headers) + eol + eol).encode("latin-1", "replace")
    if rng.random() < 0.08:  # 1xx preludes
        head = b"HTTP/1.1 100 Continue\r\n\r\n" * rng.choice([1, 3, 500]) + head
    if rng.random() < 0.02:
        head = head[: rng.randrange(len(head) + 1)]
    return head + body, keyed or key_in_head or KEY.encode() in body


# Checks #######################################################################


def texts_of(value, seen=None, skip_partial=False, depth=0):
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 40:
        return []
    seen.add(id(value))
    out = []
    if isinstance(value, BaseException):
        out += [str(value), repr(value)]
        for arg in value.args:
            out += texts_of(arg, seen, skip_partial, depth + 1)
        for name, attr in vars(value).items():
            if skip_partial and name == "partial":
                continue
            out += texts_of(attr, seen, skip_partial, depth + 1)
        for chained in (value.__cause__, value.__context__):
            if chained is not None:
                out += texts_of(chained, seen, skip_partial, depth + 1)
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, bytes):
        out.append(value.decode("latin-1"))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += texts_of(k, seen, skip_partial, depth + 1) + texts_of(v, seen, skip_partial, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            out += texts_of(item, seen, skip_partial, depth + 1)
    elif value is not None and not isinstance(value, (int, float, bool)):
        try:
            out.append(repr(value))
        except RecursionError:
            out.append("<repr: RecursionError>")
    return out


def key_leak(value, skip_partial=False, sent=b""):
    """Where the key or a 6+ character prefix of it shows in `value`, or None. A prefix that the
    server itself sent cut short (a mutation cut the echoed key) is not counted: the client
    cannot know it for the key."""
    for text in texts_of(value, skip_partial=skip_partial):
        if KEY[:6] in text:
            for prefix in reversed(KEY_PREFIXES):
                if prefix in text:
                    if prefix != KEY and re.search(re.escape(prefix.encode()) + b"(?!" + re.escape(KEY[len(prefix)].encode()) + b")", sent):
                        break
                    return "%d-char prefix in %r" % (len(prefix), text[max(0, text.find(prefix) - 60) : text.find(prefix) + 40])
    return None


def where(exc):
    """file:line of the innermost streamlite frame of an exception (or the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if frame.filename.endswith("streamlite.py"):
            return "streamlite.py:%d %s" % (frame.lineno, frame.name)
    if frames:
        return "%s:%d %s" % (os.path.basename(frames[-1].filename), frames[-1].lineno, frames[-1].name)
    return "?"


class Failure(Exception):
    def __init__(self, kind, detail, signature=None):
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail
        self.signature = signature or kind


def untyped(exc, what):
    if isinstance(exc, streamlite.StreamliteError):
        return None
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return Failure("untyped", "%s raised %s: %s at %s" % (what, type(exc).__name__, first, where(exc)),
                   "untyped %s %s at %s" % (what, type(exc).__name__, where(exc)))


# Pure decoders ################################################################


def splits(rng, data):
    if len(data) < 2 or rng.random() < 0.3:
        return [data]
    cuts = sorted(rng.randrange(len(data)) for _ in range(rng.choice([1, 2, 5, 30])))
    out, last = [], 0
    for cut in cuts + [len(data)]:
        out.append(data[last:cut])
        last = cut
    return out


def case_sse(rng, corpus, stats):
    name, body, _ = rng.choice(corpus)
    data, _ = mutate_body(rng, body, corpus) if rng.random() < 0.95 else (random_body(rng), False)
    limit = rng.choice([1, 64, 1024, 65536, streamlite.DEFAULT_MAX_EVENT_BYTES])
    try:
        decoder = streamlite.SSEDecoder(limit, lenient_error_field=rng.random() < 0.5)
    except TypeError:
        decoder = streamlite.SSEDecoder(limit)
    events = []
    try:
        for piece in splits(rng, data):
            events += decoder.feed(piece)
        events += decoder.close()
    except Exception as exc:  # noqa: BLE001
        stats["errors"][type(exc).__name__] += 1
        failure = untyped(exc, "SSEDecoder")
        if failure:
            raise failure
    for event in events:
        repr(event)
    return data


def chunk_objects(rng, corpus):
    """Decoded chunk objects: from mutated stream events, or built at random."""
    name, body, _ = rng.choice(corpus)
    data, _ = mutate_body(rng, body, corpus)
    objects = []
    for line in data.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                objects.append(json.loads(line[5:].decode("utf-8", "surrogatepass")))
            except (ValueError, RecursionError):
                pass
    for _ in range(rng.choice([0, 0, 1, 3])):
        objects.insert(rng.randrange(len(objects) + 1), random_chunk(rng))
    return objects


def random_value(rng, depth=0):
    r = rng.randrange(12 if depth < 4 else 7)
    if r == 0:
        return None
    if r == 1:
        return rng.choice([True, False])
    if r == 2:
        return rng.choice([0, -1, 1, 10**9, 10**400, 2**63, -(10**30)])
    if r == 3:
        return rng.choice([0.5, float("inf"), float("-inf"), float("nan"), 1e308, -0.0])
    if r in (4, 5, 6):
        return rng.choice(["", "x", "\ud83d", "\ude00", "<think>", "</think>", KEY, "\x00", "a" * 10000, "[DONE]",
                           "stop", "error", "tool_calls", "assistant", "{", '{"a":1}', "[" * 5000])
    if r in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 5]))]
    keys = ["index", "delta", "content", "reasoning_content", "reasoning", "refusal", "tool_calls", "function",
            "arguments", "name", "id", "finish_reason", "usage", "choices", "error", "message", "type", "code",
            "completion_tokens", "prompt_tokens", "total_tokens", "text", "thinking", "model", "created", "x"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 4, 6]))}


def random_chunk(rng):
    choice = {"index": rng.choice([0, 0, 1, -1, 10**9, "0", None, 2.5]),
              "delta": random_value(rng, 1) if rng.random() < 0.5 else {
                  rng.choice(["content", "reasoning_content", "refusal", "tool_calls", "role"]): random_value(rng, 2)}}
    if rng.random() < 0.3:
        choice["finish_reason"] = random_value(rng, 3)
    obj = {"choices": [choice] * rng.choice([1, 1, 2]) if rng.random() < 0.9 else random_value(rng, 1)}
    if rng.random() < 0.2:
        obj["usage"] = random_value(rng, 1)
    if rng.random() < 0.05:
        obj["error"] = random_value(rng, 1)
    if rng.random() < 0.1:
        obj = random_value(rng)
    return obj


def case_chunk(rng, corpus, stats):
    objects = chunk_objects(rng, corpus)
    think = rng.random() < 0.3
    decoder = streamlite.ChunkDecoder(think_tags=think) if hasattr(streamlite, "ChunkDecoder") else None
    acc = streamlite.Accumulator()
    for obj in objects:
        for surface, fn in (("parse_chunk", streamlite.parse_chunk), ("ChunkDecoder.decode", decoder and decoder.decode)):
            if fn is None:
                continue
            try:
                deltas = fn(obj)
            except Exception as exc:  # noqa: BLE001
                stats["errors"][type(exc).__name__] += 1
                failure = untyped(exc, surface)
                if failure:
                    raise failure
                continue
            if surface == "ChunkDecoder.decode":
                try:
                    for d in deltas:
                        acc.add(d)
                    if isinstance(obj, dict):
                        acc.add_chunk_info(obj)
                except Exception as exc:  # noqa: BLE001
                    failure = untyped(exc, "Accumulator.add")
                    if failure:
                        raise failure
    try:
        if decoder is not None and hasattr(decoder, "flush"):
            for d in decoder.flush():
                acc.add(d)
        result = acc.result()
        repr(result), str(result)
        for call in result.tool_calls:
            try:
                call.parsed_arguments()
            except Exception as exc:  # noqa: BLE001
                stats["errors"][type(exc).__name__] += 1
                failure = untyped(exc, "ToolCall.parsed_arguments")
                if failure:
                    raise failure
        getattr(result, "message", None)
        for text in (result.content, result.reasoning, result.refusal or ""):
            text.encode("utf-8")
        if result.usage is not None and result.usage.completion_tokens is not None:
            stats_obj = streamlite.Stats()
            object.__setattr__(stats_obj, "completion_tokens", result.usage.completion_tokens)
            object.__setattr__(stats_obj, "time_to_first_content", 0.1)
            object.__setattr__(stats_obj, "duration", 1.0)
            stats_obj.tokens_per_second
    except Failure:
        raise
    except Exception as exc:  # noqa: BLE001
        failure = untyped(exc, "Accumulator.result/Completion")
        if failure:
            raise failure
    return objects


# The server ###################################################################


class FuzzServer:
    """One loopback server for many cases: each connection gets the current plan (response
    bytes, how to send them, how to end). Connections are handled in threads; `idle()` waits
    until every connection of the case has been closed on this side."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = "http://127.0.0.1:%d/v1" % self.port
        self.plan = None
        self.lock = threading.Lock()
        self.active = 0
        self.connections = 0
        self.peer_closed = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.active += 1
                self.connections += 1
                plan = self.plan
            threading.Thread(target=self._handle, args=(conn, plan), daemon=True).start()

    def _handle(self, conn, plan):
        try:
            conn.settimeout(3.0)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            want = int(m.group(1)) if m else 0
            while len(body) < want:
                piece = conn.recv(65536)
                if not piece:
                    return
                body += piece
            if plan is None:
                return
            payload, pieces, pause, ending, hold_for, _ = plan
            pos = 0
            for cut in pieces + [len(payload)]:
                if cut > pos:
                    conn.sendall(payload[pos:cut])
                    pos = cut
                    if pause:
                        time.sleep(pause)
            if ending == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif ending == "hold":
                conn.settimeout(0.05)
                end = time.monotonic() + hold_for
                while time.monotonic() < end and not self.stopping:
                    try:
                        if not conn.recv(65536):
                            with self.lock:
                                self.peer_closed += 1
                            break
                    except socket.timeout:
                        continue
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1

    def idle(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.002)
        return False

    def stop(self):
        self.stopping = True
        self.listener.close()


def fd_count():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def make_plan(rng, corpus, total_timeout, proxy):
    name, body, meta = rng.choice(corpus)
    if rng.random() < 0.9:
        body, keyed = mutate_body(rng, body, corpus)
    else:
        body, keyed = random_body(rng), False
    if proxy:
        connect_head, _ = build_response(rng, b"", {"status": rng.choice([200, 200, 407, 403, 502])}, False)
        # after a 200 the client starts TLS: whatever follows is garbage to it, as it should be
        payload = connect_head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        if rng.random() < 0.5:
            payload += rng.choice([b"", b"\x16\x03\x01\x00\x05hello", b"HTTP/1.1 200 OK\r\n\r\n", random_body(rng)])
        keyed = KEY.encode() in payload
    else:
        payload, keyed = build_response(rng, body, meta, keyed)
    cuts = sorted(rng.randrange(len(payload) + 1) for _ in range(rng.choice([0, 0, 1, 3, 20])))
    pause = rng.choice([0, 0, 0, 0.001, 0.01])
    ending = rng.choice(["close"] * 6 + ["reset", "hold"])
    hold_for = total_timeout + 2.0
    return (payload, cuts, pause, ending, hold_for, body), keyed, name


def client_options(rng, total_timeout, proxy_url=None):
    opts = dict(connect_timeout=1.0, read_timeout=rng.choice([0.2, 0.5, 1.0]), total_timeout=total_timeout,
                max_retries=rng.choice([0, 0, 1]), proxy=proxy_url or "",
                max_event_bytes=rng.choice([1024, 4096, 65536, streamlite.DEFAULT_MAX_EVENT_BYTES]),
                think_tags=rng.random() < 0.2, include_usage=rng.random() < 0.8)
    return opts


def consume_sync(rng, url, opts, mode):
    client = streamlite.Client(url, KEY, **opts)
    if mode == "complete":
        return None, client.complete("hi")
    stop_after = rng.choice([None, None, None, 0, 1, 3])
    accumulate = rng.random() < 0.8
    stream = client.stream("hi", accumulate=accumulate)
    if mode == "no-with":
        read_sync(stream, stop_after)
        return None, stream.completion
    with stream:
        read_sync(stream, stop_after)
        return None, stream.completion


def read_sync(stream, stop_after):
    """Iterate `stream`, leaving after `stop_after` + 1 deltas (None: to its end)."""
    count = 0
    for d in stream:
        repr(d)
        count += 1
        if stop_after is not None and count > stop_after:
            break


async def consume_async(rng, url, opts, mode):
    client = streamlite.AsyncClient(url, KEY, **opts)
    if mode == "complete":
        return None, await client.acomplete("hi")
    stop_after = rng.choice([None, None, None, 0, 1, 3])
    accumulate = rng.random() < 0.8
    stream = client.astream("hi", accumulate=accumulate)
    async with stream:
        count = 0
        async for d in stream:
            repr(d)
            count += 1
            if stop_after is not None and count > stop_after:
                break
        return None, stream.completion


def check_result(completion):
    if completion is None:
        return
    repr(completion), str(completion)
    for text in (completion.content, completion.reasoning, completion.refusal or ""):
        text.encode("utf-8")
    for call in completion.tool_calls:
        try:
            call.parsed_arguments()
        except streamlite.StreamliteError:
            pass
    if completion.stats is not None:
        completion.stats.tokens_per_second
    getattr(completion, "message", None)


def case_client(rng, corpus, stats, server, surface, total_timeout, margin):
    proxy = surface == "proxy"
    plan, keyed, name = make_plan(rng, corpus, total_timeout, proxy)
    server.plan = plan
    use_async = surface == "async" or (proxy and rng.random() < 0.5)
    url = "https://127.0.0.1:9/v1" if proxy else server.url
    opts = client_options(rng, total_timeout, "http://127.0.0.1:%d" % server.port if proxy else None)
    mode = rng.choice(["stream"] * 5 + ["complete"] + (["no-with"] if not use_async else []))
    before = fd_count()
    error = completion = None
    gc.disable()
    start = time.monotonic()
    try:
        try:
            if use_async:
                _, completion = asyncio.run(consume_async(rng, url, opts, mode))
            else:
                _, completion = consume_sync(rng, url, opts, mode)
            check_result(completion)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001
            error = exc
        elapsed = time.monotonic() - start
        failures = []
        if error is not None:
            stats["errors"][type(error).__name__] += 1
            failure = untyped(error, "Client" if not use_async else "AsyncClient")
            if failure:
                failures.append(failure)
            else:
                try:
                    check_result(getattr(error, "partial", None))
                except Exception as exc:  # noqa: BLE001
                    failures.append(Failure("untyped", "partial: %s %s at %s" % (type(exc).__name__, exc, where(exc)),
                                            "untyped partial %s at %s" % (type(exc).__name__, where(exc))))
            leak = key_leak(error, skip_partial=True, sent=plan[0] + b"\n" + plan[5])
            if leak:
                places = [name for name, value in [("str", str(error)), ("args", error.args)] + sorted(vars(error).items())
                          if name != "partial" and key_leak(value, sent=plan[0] + b"\n" + plan[5])]
                failures.append(Failure("key", "%s %s: %s" % (type(error).__name__, "/".join(places), leak),
                                        "key in %s.%s" % (type(error).__name__, "/".join(places))))
            partial = getattr(error, "partial", None)
            if partial is not None and not keyed:
                leak = key_leak(partial)
                if leak:
                    failures.append(Failure("key", "partial: " + leak, "key in partial"))
        else:
            stats["errors"]["(none)"] += 1
            if not keyed:
                leak = key_leak(completion)
                if leak:
                    failures.append(Failure("key", "completion: " + leak, "key in completion"))
        if elapsed > total_timeout + margin:
            failures.append(Failure("timeout", "the call took %.2f s with total_timeout=%g (%s)" % (
                elapsed, total_timeout, type(error).__name__ if error else "no error"),
                "outlived total_timeout (%s, %s)" % ("async" if use_async else "sync", type(error).__name__ if error else "ok")))
        error = completion = None  # drop every reference (tracebacks hold frames and sockets)
        server.idle(plan[4] + 1.0)
        after = fd_count()
        if after > before:
            gc.enable()
            gc.collect()
            after_gc = fd_count()
            kind = "GC-only" if after_gc <= before else "never closed"
            if kind == "GC-only" and hasattr(sys, "pypy_version_info"):
                return failures, name  # PyPy has no reference counting: everything waits for the GC
            failures.append(Failure("leak", "%d socket(s) left open after the case (%s; %s, mode %s)" % (
                after - before, kind, "async" if use_async else "sync", mode),
                "leaked socket (%s, %s, %s)" % (kind, "async" if use_async else "sync", mode)))
        return failures, name
    finally:
        gc.enable()


# Driver #######################################################################


class Watchdog:
    """A case that spins (CPU-bound, deaf to every timeout) cannot be interrupted: after
    `limit` seconds print it as a failure with the stack of the main thread and exit 1.
    (faulthandler backs it up for a C call that holds the GIL.)"""

    def __init__(self, limit):
        self.limit = limit
        self.current = None
        self.started = 0.0
        self.lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True).start()

    def begin(self, label):
        import faulthandler

        with self.lock:
            self.current, self.started = label, time.monotonic()
        faulthandler.dump_traceback_later(self.limit + 10, exit=True)

    def end(self):
        import faulthandler

        faulthandler.cancel_dump_traceback_later()
        with self.lock:
            self.current = None

    def _watch(self):
        main = threading.main_thread().ident
        while True:
            time.sleep(0.25)
            with self.lock:
                label, started = self.current, self.started
            if label is not None and time.monotonic() - started > self.limit:
                frame = sys._current_frames().get(main)
                stack = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "?"
                print("FAIL %s: hang: still running after %.0f s (spinning, deaf to its timeouts)\n%s\n"
                      "1 distinct failure(s) (the run stopped here)" % (label, self.limit, stack), flush=True)
                os._exit(1)


def run_case(surface, case, args, corpus, stats, server, watchdog=None):
    rng = random.Random("%d:%s:%d" % (args.seed, surface, case))
    if watchdog is not None:
        watchdog.begin("seed %d %s case %d -- rerun: python3 tests/fuzz.py --seed %d --replay %s:%d" % (
            args.seed, surface, case, args.seed, surface, case))
    start = time.monotonic()
    failures = []
    name = ""
    try:
        if surface == "sse":
            case_sse(rng, corpus, stats)
        elif surface == "chunk":
            case_chunk(rng, corpus, stats)
        else:
            failures, name = case_client(rng, corpus, stats, server, surface, args.timeout, args.margin)
    except Failure as failure:
        failures = [failure]
    except RecursionError as exc:  # from the fuzzer's own checks on a deep value: still a finding
        failures = [Failure("untyped", "RecursionError in checks at %s" % where(exc), "RecursionError at %s" % where(exc))]
    took = time.monotonic() - start
    if watchdog is not None:
        watchdog.end()
    if surface in ("sse", "chunk") and took > args.slow:
        failures.append(Failure("slow", "a %s case took %.1f s" % (surface, took), "slow " + surface))
    return failures, name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases per surface")
    parser.add_argument("--client-cases", type=int, default=None, help="cases per client surface (default --cases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1.5, help="total_timeout given to the clients")
    parser.add_argument("--margin", type=float, default=1.0, help="how late past total_timeout a call may end")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds a decoder case may take")
    parser.add_argument("--surfaces", default=",".join(SURFACES))
    parser.add_argument("--keep-going", action="store_true", help="run every case, report all distinct failures")
    parser.add_argument("--replay", default=None, help="SURFACE:CASE: run that one case and print it")
    parser.add_argument("--hang", type=float, default=20.0, help="seconds after which a case is a hang")
    parser.add_argument("--progress", type=int, default=0, help="print a line every N cases (stderr)")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop starting cases after this long")
    args = parser.parse_args(argv)

    warnings.simplefilter("always", ResourceWarning)
    corpus = load_corpus()
    stats = {"errors": collections.Counter()}
    surfaces = [s.strip() for s in args.surfaces.split(",") if s.strip()]
    bad = [s for s in surfaces if s not in SURFACES]
    if bad:
        parser.error("unknown surface %s (known: %s)" % (bad[0], ", ".join(SURFACES)))
    need_server = any(s in ("sync", "async", "proxy") for s in surfaces) or args.replay
    watchdog = Watchdog(max(args.hang, args.timeout + args.margin + 5.0))
    server = FuzzServer() if need_server else None
    ran = collections.Counter()
    seen = collections.OrderedDict()  # signature -> (surface, case, failure, corpus name)
    errors_by_surface = collections.defaultdict(collections.Counter)
    started = time.monotonic()
    caught_warnings = []
    original_showwarning = warnings.showwarning

    def record_warning(message, category, filename, lineno, file=None, line=None):
        caught_warnings.append((category, str(message)))

    warnings.showwarning = record_warning
    try:
        if args.replay:
            surface, _, case = args.replay.partition(":")
            failures, name = run_case(surface, int(case), args, corpus, stats, server, watchdog)
            print("replay %s case %s (seed %d, from %s): %s" % (surface, case, args.seed, name or "-",
                                                                 [str(f) for f in failures] or "ok"))
            print("error types:", dict(stats["errors"]))
            return 1 if failures else 0
        stop = False
        for surface in surfaces:
            count = args.cases if surface in ("sse", "chunk") or args.client_cases is None else args.client_cases
            for case in range(count):
                if args.max_seconds is not None and time.monotonic() - started > args.max_seconds:
                    break
                stats["errors"] = errors_by_surface[surface]
                mark = len(caught_warnings)
                failures, name = run_case(surface, case, args, corpus, stats, server, watchdog)
                if surface in ("sync", "async", "proxy"):
                    gc.collect()
                for category, message in caught_warnings[mark:]:
                    if issubclass(category, ResourceWarning) or "never awaited" in message:
                        failures.append(Failure("warning", "%s: %s" % (category.__name__, message[:200]),
                                                "%s: %s" % (category.__name__, re.sub(r"0x[0-9a-f]+|fd=\d+|\d+\)", "", message)[:80])))
                ran[surface] += 1
                if args.progress and ran[surface] % args.progress == 0:
                    print("  ... %s %d cases, %.0f s" % (surface, ran[surface], time.monotonic() - started), file=sys.stderr, flush=True)
                for failure in failures:
                    if failure.signature not in seen:
                        seen[failure.signature] = (surface, case, failure, name)
                        print("FAIL seed %d %s case %d (%s): %s" % (args.seed, surface, case, name, failure), flush=True)
                if failures and not args.keep_going:
                    stop = True
                    break
            if stop:
                break
    finally:
        warnings.showwarning = original_showwarning
        if server is not None:
            server.stop()
    took = time.monotonic() - started
    print("\ncases run (seed %d, %.1f s):" % (args.seed, took))
    for surface in surfaces:
        print("  %-6s %8d   errors seen: %s" % (surface, ran[surface], ", ".join(
            "%s %d" % kv for kv in errors_by_surface[surface].most_common()) or "-"))
    if seen:
        print("\n%d distinct failure(s):" % len(seen))
        for signature, (surface, case, failure, name) in seen.items():
            print("  [%s] %s  -- rerun: python3 tests/fuzz.py --seed %d --replay %s:%d  (from %s)" % (
                failure.kind, signature, args.seed, surface, case, name))
        return 1
    print("no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
