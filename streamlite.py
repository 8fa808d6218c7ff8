# streamlite: stream chat completions from any OpenAI-compatible API, standard library only.
#
# MIT License
#
# Copyright (c) 2026 the streamlite authors
#
# Permission is hereby granted, free of charge, to any person obtaining a copy of this software
# and associated documentation files (the "Software"), to deal in the Software without
# restriction, including without limitation the rights to use, copy, modify, merge, publish,
# distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
# Software is furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all copies or
# substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
# BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
# NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
# DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""Stream model output from any OpenAI-compatible API with nothing but the standard library.

One file, Python 3.8 or newer, no dependencies: copy it into a project and import it. The path
of the data:

    request:  messages/prompt -> wire dialect: body + path -> HTTP/1.1 request bytes -> driver (send)
    response: driver (recv) -> HTTP response parser -> body framing + inflate -> SSE decoder -> JSON
              -> wire dialect: event -> deltas -> caller          (+ Accumulator -> Completion)

Everything between the two ends is free of I/O and works on bytes and objects; the two drivers
(sync sockets, asyncio streams) only connect, send, receive into the parser, enforce timeouts
and keep idle connections. Sections, top to bottom, each using only the ones above it
(`grep -n '^# .* ####' streamlite.py` prints them): Errors, Helpers, Value types, SSE decoder,
Wire dialects (chat, Responses, legacy completions), Accumulator, Stream decoding, HTTP/1.1,
Connection settings, Sync driver, Async driver, Client API (with batch), Command line.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from collections import abc
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:  # pragma: no cover
    import ssl

__version__ = "0.1.0"
__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Accumulator",
    "AsyncClient",
    "AsyncStream",
    "BatchResult",
    "Choice",
    "Client",
    "Completion",
    "ConfigError",
    "ContentDelta",
    "Delta",
    "Finish",
    "ProtocolError",
    "ReasoningDelta",
    "RefusalDelta",
    "SSEDecoder",
    "ServerSentEvent",
    "Stats",
    "Stream",
    "StreamliteError",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "complete",
    "main",
    "parse_chunk",
    "stream",
    "tool_result",
    "user",
]

#: Default bound on one SSE line or event, and on an error body we keep (bytes).
DEFAULT_MAX_EVENT_BYTES = 16 * 2**20
#: The most of an HTTP error body we read; providers' error bodies are a few hundred bytes.
MAX_ERROR_BODY_BYTES = 2**20
#: The longest server-requested wait (Retry-After) we honour before giving up at once.
MAX_RETRY_AFTER_SECONDS = 120.0
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
USER_AGENT = "streamlite/" + __version__

JSON = Any  # a value decoded by json.loads
_JSON_ERRORS = (ValueError, RecursionError)  # invalid JSON, or nested deeper than the parser goes
_Event = Tuple[str, str, str, Optional[int]]  # a ServerSentEvent's fields, in order
Messages = Union[str, Sequence[Mapping[str, Any]]]


###############################################################################
# Errors ######################################################################
###############################################################################
#
# Strategy: every error streamlite raises is a StreamliteError, and each also derives from the
# standard exception a caller's existing handler would expect (ValueError, ConnectionError,
# TimeoutError). Errors raised after the first delta carry `.partial`, the Completion so far.


class StreamliteError(Exception):
    """Base of every error streamlite raises."""

    #: The Completion received before the error, when deltas had already arrived.
    partial: Optional[Completion] = None


class ConfigError(StreamliteError, ValueError):
    """A bad argument, caught before any I/O."""


class APIError(StreamliteError):
    """The server refused or failed: an HTTP status that is not 2xx, or an error in the stream."""

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Any = None,
        type: Optional[str] = None,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
        partial: Optional[Completion] = None,
        display: Optional[str] = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.body = body
        self.headers = headers
        self.retry_after = retry_after
        self.request_id = request_id
        self.partial = partial
        self._display = display  # the message as shown: an HTML page's title, clipped
        super().__init__(self._render())

    def _render(self) -> str:
        message = self.message if self._display is None else self._display
        if self.status is None:
            text = "error in stream: " + message
        else:
            reason = _reason_phrase(self.status)
            text = "%d%s: %s" % (self.status, " " + reason if reason else "", message)
        code = self.code if isinstance(self.code, (str, int)) else None
        if code not in (None, "") and str(code) != str(self.status) and len(str(code)) <= 100:
            text += " (code %s)" % (code,)
        return text


class APIConnectionError(StreamliteError, ConnectionError):
    """Could not connect, or the connection broke before the stream ended."""

    def __init__(self, message: str, *, partial: Optional[Completion] = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial
        self._retryable = retryable  # the retry policy may send the request again

    def __str__(self) -> str:
        return self.message


class APITimeoutError(APIConnectionError, TimeoutError):
    """A timeout fired; `.which` says which one: "connect", "read" or "total"."""

    def __init__(self, message: str, *, which: str, partial: Optional[Completion] = None) -> None:
        super().__init__(message, partial=partial)
        self.which = which


class ProtocolError(StreamliteError, ValueError):
    """The bytes are not a valid stream: not SSE, bad JSON, an event over the size limit."""

    def __init__(self, message: str, *, partial: Optional[Completion] = None) -> None:
        super().__init__(message)
        self.partial = partial


_E = TypeVar("_E", bound=BaseException)


def _kept(error: _E) -> _E:
    """An exception to keep for raising later, without its traceback: its frames link to their
    callers', and the object keeping the error is held by one of them (a reference cycle that
    would keep a client and its sockets until the cyclic garbage collector runs)."""
    return error.with_traceback(None)


def _raise_if(error: Optional[BaseException]) -> None:
    """Raise `error` unless it is None, from a frame that then lets go of it. An exception that
    a frame of its own traceback still holds forms a reference cycle, and every frame of the
    call (a client, its pooled connections) then waits for the cyclic garbage collector."""
    if error is not None:
        try:
            raise error
        finally:
            del error


def _reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status ("Too Many Requests"), or ""."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


###############################################################################
# Helpers #####################################################################
###############################################################################
#
# Small functions that several sections below use: clipping text for messages, rendering
# decoded JSON safely (however deep a server nests it), scrubbing secrets, and fast JSON.


def _clip(value: Any, limit: int = 200) -> str:
    """Return repr-free text of `value`, cut to `limit` characters, for error messages."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except RecursionError:
            text = repr(_pruned(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut(value: Any, limit: int = 2000) -> str:
    """str(value) cut to `limit` characters (white space kept): a provider's message, bounded."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except RecursionError:
            value = str(_pruned(value))
    text: str = value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pruned(value: Any, depth: int = 32) -> Any:
    """Decoded JSON with what lies below `depth` levels replaced by a marker: a server can nest
    JSON deeper than repr() and json.dumps() go (they raise RecursionError)."""
    if isinstance(value, dict):
        return {key: _pruned(item, depth - 1) for key, item in value.items()} if depth else "(nested too deeply)"
    if isinstance(value, (list, tuple)):
        return [_pruned(item, depth - 1) for item in value] if depth else "(nested too deeply)"
    return value


def _json_text(value: Any, ensure_ascii: bool = True) -> str:
    """json.dumps() of a decoded server value, pruned if it is nested too deeply to dump."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii)
    except RecursionError:
        return json.dumps(_pruned(value), ensure_ascii=ensure_ascii)


def _loads(text: str, _scan: Callable[[str, int], Tuple[Any, int]] = json.JSONDecoder().scan_once) -> Any:  # type: ignore[attr-defined]
    """json.loads(text) for one event's data, without its two layers of Python wrappers (a
    third of its cost on a short object). Anything unusual takes json.loads itself."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace, or invalid: loads says which
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return json.loads(text)  # extra data: loads raises the usual error
    return value


_NOT_JSON = object()


def _loads_or(text: str, default: Any) -> Any:
    """_loads(text), or `default` when it is not valid JSON."""
    try:
        return _loads(text)
    except _JSON_ERRORS:
        return default


_HTML_LIMIT = 256 * 1024  # the most of an HTML page looked at for its text


def _text_of_body(text: str) -> str:
    """Readable text of a non-JSON body: an HTML page's title (or its text), else the text."""
    lowered = text[:_HTML_LIMIT].lower()
    if "<html" in lowered or "<!doctype" in lowered or "<title" in lowered:
        start = lowered.find("<title")
        if start >= 0:
            start = lowered.find(">", start) + 1
            end = lowered.find("</title", start)
            if 0 < start <= end:
                return _clip(text[start:end], 200)
        text = _strip_tags(text[:_HTML_LIMIT], lowered)
    return _clip(text, 300)


def _strip_tags(text: str, lowered: str) -> str:
    """The text of HTML without its tags, scripts and styles, in one pass (a regular
    expression backtracks on `<` without `>`: quadratic)."""
    out: List[str] = []
    pos = 0
    while True:
        start = text.find("<", pos)
        if start < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        end = text.find(">", start)
        for name in ("script", "style"):
            if end >= 0 and lowered.startswith(name, start + 1):
                close = lowered.find("</" + name, end)
                end = lowered.find(">", close) if close >= 0 else -1
        if end < 0:
            break  # an unclosed tag: the rest is markup
        out.append(" ")
        pos = end + 1
    return "".join(out)


def _valid_text(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode_text(text: str) -> str:
    """`text`, made valid Unicode if it holds surrogates (JSON escapes can carry lone ones)."""
    return _valid_text(text) if not text.isascii() and _SURROGATE.search(text) else text


def _unicode_or_none(text: Any) -> Any:
    return _unicode_text(text) if isinstance(text, str) else text


def _unicode_strings(value: Any) -> Any:
    """Decoded JSON with every string in it made valid Unicode."""
    return json.loads(_valid_text(_json_text(value, ensure_ascii=False)))


_REDACTED = "[redacted]"
_SECRET_PREFIX = 6  # this much of a secret, and what follows it of the secret, is redacted


def _scrub_text(text: str, secrets: Sequence[str]) -> str:
    """`text` without any secret, nor any piece of one that starts with its first characters
    (a secret cut short by a clip still shows its start)."""
    for secret in secrets:
        head = secret[:_SECRET_PREFIX]
        found = text.find(head)
        while found >= 0:
            end = found + len(head)
            limit = min(len(text), found + len(secret))
            while end < limit and text[end] == secret[end - found]:
                end += 1
            text = text[:found] + _REDACTED + text[end:]
            found = text.find(head, found + len(_REDACTED))
    return text


def _scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    """A decoded JSON value (or any value) without secrets in its text."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = _json_text(value, ensure_ascii=False) if isinstance(value, (dict, list)) else repr(value)
    if not any(secret[:_SECRET_PREFIX] in text for secret in secrets):
        return value
    if isinstance(value, (dict, list)):
        try:
            return json.loads(_scrub_text(text, secrets))
        except _JSON_ERRORS:
            pass
    return _scrub_text(text, secrets)


def _scrub(error: StreamliteError, secrets: Sequence[str]) -> StreamliteError:
    """Remove secrets (and their starts) from every attribute and the text of an error, in
    case a server echoed them back; return the error."""
    if error.__suppress_context__:  # raised "from None": the hidden exception may quote a secret
        error.__context__ = None
    if not secrets:
        return error
    for name in ("message", "code", "type", "body", "request_id", "_display"):
        if hasattr(error, name):
            setattr(error, name, _scrub_value(getattr(error, name), secrets))
    headers = getattr(error, "headers", None)
    if isinstance(headers, dict):
        error.headers = {key: _scrub_text(value, secrets) for key, value in headers.items()}  # type: ignore[attr-defined]
    if isinstance(error, APIError):
        error.args = (error._render(),)
    else:
        error.args = tuple(_scrub_value(arg, secrets) for arg in error.args)
    return error


###############################################################################
# Value types #################################################################
###############################################################################


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a text/event-stream, as the WHATWG algorithm dispatches it."""

    event: str = "message"
    data: str = ""
    id: str = ""  # the last event ID, carried over from earlier events as the spec says
    retry: Optional[int] = None  # a valid `retry:` value set in this event's own block


@dataclass(frozen=True)
class Delta:
    """Base of every piece a stream yields. Each subclass has `choice`, the choice index."""


@dataclass(frozen=True)
class _TextDelta(Delta):
    """The shape of the three kinds of text fragment (each compares equal only to its kind)."""

    text: str
    choice: int = 0


class ContentDelta(_TextDelta):
    """A fragment of the answer text."""


class ReasoningDelta(_TextDelta):
    """A fragment of the model's reasoning ("thinking") text."""


class RefusalDelta(_TextDelta):
    """A fragment of a refusal message (OpenAI structured outputs)."""


@dataclass(frozen=True)
class ToolCallDelta(Delta):
    """One fragment of a tool call; `arguments` is a piece of the JSON text."""

    index: int
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: str = ""
    choice: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Usage(Delta):
    """Token counts; `raw` is the provider's usage object verbatim."""

    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    total_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    choice: int = 0


@dataclass(frozen=True)
class Finish(Delta):
    """The choice is finished; `reason` is exactly what the server sent ("stop", "length"...)."""

    reason: str
    choice: int = 0


@dataclass(frozen=True)
class ToolCall:
    """A whole tool call: fragments joined, `id` and `name` from their first non-empty value."""

    index: int
    id: Optional[str]
    name: Optional[str]
    arguments: str
    type: str = "function"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def parsed_arguments(self) -> JSON:
        """Return the arguments decoded from JSON ({} when empty); ProtocolError if invalid."""
        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except _JSON_ERRORS as exc:
            raise ProtocolError(
                "tool call %r has arguments that are not valid JSON: %s" % (self.name, exc)
            ) from None


@dataclass(frozen=True)
class Choice:
    """The accumulated result of one choice (`n > 1` gives several)."""

    index: int
    content: str = ""
    reasoning: str = ""
    refusal: Optional[str] = None
    tool_calls: Tuple[ToolCall, ...] = ()
    finish_reason: Optional[str] = None
    #: OpenRouter's structured reasoning, merged per entry: sent back with the message.
    reasoning_details: Tuple[Mapping[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def message(self) -> Dict[str, Any]:
        """The assistant message to append to the conversation for the next request."""
        return _assistant_message(self.content, self.refusal, self.tool_calls, self.reasoning_details)


def _assistant_message(
    content: str, refusal: Optional[str], calls: Sequence[ToolCall], details: Sequence[Mapping[str, Any]]
) -> Dict[str, Any]:
    """{"role": "assistant", ...} as OpenAI takes it back: content None (not "") beside tool
    calls, each call with its id and the provider's own fields (Gemini's extra_content thought
    signature), OpenRouter's reasoning_details; never reasoning_content (DeepSeek refuses it)."""
    message: Dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if refusal is not None:
        message["refusal"] = refusal
    if calls:
        message["tool_calls"] = [_call_message(call) for call in calls]
    if details:
        message["reasoning_details"] = [dict(detail) for detail in details]
    return message


def _call_message(call: ToolCall) -> Dict[str, Any]:
    out: Dict[str, Any] = {k: v for k, v in call.extra.items() if k not in ("id", "type", "function")}
    out.update(id=_call_id(call), type=call.type or "function")
    out["function"] = {"name": call.name or "", "arguments": call.arguments or "{}"}
    return out


def _call_id(call: ToolCall) -> str:
    """The call's id; a server that sent none gets "call_<index>", the same in tool_result()."""
    return call.id if call.id else "call_%d" % call.index


@dataclass(frozen=True)
class Stats:
    """Timing of one stream, in seconds from the start of the call (None: did not happen)."""

    time_to_first_byte: Optional[float] = None
    time_to_first_reasoning: Optional[float] = None
    time_to_first_content: Optional[float] = None
    duration: float = 0.0
    events: int = 0
    bytes: int = 0
    retries: int = 0
    gap_p50: Optional[float] = None
    gap_p95: Optional[float] = None
    gap_max: Optional[float] = None
    completion_tokens: Optional[int] = None
    connection_reused: bool = False  # the request went out on a kept-alive connection

    @property
    def tokens_per_second(self) -> Optional[float]:
        """Completion tokens per second after the first token, when usage was reported and the
        tokens came as a stream (not all at once: a non-streamed answer has no rate)."""
        first = self.time_to_first_reasoning or self.time_to_first_content
        tokens = self.completion_tokens
        if tokens is None or tokens <= 0 or first is None or self.duration <= first or self.events < 2:
            return None
        try:
            return float(tokens) / (self.duration - first)
        except OverflowError:  # a server's absurd token count
            return None


@dataclass(frozen=True)
class Completion:
    """The accumulated result of a stream; the plain attributes describe choice 0."""

    content: str = ""
    reasoning: str = ""
    refusal: Optional[str] = None
    tool_calls: Tuple[ToolCall, ...] = ()
    finish_reason: Optional[str] = None
    usage: Optional[Usage] = None
    id: Optional[str] = None
    model: Optional[str] = None
    choices: Tuple[Choice, ...] = ()
    created: Optional[int] = None
    #: Top-level chunk fields nobody has typed (timings, x_groq, prompt_filter_results, ...).
    extras: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Things the client did on the caller's behalf that change the result (a dropped option).
    warnings: Tuple[str, ...] = ()
    stats: Optional[Stats] = field(default=None, compare=False, repr=False)
    #: The server's id of the HTTP request (x-request-id and kin), for its support desk.
    request_id: Optional[str] = field(default=None, compare=False)

    @property
    def message(self) -> Dict[str, Any]:
        """The assistant message of choice 0, to append to the conversation (see Choice.message)."""
        if self.choices and self.choices[0].index == 0:
            return self.choices[0].message
        return _assistant_message(self.content, self.refusal, self.tool_calls, ())


###############################################################################
# SSE decoder (no I/O) #########################################################
###############################################################################
#
# https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
#
# Plan: feed() appends bytes to one buffer and looks for line ends only in the bytes it has not
# searched yet (no quadratic rescans). The complete lines, a block at a time, are decoded as UTF-8
# (CR and LF never occur inside a multi-byte sequence, so splitting bytes first is safe) and run
# through the field rules. A CR at the very end of a feed may be half of a CRLF: the next feed
# drops one leading LF. Memory is bounded: the unterminated tail and each event's data are capped.

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Turn bytes of a text/event-stream into ServerSentEvents; no I/O, no JSON.

    Args:
        max_event_bytes: the longest line, and the most data one event may hold; past it
            feed() raises ProtocolError. Events completed earlier in the same feed() are
            returned first; the error is then in `failed` and raised by the next feed() or
            close(), so nothing that arrived whole is lost.
        lenient_error_field: also report the non-standard `error:` field line (old llama.cpp
            servers send their errors that way) as an event of type "error", instead of
            ignoring it as the spec does with unknown fields.
    """

    def __init__(
        self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *, lenient_error_field: bool = False
    ) -> None:
        if max_event_bytes < 1:
            raise ConfigError("max_event_bytes must be positive, got %r" % (max_event_bytes,))
        self.max_event_bytes = max_event_bytes
        self._lenient = lenient_error_field
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to hold no line end
        self._skip_lf = False  # the previous feed ended with CR
        self._seen_start = False  # the leading BOM has been dealt with
        self._failed = False
        self.failed: Optional[ProtocolError] = None  # an error held back behind events
        self._lines = 0
        # the event being assembled
        self._type = ""
        self._data: List[str] = []
        self._data_size = 0
        self._retry: Optional[int] = None
        self._last_id = ""
        self._errors: List[str] = []

    def feed(self, data: bytes) -> List[ServerSentEvent]:
        """Add bytes; return the events they complete (often none, sometimes several)."""
        return [ServerSentEvent(*event) for event in self.feed_tuples(data)]

    def feed_tuples(self, data: bytes) -> List[_Event]:
        """feed(), with each event as a plain (event, data, id, retry) tuple: the client's
        hot path, which does not need the dataclass."""
        if self._failed:
            self._raise_failed()
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return []
        buffer = self._buffer
        buffer += data
        if not self._seen_start and not self._strip_bom():
            return []
        start = self._scanned
        end = max(buffer.rfind(b"\n", start), buffer.rfind(b"\r", start)) + 1
        if not end:
            self._scanned = len(buffer)
            if self._scanned > self.max_event_bytes:
                self._line_too_long()
            return []
        if end == len(buffer) and buffer[-1] == 13:  # CR: an LF may follow in the next feed
            self._skip_lf = True
        text = buffer[:end].decode("utf-8", "replace")
        del buffer[:end]
        self._scanned = len(buffer)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not self._data and not self._type and not self._errors and self._retry is None:
            events = self._blocks(text)
        else:
            events = self._interpret(text[:-1].split("\n"), [])
        if self._scanned > self.max_event_bytes and not self._failed:  # the start of the next line
            try:
                self._line_too_long()
            except ProtocolError as exc:
                self._hold_back(exc, events)
        return events

    def _blocks(self, text: str) -> List[_Event]:
        """The common case a block at a time: while events are each a single `data: ` line
        and nothing is pending, one split makes them; from the first block that is anything
        else on, _interpret takes the lines. `text` ends with a line end."""
        blocks = text.split("\n\n")
        rest = blocks.pop()  # after the last blank line: "" or the start of the next event
        events: List[_Event] = []
        last_id, limit = self._last_id, self.max_event_bytes
        for at, block in enumerate(blocks):
            if block[:6] != "data: " or "\n" in block or len(block) > limit:
                return self._interpret(("\n\n".join(blocks[at:]) + "\n\n" + rest)[:-1].split("\n"), events)
            events.append(("message", block[6:], last_id, None))
        if rest:
            return self._interpret(rest[:-1].split("\n"), events)
        return events

    def close(self) -> List[ServerSentEvent]:
        """End of input: an unterminated event is discarded, as the spec says."""
        return [ServerSentEvent(*event) for event in self.close_tuples()]

    def close_tuples(self) -> List[_Event]:
        if self.failed is not None:
            self._raise_failed()
        if self._failed:
            return []
        self._failed = True  # no more input after close()
        events: List[_Event] = []
        if self._lenient and self._errors:  # an error is worth reporting even if unterminated
            events.append(("error", "\n".join(self._errors), self._last_id, None))
        self._buffer.clear()
        return events

    def _strip_bom(self) -> bool:
        """Drop one leading BOM; return False while the buffer may still be one."""
        buffer = self._buffer
        if len(buffer) < 3 and _BOM.startswith(buffer):
            return False
        if buffer.startswith(_BOM):
            del buffer[:3]
        self._seen_start = True
        return True

    def _fail(self, message: str) -> None:
        self._failed = True
        self._buffer.clear()
        self._data = []
        raise ProtocolError(message)

    def _line_too_long(self) -> None:
        self._fail("an SSE line is longer than the limit of %d bytes" % self.max_event_bytes)

    def _hold_back(self, error: ProtocolError, events: List[_Event]) -> None:
        """Raise `error` now, or, behind events that must come out first, at the next call."""
        if not events:
            try:
                raise error
            finally:
                del error  # a frame holding the exception it raises makes a reference cycle
        self.failed = _kept(error)

    def _raise_failed(self) -> None:
        raise self._take_failed()

    def _take_failed(self) -> ProtocolError:
        error, self.failed = self.failed, None
        return error or ProtocolError("the SSE decoder already failed; it takes no more input")

    def _interpret(self, lines: List[str], events: List[_Event]) -> List[_Event]:
        """Interpret lines, adding the events they complete to `events`, and return it. A
        failure after some events holds the error back in `failed` behind them."""
        try:
            self._lines_to_events(lines, events)
        except ProtocolError as exc:
            self._hold_back(exc, events)
        return events

    def _lines_to_events(self, lines: List[str], events: List[_Event]) -> None:
        limit = self.max_event_bytes
        for line in lines:
            if line[:6] == "data: ":  # the common case first
                value = line[6:]
            elif not line:
                if self._data and not self._errors and len(self._data) == 1:  # the common case
                    events.append((self._type or "message", self._data[0], self._last_id, self._retry))
                    self._data = []
                    self._data_size = 0
                    self._type = ""
                    self._retry = None
                elif self._data or self._errors:
                    self._dispatch(events)
                else:  # nothing to dispatch: reset the block (the id stays, as the spec says)
                    self._type = ""
                    self._retry = None
                continue
            else:
                found = self._field(line, limit)
                if found is None:
                    continue
                value = found
            self._data_size += len(value) + 1
            if self._data_size > limit or len(line) > limit:
                self._fail("an SSE event is larger than the limit of %d bytes" % limit)
            self._data.append(value)

    def _field(self, line: str, limit: int) -> Optional[str]:
        """Interpret a line other than `data: ...`; return the value if it is a data line."""
        if len(line) > limit:
            self._line_too_long()
        if line[0] == ":":  # a comment, e.g. ": keep-alive"
            return None
        name, colon, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            return value
        if name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isdigit() and value.isascii() and len(value) <= 18:  # longer: ignored, not a ValueError
                self._retry = int(value)
        elif name == "error" and self._lenient:
            self._data_size += len(value) + 1  # error lines count toward the event's limit
            if self._data_size > limit:
                self._fail("an SSE event is larger than the limit of %d bytes" % limit)
            self._errors.append(value)
        return None

    def _dispatch(self, events: List[_Event]) -> None:
        if self._errors:
            events.append(("error", "\n".join(self._errors), self._last_id, None))
            self._errors = []
        if self._data:
            data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
            events.append((self._type or "message", data, self._last_id, self._retry))
        self._type = ""
        self._data = []
        self._data_size = 0
        self._retry = None


###############################################################################
# Wire dialects (no I/O) ######################################################
###############################################################################
#
# One small decoder per wire API, and the request bodies they take. All knowledge of
# providers' field names lives here. A chunk is one decoded `data:` object,
# normally a `chat.completion.chunk`; an ordinary `chat.completion` (a server that ignored
# "stream") decodes to the same deltas through `message` instead of `delta`. Unknown fields are
# ignored here and stay reachable as the raw chunk (Stream.last_chunk, Completion.extras).

_STANDARD_CHUNK_KEYS = frozenset(
    ("id", "object", "created", "model", "choices", "usage", "system_fingerprint", "obfuscation")
)
_TOOL_CALL_KEYS = frozenset(("index", "id", "type", "function"))


def _as_int(value: Any) -> Optional[int]:
    return value if type(value) is int else None


def _text_of_parts(parts: Sequence[Any], want: str) -> str:
    """Join the text of typed content parts (Mistral Magistral) of kind "text" or "thinking"."""
    pieces: List[str] = []
    for part in parts:
        if isinstance(part, str):
            if want == "text":
                pieces.append(part)
        elif isinstance(part, dict) and part.get("type") == want:
            value = part.get(want) if want == "thinking" else part.get("text")
            if isinstance(value, str):
                pieces.append(value)
            elif isinstance(value, list):
                pieces.append(_text_of_parts(value, "text"))
    return "".join(pieces)


def _reasoning_of(delta: Mapping[str, Any]) -> str:
    """The reasoning text of a delta, from whichever field this provider uses, never twice."""
    text = delta.get("reasoning_content")
    if isinstance(text, str) and text:
        return text
    text = delta.get("reasoning")
    if isinstance(text, str):
        return text
    if "reasoning" in delta:  # OpenRouter sends the same text in `reasoning_details` too
        return ""
    details = delta.get("reasoning_details")
    if not isinstance(details, list):
        return ""
    pieces = []
    for detail in details:
        if isinstance(detail, dict):
            value = detail.get("text")
            if not isinstance(value, str):
                value = detail.get("summary")
            if isinstance(value, str):
                pieces.append(value)
    return "".join(pieces)


def parse_usage(obj: Mapping[str, Any]) -> Usage:
    """Build Usage from an OpenAI-style usage object (DeepSeek and Anthropic-style names too)."""
    prompt = _as_int(obj.get("prompt_tokens"))
    completion = _as_int(obj.get("completion_tokens"))
    if prompt is None and completion is None:
        prompt = _as_int(obj.get("input_tokens"))
        completion = _as_int(obj.get("output_tokens"))
    details = obj.get("completion_tokens_details")
    reasoning = _as_int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    details = obj.get("prompt_tokens_details")
    cached = _as_int(details.get("cached_tokens")) if isinstance(details, dict) else None
    if cached is None:
        cached = _as_int(obj.get("prompt_cache_hit_tokens"))
    total = _as_int(obj.get("total_tokens"))
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    return Usage(prompt, completion, total, reasoning, cached, obj)


def usage_of(chunk: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The usage object of a chunk: top-level `usage`, else Groq's `x_groq.usage`."""
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        return usage
    extra = chunk.get("x_groq")
    if isinstance(extra, dict) and isinstance(extra.get("usage"), dict):
        return extra["usage"]  # type: ignore[no-any-return]
    return None


def error_fields(payload: Any) -> Optional[Tuple[str, Any, Optional[str]]]:
    """Find (message, code, type) of an error payload in any shape providers use, else None.

    Shapes: {"error": {...}} (OpenAI, vLLM, OpenRouter), {"error": "text"}, a bare Error
    object {"message", "type", "code"} (`event: error`, old vLLM's top level with
    object "error"), a JSON array whose first element is one of these (Gemini), and
    Groq's {"x_groq": {"error": ...}}.
    """
    if isinstance(payload, list):
        return error_fields(payload[0]) if payload else None
    if not isinstance(payload, dict):
        return None
    inner = payload.get("error")
    if not inner and isinstance(payload.get("x_groq"), dict):
        inner = payload["x_groq"].get("error")
    if isinstance(inner, str) and inner:
        return inner, payload.get("code"), _as_str(payload.get("type"))
    if isinstance(inner, dict) and inner:
        message = inner.get("message") or inner.get("msg") or inner.get("detail")
        code = inner.get("code", inner.get("status"))
        if isinstance(message, list):  # {"error": {"message": [..]}}
            message = "; ".join(_cut(item) for item in message)
        return (
            _cut(message) if message else _clip(_json_text(inner)),
            code,
            _as_str(inner.get("type") or inner.get("status")),
        )
    if payload.get("object") == "error" or (("message" in payload or "detail" in payload) and "choices" not in payload):
        message = payload.get("message") or payload.get("detail")
        if message:
            return _cut(message), payload.get("code"), _as_str(payload.get("type"))
    return None


def _as_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _text_delta(kind: type, text: str, choice: int, _new: Callable[[type], Any] = object.__new__) -> Any:
    """kind(text, choice) for a ContentDelta or ReasoningDelta, in half the time of the frozen
    dataclass's __init__ (which sets each field through object.__setattr__): the hot path."""
    delta = _new(kind)
    fields = delta.__dict__
    fields["text"] = text
    fields["choice"] = choice
    return delta


class _ThinkSplitter:
    """Split content that inlines reasoning as <think>...</think> (DeepSeek-R1 on some hosts).

    A tag may be cut across deltas, so a trailing piece that could start one is held back until
    the next delta shows whether it does (flush() hands it over at the end of the stream). Only
    one block, at the start of the content, is reasoning: once it closed (or the answer began
    without one), a literal <think> in the answer is text.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.inside = False
        self.held = ""
        self.trim = False  # drop the blank lines between </think> and the answer
        self.settled = False  # the answer has begun: no more tags are looked for

    def split(self, text: str) -> List[Tuple[bool, str]]:
        """Return (is_reasoning, text) pieces of `text`, in order."""
        text = self.held + text
        self.held = ""
        pieces: List[Tuple[bool, str]] = []
        while text:
            if self.settled:
                self._emit(text, pieces)
                break
            tag = self.CLOSE if self.inside else self.OPEN
            found = text.find(tag)
            if found < 0:
                keep = next((k for k in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:k])), 0)
                self.held = text[len(text) - keep :]
                text = text[: len(text) - keep]
                self._emit(text, pieces)
                break
            self._emit(text[:found], pieces)
            if self.settled:  # the answer began before this tag: it is text
                self._emit(text[found:], pieces)
                break
            text = text[found + len(tag) :]
            self.inside = not self.inside
            self.trim = not self.inside
            self.settled = not self.inside
        return pieces

    def flush(self) -> List[Tuple[bool, str]]:
        pieces: List[Tuple[bool, str]] = []
        self._emit(self.held, pieces)
        self.held = ""
        return pieces

    def _emit(self, text: str, pieces: List[Tuple[bool, str]]) -> None:
        if self.trim and not self.inside:
            text = text.lstrip()
            self.trim = not text
        if text:
            pieces.append((self.inside, text))
            if not self.inside and text.strip():
                self.settled = True


_MAX_TRACKED_CALLS = 4096  # tool-call ids remembered for calls without an index (bounded memory)
_MAX_CHOICES = 1024  # choices tracked per stream: a ProtocolError past them


class ChunkDecoder:
    """Turn chunk objects into deltas, resolving tool calls that arrive without an `index`.

    Gemini and Mistral send tool-call fragments with no `index`; such calls are numbered in
    order of appearance, keyed by `id` when there is one. That needs memory across chunks,
    hence a class; parse_chunk() is the stateless shortcut for a single chunk.

    With think_tags=True, content inlining reasoning as <think>...</think> is split into
    ReasoningDelta and ContentDelta; call flush() at the end of the stream.
    """

    def __init__(self, *, think_tags: bool = False) -> None:
        self._call_ids: Dict[Tuple[int, str], int] = {}
        self._call_count: Dict[int, int] = {}
        self._last_call: Dict[int, int] = {}
        self._think: Optional[Dict[int, _ThinkSplitter]] = {} if think_tags else None
        self.failed_choice: Optional[Mapping[str, Any]] = None  # finish_reason "error" (OpenRouter)

    def flush(self) -> List[Delta]:
        """Deltas held back at the end of the stream (a trailing partial <think> tag)."""
        out: List[Delta] = []
        for choice, splitter in sorted((self._think or {}).items()):
            for is_reasoning, text in splitter.flush():
                out.append(ReasoningDelta(text, choice) if is_reasoning else ContentDelta(text, choice))
        return out

    def _content(self, text: str, index: int, out: List[Delta]) -> None:
        if self._think is None:
            out.append(ContentDelta(text, index))
            return
        splitter = self._think.get(index)
        if splitter is None:
            if len(self._think) >= _MAX_CHOICES:
                raise ProtocolError("the stream has more than %d choices" % _MAX_CHOICES)
            splitter = self._think[index] = _ThinkSplitter()
        for is_reasoning, piece in splitter.split(text):
            out.append(ReasoningDelta(piece, index) if is_reasoning else ContentDelta(piece, index))

    def decode(self, chunk: Mapping[str, Any]) -> List[Delta]:
        """Return the deltas of one chunk, in wire order; usage comes last. A chunk that is
        not a JSON object raises ProtocolError."""
        if type(chunk) is not dict and not isinstance(chunk, abc.Mapping):
            raise ProtocolError("a chunk is a JSON object, not %s" % type(chunk).__name__)
        deltas: List[Delta] = []
        choices = chunk.get("choices")
        if choices and type(choices) is list:
            if len(choices) == 1 and self._think is None:  # the common case, kept short
                choice = choices[0]
                delta = choice.get("delta") if type(choice) is dict else None
                if type(delta) is dict and len(delta) == 1 and choice.get("finish_reason") is None:
                    content = delta.get("content")
                    if type(content) is str:
                        index = choice.get("index", 0)
                        if content:
                            deltas.append(_text_delta(ContentDelta, content, index if type(index) is int else 0))
                        choices = None
            for position, choice in enumerate(choices or ()):
                if isinstance(choice, dict):
                    self._decode_choice(choice, position, deltas)
        usage = chunk.get("usage")
        if usage or "x_groq" in chunk:
            usage = usage_of(chunk)
            if usage is not None:
                deltas.append(parse_usage(usage))
        return deltas

    def _decode_choice(self, choice: Mapping[str, Any], position: int, out: List[Delta]) -> None:
        index = choice.get("index", position)
        if type(index) is not int:
            index = position
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")  # a whole chat.completion
        if delta and isinstance(delta, dict):
            self._decode_delta(delta, index, out)
        elif type(choice.get("text")) is str and choice["text"]:  # the legacy completions API
            self._content(choice["text"], index, out)
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            out.append(Finish(reason, index))
            if reason == "error":
                self.failed_choice = choice

    def _decode_delta(self, delta: Mapping[str, Any], index: int, out: List[Delta]) -> None:
        content = delta.get("content")
        if len(delta) == 1 and type(content) is str and self._think is None:  # the common case
            if content:
                out.append(_text_delta(ContentDelta, content, index))
            return
        reasoning = _reasoning_of(delta)
        if reasoning:
            out.append(ReasoningDelta(reasoning, index))
        if isinstance(content, list):
            reasoning = _text_of_parts(content, "thinking")
            if reasoning:
                out.append(ReasoningDelta(reasoning, index))
            content = _text_of_parts(content, "text")
        if content and type(content) is str:
            self._content(content, index, out)
        refusal = delta.get("refusal")
        if type(refusal) is str:
            out.append(RefusalDelta(refusal, index))
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    out.append(self._tool_call(call, index))

    def _tool_call(self, call: Mapping[str, Any], choice: int) -> ToolCallDelta:
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        arguments = function.get("arguments")
        if arguments is None:
            arguments = ""
        elif not isinstance(arguments, str):  # some servers send the arguments as an object
            arguments = _json_text(arguments, ensure_ascii=False)
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        name = function.get("name")
        name = name if isinstance(name, str) and name else None
        index = self._call_index(choice, call.get("index"), call_id, name)
        return ToolCallDelta(index, call_id, name, arguments, choice, call)

    def _call_index(
        self, choice: int, index: Any, call_id: Optional[str], name: Optional[str]
    ) -> int:
        if choice not in self._call_count and len(self._call_count) >= _MAX_TRACKED_CALLS:
            return index if type(index) is int else 0  # a server inventing choices: not tracked
        count = self._call_count.get(choice, 0)
        if type(index) is not int:
            if call_id is not None and (choice, call_id) in self._call_ids:
                index = self._call_ids[choice, call_id]
            elif call_id is None and name is None and choice in self._last_call:
                index = self._last_call[choice]  # a continuation: arguments only
            else:
                index = count
        if call_id is not None and len(self._call_ids) < _MAX_TRACKED_CALLS:
            self._call_ids.setdefault((choice, call_id), index)
        self._call_count[choice] = max(count, index + 1)
        self._last_call[choice] = index
        return index  # type: ignore[no-any-return]


def parse_chunk(obj: Mapping[str, Any]) -> List[Delta]:
    """Turn one `chat.completion.chunk` object into typed deltas (stateless).

    Tool-call fragments without an `index` are numbered by their position in this chunk; a
    Stream uses a ChunkDecoder, which remembers them across chunks. A chunk that is an error
    (`{"error": {...}}`, or a choice that finished with "error") raises APIError, as a stream
    would; anything that is not an object raises ProtocolError.
    """
    decoder = _ChatDialect()
    deltas = decoder.decode(obj)
    _raise_if(decoder.error_of(obj))
    return deltas


def _chunk_error(chunk: Mapping[str, Any]) -> Optional[APIError]:
    """The APIError a chunk carries ({"error": ...}, object "error", Groq's x_groq.error)."""
    groq = chunk.get("x_groq")
    if chunk.get("error") or chunk.get("object") == "error" or (isinstance(groq, dict) and groq.get("error")):
        fields = error_fields(chunk)
        if fields is not None:
            return APIError(_cut(fields[0]), code=fields[1], type=fields[2], body=dict(chunk))
    return None


def _finish_reason_error(choice: Mapping[str, Any], chunk: Mapping[str, Any]) -> APIError:
    """A choice that ended with finish_reason "error" but no top-level error object."""
    fields = error_fields(choice) if choice.get("error") else None
    if fields is None:
        fields = ('the provider ended choice %s with finish_reason "error"' % _clip(choice.get("index", 0), 20), None, None)
    return APIError(_cut(fields[0]), code=fields[1], type=fields[2], body=dict(chunk))


# Responses API and legacy completions (wire dialects, no I/O) -----------------------------------
#
# Two more wire dialects beside chat chunks. `_ResponsesDecoder` turns the JSON of each Responses
# event (`POST /responses`, stream: true) into the same deltas; ChunkDecoder reads the legacy
# `/completions` chunks (`choices[].text`) as it reads chat chunks. `_responses_body` and
# `_completions_body` build request bodies from a prompt or chat messages; `_api_target` maps the
# chat request target to the one of another API.
#
# What real servers do, and what the decoder does about it:
# - Events are told apart by the `type` inside the JSON; the SSE `event:` line is not read (LiteLLM
#   and some gateways send none; llama.cpp, vLLM, Ollama and OpenAI send it as well).
# - Tool calls are keyed by the item id and by `call_id` (llama.cpp's argument deltas name the item
#   by its call_id; its items have no id). `output_index` is never used: it is missing (llama.cpp),
#   starts at 1 after a reasoning item (OpenAI, vLLM, Ollama) or repeats (gateways).
# - vLLM puts the first piece of the arguments in `output_item.added` and then sends the same piece
#   again as a `function_call_arguments.delta`: arguments in `added` are held back and handed out
#   only if neither a delta nor a `.done` brings them. `.done` and `output_item.done` repeat the
#   whole arguments: only the part not yet handed out is emitted (the count of characters sent is
#   all that is kept per call, so memory does not grow with the deltas).
# - Reasoning: vLLM and llama.cpp send `reasoning_text` deltas, Ollama and OpenAI only
#   `reasoning_summary_text`. When one item gets both, the kind that came first for that item wins
#   and the other is dropped (a raw text and its summary are two versions of the same thought; in
#   practice the raw text comes first, so this prefers reasoning_text).
# - Text that arrives only whole (`output_text.done`, `output_item.done`, the output of
#   `response.completed`: llama.cpp's final events, servers that do not stream) is handed out
#   when no delta of that kind came for that item; the output of `response.completed` is used only
#   for kinds that nothing was handed out for at all.
# - Usage comes from the terminal event only (some servers put zeros in response.created); fields a
#   server does not send are None.

_MAX_RESPONSE_ITEMS = 10000  # output items and tool calls tracked per response
_AZURE_RESPONSES_API_VERSION = "2025-04-01-preview"  # the first GA-era version that has /responses
_INFO_EVENTS = frozenset(
    ("response.created", "response.in_progress", "response.queued", "response.completed",
     "response.incomplete", "response.failed")
)
# bits of _ResponsesDecoder._items values: per kind (shift 0 content, 2 refusal, 4 reasoning) a
# "deltas came" bit and a "handed out whole" bit; then which reasoning source an item uses.
_CONTENT, _REFUSAL, _REASONING = 0, 2, 4
_FROM_TEXT, _FROM_SUMMARY = 1 << 6, 1 << 7
_REASONING_DELTAS = {  # the last two: names of an early draft, still sent by some vLLM forks
    "response.reasoning_text.delta": _FROM_TEXT,
    "response.reasoning_summary_text.delta": _FROM_SUMMARY,
    "response.reasoning.delta": _FROM_TEXT,
    "response.reasoning_summary.delta": _FROM_SUMMARY,
}


def _responses_usage(obj: Mapping[str, Any]) -> Usage:
    """Usage of a Responses `usage` object (input/output tokens and their details)."""
    prompt = _as_int(obj.get("input_tokens"))
    completion = _as_int(obj.get("output_tokens"))
    if prompt is None and completion is None and ("prompt_tokens" in obj or "completion_tokens" in obj):
        return parse_usage(obj)  # a gateway that answers in chat names
    details = obj.get("output_tokens_details")
    reasoning = _as_int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    details = obj.get("input_tokens_details")
    cached = _as_int(details.get("cached_tokens")) if isinstance(details, dict) else None
    total = _as_int(obj.get("total_tokens"))
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    return Usage(prompt, completion, total, reasoning, cached, obj)


def _nonempty_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _id_key(value: Any) -> Optional[str]:
    """An item or call id as a key to remember: a long one by its length and hash, so that
    thousands of megabyte-long ids a server invents are not all kept whole."""
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= 128 else "%d#%x" % (len(value), hash(value))


def _delta_text(value: Any) -> str:
    """The text of an event's `delta` (a str; an object with `text`/`content` from old vLLM)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "content"):
            if isinstance(value.get(key), str):
                return value[key]  # type: ignore[no-any-return]
    return ""


def _parts_text(parts: Any, kinds: Tuple[str, ...], key: str = "text") -> str:
    if not isinstance(parts, list):
        return ""
    pieces = []
    for part in parts:
        if isinstance(part, dict) and part.get("type") in kinds and isinstance(part.get(key), str):
            pieces.append(part[key])
    return "".join(pieces)


class _ResponsesCall:
    __slots__ = ("index", "named", "sent", "held", "ids")

    def __init__(self, index: int) -> None:
        self.index = index
        self.ids = 0  # ids remembered as naming this call
        self.named = False  # id and name handed out
        self.sent = 0  # characters of arguments handed out
        self.held: Optional[str] = None  # arguments of output_item.added, not yet confirmed


class _ResponsesDecoder:
    """Turn decoded Responses stream events (one JSON object each) into deltas.

    decode(obj) returns the deltas of one event, or raises APIError for `error` events,
    `response.failed` and a chat-style {"error": {...}} (the deltas of earlier events were all
    returned before). `terminal` is True after response.completed/.incomplete/.failed: a body that
    ends without it (or with a bare [DONE]) was cut off. `info` holds the response's id, model and
    created (created_at); `info_changed` is set when it changed (the caller clears it).
    """

    def __init__(self) -> None:
        self.terminal = False
        self.info: Dict[str, Any] = {}
        self.info_changed = False
        self._calls: Dict[str, _ResponsesCall] = {}  # by item id and by call_id
        self._call_list: List[_ResponsesCall] = []
        self._current: Optional[_ResponsesCall] = None  # the call added last
        self._unbound: Optional[_ResponsesCall] = None  # the call added last, if its item had no id
        self._items: Dict[str, int] = {}  # item id -> bits (see _CONTENT...)
        self._anonymous = 0  # bits of deltas and whole texts that named no item
        self._seen = 0  # bits of every item together

    # events -----------------------------------------------------------------------------------

    def decode(self, obj: Mapping[str, Any]) -> List[Delta]:
        kind = obj.get("type")
        out: List[Delta] = []
        if not isinstance(kind, str):
            self._untyped(obj)
            return out
        if self.terminal:
            return out  # a gateway's trailing copy of the terminal event, or noise
        if kind == "response.output_text.delta":
            self._text(_CONTENT, obj.get("item_id"), _delta_text(obj.get("delta")), ContentDelta, out)
        elif kind == "response.function_call_arguments.delta":
            self._arguments_delta(obj, out)
        elif kind in _REASONING_DELTAS:
            self._reasoning(obj.get("item_id"), _REASONING_DELTAS[kind], _delta_text(obj.get("delta")), out)
        elif kind == "response.refusal.delta":
            self._text(_REFUSAL, obj.get("item_id"), _delta_text(obj.get("delta")), RefusalDelta, out)
        elif kind == "response.output_item.added":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._call_added(item, out)
        elif kind == "response.function_call_arguments.done":
            self._call_done(obj.get("item_id"), obj.get("call_id"), obj.get("name"), obj.get("arguments"), out)
        elif kind == "response.output_item.done":
            item = obj.get("item")
            if isinstance(item, dict):
                self._item_done(item, out)
        elif kind == "response.output_text.done":
            self._whole(_CONTENT, obj.get("item_id"), obj.get("text"), ContentDelta, out)
        elif kind == "response.refusal.done":
            self._whole(_REFUSAL, obj.get("item_id"), obj.get("refusal"), RefusalDelta, out)
        elif kind == "response.reasoning_text.done" or kind == "response.reasoning_summary_text.done":
            self._whole(_REASONING, obj.get("item_id"), obj.get("text"), ReasoningDelta, out)
        elif kind in _INFO_EVENTS:
            self._response_event(kind, obj, out)
        elif kind == "error":
            fields = error_fields(obj)
            if fields is None:
                fields = ("the server sent an error event: %s" % _clip(_json_text(obj), 200), None, None)
            raise APIError(_cut(fields[0]), code=fields[1], type=None if fields[2] == "error" else fields[2], body=dict(obj))
        return out

    def _response_event(self, kind: str, obj: Mapping[str, Any], out: List[Delta]) -> None:
        """response.created/.in_progress/.completed/.incomplete/.failed: the response's info,
        and at the end its usage and finish (or its error)."""
        response = obj.get("response")
        if not isinstance(response, dict):
            response = {}
        self._note_info(response)
        if kind == "response.completed":
            self._end(response, out)
            out.append(Finish("tool_calls" if self._call_list else "stop"))
        elif kind == "response.incomplete":
            self._end(response, out)
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            out.append(Finish(_INCOMPLETE_REASONS.get(reason, reason) if isinstance(reason, str) and reason else "length"))
        elif kind == "response.failed":
            self.terminal = True
            fields = error_fields(response) or error_fields(obj)
            if fields is None:
                fields = ("the response failed (status %s)" % (_clip(response.get("status"), 40),), None, None)
            raise APIError(_cut(fields[0]), code=fields[1], type=fields[2], body=dict(obj))

    def decode_whole(self, obj: Mapping[str, Any]) -> List[Delta]:
        """A whole Response object (a server that ignored "stream"): its output as deltas."""
        status = obj.get("status")
        if obj.get("object") == "response" or "output" in obj:
            kind = "response.%s" % status if status in ("incomplete", "failed") else "response.completed"
            return self.decode({"type": kind, "response": obj})
        return self.decode(obj)

    def _untyped(self, obj: Mapping[str, Any]) -> None:
        """An object without a type: a chat-style {"error": {...}} or bare error is an APIError."""
        if obj.get("error") or obj.get("object") == "error" or ("message" in obj and "choices" not in obj):
            fields = error_fields(obj)
            if fields is not None:
                self.terminal = True
                raise APIError(fields[0], code=fields[1], type=fields[2], body=dict(obj))

    def _note_info(self, response: Mapping[str, Any]) -> None:
        for key, name in (("id", "id"), ("model", "model"), ("created_at", "created")):
            value = response.get(key)
            if name == "created":  # a number; a float only when finite (1e400, NaN: none)
                value = _as_int(value) if type(value) is not float or not math.isfinite(value) else int(value)
            elif not _nonempty_str(value):
                value = None
            if value is not None and self.info.get(name) != value and (name == "model" or name not in self.info):
                self.info[name] = value
                self.info_changed = True

    # text -----------------------------------------------------------------------------------

    def _mark(self, item: Any, bits: int) -> int:
        """Set bits for an item (None: no item id); return its bits before."""
        item = _id_key(item)
        if item is None:
            before = self._anonymous
            self._anonymous |= bits
        else:
            before = self._items.get(item, 0)
            if not before and len(self._items) >= _MAX_RESPONSE_ITEMS:
                raise ProtocolError("the response has more than %d output items" % _MAX_RESPONSE_ITEMS)
            self._items[item] = before | bits
        self._seen |= bits
        return before

    def _text(self, shift: int, item: Any, text: str, kind: type, out: List[Delta]) -> None:
        self._mark(item, 1 << shift)
        if text:
            out.append(_text_delta(kind, text, 0))

    def _reasoning(self, item: Any, source: int, text: str, out: List[Delta]) -> None:
        other = _FROM_SUMMARY if source == _FROM_TEXT else _FROM_TEXT
        before = self._mark(item, (1 << _REASONING) | (0 if self._has(item, other) else source))
        if before & other:
            return  # this item's reasoning comes as the other kind: never both
        if text:
            out.append(_text_delta(ReasoningDelta, text, 0))

    def _has(self, item: Any, bits: int) -> bool:
        item = _id_key(item)
        if item is None:
            return bool(self._anonymous & bits)
        return bool(self._items.get(item, 0) & bits)

    def _whole(self, shift: int, item: Any, text: Any, kind: type, out: List[Delta]) -> None:
        """Text that came whole: hand it out unless deltas (or a whole copy) brought it already."""
        if not isinstance(text, str) or not text:
            return
        streamed, whole = 1 << shift, 2 << shift
        if self._anonymous & streamed:
            return  # deltas without item ids: cannot tell which item they were; trust them
        if not isinstance(item, str) or not item:
            if self._seen & (streamed | whole):
                return
        elif self._has(item, streamed | whole):
            return
        self._mark(item, whole)
        out.append(kind(text))

    # tool calls -------------------------------------------------------------------------------

    def _call(self, item_id: Any, call_id: Any, create: bool) -> Optional[_ResponsesCall]:
        keys = [key for key in (_id_key(item_id), _id_key(call_id)) if key]
        call = next((self._calls[key] for key in keys if key in self._calls), None)
        if call is None:
            if not create:
                return None
            if len(self._call_list) >= _MAX_RESPONSE_ITEMS:
                raise ProtocolError("the response has more than %d function calls" % _MAX_RESPONSE_ITEMS)
            call = _ResponsesCall(len(self._call_list))
            self._call_list.append(call)
        self._alias(keys, call)
        return call

    def _alias(self, keys: Sequence[Optional[str]], call: _ResponsesCall) -> None:
        """Remember the ids that name `call`: at most two per call, its item id and call id (a
        server inventing a new call_id on every delta of one call adds nothing past that)."""
        for key in keys:
            if key is not None and call.ids < 2 and key not in self._calls:
                self._calls[key] = call
                call.ids += 1

    def _call_delta(self, call: _ResponsesCall, item: Mapping[str, Any], arguments: str, out: List[Delta]) -> None:
        call_id = _nonempty_str(item.get("call_id")) or _nonempty_str(item.get("id"))
        name = _nonempty_str(item.get("name"))
        if call.named or (call_id is None and name is None):
            if arguments:
                out.append(ToolCallDelta(call.index, None, None, arguments))
            return
        call.named = call_id is not None and name is not None
        out.append(ToolCallDelta(call.index, call_id, name, arguments))

    def _call_added(self, item: Mapping[str, Any], out: List[Delta]) -> None:
        call = self._call(item.get("id"), item.get("call_id"), True)
        assert call is not None
        self._current = call
        self._unbound = call if _nonempty_str(item.get("id")) is None else None
        arguments = item.get("arguments")
        if isinstance(arguments, str) and arguments and not call.sent:
            call.held = arguments
        self._call_delta(call, item, "", out)

    def _find_call(self, item_id: Any, call_id: Any) -> _ResponsesCall:
        """The call an event names; an item id never seen names the call added last without an
        id (if any; else a new call); an event naming nothing belongs to the call added last."""
        call = self._call(item_id, call_id, False)
        if call is not None:
            return call
        if _nonempty_str(item_id) is None and _nonempty_str(call_id) is None and self._current is not None:
            return self._current
        if self._unbound is not None and _nonempty_str(call_id) is None:
            call, self._unbound = self._unbound, None
            self._alias([_id_key(item_id)], call)
            return call
        call = self._call(item_id, call_id, True)
        assert call is not None
        self._current = call
        return call

    def _arguments_delta(self, obj: Mapping[str, Any], out: List[Delta]) -> None:
        item_id, call_id = obj.get("item_id"), obj.get("call_id")
        call = self._find_call(item_id, call_id)
        text = _delta_text(obj.get("delta"))
        call.held = None
        call.sent += len(text)
        self._call_delta(call, {"call_id": call_id} if _nonempty_str(call_id) else {}, text, out)

    def _call_done(self, item_id: Any, call_id: Any, name: Any, arguments: Any, out: List[Delta]) -> None:
        call = self._find_call(item_id, call_id)
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else _json_text(arguments, ensure_ascii=False)
        rest = ""
        if len(arguments) > call.sent:
            rest = arguments[call.sent :]
            call.sent = len(arguments)
            call.held = None
        self._call_delta(call, {"call_id": call_id or item_id, "name": name}, rest, out)

    def _item_done(self, item: Mapping[str, Any], out: List[Delta]) -> None:
        kind = item.get("type")
        if kind == "function_call":
            self._call_done(item.get("id"), item.get("call_id"), item.get("name"), item.get("arguments"), out)
        elif kind == "message":
            content = item.get("content")
            self._whole(_CONTENT, item.get("id"), _parts_text(content, ("output_text", "text")), ContentDelta, out)
            self._whole(_REFUSAL, item.get("id"), _parts_text(content, ("refusal",), "refusal"), RefusalDelta, out)
        elif kind == "reasoning":
            text = _parts_text(item.get("content"), ("reasoning_text",))
            if not text:
                text = _parts_text(item.get("summary"), ("summary_text",))
            self._whole(_REASONING, item.get("id"), text, ReasoningDelta, out)

    def _end(self, response: Mapping[str, Any], out: List[Delta]) -> None:
        """A terminal event: what only its output holds, held arguments, then usage."""
        self.terminal = True
        output = response.get("output")
        if isinstance(output, list):
            had_calls, seen = bool(self._call_list), self._seen
            for item in output:
                if not isinstance(item, dict):
                    continue
                kind = item.get("type")
                if kind == "function_call":
                    known = self._call(item.get("id"), item.get("call_id"), False) is not None
                    if known or not had_calls:
                        self._item_done(item, out)
                elif kind in ("message", "reasoning"):
                    shift = _REASONING if kind == "reasoning" else _CONTENT
                    bits = 3 << shift | (3 << _REFUSAL if kind == "message" else 0)
                    if not seen & bits:
                        self._item_done(item, out)
        for call in self._call_list:
            if call.held:
                out.append(ToolCallDelta(call.index, None, None, call.held))
                call.sent, call.held = len(call.held), None
        usage = response.get("usage")
        if isinstance(usage, dict) and usage:
            out.append(_responses_usage(usage))


_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


# Request bodies -------------------------------------------------------------------------------

_CHAT_ROLES = frozenset(("system", "developer", "user", "assistant", "tool"))


def _responses_part(part: Any, assistant: bool) -> Any:
    """One chat content part as a Responses content part (parts already in that shape pass)."""
    if isinstance(part, str):
        return {"type": "output_text" if assistant else "input_text", "text": part}
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if assistant else "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url, "detail": detail or "auto"}
    if kind == "file" and isinstance(part.get("file"), dict):
        return dict(part["file"], type="input_file")
    return part  # input_text, input_image, input_audio, input_file, refusal, ...


def _responses_content(content: Any, assistant: bool) -> Any:
    if not isinstance(content, list):
        return content
    if assistant and all(isinstance(p, str) or (isinstance(p, dict) and p.get("type") in ("text", "output_text")) for p in content):
        return "".join(p if isinstance(p, str) else p.get("text") or "" for p in content)
    return [_responses_part(part, assistant) for part in content]


def _tool_output(content: Any) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, str) or (isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")) for p in content):
        return "".join(p if isinstance(p, str) else p.get("text") or "" for p in content)
    return _json_text(content, ensure_ascii=False)


def _responses_items(message: Any) -> List[Any]:
    """The Responses input items of one chat message (items already in Responses shape pass)."""
    if not isinstance(message, dict):
        raise ConfigError("each message must be a dict, got %s" % type(message).__name__)
    role = message.get("role")
    if message.get("type") not in (None, "message") or role not in _CHAT_ROLES or (message.get("type") == "message" and role != "tool"):
        return [message]  # function_call, function_call_output, reasoning, item_reference, ...
    if role == "tool":
        return [{"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": _tool_output(message.get("content"))}]
    items: List[Any] = []
    content = _responses_content(message.get("content"), role == "assistant")
    calls = message.get("tool_calls") if role == "assistant" else None
    if content not in (None, "", []) or not calls:
        items.append({"role": role, "content": "" if content is None else content})
    for call in calls or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = "{}" if arguments is None else _json_text(arguments, ensure_ascii=False)
        items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"), "arguments": arguments})
    return items


def _responses_tool(tool: Any) -> Any:
    """A chat-style function tool as a Responses one. `strict` is False unless the chat tool says
    otherwise: chat's default; Responses would make it True and refuse most chat schemas."""
    if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)):
        return tool
    function = tool["function"]
    out: Dict[str, Any] = {"type": "function", "name": function.get("name")}
    if "description" in function:
        out["description"] = function["description"]
    out["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    out["strict"] = function.get("strict", False)
    return out


def _responses_body(messages: Messages, body: Mapping[str, Any]) -> Dict[str, Any]:
    """The body of POST /responses for a prompt or chat messages and chat-style body fields.

    Messages become `input` items (system/developer/user/assistant messages keep their role and
    order; assistant tool_calls become function_call items; tool messages function_call_output
    items); chat tools, tool_choice, max_tokens, response_format and reasoning_effort become their
    Responses forms; every other field is passed unchanged. Always streams; no stream_options
    (include_usage is a chat option: Responses always reports usage).
    """
    if "input" in body:
        raise ConfigError("pass the conversation as messages, not as input=")
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif not isinstance(messages, (list, tuple)):
        raise ConfigError("messages must be a str prompt or a list of messages, got %s" % type(messages).__name__)
    payload: Dict[str, Any] = {}
    if body.get("model") is not None:
        payload["model"] = body["model"]
    payload["input"] = [item for message in messages for item in _responses_items(message)]
    rest = {key: value for key, value in body.items() if key != "model"}
    tools = rest.get("tools")
    if isinstance(tools, list):
        rest["tools"] = [_responses_tool(tool) for tool in tools]
    choice = rest.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        rest["tool_choice"] = {"type": "function", "name": choice["function"].get("name")}
    for name in ("max_completion_tokens", "max_tokens"):
        if name in rest:
            value = rest.pop(name)
            rest.setdefault("max_output_tokens", value)
    response_format = rest.pop("response_format", None)
    if isinstance(response_format, dict):
        text = dict(rest.get("text") or {})
        form = {"type": response_format.get("type")}
        schema = response_format.get("json_schema")
        if isinstance(schema, dict):
            form.update(schema)
        text.setdefault("format", form)
        rest["text"] = text
    if "reasoning_effort" in rest:
        reasoning = dict(rest.get("reasoning") or {})
        reasoning.setdefault("effort", rest.pop("reasoning_effort"))
        rest["reasoning"] = reasoning
    options = rest.get("stream_options")
    if isinstance(options, dict) and "include_usage" in options:
        options = {key: value for key, value in options.items() if key != "include_usage"}
        if options:
            rest["stream_options"] = options
        else:
            del rest["stream_options"]
    payload.update(rest)
    payload.setdefault("stream", True)
    return payload


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return False
    if all(type(token) is int for token in prompt):  # one prompt as token ids
        return True
    return all(isinstance(p, str) or (isinstance(p, list) and all(type(t) is int for t in p)) for p in prompt)


def _completions_body(prompt: Any, body: Mapping[str, Any]) -> Dict[str, Any]:
    """The body of POST /completions: `prompt` is a str (or a list of them, or token ids)."""
    if not _is_prompt(prompt):
        raise ConfigError(
            "api='completions' takes a prompt string (or a list of prompt strings), not chat "
            "messages; use api='chat' or api='responses' for a list of messages"
        )
    payload: Dict[str, Any] = {}
    if body.get("model") is not None:
        payload["model"] = body["model"]
    payload["prompt"] = prompt if isinstance(prompt, str) else list(prompt)
    payload.update((key, value) for key, value in body.items() if key != "model")
    payload.setdefault("stream", True)
    return payload


def _api_target(target: str, api: str, azure: bool = False, api_version: Optional[str] = None) -> str:
    """The request target (path?query) of `api` from the chat one: .../chat/completions becomes
    .../responses or .../completions. Azure: completions stay under the deployment; responses are
    not deployment-scoped (/openai/responses?api-version=..., or /openai/v1/responses), and an
    api-version that was only the chat default becomes one that has /responses."""
    if api == "chat":
        return target
    path, mark, query = target.partition("?")
    if path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")]
    if api == "completions":
        return path + "/completions" + mark + query
    if azure and "/deployments/" in path:
        path = path[: path.index("/deployments/")]
        if api_version is None and not os.environ.get("OPENAI_API_VERSION"):
            query = "&".join(
                "api-version=" + _AZURE_RESPONSES_API_VERSION if pair == "api-version=" + DEFAULT_AZURE_API_VERSION else pair
                for pair in query.split("&")
            )
    return path + "/responses" + mark + query


class _ChatDialect(ChunkDecoder):
    """The chat completions stream (and the legacy completions one, whose choices carry `text`)
    as the stream decoder sees a dialect: chunks in, deltas out, and how the stream ends."""

    terminal = False  # no event ends the stream; [DONE] or the body's end does
    terminal_needed = False
    ending = "[DONE] and without a finish reason"

    def is_chunk(self, payload: Mapping[str, Any]) -> bool:
        """Whether a named event's JSON is a chunk of this stream."""
        return "choices" in payload or "error" in payload or "usage" in payload

    def is_whole(self, payload: Mapping[str, Any]) -> bool:
        """Whether a 200 application/json body is a whole answer (a server ignored "stream")."""
        return "choices" in payload

    def whole(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        return payload

    def chunk_info(self, chunk: Mapping[str, Any]) -> Mapping[str, Any]:
        """The chunk's id, model, created and other top-level fields, for the Accumulator."""
        return chunk

    def error_of(self, chunk: Mapping[str, Any]) -> Optional[APIError]:
        if "error" in chunk or "x_groq" in chunk or chunk.get("object") == "error":
            error = _chunk_error(chunk)
            if error is not None:
                return error
        if self.failed_choice is not None:
            choice, self.failed_choice = self.failed_choice, None
            return _finish_reason_error(choice, chunk)
        return None


class _ResponsesDialect(_ResponsesDecoder):
    """The Responses stream as the stream decoder sees a dialect (see _ChatDialect)."""

    terminal_needed = True  # the body may not end (nor [DONE] come) before a terminal event
    ending = "response.completed (or .incomplete, .failed)"

    def is_chunk(self, payload: Mapping[str, Any]) -> bool:
        return True  # every event names its type inside

    def is_whole(self, payload: Mapping[str, Any]) -> bool:
        return payload.get("object") == "response" or "output" in payload

    def whole(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        status = payload.get("status")
        kind = "response.%s" % status if status in ("incomplete", "failed") else "response.completed"
        return {"type": kind, "response": payload}

    def chunk_info(self, chunk: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.info_changed:
            return {}
        self.info_changed = False
        return self.info

    def error_of(self, chunk: Mapping[str, Any]) -> Optional[APIError]:
        return None  # decode() raises them

    def flush(self) -> List[Delta]:
        return []


def _dialect_decoder(api: str, think_tags: bool) -> Any:
    """The stream decoder of a wire API (legacy completions chunks are chat chunks with `text`)."""
    return _ResponsesDialect() if api == "responses" else _ChatDialect(think_tags=think_tags)


def _request_body(api: str, messages: Messages, model: Optional[str], system: Optional[str],
                  body: Mapping[str, Any], include_usage: bool) -> Dict[str, Any]:
    """The JSON body of a request to a wire API, from a prompt or chat messages (no I/O)."""
    fields = dict(body, model=model) if model is not None else dict(body)
    if api == "responses":
        return _responses_body(_chat_messages(messages, system), fields)
    if api == "completions":
        if system is not None:
            raise ConfigError("system= needs api='chat' or api='responses'; api='completions' takes a prompt string")
        payload = _completions_body(messages, fields)
    else:
        payload = {"model": model} if model is not None else {}
        payload["messages"] = _chat_messages(messages, system)
        payload.update(body)
        payload.setdefault("stream", True)
    if include_usage and payload["stream"] is True and "stream_options" not in payload:
        payload["stream_options"] = {"include_usage": True}
    return payload


def _chat_messages(messages: Messages, system: Optional[str]) -> List[Any]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif not isinstance(messages, (list, tuple)):
        raise ConfigError("messages must be a str prompt or a list of messages, got %s" % type(messages).__name__)
    out = list(messages)
    if system is not None:
        out.insert(0, {"role": "system", "content": system})
    return out


###############################################################################
# Accumulator (no I/O) ########################################################
###############################################################################


class _ToolCallParts:
    __slots__ = ("index", "id", "name", "arguments", "type", "extra")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: Optional[str] = None
        self.name: Optional[str] = None
        self.arguments = _Fragments()
        self.type = "function"
        self.extra: Dict[str, Any] = {}

    def add(self, delta: ToolCallDelta) -> None:
        if self.id is None:
            self.id = delta.id
        if self.name is None:
            self.name = delta.name
        if delta.arguments:
            self.arguments.append(delta.arguments)
            if len(self.arguments) >= _FRAGMENTS_PER_BLOCK:
                self.arguments.compact()
        raw = delta.raw
        if len(raw) > 3 or "type" in raw:
            kind = raw.get("type")
            if isinstance(kind, str) and kind:
                self.type = kind
            for key, value in raw.items():
                if key not in _TOOL_CALL_KEYS:
                    self.extra[key] = value

    def result(self) -> ToolCall:
        return ToolCall(self.index, self.id, self.name, self.arguments.text(), self.type, dict(self.extra))


_FRAGMENTS_PER_BLOCK = 1024
_MAX_EXTRAS = 256


class _Fragments(List[str]):
    """Text fragments in arrival order; every _FRAGMENTS_PER_BLOCK are joined into one block, since
    a 4-character str costs 53 bytes alone: a long stream's list would take 15x its text."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        super().__init__()
        self.blocks: List[str] = []

    def compact(self) -> None:
        self.blocks.append("".join(self))
        self.clear()

    def text(self) -> str:
        return _unicode_text("".join(self.blocks) + "".join(self))


class _ChoiceParts:
    __slots__ = ("index", "content", "reasoning", "refusal", "tool_calls", "finish_reason")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content = _Fragments()
        self.reasoning = _Fragments()
        self.refusal: Optional[_Fragments] = None
        self.tool_calls: Dict[int, _ToolCallParts] = {}
        self.finish_reason: Optional[str] = None

    def result(self, details: Tuple[Mapping[str, Any], ...] = ()) -> Choice:
        calls = tuple(self.tool_calls[i].result() for i in sorted(self.tool_calls))
        refusal = None if self.refusal is None else self.refusal.text()
        return Choice(
            self.index,
            self.content.text(),
            self.reasoning.text(),
            refusal,
            calls,
            self.finish_reason,
            details,
        )


_MAX_DETAIL_ENTRIES = 256  # distinct reasoning_details entries kept per choice (and choices)
_DETAIL_TEXT_KEYS = ("text", "summary", "data")


class _ReasoningDetails:
    """OpenRouter's `reasoning_details` of one choice, merged as they stream: the fragments of
    one entry (same index and type) are joined in its text fields; other fields (format,
    signature, id) keep their latest non-null value. Held like the reasoning text itself."""

    __slots__ = ("entries", "texts")

    def __init__(self) -> None:
        self.entries: Dict[Tuple[Any, Any], Dict[str, Any]] = {}
        self.texts: Dict[Tuple[Any, Any], Dict[str, _Fragments]] = {}

    def add(self, details: Any) -> None:
        for detail in details if type(details) is list else ():
            if type(detail) is not dict:
                continue
            key = (_as_int(detail.get("index")), _as_str(detail.get("type")))
            entry = self.entries.get(key)
            if entry is None:
                if len(self.entries) >= _MAX_DETAIL_ENTRIES:
                    continue
                entry, self.texts[key] = self.entries.setdefault(key, {}), {}
            texts = self.texts[key]
            for name, value in detail.items():
                if name in _DETAIL_TEXT_KEYS and type(value) is str:
                    fragments = texts.get(name)
                    if fragments is None:
                        fragments, entry[name] = texts.setdefault(name, _Fragments()), ""
                    fragments.append(value)
                    if len(fragments) >= _FRAGMENTS_PER_BLOCK:
                        fragments.compact()
                elif value is not None or name not in entry:
                    entry[name] = value

    def result(self) -> Tuple[Mapping[str, Any], ...]:
        out = []
        for key, entry in self.entries.items():
            merged = dict(entry)
            merged.update((name, fragments.text()) for name, fragments in self.texts[key].items())
            out.append(merged)
        return tuple(out)


class Accumulator:
    """Fold deltas into a Completion: add(delta) as they come, result() at any time."""

    def __init__(self) -> None:
        self._choices: Dict[int, _ChoiceParts] = {}
        self.usage: Optional[Usage] = None
        self.id: Optional[str] = None
        self.model: Optional[str] = None
        self.created: Optional[int] = None
        self.extras: Dict[str, Any] = {}
        self.warnings: List[str] = []
        self.request_id: Optional[str] = None  # the response's, set by the stream
        self.finished = False  # a finish reason arrived for some choice
        self._shape: Any = None  # the keys of the last chunk, and those of them not standard
        self._unknown: List[str] = []
        #: keep OpenRouter's reasoning_details for Completion.message (False: constant memory)
        self.round_trip = True
        self._details: Dict[int, _ReasoningDetails] = {}

    def _choice(self, index: int) -> _ChoiceParts:
        parts = self._choices.get(index)
        if parts is None:
            if len(self._choices) >= _MAX_CHOICES:
                raise ProtocolError("the stream has more than %d choices" % _MAX_CHOICES)
            parts = self._choices[index] = _ChoiceParts(index)
        return parts

    def add(self, delta: Delta) -> None:
        """Fold one delta in."""
        kind = type(delta)
        if kind is ContentDelta:
            parts = self._choices.get(delta.choice)  # type: ignore[attr-defined]
            if parts is None:
                parts = self._choice(delta.choice)  # type: ignore[attr-defined]
            content = parts.content
            content.append(delta.text)  # type: ignore[attr-defined]
            if len(content) >= _FRAGMENTS_PER_BLOCK:
                content.compact()
        elif kind is ReasoningDelta:
            reasoning = self._choice(delta.choice).reasoning  # type: ignore[attr-defined]
            reasoning.append(delta.text)  # type: ignore[attr-defined]
            if len(reasoning) >= _FRAGMENTS_PER_BLOCK:
                reasoning.compact()
        elif kind is ToolCallDelta:
            self._add_tool_call(delta)  # type: ignore[arg-type]
        elif kind is Finish:
            self._choice(delta.choice).finish_reason = delta.reason  # type: ignore[attr-defined]
            self.finished = True
        elif kind is Usage:
            self.usage = delta  # type: ignore[assignment]
        elif kind is RefusalDelta:
            parts = self._choice(delta.choice)  # type: ignore[attr-defined]
            if parts.refusal is None:
                parts.refusal = _Fragments()
            parts.refusal.append(delta.text)  # type: ignore[attr-defined]
            if len(parts.refusal) >= _FRAGMENTS_PER_BLOCK:
                parts.refusal.compact()

    def _add_tool_call(self, delta: ToolCallDelta) -> None:
        calls = self._choice(delta.choice).tool_calls
        call = calls.get(delta.index)
        if call is None:
            if len(calls) >= _MAX_TRACKED_CALLS:
                raise ProtocolError("a choice has more than %d tool calls" % _MAX_TRACKED_CALLS)
            call = calls[delta.index] = _ToolCallParts(delta.index)
        call.add(delta)

    def add_chunk_info(self, chunk: Mapping[str, Any]) -> None:
        """Keep the chunk's id, model, created and untyped top-level fields."""
        if self.id is None:
            self.id = _as_str(chunk.get("id")) or None
            self.created = _as_int(chunk.get("created"))
        if self.model is None:
            self.model = _as_str(chunk.get("model")) or None
        keys = chunk.keys()
        if keys != self._shape:  # chunks of a stream mostly share one set of keys
            self._shape = set(keys)
            self._unknown = [key for key in keys if key not in _STANDARD_CHUNK_KEYS]
            if len(self.extras) > _MAX_EXTRAS:  # a server inventing keys: keep the first ones
                self._unknown = [key for key in self._unknown if key in self.extras]
        for key in self._unknown:
            self.extras[key] = chunk[key]
        choices = chunk.get("choices")
        if choices and self.round_trip and type(choices) is list:
            for position, choice in enumerate(choices):
                if type(choice) is dict:
                    delta = choice.get("delta") or choice.get("message")
                    if type(delta) is dict and "reasoning_details" in delta:
                        self._add_details(choice.get("index", position), position, delta["reasoning_details"])

    def _add_details(self, index: Any, position: int, details: Any) -> None:
        index = index if type(index) is int else position
        parts = self._details.get(index)
        if parts is None:
            if len(self._details) >= _MAX_DETAIL_ENTRIES:
                return
            parts = self._details[index] = _ReasoningDetails()
        parts.add(details)

    def result(self, stats: Optional[Stats] = None) -> Completion:
        """The Completion so far (complete once the stream has ended)."""
        details = self._details
        choices = tuple(
            self._choices[i].result(details[i].result() if i in details else ()) for i in sorted(self._choices)
        )
        first = next((choice for choice in choices if choice.index == 0), Choice(0))
        return Completion(
            first.content,
            first.reasoning,
            first.refusal,
            first.tool_calls,
            first.finish_reason,
            self.usage,
            self.id,
            self.model,
            choices,
            self.created,
            dict(self.extras),
            tuple(self.warnings),
            stats,
            self.request_id,
        )


# Messages (no I/O but reading attached files): tool_result() and user() build the messages of a
# conversation; Completion.message gives the assistant's.

#: The largest file user() attaches; providers cap a request at about 20 MB (OpenAI, Gemini).
MAX_ATTACHMENT_BYTES = 20 * 2**20
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
_AUDIO_FORMATS = {".wav": "wav", ".mp3": "mp3"}


def tool_result(call_or_id: Union[ToolCall, Mapping[str, Any], str], content: Any) -> Dict[str, Any]:
    """The {"role": "tool"} message answering a tool call (a ToolCall, a tool_calls entry of a
    message, or its id); content that is not a str is sent as JSON."""
    if isinstance(call_or_id, ToolCall):
        call_id: Any = _call_id(call_or_id)
    elif isinstance(call_or_id, Mapping):
        call_id = call_or_id.get("id")
    else:
        call_id = call_or_id
    if not isinstance(call_id, str) or not call_id:
        raise ConfigError("tool_result() needs a ToolCall or a tool call id, got %s" % _clip(repr(call_or_id), 80))
    if not isinstance(content, str):
        try:
            content = json.dumps(content, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigError("tool_result() content is neither a str nor JSON-serialisable: %s" % exc) from None
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def user(text: str, *attachments: Any) -> Dict[str, Any]:
    """A user message; each attachment becomes a content part after the text: an image (a path,
    a pathlib.Path or bytes: PNG, JPEG, GIF, WebP) an image_url part with a data: URL, a .wav or
    .mp3 file an input_audio part, a .pdf a file part, a UTF-8 text file a text part, an
    http(s):// or data: URL an image_url part as given (never fetched), a dict a part as is."""
    if not isinstance(text, str):
        raise ConfigError("user() takes the text first, got %s" % type(text).__name__)
    if not attachments:
        return {"role": "user", "content": text}
    parts: List[Dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend(_attachment_part(item) for item in attachments)
    return {"role": "user", "content": parts}


def _attachment_part(item: Any) -> Dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        _check_attachment_size(len(data), "bytes attachment")
        return _bytes_part(data, "", "bytes attachment")
    if isinstance(item, str) and item.lower().startswith(("http://", "https://", "data:")):
        return {"type": "image_url", "image_url": {"url": item}}
    if not isinstance(item, (str, os.PathLike)):
        raise ConfigError("cannot attach a %s: give a path, a URL or bytes" % type(item).__name__)
    path = os.fspath(item)
    return _bytes_part(_read_attachment(path), os.path.splitext(str(path))[1].lower(), str(path))


def _check_attachment_size(size: int, name: str) -> None:
    if size > MAX_ATTACHMENT_BYTES:
        raise ConfigError("%s is %.1f MB; attachments are limited to %d MB"
                          % (name, size / 2**20, MAX_ATTACHMENT_BYTES // 2**20))


def _read_attachment(path: Any) -> bytes:
    try:
        with open(path, "rb") as file:
            _check_attachment_size(os.fstat(file.fileno()).st_size, str(path))
            data = file.read(MAX_ATTACHMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError("cannot attach %s: %s" % (path, exc.strerror or exc)) from None
    _check_attachment_size(len(data), str(path))
    return data


def _sniff_image(data: bytes) -> Optional[str]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _sniff_audio(data: bytes) -> Optional[str]:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _bytes_part(data: bytes, suffix: str, name: str) -> Dict[str, Any]:
    """The content part for a file's bytes: the type from its suffix, else from the bytes."""
    import base64

    encoded = base64.b64encode(data).decode("ascii")
    image = _IMAGE_TYPES.get(suffix) or (None if suffix in _AUDIO_FORMATS else _sniff_image(data))
    if image:
        return {"type": "image_url", "image_url": {"url": "data:%s;base64,%s" % (image, encoded)}}
    audio = _AUDIO_FORMATS.get(suffix) or (None if suffix else _sniff_audio(data))
    if audio:
        return {"type": "input_audio", "input_audio": {"data": encoded, "format": audio}}
    if suffix == ".pdf" or data.startswith(b"%PDF-"):
        filename = os.path.basename(name) if suffix else "attachment.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": "data:application/pdf;base64," + encoded}}
    try:
        return {"type": "text", "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        raise ConfigError("cannot attach %s: not an image (PNG, JPEG, GIF, WebP), audio (.wav, .mp3), "
                          "PDF or UTF-8 text" % name) from None


###############################################################################
# Stream decoding (no I/O) ####################################################
###############################################################################
#
# Strategy: the bytes of one response body in, deltas out. _StreamDecoder runs each piece of the
# body through SSEDecoder, JSON and the wire dialect's decoder, folds what it hands out into the
# Accumulator and times it. An error found in a piece is kept in `error`; the driver raises it
# after handing out the deltas that came before it, so nothing that arrived whole is withheld.
# The decoder also knows when the stream is over (`done`: [DONE] or a terminal event).


class _GapHistogram:
    """Inter-event gaps in logarithmic buckets (about 9 % wide): percentiles in constant memory."""

    _SCALE = 8.0  # buckets per doubling

    def __init__(self) -> None:
        self.counts: Dict[int, int] = {}
        self.total = 0
        self.max = 0.0

    def add(self, gap: float, zeros: int = 0) -> None:
        bucket = int(math.log2(gap * 1e6) * self._SCALE) if gap > 1e-6 else -1
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        if zeros:
            self.counts[-1] = self.counts.get(-1, 0) + zeros
        self.total += 1 + zeros
        if gap > self.max:
            self.max = gap

    def percentile(self, fraction: float) -> Optional[float]:
        if not self.total:
            return None
        rank = fraction * (self.total - 1)
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen > rank:
                return 0.0 if bucket < 0 else min(self.max, 2 ** ((bucket + 0.5) / self._SCALE) / 1e6)
        return self.max


class _SurrogateMender:
    """Text is always valid Unicode: a JSON escape pair split across two events (`\\ud83d`, then
    `\\ude00`) is joined in text and tool-call arguments, and a lone surrogate anywhere in a delta
    becomes U+FFFD. Only events whose JSON holds a `\\ud` escape (or that follow a held half)
    pass through here."""

    def __init__(self) -> None:
        self.held: Dict[Tuple[Any, ...], str] = {}

    def mend(self, deltas: List[Delta]) -> List[Delta]:
        out: List[Delta] = []
        for delta in deltas:
            kind = type(delta)
            if kind in (ContentDelta, ReasoningDelta, RefusalDelta):
                choice = delta.choice  # type: ignore[attr-defined]
                text = self._joined((kind, choice), delta.text)  # type: ignore[attr-defined]
                if text:
                    out.append(_text_delta(kind, text, choice))
            elif kind is ToolCallDelta:
                call: ToolCallDelta = delta  # type: ignore[assignment]
                arguments = self._joined((kind, call.choice, call.index), call.arguments)
                out.append(ToolCallDelta(call.index, _unicode_or_none(call.id), _unicode_or_none(call.name),
                                         arguments, call.choice, call.raw))
            elif kind is Finish:
                out.append(Finish(_unicode_text(delta.reason), delta.choice))  # type: ignore[attr-defined]
            else:
                out.append(delta)
        return out

    def _joined(self, key: Tuple[Any, ...], text: str) -> str:
        """`text` after the half held for `key`, valid; a trailing high half is held for the next."""
        text = self.held.pop(key, "") + text
        if text and "\ud800" <= text[-1] <= "\udbff" and len(self.held) < 64:  # its pair may come next
            self.held[key] = text[-1]
            text = text[:-1]
        return _valid_text(text) if text else text

    def flush(self) -> List[Delta]:
        out: List[Delta] = []
        for key in self.held:
            if key[0] is ToolCallDelta:
                out.append(ToolCallDelta(key[2], None, None, "\ufffd", key[1]))
            else:
                out.append(_text_delta(key[0], "\ufffd", key[1]))
        self.held.clear()
        return out


class _StreamDecoder:
    """Body pieces of one response in, deltas out (no I/O); shared by Stream and AsyncStream.

    feed(piece) is a generator of deltas; the caller passes each to add() as it hands it out, so
    the Completion always holds exactly what the caller was given, then checks `error` and
    `done`. An error is kept in `error`, never raised from feed(): the deltas before it come
    first."""

    def __init__(self, content_type: str, options: _StreamOptions) -> None:
        self.started = time.monotonic()
        self.content_type = content_type
        self.max_event_bytes = options.max_event_bytes
        self.tap = options.tap
        self.api = options.api
        self.accumulator = Accumulator()
        self.add = self.accumulator.add if options.accumulate else self._add_summary
        self.accumulate = options.accumulate
        self.sse = SSEDecoder(options.max_event_bytes, lenient_error_field=True)
        self.dialect: Any = _dialect_decoder(options.api, options.think_tags)
        self.mender: Optional[_SurrogateMender] = None
        self.last_chunk: Optional[Dict[str, Any]] = None
        self.chunk_log: Optional[Any] = None  # a deque of every chunk, for Stream.chunks()
        self.error: Optional[StreamliteError] = None
        self.done = False  # [DONE] or a terminal event arrived
        self.delivered = False  # a delta was handed out: from here on the request is never resent
        self.opening: Optional[bytes] = None  # the start of the body, once it came
        self.events = 0
        self.retries = 0
        self.connection_reused = False
        self.gaps = _GapHistogram()
        self.last_event_at: Optional[float] = None
        self.first_reasoning: Optional[float] = None
        self.first_content: Optional[float] = None
        self.counters: Any = None  # the connection's byte counter: .bytes, .first_byte_at
        self.ended_at: Optional[float] = None

    def restart(self, content_type: str) -> None:
        """A retried request: a fresh body to decode (nothing was handed out)."""
        self.content_type = content_type
        self.sse = SSEDecoder(self.max_event_bytes, lenient_error_field=True)
        self.opening = None
        self.error = None

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"

    def feed(self, piece: bytes) -> Iterator[Delta]:
        """The deltas of one piece of an event stream, as they are decoded."""
        if self.tap is not None:
            self.tap(piece)
        if self.opening is None:
            self.opening = piece[:80]
            _refuse_non_sse(self.content_type, piece)
        try:
            events = self.sse.feed_tuples(piece)
        except ProtocolError as exc:
            self.error = _kept(exc)
            return
        if not events:
            return
        first = self.events + 1
        self._note_events(len(events))
        for number, (kind, data, _, _) in enumerate(events, first):
            chunk = self._chunk_of(kind, data, number)
            if chunk is None:
                if self.error is not None or self.done:
                    return
                continue
            yield from self._chunk_deltas(chunk, "\\ud" in data or "\\uD" in data)
            if self.error is not None or self.done:  # an error chunk: its deltas are out, now stop
                return
        if self.sse.failed is not None:  # a fault after whole events: they are out, now stop
            self.error = self.sse.failed
            self.sse.failed = None

    def _chunk_of(self, kind: str, data: str, number: int) -> Optional[Dict[str, Any]]:
        """The JSON object of one event; None (with `error` or `done` set, or to skip it)."""
        if kind != "message":
            try:
                return self._named_event(kind, data)
            except StreamliteError as exc:
                self.error = _kept(exc)
                return None
        if data[:6] == "[DONE]":
            if not self.dialect.terminal_needed:
                self.done = True
            else:  # a gateway's [DONE] after a Responses stream that never finished
                self.error = APIConnectionError(
                    "the stream ended with [DONE] but without a terminal event: it was cut off"
                )
            return None
        try:
            chunk = _loads(data)
        except _JSON_ERRORS as exc:
            self.error = ProtocolError("event %d is not valid JSON (%s): %r" % (number, exc, _clip(data, 80)))
            return None
        if type(chunk) is not dict:
            self.error = _non_object_error(chunk, number)
            return None
        return chunk

    def closing(self) -> Iterator[Delta]:
        """After the last piece: the deltas held back, then the error (or the cut-off) raised."""
        for delta in self.flush():
            self.add(delta)
            yield delta
        if self.error is None and not self.done:
            self.end()
        if self.error is not None:
            raise self.take_error()

    def take_error(self) -> StreamliteError:
        """The error, which this decoder then no longer holds. An exception held by a frame of
        its own traceback (here through `self`) forms a reference cycle: every frame of the
        call, the client and its pooled connections would then wait for the cyclic GC."""
        error, self.error = self.error, None
        assert error is not None
        return error

    def whole(self, body: bytes) -> Iterator[Delta]:
        """The deltas of a 200 application/json body, each added (closing() follows)."""
        for delta in self.whole_json(body):
            self.add(delta)
            yield delta

    def attach(self, counters: Any, request_id: Optional[str]) -> None:
        """The response the body comes in: its connection's byte counters, whether that was
        reused, and the server's request id."""
        self.counters = counters
        self.connection_reused = counters.reused
        self.accumulator.request_id = request_id

    def ended(self) -> None:
        if self.ended_at is None:
            self.ended_at = time.monotonic()

    def flush(self) -> List[Delta]:
        """Deltas held back until the stream ends (a trailing partial <think> tag)."""
        out = self.dialect.flush()
        if self.mender is not None:
            out = self.mender.mend(out) + self.mender.flush()
        return out  # type: ignore[no-any-return]

    def end(self) -> None:
        """The body ended: raise if the stream was cut off (no [DONE], no finish reason)."""
        for kind, data, _, _ in self.sse.close_tuples():  # an unterminated `error:` line (old llama.cpp)
            self._named_event(kind, data)
        if self.done or (self.accumulator.finished and not self.dialect.terminal_needed):
            return
        if not self.events and (self.opening or b"").strip() and self.content_type != "text/event-stream":
            raise ProtocolError("expected an event stream, got a body of type %s: %r" % (
                self.content_type or "(none)", _clip((self.opening or b"").decode("utf-8", "replace"), 80)))
        raise APIConnectionError(
            "the stream ended without %s: the connection was cut off after %d events"
            % (self.dialect.ending, self.events)
        )

    def whole_json(self, body: bytes) -> List[Delta]:
        """A 200 with one JSON object: a server that ignored "stream", or an error."""
        if len(body) > self.max_event_bytes:
            raise ProtocolError("the JSON response is larger than the limit of %d bytes" % self.max_event_bytes)
        text = body.decode("utf-8", "replace")
        chunk = _loads_or(text.strip(), _NOT_JSON)
        if chunk is _NOT_JSON:  # raised here, not in an except: json's error keeps the whole text
            raise ProtocolError(
                "expected an event stream, got an application/json body that is not valid JSON: %r"
                % _clip(text, 80)
            )
        if type(chunk) is not dict:
            raise _non_object_error(chunk, 1)
        if not self.dialect.is_whole(chunk):
            _raise_if(_chunk_error(chunk))
            raise ProtocolError("expected an event stream, got a JSON object that is no answer: %r" % _clip(text, 120))
        self._note_events(1)
        out = list(self._chunk_deltas(self.dialect.whole(chunk), "\\ud" in text or "\\uD" in text))
        if self.error is None and not any(type(delta) is Finish for delta in out):
            self.error = APIConnectionError("the JSON response has no finish reason")
        self.done = True
        return out

    def _chunk_deltas(self, chunk: Dict[str, Any], surrogates: bool) -> List[Delta]:
        """The deltas of one chunk; an error in it is kept in `error`."""
        self.last_chunk = chunk
        if self.chunk_log is not None:
            self.chunk_log.append(chunk)
        try:
            deltas: List[Delta] = self.dialect.decode(chunk)
        except APIError as exc:  # a dialect that raises for its error events (Responses)
            deltas, self.error = [], exc
        if surrogates or (self.mender is not None and self.mender.held):
            if self.mender is None:
                self.mender = _SurrogateMender()
            deltas = self.mender.mend(deltas)
        if self.accumulate or self.accumulator.id is None:
            info = self.dialect.chunk_info(chunk)
            if not self.accumulate:
                info = {key: info.get(key) for key in ("id", "model", "created")}
            self.accumulator.add_chunk_info(_unicode_strings(info) if surrogates else info)
        if deltas:
            self.delivered = True
            if self.first_content is None:
                for delta in deltas:
                    self._note_first_token(delta)
        if self.dialect.terminal:
            self.done = True
        if self.error is None:
            self.error = self.dialect.error_of(chunk)
        return deltas

    def _add_summary(self, delta: Delta) -> None:
        """Without accumulation, keep only what ending the stream needs (constant memory)."""
        kind = type(delta)
        if kind is Finish:
            self.accumulator.finished = True
            if delta.choice == 0:  # type: ignore[attr-defined]
                self.accumulator.add(delta)
        elif kind is Usage:
            self.accumulator.usage = delta  # type: ignore[assignment]

    def _note_events(self, count: int) -> None:
        now = time.monotonic()
        if self.last_event_at is not None:
            self.gaps.add(now - self.last_event_at, count - 1)
        elif count > 1:
            self.gaps.add(0.0, count - 2)
        self.last_event_at = now
        self.events += count

    def _note_first_token(self, delta: Delta) -> None:
        kind = type(delta)
        if kind is ContentDelta:
            self.first_content = time.monotonic()
        elif kind is ReasoningDelta and self.first_reasoning is None:
            self.first_reasoning = time.monotonic()

    def _named_event(self, kind: str, data: str) -> Optional[Dict[str, Any]]:
        """An event with an `event:` name: "error" raises; others pass as chunks if JSON."""
        payload = _loads_or(data, None)
        if kind == "error":
            fields = error_fields(payload) if payload is not None else None
            if fields is None:
                fields = (_clip(data, 500) or "the server sent an error event", None, None)
            body = payload if payload is not None else _cut(data)
            raise APIError(_cut(fields[0]), code=fields[1], type=fields[2], body=body)
        if isinstance(payload, dict) and self.dialect.is_chunk(payload):
            return payload
        return None

    def stats(self) -> Stats:
        start = self.started
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        usage = self.accumulator.usage
        counters = self.counters

        def since(moment: Optional[float]) -> Optional[float]:
            return None if moment is None else moment - start

        return Stats(
            since(counters.first_byte_at if counters is not None else None),
            since(self.first_reasoning),
            since(self.first_content),
            end - start,
            self.events,
            counters.bytes if counters is not None else 0,
            self.retries,
            self.gaps.percentile(0.5),
            self.gaps.percentile(0.95),
            self.gaps.max if self.gaps.total else None,
            usage.completion_tokens if usage is not None else None,
            self.connection_reused,
        )

    def completion(self) -> Completion:
        return self.accumulator.result(self.stats())

    def attach_partial(self, error: StreamliteError, secrets: Sequence[str]) -> StreamliteError:
        """The error to raise: with the Completion so far, and without secrets a server echoed."""
        if error.partial is None:
            error.partial = self.completion()
        return _scrub(error, secrets)


class _StreamOptions(NamedTuple):
    """What a stream's decoding needs from its client and call."""

    max_event_bytes: int
    accumulate: bool
    tap: Optional[Callable[[bytes], None]]
    think_tags: bool
    api: str


def _refuse_non_sse(content_type: str, first_piece: bytes) -> None:
    """A 200 that is clearly not an event stream (captive portal, gateway page) is an error."""
    head = first_piece.lstrip()[:1]
    if content_type in ("text/html", "application/xhtml+xml", "text/xml", "application/xml") or head == b"<":
        text = first_piece[:4096].decode("utf-8", "replace")
        raise ProtocolError(
            "expected an event stream (text/event-stream), got %s: %s"
            % (content_type or "a body without a content type", _text_of_body(text))
        )


def _non_object_error(value: Any, number: int) -> StreamliteError:
    fields = error_fields(value)
    if fields is not None:
        return APIError(_cut(fields[0]), code=fields[1], type=fields[2], body=value)
    return ProtocolError("event %d holds JSON that is not an object: %r" % (number, _clip(_json_text(value), 80)))


###############################################################################
# HTTP/1.1 (no I/O) ###########################################################
###############################################################################
#
# Strategy, after h11's readers: the request head is built here, and a response is parsed from
# bytes by _ResponseParser, whatever the drivers read them with. Its contract: feed_head(data)
# until it returns the bytes after the (final) head; then feed(data) for each read, a generator
# of the body pieces that data completes (de-chunked and inflated, handed over the moment they
# arrive, even mid-chunk); eof() when the connection closes (raises if the body was cut short).
# Every buffer is bounded and every scan only looks at bytes it has not looked at (a trickled
# head is linear). Bad framing raises ProtocolError, behind the pieces that came before it.
# What to retry and how long to wait is decided here too, as data (_RetryPolicy), and error
# bodies become APIError. (http.client is not used: it costs 25 ms of import and 5 MB, reads
# chunked bodies one HTTP chunk per call, and closes its socket under a body being read.)

_RETRY_STATUSES = frozenset((408, 409, 429))
_READ_SIZE = 65536
_MAX_DIGITS = 18  # Content-Length and chunk sizes: more is an attack (and int() refuses 4,300)


def _request_head(method: str, target: str, host: str, headers: Mapping[str, str], length: Optional[int],
                  keep_alive: bool = False) -> bytes:
    """A request head; `length` makes it carry a body of that many bytes."""
    lines = ["%s %s HTTP/1.1" % (method, target)]
    if not any(name.lower() == "host" for name in headers):
        lines.append("Host: " + host)
    lines += ["%s: %s" % item for item in headers.items()]
    if length is not None:
        lines.append("Content-Length: %d" % length)
        if not keep_alive:
            lines.append("Connection: close")
    lines += ["", ""]
    return "\r\n".join(lines).encode("latin-1", "strict")


def _ascii_number(text: str) -> Optional[int]:
    """A decimal of ASCII digits only (never `²` or `٣`), at most _MAX_DIGITS long, else None."""
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


class _Head:
    """An HTTP response head, parsed from bytes: feed() until it returns the bytes that follow
    the head. 1xx interim responses are skipped (up to MAX_INTERIM of them); the head's size and
    line count are bounded, and each byte is scanned once however the head is trickled in."""

    MAX_BYTES = 65536
    MAX_FIELDS = 128
    MAX_INTERIM = 16  # a server sending "100 Continue" forever is not skipped forever

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no end of the head
        self._lines = 0  # line ends in those bytes
        self.status = 0
        self.reason = ""
        self.version = ""
        self.headers: Dict[str, str] = {}
        self._interim = 0

    def feed(self, data: bytes) -> Optional[bytes]:
        """Add bytes; once the (final) head is complete, return the bytes after it."""
        buffer = self._buffer
        buffer += data
        while True:
            start = max(0, self._scanned - 3)
            found = buffer.find(b"\n\r\n", start)
            bare = buffer.find(b"\n\n", start)
            if found < 0 or 0 <= bare < found:
                found, length = bare, 2
            else:
                length = 3
            if found < 0:
                self._lines += buffer.count(b"\n", self._scanned)
                self._scanned = len(buffer)
                if len(buffer) > self.MAX_BYTES:
                    raise ProtocolError("the response head is larger than %d bytes" % self.MAX_BYTES)
                if self._lines > self.MAX_FIELDS:  # fail now, not when the head ends
                    self._too_many_lines()
                return None
            head, rest = bytes(buffer[:found]), bytes(buffer[found + length :])
            self._parse(head.decode("latin-1"))
            buffer.clear()
            self._scanned = self._lines = 0
            if not 100 <= self.status < 200:  # 1xx: an interim response, the real one follows
                return rest
            self._skip_interim()
            buffer += rest

    def _skip_interim(self) -> None:
        if self.status == 101:  # no HTTP response follows a switch of protocols
            raise ProtocolError("the server switched protocols (101 %s) instead of answering" % _clip(self.reason, 40))
        self._interim += 1
        if self._interim > self.MAX_INTERIM:
            raise ProtocolError("the server sent more than %d interim (1xx) responses" % self.MAX_INTERIM)

    def _too_many_lines(self) -> None:
        raise ProtocolError("the response head has more than %d header lines" % self.MAX_FIELDS)

    def _parse(self, head: str) -> None:
        lines = head.split("\n")
        status_line = lines[0].rstrip("\r")
        parts = status_line.split(None, 2)
        status = _ascii_number(parts[1]) if len(parts) > 1 and len(parts[1]) == 3 else None
        if status is None or not parts[0].startswith("HTTP/1."):
            raise ProtocolError("the server did not answer with valid HTTP: %r" % _clip(status_line, 80))
        self.version, self.status = parts[0], status
        self.reason = parts[2].strip() if len(parts) > 2 else ""
        if len(lines) > self.MAX_FIELDS:
            self._too_many_lines()
        headers: Dict[str, str] = {}
        name = ""
        for line in lines[1:]:
            line = line.rstrip("\r")
            if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation line
                headers[name] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name or "\0" in line:
                raise ProtocolError("the response head has a malformed line: %r" % _clip(line, 80))
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        self.headers = headers

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def keep_alive(self) -> bool:
        """Whether the server lets the connection carry another request after this response."""
        tokens = [token.strip().lower() for token in self.headers.get("connection", "").split(",")]
        return self.version == "HTTP/1.1" and "close" not in tokens

    def idle_timeout(self, default: float) -> float:
        """How long the connection may sit idle: the server's `Keep-Alive: timeout=N`, a little
        early (its clock started first), else `default`."""
        for param in self.headers.get("keep-alive", "").split(","):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "timeout":
                seconds = _ascii_number(value.strip())
                if seconds is not None:
                    return min(float(seconds), default * 12) * 0.8
        return default

    def framer(self) -> _BodyFramer:
        """How the body that follows this head is delimited, and how it is encoded."""
        if self.status in (204, 304):
            return _BodyFramer(False, 0, None)
        codings = [c.strip().lower() for c in self.headers.get("transfer-encoding", "").split(",") if c.strip()]
        chunked = bool(codings) and codings[-1] == "chunked"
        if chunked:
            codings.pop()
        codings += [c.strip().lower() for c in self.headers.get("content-encoding", "").split(",") if c.strip()]
        try:
            inflater = _Inflater.for_codings([c for c in codings if c != "identity"])
        except ProtocolError as exc:  # raised when the body starts, with .partial
            inflater = _Inflater("identity", refused=_kept(exc))
        if chunked or "transfer-encoding" in self.headers:  # another last coding: delimited by close
            return _BodyFramer(chunked, None, inflater)
        return _BodyFramer(False, self._content_length(), inflater)

    def _content_length(self) -> Optional[int]:
        values = {value.strip() for value in self.headers.get("content-length", "").split(",")}
        values.discard("")
        if not values:
            return None
        length = _ascii_number(values.pop())
        if length is None or values:
            raise ProtocolError("the response has an invalid or conflicting Content-Length")
        return length


class _ChunkedDecoder:
    """Decode a chunked transfer-coded body incrementally: feed(bytes) -> payload.

    Payload bytes are handed over as soon as they arrive, even mid-chunk.
    """

    _SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
    MAX_LINE = 4096
    MAX_TRAILERS = 64

    def __init__(self) -> None:
        self._state = self._SIZE
        self._left = 0
        self._rest = b""
        self._trailers = 0
        self._sizes: Dict[bytes, int] = {}  # size lines seen ("fa\r"), for _whole_chunks
        self.failed: Optional[ProtocolError] = None  # raised after the data before it is out

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def feed(self, data: bytes) -> bytes:
        """The chunk data in `data`. Bad framing raises, unless chunks came before it in the
        same piece: those are returned and the error waits in `failed` (nothing is lost)."""
        if self.failed is not None:
            raise self.failed
        out: List[bytes] = []
        try:
            self._decode(data, out)
        except ProtocolError as exc:
            if not out:
                raise
            self.failed = _kept(exc)
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _decode(self, data: bytes, out: List[bytes]) -> None:
        buffer = self._rest + data if self._rest else data
        pos, end = 0, len(buffer)
        state = self._state
        while pos < end and state != self._DONE:
            if state == self._SIZE:
                pos = self._whole_chunks(buffer, pos, out)
                if pos == end:
                    break
            if state == self._DATA:
                take = min(self._left, end - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                state = self._DATA_END
            elif state == self._DATA_END:
                if buffer[pos : pos + 1] == b"\n":
                    pos += 1
                elif buffer[pos : pos + 2] == b"\r\n":
                    pos += 2
                elif end - pos < 2 and buffer[pos:] == b"\r":
                    break
                else:
                    raise ProtocolError("malformed chunked body: a chunk is not followed by CRLF")
                state = self._SIZE
            else:
                newline = buffer.find(b"\n", pos)
                if newline < 0:
                    if end - pos > self.MAX_LINE:
                        raise ProtocolError("malformed chunked body: a chunk header is too long")
                    break
                line = buffer[pos:newline].rstrip(b"\r")
                pos = newline + 1
                state = self._size_line(line) if state == self._SIZE else self._trailer_line(line)
        self._state = state
        self._rest = buffer[pos:] if pos < end and state != self._DONE else b""

    def _whole_chunks(self, buffer: bytes, pos: int, out: List[bytes]) -> int:
        """The fast path: take the chunks that are whole in the buffer from `pos` on (size
        line, data, CRLF) and return where the rest begins. Size lines repeat, so each is
        checked only once (by _size_line, which remembers it)."""
        sizes = self._sizes
        end = len(buffer)
        while True:
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                return pos
            size = sizes.get(buffer[pos:newline])
            if size is None:
                return pos  # a size line not seen yet (or the last chunk): the general path
            data_end = newline + 1 + size
            if data_end + 2 > end or buffer[data_end : data_end + 2] != b"\r\n":
                return pos
            out.append(buffer[newline + 1 : data_end])
            pos = data_end + 2

    def _size_line(self, line: bytes) -> int:
        text = line.split(b";", 1)[0].strip()
        digits = text.lstrip(b"0") or b"0"
        if not text or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError("malformed chunked body: bad chunk size %r" % (_clip(line, 40),))
        self._left = int(digits, 16)
        if self._left and text == line and len(self._sizes) < 512:  # plain hex: remember it
            self._sizes[line + b"\r"] = self._left
        return self._DATA if self._left else self._TRAILER

    def _trailer_line(self, line: bytes) -> int:
        if not line:
            return self._DONE
        self._trailers += 1
        if self._trailers > self.MAX_TRAILERS:
            raise ProtocolError("malformed chunked body: more than %d trailer lines" % self.MAX_TRAILERS)
        return self._TRAILER


class _Inflater:
    """Decode a gzip or deflate body incrementally (sent despite Accept-Encoding: identity),
    never more than _READ_SIZE bytes of output per step, so memory stays bounded. A gzip body of
    several members (valid, and what concatenating gzip files gives) is read to its end."""

    def __init__(self, coding: str, refused: Optional[ProtocolError] = None) -> None:
        import zlib

        self._refused = refused  # an encoding that cannot be decoded: feed() raises this
        self._zlib = zlib
        self._bits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._decompressor = zlib.decompressobj(self._bits)

    @staticmethod
    def for_codings(codings: Sequence[str]) -> Optional[_Inflater]:
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return _Inflater(codings[0])
        raise ProtocolError(
            "the server sent a %r-encoded body although streamlite asked for identity; only one "
            "layer of gzip or deflate can be decoded" % (_clip(", ".join(codings), 40),)
        )

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces, made one at a time as the caller takes them: a small input that
        inflates to gigabytes (a zip bomb) never sits in memory at once."""
        if self._refused is not None:
            raise self._refused
        try:
            while True:
                decompressor = self._decompressor
                piece = decompressor.decompress(data, _READ_SIZE)
                data = decompressor.unconsumed_tail
                if piece:
                    yield piece
                if decompressor.eof and decompressor.unused_data.strip(b"\0"):  # the next member
                    data = decompressor.unused_data  # all that follows the member (the tail too)
                    self._decompressor = self._zlib.decompressobj(self._bits)
                    continue
                if not data and len(piece) < _READ_SIZE:
                    return  # a full piece may leave output pending inside zlib: go round again
        except self._zlib.error as exc:
            raise ProtocolError("the compressed body is corrupt: %s" % exc) from None


class _BodyFramer:
    """Find the body in the bytes after the response head: chunked, sized by Content-Length,
    or delimited by the connection closing. feed() returns payload bytes (still encoded)."""

    def __init__(self, chunked: bool, length: Optional[int], inflater: Optional[_Inflater]) -> None:
        self._chunks = _ChunkedDecoder() if chunked else None
        self.length = length
        self.left = length
        self.inflater = inflater

    @property
    def complete(self) -> bool:
        if self._chunks is not None:
            return self._chunks.done
        return self.left is not None and self.left <= 0

    @property
    def delimited(self) -> bool:
        """The body's end is in its framing (not the connection closing)."""
        return self._chunks is not None or self.length is not None

    def wanted(self) -> int:
        """How much to read next without reading past the body."""
        return _READ_SIZE if self.left is None or self._chunks is not None else max(1, min(_READ_SIZE, self.left))

    @property
    def failed(self) -> Optional[ProtocolError]:
        """Bad framing found after good data in the last piece: raise it once that is out."""
        return self._chunks.failed if self._chunks is not None else None

    def feed(self, data: bytes) -> bytes:
        if self._chunks is not None:
            return self._chunks.feed(data)
        if self.left is not None:
            data = data[: self.left]
            self.left -= len(data)
        return data

    def eof(self) -> None:
        """The connection closed: fine for a close-delimited body, else the body was cut."""
        if self._chunks is not None and not self._chunks.done:
            raise APIConnectionError("the connection closed in the middle of the chunked body")
        if self.left is not None and self.left > 0 and self.length is not None:
            raise APIConnectionError(
                "the connection closed after %d of %d body bytes" % (self.length - self.left, self.length)
            )


class _ResponseParser:
    """One HTTP/1.1 response from bytes; the contract is in this section's strategy comment."""

    def __init__(self) -> None:
        self._reading: Optional[_Head] = _Head()
        self.head: Optional[_Head] = None
        self._framer = _BodyFramer(False, None, None)
        self.broken = False  # the body's framing or coding failed: the connection is not reused

    def feed_head(self, data: bytes) -> Optional[bytes]:
        """Add bytes of the head; once the final head is complete, return the bytes after it.
        No bytes: the connection closed before the head was complete."""
        assert self._reading is not None
        if not data:
            raise _closed_before_responding()
        rest = self._reading.feed(data)
        if rest is not None:
            self.head, self._reading = self._reading, None
            self._framer = self.head.framer()
        return rest

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The body pieces in `data` (none while a chunk header is incomplete)."""
        framer = self._framer
        try:
            payload = framer.feed(data)
            if payload:
                if framer.inflater is None:
                    yield payload
                else:
                    yield from framer.inflater.feed(payload)
        except ProtocolError:
            self.broken = True
            raise
        if framer.failed is not None:
            self.broken = True
            raise framer.failed

    def eof(self) -> None:
        self._framer.eof()

    def wanted(self) -> int:
        return self._framer.wanted()

    @property
    def complete(self) -> bool:
        return self._framer.complete

    @property
    def reusable(self) -> bool:
        """The body was read to its end and the server keeps the connection open."""
        head = self.head
        framer = self._framer
        return head is not None and head.keep_alive and framer.delimited and framer.complete and not self.broken


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """The server's requested delay: retry-after-ms, else Retry-After (seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        delay = _finite(value)
        if delay is not None:
            return max(0.0, delay / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    delay = _finite(value)
    if delay is not None:
        return max(0.0, delay)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC, though parsedate_to_datetime leaves it naive
        import datetime

        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _finite(text: str) -> Optional[float]:
    """A finite number written in ASCII, else None."""
    text = text.strip()
    if not text or len(text) > 32 or not text.isascii():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    override = headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return override == "true"
    return status in _RETRY_STATUSES or status >= 500


class _RetryPolicy:
    """What to retry and how long to wait, as data: connection failures before any delta, and
    408, 409, 429 and 5xx (or what x-should-retry says), never past the deadline."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def delay(self, error: StreamliteError, attempt: int, deadline: Optional[float]) -> Optional[float]:
        """Seconds to wait before retrying after `error`, or None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, APIError):
            if error.status is None or not _should_retry(error.status, error.headers or {}):
                return None
            if error.retry_after is not None and error.retry_after > MAX_RETRY_AFTER_SECONDS:
                return None
            delay = error.retry_after if error.retry_after else _backoff(attempt)
        elif isinstance(error, APIConnectionError) and error._retryable:
            delay = _backoff(attempt)
        else:
            return None
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        return delay


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.5 s doubling, capped at 8 s."""
    import random

    return float(min(0.5 * 2 ** min(attempt, 8), 8.0) * (0.75 + random.random() / 4))


def _error_from_body(status: int, reason: str, headers: Dict[str, str], body: bytes) -> APIError:
    """An APIError with the provider's own message, from a JSON, text or HTML error body."""
    text = body.decode("utf-8", "replace")
    payload: Any = None
    if text.strip()[:1] in ("{", "["):
        payload = _loads_or(text.strip(), None)
    fields = error_fields(payload) if payload is not None else None
    if fields is not None:
        message, code, kind = fields
        display = _clip(message, 500)
    else:
        message, code, kind = text.strip() or reason or "no message", None, None
        display = _text_of_body(message)
    if 300 <= status < 400 and headers.get("location"):
        message = display = "redirect to %s not followed (%s)" % (_clip(headers["location"], 200), display)
    return APIError(
        message,
        status=status,
        code=code,
        type=kind,
        body=payload if payload is not None else text,
        headers=headers,
        retry_after=_retry_after(headers),
        request_id=_request_id(headers),
        display=display,
    )


def _request_id(headers: Mapping[str, str]) -> Optional[str]:
    for name in ("x-request-id", "apim-request-id", "x-generation-id", "request-id", "cf-ray"):
        if headers.get(name):
            return _clip(headers[name], 200)
    return None


def _closed_before_responding() -> APIConnectionError:
    return APIConnectionError("the server closed the connection before responding", retryable=True)


def _broken_connection(exc: BaseException) -> APIConnectionError:
    """A failure while the response was being read."""
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc.__class__.__name__
    return APIConnectionError("the connection broke during the response: %s" % (reason,), retryable=True)


###############################################################################
# Connection settings (no I/O) ################################################
###############################################################################
#
# Where to connect and how: the endpoint of each API, proxies and NO_PROXY, the TLS context,
# the deadlines, the one place that turns OS and ssl errors into streamlite errors for both
# drivers, and the bookkeeping of idle connections (the drivers own the sockets themselves).

_CREDENTIAL_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password")  # names whose values are secrets
_API_PATHS = {"chat": "/chat/completions", "responses": "/responses", "completions": "/completions"}
_KEEP_ALIVE_SECONDS = 5.0  # how long an idle connection is kept when the server says nothing
_MAX_IDLE_PER_ORIGIN = 8
_DONE_GRACE_SECONDS = 0.1  # after [DONE], how long the end of the body may take to reuse the connection


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 and char != "\t" or ord(char) == 127 for char in text)


def _is_latin1(text: str) -> bool:
    """Whether HTTP can carry `text` in a head. Checked without encoding: a UnicodeEncodeError
    would hold the text (a credential) and stay chained to the ConfigError raised after it."""
    return not text or max(text) <= "\xff"


def _check_header(name: Any, value: Any) -> None:
    """Refuse header names and values that could split the request or cannot be sent (the
    value is never in the message: it may be a credential)."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise ConfigError("header %r must be a str with a str value" % (_clip(name, 60),))
    if not name or _has_control(name) or ":" in name or " " in name or not name.isascii():
        raise ConfigError("invalid header name %r" % (_clip(name, 60),))
    if _has_control(value):
        raise ConfigError("the value of header %r contains a control character" % (name,))
    if not _is_latin1(value):
        raise ConfigError(
            "the value of header %r has a character HTTP cannot carry (not Latin-1: a pasted "
            "quote or an invisible space?)" % (name,)
        )


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    target: str  # path and query

    @property
    def origin(self) -> str:
        return "%s://%s" % (self.scheme, _authority(self))


def _authority(endpoint: Any) -> str:
    host = "[%s]" % endpoint.host if ":" in endpoint.host else endpoint.host
    return "%s:%d" % (host, endpoint.port)


def _host_header(endpoint: _Endpoint) -> str:
    default = 443 if endpoint.scheme == "https" else 80
    return _authority(endpoint) if endpoint.port != default else _authority(endpoint).rsplit(":", 1)[0]


def _split_url(url: Any, what: str) -> Any:
    """urlsplit() of a URL option, checked; the URL is never in the message (it may be a key
    pasted into the wrong place)."""
    if not isinstance(url, str) or _has_control(url) or " " in url:
        raise ConfigError("%s must be a URL without spaces or control characters" % what)
    parts = _url_parts(url)
    if parts is None:
        raise ConfigError("%s has an invalid port or IPv6 address" % what)
    port = parts.port
    if parts.scheme not in ("http", "https"):
        raise ConfigError("%s must be an http:// or https:// URL" % what)
    if port == 0:
        raise ConfigError("%s has port 0, which cannot be connected to" % what)
    _check_host(parts.hostname, what)
    rest = parts.path + parts.query
    if not rest.isascii():  # a pasted invisible space or quote, most likely
        odd = next(char for char in rest if ord(char) > 127)
        raise ConfigError("%s has a character that is not ASCII in its path or query (U+%04X): "
                          "percent-encode it" % (what, ord(odd)))
    return parts


def _url_parts(url: str) -> Any:
    """urlsplit() of `url` with its port checked, or None. The ValueError is not kept: it
    quotes the URL, which may hold a key."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return None
    return parts


def _idna_ok(host: str) -> bool:
    try:
        host.encode("idna")
    except UnicodeError:  # not kept: it quotes the host
        return False
    return True


def _check_host(host: Optional[str], what: str) -> None:
    if not host:
        raise ConfigError("%s has no host name" % what)
    if ":" in host:
        return  # an IPv6 literal, checked by urlsplit
    if len(host.rstrip(".")) > 253 or not _idna_ok(host):
        raise ConfigError("%s has an invalid host name (an empty label, one over 63 characters, "
                          "or over 253 in all)" % what)


def _is_azure_host(host: str) -> bool:
    return host.endswith((".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"))


def _endpoint(base_url: str, *, azure: bool, model: Optional[str], api_version: Optional[str], api: str = "chat",
              query: Optional[Mapping[str, Any]] = None) -> _Endpoint:
    """Where to POST: base_url + the API's path (Azure: the deployment URL, api-version)."""
    parts = _split_url(base_url, "base_url")
    if parts.username or parts.password:
        raise ConfigError("base_url must not hold credentials; pass api_key or headers instead")
    path, query_text = parts.path.rstrip("/"), parts.query
    if azure and "/deployments/" not in path and not path.endswith("/v1"):
        if not model:
            raise ConfigError("Azure OpenAI needs model= (the deployment name) or a deployment URL")
        if not path.endswith("/openai"):
            path += "/openai"
        path += "/deployments/" + quote(model, safe="")
    given = any(path.endswith(known) for known in _API_PATHS.values())  # a full URL: used as it is
    if not given:
        path += _API_PATHS["chat"]
    if azure and "/deployments/" in path and "api-version=" not in query_text:
        version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
        query_text = (query_text + "&" if query_text else "") + "api-version=" + quote(version, safe="")
    target = path + ("?" + query_text if query_text else "")
    if not given:
        target = _api_target(target, api, azure, api_version)
    if query:
        from urllib.parse import urlencode

        target += ("&" if "?" in target else "?") + urlencode(query)
    default_port = 443 if parts.scheme == "https" else 80
    return _Endpoint(parts.scheme, parts.hostname, parts.port or default_port, target)


def _without_credentials(url: str) -> str:
    """A URL fit to show: no user name or password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY (names, .suffixes, *.suffixes, CIDR ranges, "*") covers `host`."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            if _in_network(host, entry):
                return True
            continue
        if entry.startswith("[") and "]" in entry:
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:
            entry = entry.split(":")[0]
        entry = entry.lstrip("*").lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _in_network(host: str, network: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _proxy_from_env(scheme: str, host: str) -> Optional[str]:
    """The proxy URL the environment asks for, as curl and requests read it (loopback hosts
    too: only NO_PROXY exempts a host, e.g. NO_PROXY=localhost,127.0.0.0/8)."""
    if _bypasses_proxy(host, _env("no_proxy", "NO_PROXY") or ""):
        return None
    if scheme == "https":
        return _env("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    if "REQUEST_METHOD" in os.environ:  # a CGI program: HTTP_PROXY may come from a request's
        return _env("http_proxy", "all_proxy", "ALL_PROXY")  # Proxy: header (httpoxy)
    return _env("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


class _Proxy:
    """An http:// proxy; its credentials only ever go to the proxy, in Proxy-Authorization."""

    def __init__(self, url: str) -> None:
        if "://" not in url:
            url = "http://" + url
        try:
            scheme = urlsplit(url).scheme
        except ValueError:
            scheme = "http"  # _split_url says what is wrong
        if scheme != "http":
            raise ConfigError(
                "only http:// proxies are supported (https to the target still goes through "
                "a CONNECT tunnel), got %r" % _clip(scheme, 20)
            )
        parts = _split_url(url, "the proxy URL")
        self.host: str = parts.hostname
        self.port: int = parts.port or 8080
        self.headers: Dict[str, str] = {}
        self.secrets: List[str] = []  # never to be shown: the password and its base64 token
        if parts.username is not None:
            import base64
            from urllib.parse import unquote

            pair = "%s:%s" % (unquote(parts.username), unquote(parts.password or ""))
            token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
            self.headers["Proxy-Authorization"] = "Basic " + token
            self.secrets = [token, unquote(parts.password or "")]

    @property
    def key(self) -> Tuple[str, int, str]:
        return (self.host, self.port, self.headers.get("Proxy-Authorization", ""))

    def __repr__(self) -> str:
        return "<proxy %s:%d>" % (self.host, self.port)


def _ssl_context(verify: bool, ca_file: Optional[str]) -> ssl.SSLContext:
    """An explicit client context: certificates and host names verified unless verify=False."""
    import ssl

    if not verify:
        return ssl._create_unverified_context()  # the caller said verify=False
    ca_file = ca_file or _env("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    ca_dir = os.environ.get("SSL_CERT_DIR") or None
    for path, what in ((ca_file, "CA file"), (ca_dir, "CA directory")):
        if path and not os.path.exists(path):
            raise ConfigError("the %s %r does not exist" % (what, path))
    try:
        context = ssl.create_default_context(cafile=ca_file, capath=ca_dir)
    except ssl.SSLError as exc:
        raise ConfigError("cannot load the CA file %r: %s" % (ca_file or ca_dir, exc)) from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Budget:
    """The time a read may take: the idle timeout, cut short by what is left of the deadline."""

    def __init__(self, idle: float, deadline: Optional[float]) -> None:
        self.idle = idle
        self.deadline = deadline

    def grace(self, seconds: float) -> _Budget:
        """A budget of at most `seconds` from now, within the deadline."""
        ends = time.monotonic() + seconds
        return _Budget(seconds, ends if self.deadline is None else min(ends, self.deadline))

    def timeout(self) -> float:
        if self.deadline is None:
            return self.idle
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise APITimeoutError("the total timeout expired", which="total")
        return min(self.idle, left)

    def expired(self) -> APITimeoutError:
        """The error for a read that timed out: the total deadline if it is (nearly) past."""
        if self.deadline is not None and self.deadline - time.monotonic() < 0.01:
            return APITimeoutError("the total timeout expired", which="total")
        return APITimeoutError(
            "no data from the server for %g s (the read timeout)" % self.idle, which="read"
        )


class _Settings:
    """How a client connects: timeouts, TLS, proxies. Shared by both drivers."""

    def __init__(self, connect_timeout: float, read_timeout: float, ca_file: Optional[str], verify: bool,
                 proxy: Optional[str], keep_alive: bool) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ca_file = ca_file
        self.verify = verify
        self.proxy = _Proxy(proxy) if proxy else None
        self.no_proxy = proxy == ""  # proxy="" turns the environment's proxies off
        self.keep_alive = keep_alive
        self._context: Optional[ssl.SSLContext] = None
        if ca_file is not None and not os.path.exists(ca_file):
            raise ConfigError("the CA file %r does not exist" % (ca_file,))

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = _ssl_context(self.verify, self.ca_file)
        return self._context

    def proxy_for(self, endpoint: _Endpoint) -> Optional[_Proxy]:
        if self.proxy is not None or self.no_proxy:
            return self.proxy
        url = _proxy_from_env(endpoint.scheme, endpoint.host)
        return _Proxy(url) if url else None

    def connect_budget(self, deadline: Optional[float]) -> float:
        """The time connecting may take: the connect timeout, cut short by the deadline."""
        if deadline is None:
            return self.connect_timeout
        return max(0.001, min(self.connect_timeout, deadline - time.monotonic()))

    def connect_error(self, exc: BaseException, endpoint: _Endpoint, proxy: Optional[_Proxy],
                      deadline: Optional[float], timed_out: bool = False) -> StreamliteError:
        """A clear, typed error for a failure to connect (TCP, proxy tunnel or TLS)."""
        if isinstance(exc, StreamliteError):
            return exc
        where = _authority(endpoint)
        via = " through the proxy %s:%d" % (proxy.host, proxy.port) if proxy else ""
        if timed_out:
            if deadline is not None and deadline - time.monotonic() < 0.01:
                return APITimeoutError("the total timeout expired while connecting to %s%s" % (where, via), which="total")
            return APITimeoutError(
                "could not connect to %s%s within %g s (the connect timeout)" % (where, via, self.connect_timeout),
                which="connect",
            )
        tls = _tls_error(exc, endpoint)
        if tls is not None:
            return tls
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        return APIConnectionError("could not connect to %s%s: %s" % (where, via, reason), retryable=True)


def _tls_error(exc: BaseException, endpoint: _Endpoint) -> Optional[APIConnectionError]:
    if "ssl" not in sys.modules:
        return None
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message or exc.reason).rstrip(".")
        if "mismatch" in reason:
            advice = "the certificate is for another name: check the host in base_url"
        elif "expired" in reason or "not yet valid" in reason:
            advice = (
                "the server's certificate is outside its validity dates: it must be renewed, or "
                "this machine's clock is wrong"
            )
        else:
            advice = (
                "if a corporate proxy or a private CA signs this certificate, pass ca_file= or "
                "set SSL_CERT_FILE to a CA bundle that includes it"
            )
        return APIConnectionError(
            "TLS certificate verification failed for %s: %s; %s (verify=False turns checking off)"
            % (endpoint.host, reason, advice)
        )
    if isinstance(exc, ssl.SSLError):
        return APIConnectionError("TLS handshake with %s failed: %s" % (_authority(endpoint), exc.reason or exc))
    return None


def _connect_request(endpoint: _Endpoint, proxy: _Proxy) -> bytes:
    authority = _authority(endpoint)
    return _request_head("CONNECT", authority, authority, proxy.headers, None)


def _tunnel_answer(head: _Head, rest: bytes, endpoint: _Endpoint, proxy: _Proxy) -> None:
    """Check a proxy's answer to CONNECT: 200 and nothing after it, else a typed error."""
    if head.status != 200:
        what = "needs credentials (407 Proxy Authentication Required)" if head.status == 407 else "refused it"
        raise APIError(
            "the proxy %s:%d was asked for a CONNECT tunnel to %s and %s"
            % (proxy.host, proxy.port, _authority(endpoint), what),
            status=head.status,
        )
    if rest:
        raise ProtocolError("the proxy sent data before the tunnel was open")


def _tunnel_closed(proxy: _Proxy) -> APIConnectionError:
    return APIConnectionError("the proxy %s:%d closed the connection during CONNECT" % (proxy.host, proxy.port))


class _ConnectionState:
    """What both drivers' connections keep besides their streams: the pool key, when an idle
    one expires, whether it is reused, and the byte counters of the current response."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.expires = 0.0  # when an idle connection must no longer be used
        self.reused = False
        self.bytes = 0
        self.first_byte_at: Optional[float] = None

    def start(self) -> None:
        """A new request on this connection: its counters start again."""
        self.bytes = 0
        self.first_byte_at = None

    def count(self, data: bytes) -> bytes:
        if data:
            if self.first_byte_at is None:
                self.first_byte_at = time.monotonic()
            self.bytes += len(data)
        return data

    def read_failure(self, exc: OSError) -> APIConnectionError:
        """The error for an OSError while reading a response."""
        if isinstance(exc, ConnectionResetError) and not self.bytes:
            return _closed_before_responding()
        return _broken_connection(exc)


def _settle(pool: Optional[_Pool], conn: Any, parser: _ResponseParser) -> None:
    """A connection whose response is over: back to the pool if its body was read to the end and
    the server keeps it open, else closed."""
    if pool is not None and parser.reusable and parser.head is not None:
        conn.expires = time.monotonic() + parser.head.idle_timeout(_KEEP_ALIVE_SECONDS)
        for old in pool.put(conn):
            old.close()
    else:
        conn.close()


def _error_response(head: _Head, body: bytearray) -> APIError:
    """The APIError of a response that is not 2xx, from what arrived of its body."""
    return _error_from_body(head.status, head.reason, head.headers, bytes(body[:MAX_ERROR_BODY_BYTES]))


def _exchange_failure(exc: BaseException) -> BaseException:
    """What to raise for a failure while a request is sent or its head read."""
    if isinstance(exc, OSError) and not isinstance(exc, StreamliteError):
        return _closed_before_responding()
    return exc


class _Pool:
    """Idle connections by origin, most recent last, for reuse (no I/O: the drivers open, check
    and close them). Thread-safe; a connection is either here or owned by one stream. take()
    and put() return the connections the caller must close (expired, or over the limit)."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._idle: Dict[Any, List[Any]] = {}
        self.watchers: Dict[Any, Any] = {}  # the async driver's, one per event loop
        self.closed = False  # the client was closed: connections handed back are not kept

    def take(self, key: Any, now: float) -> Tuple[Optional[Any], List[Any]]:
        with self._lock:
            idle = self._idle.get(key)
            if not idle:
                return None, []
            expired = [conn for conn in idle if conn.expires <= now]
            fresh = [conn for conn in idle if conn.expires > now]
            conn = fresh.pop() if fresh else None
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]
        return conn, expired

    def reuse(self, key: Any) -> Optional[Any]:
        """An idle connection to reuse, or None; expired ones, and stale ones (conn.is_stale():
        the server closed them meanwhile), are closed."""
        while True:
            conn, expired = self.take(key, time.monotonic())
            for old in expired:
                old.close()
            if conn is None or not conn.is_stale():
                if conn is not None:
                    conn.reused = True
                return conn
            conn.close()

    def put(self, conn: Any) -> List[Any]:
        with self._lock:
            if self.closed:
                return [conn]
            idle = self._idle.setdefault(conn.key, [])
            idle.append(conn)
            if len(idle) <= _MAX_IDLE_PER_ORIGIN:
                return []
            return [idle.pop(0)]

    def close(self) -> List[Any]:
        """Keep no connection from now on; return the idle ones, to be closed."""
        with self._lock:
            self.closed = True
        return self.drain()

    def drain(self, chosen: Optional[Callable[[Any], bool]] = None) -> List[Any]:
        """Take out the idle connections (those whose key `chosen` accepts)."""
        with self._lock:
            keys = [key for key in self._idle if chosen is None or chosen(key)]
            return [conn for key in keys for conn in self._idle.pop(key)]


class _Request:
    """One call, ready to send (no I/O): where, the head's fields, the body, the deadline."""

    __slots__ = ("endpoint", "headers", "payload", "body", "deadline", "secrets")

    def __init__(self, endpoint: _Endpoint, headers: Dict[str, str], payload: Dict[str, Any],
                 deadline: Optional[float], secrets: List[str]) -> None:
        self.endpoint = endpoint
        self.headers = headers
        self.payload = payload
        self.body = _encode(payload)
        self.deadline = deadline
        self.secrets = secrets  # scrubbed from every error: the key, proxy and header credentials

    def without(self, field: str) -> _Request:
        payload = {key: value for key, value in self.payload.items() if key != field}
        return _Request(self.endpoint, self.headers, payload, self.deadline, self.secrets)

    def wire(self, proxy: Optional[_Proxy], keep_alive: bool) -> bytes:
        """The bytes to send: the head and the body, in one write."""
        endpoint, headers, target = self.endpoint, self.headers, self.endpoint.target
        if proxy is not None and endpoint.scheme == "http":
            target = endpoint.origin + target  # absolute-form, to a forwarding proxy
            headers = dict(headers, **proxy.headers)
        return _request_head("POST", target, _host_header(endpoint), headers, len(self.body), keep_alive) + self.body


def _encode(payload: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: JSON escapes carry it
            return json.dumps(payload, allow_nan=False).encode("ascii")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError("the request body cannot be encoded as JSON: %s" % _clip(str(exc), 200)) from None


def _connection_key(endpoint: _Endpoint, proxy: Optional[_Proxy]) -> Tuple[Any, ...]:
    return (endpoint.scheme, endpoint.host, endpoint.port, proxy.key if proxy is not None else None)


class _Link:
    """What a Stream shares with the generator that reads it, and nothing more: the generator
    holds no reference to its Stream, so a dropped stream closes its socket at once."""

    __slots__ = ("response", "closed", "reading", "opening", "_wake")

    def __init__(self) -> None:
        import threading

        self.response: Any = None
        self.closed = False  # close() was called
        self.reading = False  # an async read is under way
        self.opening: Any = None  # the request going out: its connection (sync), its task (async)
        self._wake = threading.Event()  # set by interrupt(): ends a pause before a retry

    def interrupt(self) -> None:
        """From another thread: the stream is closed; a request being sent or a response being
        read stops at once (its socket is shut down), a pause before a retry ends."""
        self.closed = True
        self._wake.set()
        opening = self.opening
        if opening is not None:
            opening.shutdown()
        if self.response is not None:
            self.response.abort()

    def pause(self, delay: float) -> None:
        """Wait before a retry; once the stream is closed (interrupt()), raise instead."""
        if delay > 0 and not self.closed:
            self._wake.wait(delay)
        if self.closed:
            raise _closed_by_caller()

    def pool(self, session: _Session) -> Optional[_Pool]:
        """Where the connection goes when the stream ends: nowhere once close() was called."""
        return None if self.closed else session.pool


def _closed_by_caller() -> APIConnectionError:
    return APIConnectionError("the stream was closed (close() was called) while it was being read")


def _check_resend(error: APIConnectionError, link: _Link, decoder: _StreamDecoder) -> None:
    """Raise unless a stream whose connection failed may send its request again: not after a
    delta was handed out, not after a timeout, not when the caller closed it."""
    if link.closed:
        raise _closed_by_caller() from None
    if decoder.delivered or isinstance(error, APITimeoutError):
        try:
            raise error
        finally:
            del error  # see _StreamDecoder.take_error


class _Session:
    """What the drivers use of a client: settings, the idle connections, the retry policy."""

    def __init__(self, settings: _Settings, max_retries: int,
                 on_retry: Optional[Callable[[int, StreamliteError, float], None]] = None) -> None:
        self.settings = settings
        self.pool = _Pool() if settings.keep_alive else None
        self.retry = _RetryPolicy(max_retries)
        self.on_retry = on_retry

    def next_attempt(self, error: StreamliteError, request: _Request, decoder: _StreamDecoder) -> Tuple[float, _Request]:
        """After a failed attempt: how long to wait and what to send next; raises `error` when
        it is not to be retried. A server that rejects stream_options gets the request again
        without it (not a retry; the Completion says so in `warnings`)."""
        if isinstance(error, APIError) and _rejects_stream_options(error, request.payload):
            decoder.accumulator.warnings.append(
                "the server rejected stream_options; the request was sent again without it, so "
                "usage may be missing"
            )
            return 0.0, request.without("stream_options")
        delay = self.retry.delay(error, decoder.retries, request.deadline)
        if delay is None:
            try:
                raise error
            finally:
                del error  # no frame may hold the exception it raises (see _StreamDecoder.closing)
        decoder.retries += 1
        if self.on_retry is not None:
            self.on_retry(decoder.retries, _scrub(error, request.secrets), delay)
        return delay, request

    def route(self, request: _Request) -> Tuple[_Settings, Optional[_Proxy], _Budget, Any]:
        """How to send a request: the settings, its proxy, its read budget, its pool key."""
        proxy = self.settings.proxy_for(request.endpoint)
        budget = _Budget(self.settings.read_timeout, request.deadline)
        return self.settings, proxy, budget, _connection_key(request.endpoint, proxy)

    def close(self) -> List[Any]:
        """Keep no connection from now on; the idle ones, for the caller to close."""
        return self.pool.close() if self.pool is not None else []


def _rejects_stream_options(error: APIError, payload: Mapping[str, Any]) -> bool:
    if error.status not in (400, 422) or "stream_options" not in payload:
        return False
    text = (error.message + " " + _json_text(error.body)).lower()
    return "stream_options" in text or "include_usage" in text


###############################################################################
# Sync driver #################################################################
###############################################################################
#
# Strategy: blocking sockets. The driver connects (TCP, proxy tunnel, TLS), sends, and feeds
# what it reads to the _ResponseParser; every decision about HTTP, retries and errors is made in
# the sections above (the async driver below has the same functions in the same order). Each
# recv and send is bounded by the budget: the idle timeout, cut short by the total deadline.
# Idle connections wait in the client's _Pool; one is reused only after its body was read to
# the end, and only after a check that the server has not closed it meanwhile.


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port, each address in turn; the socket is closed on any
    failure, Ctrl-C included (socket.create_connection leaks it then)."""
    ends = time.monotonic() + timeout
    failed: List[OSError] = []  # the last address's failure
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(max(0.001, ends - time.monotonic()))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError) or isinstance(exc, socket.timeout):
                raise
            failed[:] = [_kept(exc)]
    raise failed.pop() if failed else OSError("no address for the host")  # popped: see _raise_if


def _sync_connect(settings: _Settings, endpoint: _Endpoint, proxy: Optional[_Proxy],
                  deadline: Optional[float]) -> _SyncConnection:
    """A new connection (through the proxy's tunnel, with TLS for https) within the connect
    timeout."""
    timeout = settings.connect_budget(deadline)
    ends = time.monotonic() + timeout
    context = settings.context() if endpoint.scheme == "https" else None  # a bad CA file: before any I/O
    host, port = (proxy.host, proxy.port) if proxy is not None else (endpoint.host, endpoint.port)
    try:
        sock = _open_socket(host, port, timeout)
        try:
            if context is not None:
                if proxy is not None:
                    _sync_tunnel(sock, endpoint, proxy, ends)
                sock.settimeout(max(0.001, ends - time.monotonic()))
                sock = context.wrap_socket(sock, server_hostname=endpoint.host, do_handshake_on_connect=False)
                sock.do_handshake()  # apart from the wrap: a failed handshake closes the TLS socket below
        except BaseException as exc:
            sock.close()
            if context is not None:
                _close_orphan_tls_socket(exc)
            raise
    except socket.timeout as exc:
        raise settings.connect_error(exc, endpoint, proxy, deadline, timed_out=True) from None
    except OSError as exc:
        raise settings.connect_error(exc, endpoint, proxy, deadline) from None
    return _SyncConnection(sock, _connection_key(endpoint, proxy))


def _close_orphan_tls_socket(exc: BaseException) -> None:
    """wrap_socket() moves the descriptor into a new SSLSocket before it checks the connection;
    when that check fails (the peer reset it), the SSLSocket is left open, reachable only from
    the traceback. Close it now rather than when the garbage collector frees it."""
    import ssl

    tb = exc.__traceback__
    while tb is not None:
        orphan = tb.tb_frame.f_locals.get("self")
        if isinstance(orphan, ssl.SSLSocket):
            orphan.close()
        tb = tb.tb_next


def _sync_tunnel(sock: socket.socket, endpoint: _Endpoint, proxy: _Proxy, ends: float) -> None:
    """Open a CONNECT tunnel through the proxy to the endpoint, before `ends`."""
    sock.settimeout(max(0.001, ends - time.monotonic()))
    sock.sendall(_connect_request(endpoint, proxy))
    head, rest = _Head(), None
    while rest is None:
        sock.settimeout(max(0.001, ends - time.monotonic()))
        data = sock.recv(_READ_SIZE)
        if not data:
            raise _tunnel_closed(proxy)
        rest = head.feed(data)
    _tunnel_answer(head, rest, endpoint, proxy)


def _readable_now(sock: socket.socket) -> bool:
    """Whether a read would not block (data, or the peer closed). poll(), where there is one:
    select() cannot watch a descriptor numbered 1024 or more."""
    import select

    if not hasattr(select, "poll"):
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _SyncConnection(_ConnectionState):
    """A connected socket (tunnel and TLS done); reads and writes bounded by a budget."""

    def __init__(self, sock: socket.socket, key: Any) -> None:
        super().__init__(key)
        self.sock = sock
        self._timeout: Optional[float] = None  # the socket's, changed only when it must be

    def recv(self, budget: _Budget, size: int = _READ_SIZE) -> bytes:
        timeout = budget.timeout()
        if timeout != self._timeout:  # settimeout() costs two system calls
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            return self.count(self.sock.recv(size))
        except socket.timeout:
            raise budget.expired() from None
        except OSError as exc:
            raise self.read_failure(exc) from None

    def send(self, data: bytes, budget: _Budget) -> None:
        """Send it all; an OSError is the caller's to judge (a stale connection?)."""
        self._timeout = budget.timeout()
        self.sock.settimeout(self._timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise budget.expired() from None

    def is_stale(self) -> bool:
        """Whether an idle connection can no longer be used: the server closed it, or sent
        something unasked (a TLS session ticket is fine)."""
        try:
            if not _readable_now(self.sock) and not getattr(self.sock, "pending", int)():
                return False
            self.sock.setblocking(False)
            self._timeout = None
            self.sock.recv(1)
            return True  # closed (b""), or bytes nobody asked for
        except (BlockingIOError, ValueError):
            return False
        except OSError as exc:  # ssl.SSLWantReadError: only a TLS record, no data
            return type(exc).__name__ != "SSLWantReadError"

    def shutdown(self) -> None:
        """Wake a reader blocked in recv in another thread (close() alone does not)."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def _sync_exchange(session: _Session, request: _Request, link: _Link) -> _SyncResponse:
    """Send the request on an idle or a new connection and read the response head. A reused
    connection that fails while the request is being sent is replaced and the request sent
    again: the server cannot have had all of it (that is not a retry). The connection is
    link.opening meanwhile, for link.interrupt() to shut down."""
    settings, proxy, budget, key = session.route(request)
    conn = session.pool.reuse(key) if session.pool is not None else None
    if conn is None:
        conn = _sync_connect(settings, request.endpoint, proxy, request.deadline)
    try:
        link.opening = conn
        if link.closed:
            raise _closed_by_caller()
        try:
            conn.send(request.wire(proxy, settings.keep_alive), budget)
        except OSError:
            if not conn.reused or link.closed:
                raise
            conn.close()
            conn = link.opening = _sync_connect(settings, request.endpoint, proxy, request.deadline)
            conn.send(request.wire(proxy, settings.keep_alive), budget)
        conn.start()
        parser, rest = _ResponseParser(), None
        while rest is None:
            rest = parser.feed_head(conn.recv(budget))
    except BaseException as exc:
        conn.close()
        raise _closed_by_caller() if link.closed else _exchange_failure(exc) from None
    finally:
        link.opening = None
    return _SyncResponse(conn, parser, rest, budget)


class _SyncResponse:
    """A response whose head has been read; pieces() is the receive loop of its body."""

    def __init__(self, conn: _SyncConnection, parser: _ResponseParser, rest: bytes, budget: _Budget) -> None:
        self.conn: Optional[_SyncConnection] = conn
        self.counters = conn
        self.parser = parser
        self.head: _Head = parser.head  # type: ignore[assignment]
        self.budget = budget
        self._rest = rest  # body bytes that came with the head

    def pieces(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives (de-chunked and inflated)."""
        parser, conn, budget = self.parser, self.conn, self.budget
        assert conn is not None
        data, self._rest = self._rest, b""
        while True:
            if data:
                yield from parser.feed(data)
            if parser.complete:
                return
            data = conn.recv(budget, parser.wanted())
            if not data:
                parser.eof()
                return

    def read(self, limit: int, out: bytearray) -> bytes:
        """The body into `out`, up to `limit` bytes (more is not read)."""
        for piece in self.pieces():
            out += piece
            if len(out) > limit:
                break
        return bytes(out)

    def http_error(self, pool: Optional[_Pool]) -> APIError:
        """The APIError of a response that is not 2xx, from its (bounded) body: what arrived
        of it, if it stalls or breaks (the status tells the story)."""
        body = bytearray()
        try:
            self.read(MAX_ERROR_BODY_BYTES, body)
        except StreamliteError:
            pass
        self.release(pool, False)
        return _error_response(self.head, body)

    def release(self, pool: Optional[_Pool], done: bool) -> None:
        """Give the connection back for reuse if its body was read to the end (after the
        stream's last event, the end may take a moment: _DONE_GRACE_SECONDS), else close it."""
        conn = self.conn
        if conn is not None and pool is not None and done and not self.parser.complete:
            self.budget = self.budget.grace(_DONE_GRACE_SECONDS)
            try:
                for _ in self.pieces():
                    pass
            except StreamliteError:
                pass
        self.conn = None
        if conn is not None:
            _settle(pool, conn, self.parser)

    def abort(self) -> None:
        """Close the connection now, also under a reader in another thread."""
        conn = self.conn
        if conn is not None:
            conn.shutdown()


def _sync_open(session: _Session, request: _Request, decoder: _StreamDecoder, link: _Link) -> _SyncResponse:
    """Send the request until a 2xx head arrives, retrying as the client's policy allows;
    link.interrupt() from another thread stops it."""
    while True:
        try:
            response = _sync_exchange(session, request, link)
            if 200 <= response.head.status < 300:
                decoder.attach(response.counters, _request_id(response.head.headers))
                return response
            link.opening = response.conn  # its error body is read next: interrupt() shuts it down
            try:
                error: StreamliteError = response.http_error(session.pool)
            finally:
                link.opening = None
        except APIConnectionError as exc:
            error = exc
        try:
            link.pause(0)  # closed meanwhile: no retry
            delay, request = session.next_attempt(error, request, decoder)
        finally:
            del error
        link.pause(delay)


def _sync_deltas(session: _Session, request: _Request, decoder: _StreamDecoder, link: _Link) -> Generator[Delta, None, None]:
    """The deltas of a stream whose response is link.response. A connection that fails before
    any delta was handed out sends the request again, as the retry policy allows. It holds no
    reference to its Stream: a dropped stream's socket closes at once, without the GC."""
    try:
        while True:
            try:
                yield from _sync_read(link.response, decoder)
                return
            except APIConnectionError as exc:
                _check_resend(exc, link, decoder)
                link.response.release(None, False)
                delay, request = session.next_attempt(exc, request, decoder)
                link.pause(delay)
                link.response = _sync_open(session, request, decoder, link)
                decoder.restart(link.response.head.content_type)
    except StreamliteError as exc:
        raise decoder.attach_partial(exc, request.secrets)
    finally:
        decoder.ended()
        link.response.release(link.pool(session), decoder.done)


def _sync_read(response: _SyncResponse, decoder: _StreamDecoder) -> Iterator[Delta]:
    if decoder.is_json:
        yield from decoder.whole(response.read(decoder.max_event_bytes, bytearray()))
    else:
        add, feed = decoder.add, decoder.feed
        for piece in response.pieces():
            for delta in feed(piece):
                add(delta)
                yield delta
            if decoder.error is not None or decoder.done:
                break
    yield from decoder.closing()


###############################################################################
# Async driver ################################################################
###############################################################################
#
# Strategy: the sync driver's functions, in the same order, on asyncio streams. Each read is
# bounded by the same budget (computed before the read is started, so an expired deadline
# never leaves a coroutine unawaited). Connections remember their event loop and are never
# used from another; asyncio.run() closes a loop's idle connections before the loop closes.


async def _within(awaitable: Any, timeout: Optional[float]) -> Any:
    """Await within a timeout (asyncio.TimeoutError when it passes). asyncio.timeout (3.11+)
    costs no task per call; wait_for creates one, which a paced stream pays on every read."""
    import asyncio

    limit = getattr(asyncio, "timeout", None)
    if limit is None:
        return await asyncio.wait_for(awaitable, timeout)
    async with limit(timeout):
        return await awaitable


async def _async_connect(settings: _Settings, endpoint: _Endpoint, proxy: Optional[_Proxy],
                         deadline: Optional[float]) -> _AsyncConnection:
    """A new connection (through the proxy's tunnel, with TLS for https) within the connect
    timeout."""
    import asyncio

    timeout = settings.connect_budget(deadline)
    context = settings.context() if endpoint.scheme == "https" else None  # a bad CA file: before any I/O
    try:
        if proxy is None:
            streams = asyncio.open_connection(endpoint.host, endpoint.port, ssl=context, limit=_READ_SIZE)
        else:
            streams = _async_tunnel(endpoint, proxy, context)
        reader, writer = await _within(streams, timeout)
    except asyncio.TimeoutError as exc:
        raise settings.connect_error(exc, endpoint, proxy, deadline, timed_out=True) from None
    except OSError as exc:
        raise settings.connect_error(exc, endpoint, proxy, deadline) from None
    return _AsyncConnection(reader, writer, _connection_key(endpoint, proxy))


async def _async_tunnel(endpoint: _Endpoint, proxy: _Proxy, context: Any) -> Tuple[Any, Any]:
    """Connect to an http:// proxy; for an https target, open a CONNECT tunnel on a socket of
    our own, then start TLS on it (public asyncio API on every Python from 3.8; only 3.11 has
    StreamWriter.start_tls). The socket is closed on any failure."""
    import asyncio

    if context is None:
        return await asyncio.open_connection(proxy.host, proxy.port, limit=_READ_SIZE)
    loop = asyncio.get_running_loop()
    sock = await _async_socket(loop, proxy.host, proxy.port)
    try:
        await loop.sock_sendall(sock, _connect_request(endpoint, proxy))
        head, rest = _Head(), None
        while rest is None:
            data = await loop.sock_recv(sock, _READ_SIZE)
            if not data:
                raise _tunnel_closed(proxy)
            rest = head.feed(data)
        _tunnel_answer(head, rest, endpoint, proxy)
        return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=endpoint.host, limit=_READ_SIZE)
    except BaseException:
        sock.close()
        raise


async def _async_socket(loop: Any, host: str, port: int) -> socket.socket:
    """A non-blocking TCP connection to host:port, each address in turn; closed on failure."""
    failed: List[OSError] = []  # the last address's failure
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            return sock
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            failed[:] = [_kept(exc)]
    raise failed.pop() if failed else OSError("no address for the host")  # popped: see _raise_if


class _AsyncConnection(_ConnectionState):
    """A connected asyncio stream pair; reads and writes bounded by a budget. Its pool key
    holds its event loop."""

    def __init__(self, reader: Any, writer: Any, key: Any) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        super().__init__((key, id(self.loop)))
        self.reader = reader
        self.writer = writer

    async def recv(self, budget: _Budget, size: int = _READ_SIZE) -> bytes:
        import asyncio

        timeout = budget.timeout()  # before the read is made: an expired deadline raises here
        try:
            return self.count(await _within(self.reader.read(size), timeout))
        except asyncio.TimeoutError:
            raise budget.expired() from None
        except OSError as exc:
            raise self.read_failure(exc) from None

    async def send(self, data: bytes, budget: _Budget) -> None:
        import asyncio

        timeout = budget.timeout()
        self.writer.write(data)
        try:
            await _within(self.writer.drain(), timeout)
        except asyncio.TimeoutError:
            raise budget.expired() from None

    def is_stale(self) -> bool:
        import asyncio

        if self.loop is not asyncio.get_running_loop():
            return True
        reader = self.reader
        return bool(reader.at_eof() or self.writer.is_closing() or reader.exception() or getattr(reader, "_buffer", b""))

    def shutdown(self) -> None:
        """Stop a read under way in another task: the transport closes at once."""
        try:
            self.writer.transport.abort()
        except RuntimeError:  # the event loop is closed
            pass

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # the event loop is closed: nothing can run on it any more
            pass


async def _async_exchange(session: _Session, request: _Request) -> _AsyncResponse:
    """Send the request on an idle or a new connection and read the response head (as
    _sync_exchange)."""
    settings, proxy, budget, key = session.route(request)
    conn = session.pool.reuse((key, id(_running_loop()))) if session.pool is not None else None
    if conn is None:
        conn = await _async_connect(settings, request.endpoint, proxy, request.deadline)
    try:
        try:
            await conn.send(request.wire(proxy, settings.keep_alive), budget)
        except OSError:
            if not conn.reused:
                raise
            conn.close()
            conn = await _async_connect(settings, request.endpoint, proxy, request.deadline)
            await conn.send(request.wire(proxy, settings.keep_alive), budget)
        conn.start()
        parser, rest = _ResponseParser(), None
        while rest is None:
            rest = parser.feed_head(await conn.recv(budget))
    except BaseException as exc:
        conn.close()
        raise _exchange_failure(exc) from None
    return _AsyncResponse(conn, parser, rest, budget)


def _running_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


class _AsyncResponse:
    """A response whose head has been read; pieces() is the receive loop of its body."""

    def __init__(self, conn: _AsyncConnection, parser: _ResponseParser, rest: bytes, budget: _Budget) -> None:
        self.conn: Optional[_AsyncConnection] = conn
        self.counters = conn
        self.parser = parser
        self.head: _Head = parser.head  # type: ignore[assignment]
        self.budget = budget
        self._rest = rest

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives (de-chunked and inflated)."""
        parser, conn, budget = self.parser, self.conn, self.budget
        assert conn is not None
        data, self._rest = self._rest, b""
        while not parser.complete:
            for piece in parser.feed(data) if data else ():
                yield piece
            if parser.complete:
                break
            data = await conn.recv(budget, parser.wanted())
            if not data:
                parser.eof()
                break

    async def read(self, limit: int, out: bytearray) -> bytes:
        async for piece in self.pieces():
            out += piece
            if len(out) > limit:
                break
        return bytes(out)

    async def http_error(self, pool: Optional[_Pool]) -> APIError:
        body = bytearray()
        try:
            await self.read(MAX_ERROR_BODY_BYTES, body)
        except StreamliteError:
            pass
        await self.release(pool, False)
        return _error_response(self.head, body)

    async def release(self, pool: Optional[_Pool], done: bool) -> None:
        conn = self.conn
        if conn is not None and pool is not None and done and not self.parser.complete:
            self.budget = self.budget.grace(_DONE_GRACE_SECONDS)
            try:
                async for _ in self.pieces():
                    pass
            except StreamliteError:
                pass
        self.conn = None
        if conn is not None:
            if pool is not None and self.parser.reusable:
                await _watch_loop(pool, conn.key[1])
            _settle(pool, conn, self.parser)

    def abort(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.shutdown()

    def close_now(self) -> None:
        """Close without awaiting anything (from __del__)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


async def _watch_loop(pool: _Pool, loop_id: int) -> None:
    """Make sure the idle connections of this event loop are closed before the loop is:
    asyncio.run() closes the loop's async generators first, and this one's `finally` then
    closes the connections (no "unclosed transport" warnings from a client never closed)."""
    if loop_id in pool.watchers:
        return

    async def watcher() -> AsyncIterator[None]:
        try:
            yield None
        finally:
            pool.watchers.pop(loop_id, None)
            for conn in pool.drain(lambda key: key[1] == loop_id):
                conn.close()

    guard = watcher()
    await guard.__anext__()
    pool.watchers[loop_id] = guard


async def _async_open(session: _Session, request: _Request, decoder: _StreamDecoder) -> _AsyncResponse:
    """Send the request until a 2xx head arrives, retrying as the client's policy allows."""
    import asyncio

    while True:
        try:
            response = await _async_exchange(session, request)
            if 200 <= response.head.status < 300:
                decoder.attach(response.counters, _request_id(response.head.headers))
                return response
            error: StreamliteError = await response.http_error(session.pool)
        except APIConnectionError as exc:
            error = exc
        try:
            delay, request = session.next_attempt(error, request, decoder)
        finally:
            del error
        if delay:
            await asyncio.sleep(delay)


async def _async_linked(link: _Link, step: Any) -> Any:
    """Await one step of a stream (sending its request, or a pause before a retry) in a task of
    its own, which aclose() from another task cancels: APIConnectionError ("closed") then. A
    response that comes when the stream is closed, or when the caller's task is cancelled, is
    closed at once."""
    import asyncio

    if link.closed:
        step.close()  # a coroutine never started: no "never awaited" warning
        raise _closed_by_caller()
    task = link.opening = asyncio.ensure_future(step)
    try:
        result = await task
    except asyncio.CancelledError:
        if not task.cancel() and not task.cancelled() and task.exception() is None:
            _close_response_of(task.result())  # it came just as the waiting task was cancelled
        if not link.closed:
            raise  # the caller's task was cancelled
        raise _closed_by_caller() from None
    finally:
        link.opening = task = None  # no frame keeps the task: it holds its exception (a cycle)
    if link.closed:
        _close_response_of(result)
        raise _closed_by_caller()
    return result


def _close_response_of(result: Any) -> None:
    """Close the response a step brought (a pause brings None)."""
    if result is not None:
        result.close_now()


async def _async_deltas(session: _Session, request: _Request, decoder: _StreamDecoder,
                        link: _Link) -> AsyncIterator[Delta]:
    """The deltas of a stream whose response is link.response (as _sync_deltas)."""
    import asyncio

    try:
        while True:
            try:
                async for delta in _async_read(link.response, decoder):
                    yield delta
                return
            except APIConnectionError as exc:
                _check_resend(exc, link, decoder)
                await link.response.release(None, False)
                delay, request = session.next_attempt(exc, request, decoder)
                await _async_linked(link, asyncio.sleep(delay))
                link.response = await _async_linked(link, _async_open(session, request, decoder))
                decoder.restart(link.response.head.content_type)
    except StreamliteError as exc:
        raise decoder.attach_partial(exc, request.secrets)
    finally:
        decoder.ended()
        await link.response.release(link.pool(session), decoder.done)


async def _async_read(response: _AsyncResponse, decoder: _StreamDecoder) -> AsyncIterator[Delta]:
    if decoder.is_json:
        body = await response.read(decoder.max_event_bytes, bytearray())
        for delta in decoder.whole(body):
            yield delta
    else:
        add, feed = decoder.add, decoder.feed
        async for piece in response.pieces():
            for delta in feed(piece):
                add(delta)
                yield delta
            if decoder.error is not None or decoder.done:
                break
    for delta in decoder.closing():
        yield delta


###############################################################################
# Client API ##################################################################
###############################################################################
#
# Strategy: _BaseClient holds the options (checked from a table, before any I/O), builds each
# request (endpoint, head fields, body of the chosen wire API, deadline) and the secrets to
# scrub; Client and AsyncClient are siblings on it that differ only in which driver they call.
# Stream and AsyncStream share their read-only view (_StreamView) of the decoder.


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e6:
        raise ConfigError(
            "%s must be a positive number of seconds, at most 1e6 (None for no deadline where "
            "that is allowed), got %r" % (name, _clip(value, 40))
        )
    return float(value)


def _optional_seconds(name: str, value: Any) -> Optional[float]:
    return None if value is None else _seconds(name, value)


def _whole(low: int, high: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError("%s must be a whole number from %d to %d, got %r" % (name, low, high, _clip(value, 40)))
        return int(value)

    return check


def _flag(name: str, value: Any) -> bool:
    return bool(value)


def _optional_flag(name: str, value: Any) -> Optional[bool]:
    return None if value is None else bool(value)


def _optional_text(name: str, value: Any) -> Optional[str]:
    if value is not None and (not isinstance(value, str) or _has_control(value)):
        raise ConfigError("%s must be a str without control characters" % name)
    return value


def _optional_str(name: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise ConfigError("%s must be a str" % name)
    return value


def _optional_callable(name: str, value: Any) -> Optional[Callable[..., Any]]:
    if value is not None and not callable(value):
        raise ConfigError("%s must be a callable or None" % name)
    return value  # type: ignore[no-any-return]


def _api_name(name: str, value: Any) -> str:
    if value not in _API_PATHS:
        raise ConfigError("%s must be one of %s, got %r" % (name, ", ".join(sorted(_API_PATHS)), _clip(value, 40)))
    return value  # type: ignore[no-any-return]


def _key_option(name: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise ConfigError("api_key must be a str")
    key = (value or "").strip() or None
    if key is not None:
        if _has_control(key):
            raise ConfigError("api_key contains a control character")
        if not _is_latin1(key):
            raise ConfigError("api_key has a character HTTP cannot carry (a pasted quote, or an invisible space?)")
    return key


def _header_map(name: str, value: Any) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("%s must be a mapping of header names to values" % name)
    for header, text in value.items():
        _check_header(header, text)
    return dict(value)


def _base_url(name: str, value: Any) -> str:
    url = value or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parts = _split_url(url, "base_url")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("base_url must not hold credentials; pass api_key= or headers= instead")
    return str(url)


#: The options of Client and AsyncClient, each with its check (the value it returns is kept).
_CLIENT_OPTIONS: Dict[str, Callable[[str, Any], Any]] = {
    "base_url": _base_url,
    "api_key": _key_option,
    "connect_timeout": _seconds,
    "read_timeout": _seconds,
    "total_timeout": _optional_seconds,
    "max_retries": _whole(0, 1000),
    "headers": _header_map,
    "ca_file": _optional_text,
    "verify": _flag,
    "proxy": _optional_str,
    "include_usage": _flag,
    "max_event_bytes": _whole(1024, 2**31),
    "azure": _optional_flag,
    "api_version": _optional_text,
    "think_tags": _flag,
    "api": _api_name,
    "keep_alive": _flag,
    "on_retry": _optional_callable,
}


class _Call(NamedTuple):
    """The per-call options of stream()/astream(): never sent in the body."""

    model: Optional[str] = None
    system: Optional[str] = None
    api: Optional[str] = None
    timeout: Optional[float] = None
    extra_headers: Optional[Mapping[str, str]] = None
    extra_body: Optional[Mapping[str, Any]] = None
    extra_query: Optional[Mapping[str, Any]] = None
    accumulate: bool = True
    tap: Optional[Callable[[bytes], None]] = None


class _BaseClient:
    """The options and request building that Client and AsyncClient share (no I/O)."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        total_timeout: Optional[float] = None,
        max_retries: int = 2,
        headers: Optional[Mapping[str, str]] = None,
        ca_file: Optional[str] = None,
        verify: bool = True,
        proxy: Optional[str] = None,
        include_usage: bool = True,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        azure: Optional[bool] = None,
        api_version: Optional[str] = None,
        think_tags: bool = False,
        api: str = "chat",
        keep_alive: bool = True,
        on_retry: Optional[Callable[[int, StreamliteError, float], None]] = None,
        **unknown: Any,
    ) -> None:
        self._session: Optional[_Session] = None
        if unknown:
            raise ConfigError("unknown option %r; the options are: %s" % (sorted(unknown)[0], ", ".join(_CLIENT_OPTIONS)))
        given = locals()
        options = {name: check(name, given[name]) for name, check in _CLIENT_OPTIONS.items()}
        self.base_url: str = options["base_url"]
        host = urlsplit(self.base_url).hostname or ""
        self.azure: bool = _is_azure_host(host) if options["azure"] is None else options["azure"]
        self._api_key: Optional[str] = options["api_key"]
        if api_key is None:
            names = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY") if self.azure else ("OPENAI_API_KEY",)
            self._api_key = _key_option("the API key in the environment", _env(*names))
        self._configure(options)
        settings = _Settings(options["connect_timeout"], options["read_timeout"], options["ca_file"],
                             options["verify"], options["proxy"], options["keep_alive"])
        self._session = _Session(settings, options["max_retries"], options["on_retry"])
        self._secrets = self._secrets_of(settings, host)

    def _configure(self, options: Dict[str, Any]) -> None:
        self.connect_timeout: float = options["connect_timeout"]
        self.read_timeout: float = options["read_timeout"]
        self.total_timeout: Optional[float] = options["total_timeout"]
        self.max_retries: int = options["max_retries"]
        self.headers: Dict[str, str] = options["headers"]
        self.include_usage: bool = options["include_usage"]
        self.max_event_bytes: int = options["max_event_bytes"]
        self.api_version: Optional[str] = options["api_version"]
        self.think_tags: bool = options["think_tags"]
        self.api: str = options["api"]
        self.keep_alive: bool = options["keep_alive"]

    def _secrets_of(self, settings: _Settings, host: str) -> List[str]:
        """What must never show in an error: the key, and the credentials of every proxy this
        client may use (explicit or from the environment) with their base64 tokens."""
        proxies = [settings.proxy]
        if settings.proxy is None and not settings.no_proxy:
            for scheme in ("http", "https"):
                url = _proxy_from_env(scheme, host)
                try:
                    proxies.append(_Proxy(url) if url else None)
                except ConfigError:
                    pass  # a malformed proxy variable: the request will say so
        found: List[Optional[str]] = [self._api_key]
        found += [secret for proxy in proxies if proxy is not None for secret in proxy.secrets]
        return _secret_list(found + list(_header_secrets(self.headers)))

    def __repr__(self) -> str:
        return "%s(base_url=%r)" % (type(self).__name__, _without_credentials(self.base_url))

    def _prepare(self, messages: Messages, call: _Call, body: Dict[str, Any]) -> Tuple[_Session, _Request, _StreamOptions]:
        """Everything one call needs, checked before any I/O."""
        session = self._session
        if session is None:
            raise ConfigError("this client is not usable: its construction failed")
        for name in body:
            if name in _CLIENT_OPTIONS:
                raise ConfigError("%s is a Client option: %s(%s=...)" % (name, type(self).__name__, name))
        api = _api_name("api", call.api or self.api)
        deadline_seconds = _optional_seconds("timeout", call.timeout) or self.total_timeout
        extra_headers = _header_map("extra_headers", call.extra_headers)
        if call.extra_query is not None and not isinstance(call.extra_query, Mapping):
            raise ConfigError("extra_query must be a mapping")
        endpoint = _endpoint(self.base_url, azure=self.azure, model=call.model, api_version=self.api_version,
                             api=api, query=call.extra_query)
        payload = _request_body(api, messages, call.model, call.system, body, self.include_usage)
        if call.extra_body is not None:
            if not isinstance(call.extra_body, Mapping):
                raise ConfigError("extra_body must be a mapping")
            payload.update(call.extra_body)
        headers = self._request_headers(extra_headers)
        deadline = time.monotonic() + deadline_seconds if deadline_seconds else None
        request = _Request(endpoint, headers, payload, deadline, self._secrets + _header_secrets(extra_headers))
        options = _StreamOptions(self.max_event_bytes, call.accumulate, call.tap, self.think_tags, api)
        return session, request, options

    def _request_headers(self, extra: Mapping[str, str]) -> Dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        given = {name.lower() for name in list(self.headers) + list(extra)}
        if self._api_key is not None and not given & {"authorization", "api-key"}:
            if self.azure:
                headers["api-key"] = self._api_key
            else:
                headers["Authorization"] = "Bearer " + self._api_key
        headers.update(self.headers)
        headers.update(extra)
        return headers


def _header_secrets(headers: Mapping[str, str]) -> List[str]:
    """Credentials passed as headers (x-api-key, Authorization: Bearer <token>, ...)."""
    found: List[str] = []
    for name, value in headers.items():
        if _CREDENTIAL_HEADER.search(name):
            found += [value.strip(), value.strip().split(" ")[-1]]
    return _secret_list(found)


def _secret_list(found: Sequence[Optional[str]]) -> List[str]:
    """Strings under 8 characters are left out: replacing them would mangle ordinary words."""
    return [secret for secret in found if secret and len(secret) >= 8]


class _StreamView:
    """What Stream and AsyncStream show of their decoder."""

    _decoder: _StreamDecoder

    @property
    def completion(self) -> Completion:
        """The Completion so far (complete once the stream has ended)."""
        return self._decoder.completion()

    @property
    def stats(self) -> Stats:
        """Timings of this stream so far."""
        return self._decoder.stats()

    @property
    def last_chunk(self) -> Optional[Dict[str, Any]]:
        """The raw chunk object the latest deltas came from."""
        return self._decoder.last_chunk

    @property
    def events(self) -> int:
        """Events received so far."""
        return self._decoder.events

    @property
    def retries(self) -> int:
        """Requests sent again (retries) before the first delta."""
        return self._decoder.retries

    def __repr__(self) -> str:
        state = "closed" if self._link.closed or self._link.response is None else "open"  # type: ignore[attr-defined]
        return "<streamlite.%s %s, %d events>" % (type(self).__name__, state, self._decoder.events)

    def _chunk_log(self) -> Any:
        import collections

        log: Any = collections.deque()
        self._decoder.chunk_log = log
        return log


def _drained(log: Any) -> Iterator[Dict[str, Any]]:
    """The chunks in a chunk log, oldest first, each taken out as it is handed over."""
    while log:
        yield log.popleft()


def _never_started(generator: Any) -> bool:
    """Whether a generator was never iterated (as inspect.getgeneratorstate says GEN_CREATED)."""
    if generator.gi_frame is None or generator.gi_running:
        return False
    suspended = getattr(generator, "gi_suspended", None)  # Python 3.11+
    return not suspended if suspended is not None else generator.gi_frame.f_lasti < 0


class Stream(_StreamView):
    """A streaming completion: an iterator of deltas and a context manager.

    Iterating yields each Delta the moment its event arrives. `completion` is the Completion so
    far; `last_chunk` is the raw chunk object the latest deltas came from. Leaving early (break,
    close() from any thread, the `with` block, dropping the last reference) closes the
    connection; a stream read to its end leaves it to the client for the next request.
    """

    def __init__(self, session: _Session, request: _Request, options: _StreamOptions,
                 link: Optional[_Link] = None) -> None:
        self._link = link = link or _Link()  # a batch makes it first, to interrupt the request
        self._decoder = decoder = _StreamDecoder("", options)
        self._iterator: Optional[Generator[Delta, None, None]] = None
        try:
            link.response = _sync_open(session, request, decoder, link)
        except StreamliteError as exc:
            raise _scrub(exc, request.secrets)
        decoder.content_type = link.response.head.content_type
        self._iterator = _sync_deltas(session, request, decoder, link)

    def __iter__(self) -> Iterator[Delta]:
        self._handed_out = True  # the iterator lives on its own now (`for d in client.stream(...)`)
        return self._iterator  # type: ignore[return-value]

    def __next__(self) -> Delta:
        return next(self._iterator)  # type: ignore[arg-type]

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and not getattr(self, "_handed_out", False) and _never_started(iterator):
            self.close()  # never iterated: no generator will close the connection

    def close(self) -> None:
        """Close the connection (idempotent; from any thread: a read under way stops at once
        and raises APIConnectionError there). The Completion so far stays readable."""
        link = self._link
        if link.closed:
            return
        iterator = self._iterator
        if iterator is None or getattr(iterator, "gi_running", False):
            link.interrupt()  # another thread is sending or reading: wake it, it closes the rest
            return
        link.closed = True
        if iterator is not None:
            iterator.close()
        if link.response is not None:
            link.response.release(None, False)
        if self._decoder.ended_at is None:
            self._decoder.ended_at = time.monotonic()

    def chunks(self) -> Iterator[Dict[str, Any]]:
        """Iterate the raw chunk objects instead of deltas, every one of them, also those that
        hold no delta (deltas are still accumulated)."""
        log = self._chunk_log()
        try:
            for _ in self:
                yield from _drained(log)
        except StreamliteError:
            yield from _drained(log)  # the chunks that came before the error, then the error
            raise
        yield from _drained(log)


class AsyncStream(_StreamView):
    """A streaming completion on asyncio: an async iterator of deltas and an async context
    manager. The request is sent on `async with` (or the first `async for` step). Leaving the
    loop or the block, cancelling the task, or aclose() (from any task) closes the connection.
    """

    def __init__(self, session: _Session, request: _Request, options: _StreamOptions) -> None:
        self._session = session
        self._request = request
        self._link = _Link()
        self._decoder = _StreamDecoder("", options)
        self._iterator: Optional[AsyncIterator[Delta]] = None

    async def _open(self) -> None:
        """Send the request, in a task of its own: aclose() from another task cancels it."""
        link = self._link
        if self._iterator is not None or link.closed:
            return
        try:
            link.response = await _async_linked(link, _async_open(self._session, self._request, self._decoder))
        except StreamliteError as exc:
            raise _scrub(exc, self._request.secrets)
        self._decoder.content_type = link.response.head.content_type
        self._iterator = _async_deltas(self._session, self._request, self._decoder, link)

    async def __aenter__(self) -> AsyncStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Delta:
        await self._open()
        if self._iterator is None:
            raise StopAsyncIteration
        link = self._link
        link.reading = True
        try:
            return await self._iterator.__anext__()
        finally:
            link.reading = False

    async def aclose(self) -> None:
        """Close the connection (idempotent; from another task, a read under way stops at
        once and raises APIConnectionError there)."""
        link = self._link
        if link.closed:
            return
        link.closed = True
        if link.opening is not None:  # another task is sending the request: stop it
            link.opening.cancel()
            return
        if link.reading:
            link.response.abort()
            return
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]
        if link.response is not None:
            await link.response.release(None, False)
        if self._decoder.ended_at is None:
            self._decoder.ended_at = time.monotonic()

    def __del__(self) -> None:
        response = getattr(getattr(self, "_link", None), "response", None)
        if response is not None:
            response.close_now()

    async def chunks(self) -> AsyncIterator[Dict[str, Any]]:
        """The raw chunk objects instead of deltas (as Stream.chunks)."""
        log = self._chunk_log()
        try:
            async for _ in self:
                for chunk in _drained(log):
                    yield chunk
        except StreamliteError as exc:
            for chunk in _drained(log):
                yield chunk
            raise exc
        for chunk in _drained(log):
            yield chunk


class Client(_BaseClient):
    """A client for one OpenAI-compatible endpoint; safe to share between threads.

    Args:
        base_url: the API root, e.g. "https://api.openai.com/v1" (default: OPENAI_BASE_URL,
            else OpenAI). A URL that already ends in an API's path is used as it is.
        api_key: sent as "Authorization: Bearer" ("api-key" for Azure); default OPENAI_API_KEY
            (AZURE_OPENAI_API_KEY too for Azure).
        connect_timeout: seconds to establish a connection (TCP, proxy tunnel and TLS).
        read_timeout: the longest silence between bytes, also the wait for the first byte.
        total_timeout: a deadline for each whole call, retries included (None: no deadline).
        max_retries: retries of connection failures and 408/409/429/5xx before any delta.
        headers: extra request headers.
        ca_file: a CA bundle to verify TLS with (also SSL_CERT_FILE, REQUESTS_CA_BUNDLE, ...).
        verify: False turns off TLS certificate and host name checks.
        proxy: an http:// proxy URL; None reads HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY;
            "" uses no proxy at all.
        include_usage: ask for the usage chunk (stream_options.include_usage).
        max_event_bytes: the largest SSE line or event accepted.
        azure: Azure OpenAI mode (api-key header, deployment URLs, api-version); None detects
            it from the host name.
        api_version: the Azure api-version (default OPENAI_API_VERSION, else 2024-10-21).
        think_tags: split reasoning that the provider inlines in the content as
            <think>...</think> into ReasoningDelta (off by default: content stays verbatim).
        api: the wire API: "chat" (/chat/completions), "responses" (/responses) or
            "completions" (the legacy /completions); each call may choose another.
        keep_alive: keep idle connections and reuse them (False: one connection per request).
        on_retry: called as on_retry(attempt, error, delay) before each retry (attempt counts
            from 1): to show what failed and how long the client waits.
    """

    def stream(self, messages: Messages, *, model: Optional[str] = None, system: Optional[str] = None,
               api: Optional[str] = None, timeout: Optional[float] = None, extra_headers: Optional[Mapping[str, str]] = None,
               extra_body: Optional[Mapping[str, Any]] = None, extra_query: Optional[Mapping[str, Any]] = None,
               accumulate: bool = True, **body: Any) -> Stream:
        """Send a streaming request and return its Stream.

        Args:
            messages: a prompt (str), or a list of OpenAI chat messages.
            model: the model name (Azure: the deployment); omitted from the body when None.
            system: a system message put before the messages.
            api: this call's wire API ("chat", "responses", "completions").
            timeout: this call's total deadline in seconds (instead of total_timeout).
            extra_headers, extra_body, extra_query: more headers, body fields, query
                parameters for this call.
            accumulate: keep a running Completion (False: constant memory; only the finish
                reason and usage are kept).
            **body: any other field of the request body, sent unchanged (temperature,
                max_tokens, tools, response_format, provider-specific fields...).
        Raises:
            ConfigError before any I/O; APIError, APIConnectionError, ProtocolError.
        """
        call = _Call(model, system, api, timeout, extra_headers, extra_body, extra_query, accumulate)
        return Stream(*self._prepare(messages, call, body))

    def complete(self, messages: Messages, **options: Any) -> Completion:
        """Stream a completion to its end and return the Completion (options as stream())."""
        with self.stream(messages, **options) as stream:
            for _ in stream:
                pass
        return stream.completion

    def batch(self, requests: Iterable[Any], *, concurrency: int = 8, rpm: Optional[float] = None,
              tpm: Optional[float] = None, **body: Any) -> Iterator[BatchResult]:
        """Run many requests (prompt strings, bodies or OpenAI Batch input objects) at most
        `concurrency` at a time, starts paced by `rpm`/`tpm`; yield a BatchResult for each in
        completion order. `body` fields (model=...) apply to requests that do not set them."""
        return _batch_run(self, *_batch_planned(requests, concurrency, rpm, tpm, body))

    def close(self) -> None:
        """Close the idle connections; streams still open close theirs when they end. The client
        still works afterwards, without keeping connections for reuse."""
        if self._session is not None:
            for conn in self._session.close():
                conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_session", None) is not None:
            self.close()


class AsyncClient(_BaseClient):
    """The asyncio client: the same options as Client, with astream() and acomplete()."""

    def astream(self, messages: Messages, *, model: Optional[str] = None, system: Optional[str] = None,
                api: Optional[str] = None, timeout: Optional[float] = None, extra_headers: Optional[Mapping[str, str]] = None,
                extra_body: Optional[Mapping[str, Any]] = None, extra_query: Optional[Mapping[str, Any]] = None,
                accumulate: bool = True, **body: Any) -> AsyncStream:
        """Return an AsyncStream: `async with client.astream(...) as s: async for delta in s:`
        (arguments as Client.stream)."""
        call = _Call(model, system, api, timeout, extra_headers, extra_body, extra_query, accumulate)
        return AsyncStream(*self._prepare(messages, call, body))

    def abatch(self, requests: Iterable[Any], *, concurrency: int = 8, rpm: Optional[float] = None,
               tpm: Optional[float] = None, **body: Any) -> AsyncIterator[BatchResult]:
        """The async Client.batch: `async for result in aclient.abatch(requests, model=...)`."""
        return _abatch_run(self, *_batch_planned(requests, concurrency, rpm, tpm, body))  # type: ignore[no-any-return]

    async def acomplete(self, messages: Messages, **options: Any) -> Completion:
        """Stream a completion to its end and return the Completion (options as astream())."""
        async with self.astream(messages, **options) as stream:
            async for _ in stream:
                pass
        return stream.completion

    async def aclose(self) -> None:
        """Close the idle connections (as Client.close)."""
        self._close_idle()

    def _close_idle(self) -> None:
        if self._session is not None:
            for conn in self._session.close():
                conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_session", None) is not None:
            self._close_idle()


def _split_options(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    options = {name: kwargs.pop(name) for name in _CLIENT_OPTIONS if name in kwargs and name != "api"}
    options.setdefault("keep_alive", False)  # a throwaway client: one connection, closed after
    return options, kwargs


def stream(messages: Messages, **kwargs: Any) -> Stream:
    """Stream a completion with a throwaway Client.

    Keywords that are Client options (base_url, api_key, timeouts, ...) configure the client;
    model, system, api and everything else go to Client.stream().
    """
    options, rest = _split_options(dict(kwargs))
    return Client(**options).stream(messages, **rest)


def complete(messages: Messages, **kwargs: Any) -> Completion:
    """Stream a completion to its end with a throwaway Client; return the Completion."""
    options, rest = _split_options(dict(kwargs))
    return Client(**options).complete(messages, **rest)


# Batch: many requests from one list, paced, retried, resumable ------------------------------
#
# Strategy: the decisions live in I/O-free pieces that take the clock as an argument: input
# parsing (_batch_parse_lines, _batch_item), the output shape (_batch_output_line), the resume
# scan of an earlier output (_batch_scan_output), and _BatchPlan, which says which request starts
# next and when (evenly spaced starts for rpm and tpm, a hard cap on requests in flight, one
# shared cooldown after a 429) and what each failure means (retry now, later, or give up). The
# two drivers (_batch on threads, _abatch on asyncio tasks) only wait, send and report back.
#
# Retries: the client's own retry loop sleeps inside one request, unseen by the other workers.
# Batch therefore also retries at its level: a 429 (or a 503 with Retry-After) that comes out of
# the client pauses every worker until the server's Retry-After (one shared cooldown) and puts the
# request back at the head of the queue; other transient failures (408, 409, 5xx, connection
# errors, timeouts, a cut-off stream) are retried `retries` times with backoff for that request
# only. The command line runs its Client with max_retries=0 and gives --max-retries to batch, so
# every 429 reaches the shared cooldown at once.

#: How many times one request is sent again after rate-limit answers (429, 503 + Retry-After).
_BATCH_RATE_LIMIT_RETRIES = 20
#: The Batch input `url` suffixes batch can send, and the api each one means.
_BATCH_URLS = (("/chat/completions", "chat"), ("/responses", "responses"), ("/completions", "completions"))
#: The body field that holds the input, for each api.
_BATCH_INPUT_FIELD = {"chat": "messages", "responses": "input", "completions": "prompt"}


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one batch request: `completion` when it succeeded, else `error` (whose
    `.partial` holds what arrived before the failure, if anything).

    `line` is the request's 1-based position in the input (its physical line in a file),
    `status_code` 200 on success or the HTTP status of the failure, `request_id` the server's
    request id, `attempts` how many times it was sent (0: the request was not valid).
    """

    custom_id: str
    completion: Optional[Completion] = None
    error: Optional[StreamliteError] = None
    line: Optional[int] = None
    status_code: Optional[int] = None
    request_id: Optional[str] = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class _BatchRequest:
    """One request of a batch, with its scheduling state (mutated only by _BatchPlan)."""

    __slots__ = ("custom_id", "line", "body", "problem", "tokens", "attempts", "failures", "throttled")

    def __init__(self, custom_id: str, line: int, body: Dict[str, Any], problem: Optional[str] = None) -> None:
        self.custom_id = custom_id
        self.line = line
        self.body = body  # model, messages (input, prompt) and every other field; api, system
        self.problem = problem  # why this cannot be a request; then it is never sent
        self.tokens = 0  # the estimate --tpm paces by
        self.attempts = 0
        self.failures = 0  # transient failures retried so far (rate limits not counted)
        self.throttled = 0  # rate-limit answers so far

    def __repr__(self) -> str:
        return "_BatchRequest(%r, line=%d)" % (self.custom_id, self.line)


def _batch_item(item: Any, number: int) -> _BatchRequest:
    """A request from a prompt string or a JSON object: the OpenAI Batch input shape
    {"custom_id", "method", "url", "body"} or a bare body with an optional custom_id."""
    if isinstance(item, _BatchRequest):
        return item
    default_id = "line-%d" % number
    if isinstance(item, str):
        if not item.strip():
            return _BatchRequest(default_id, number, {}, "the prompt is empty")
        return _BatchRequest(default_id, number, {"messages": [{"role": "user", "content": item}]})
    if not isinstance(item, Mapping):
        what = "a JSON array" if isinstance(item, (list, tuple)) else type(item).__name__
        return _BatchRequest(default_id, number, {}, "a request is a prompt or a JSON object, got %s" % what)
    fields = dict(item)
    custom_id = fields.pop("custom_id", None)
    if custom_id is None:
        custom_id = default_id
    elif not isinstance(custom_id, str) or not custom_id:
        return _BatchRequest(default_id, number, {}, "custom_id must be a non-empty string, got %.80r" % (custom_id,))
    api = "chat"
    if "body" in fields and "messages" not in fields:  # the Batch input shape
        method = fields.get("method", "POST")
        if not isinstance(method, str) or method.upper() != "POST":
            return _BatchRequest(custom_id, number, {}, "method must be POST, got %.80r" % (method,))
        url = fields.get("url")
        if url is not None:
            path = str(url).split("?")[0].rstrip("/")
            api = next((name for suffix, name in _BATCH_URLS if path.endswith(suffix)), "")
            if not api:
                return _BatchRequest(custom_id, number, {}, "url %.80r is not a chat completions, responses or completions endpoint" % (url,))
        if not isinstance(fields["body"], Mapping):
            return _BatchRequest(custom_id, number, {}, "body must be a JSON object")
        fields = dict(fields["body"])
    if api == "responses" and "messages" in fields:
        pass  # chat messages sent to the Responses API: the client translates them
    elif _BATCH_INPUT_FIELD[api] not in fields:
        return _BatchRequest(custom_id, number, {}, "the body has no %s" % _BATCH_INPUT_FIELD[api])
    if api != "chat":
        fields["api"] = api
    return _BatchRequest(custom_id, number, fields)


def _batch_parse_lines(data: bytes) -> List[_BatchRequest]:
    """The requests of a JSONL (or prompts) file; line numbers count every physical line."""
    requests = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            requests.append(_BatchRequest("line-%d" % number, number, {}, "the line is not UTF-8 (%s)" % exc.reason))
            continue
        if text.startswith("\ufeff"):
            text = text[1:].strip()  # a byte order mark at the start of the file
        if not text:
            continue
        item: Any = text
        if text[0] in "{[\"":
            try:
                item = json.loads(text)
            except _JSON_ERRORS as exc:
                if text[0] != '"':
                    requests.append(_BatchRequest("line-%d" % number, number, {}, "the line is not valid JSON: %s" % _clip(str(exc), 120)))
                    continue
                item = text  # a prompt that happens to start with a quote
        requests.append(_batch_item(item, number))
    return requests


def _batch_prepare(requests: Iterable[Any], defaults: Optional[Mapping[str, Any]] = None) -> List[_BatchRequest]:
    """Requests as _BatchRequest, with the defaults under each body; ConfigError for a repeated
    custom_id (checked over every request, so all shards of a file agree)."""
    if isinstance(requests, (str, bytes, Mapping)):
        raise ConfigError("requests must be a list (or any iterable) of prompts and request objects, got a %s" % type(requests).__name__)
    prepared = [_batch_item(item, number) for number, item in enumerate(requests, 1)]
    seen: Dict[str, int] = {}
    for request in prepared:
        if request.custom_id in seen:
            raise ConfigError("custom_id %.80r is used twice (lines %d and %d); each request needs its own" % (
                request.custom_id, seen[request.custom_id], request.line))
        seen[request.custom_id] = request.line
        if request.problem is None:
            if defaults:
                body = dict(defaults)
                body.update(request.body)
                request.body = body
            request.tokens = _batch_estimate_tokens(request.body)
    return prepared


def _batch_estimate_tokens(body: Mapping[str, Any]) -> int:
    """What --tpm counts for a request: its text length / 4 plus the most it may generate."""
    text = sum(len(_json_text(value)) for key, value in body.items() if key in ("messages", "input", "prompt", "system", "tools", "instructions"))
    most = next((body[key] for key in ("max_completion_tokens", "max_tokens", "max_output_tokens") if isinstance(body.get(key), int)), 0)
    return max(1, text // 4 + max(0, most))


def _batch_shard(text: str) -> Tuple[int, int]:
    """K/N -> (K, N) with 1 <= K <= N; ConfigError otherwise."""
    k, slash, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (0, 0)
    if not slash or not 1 <= shard[0] <= shard[1]:
        raise ConfigError("--shard takes K/N with 1 <= K <= N, e.g. --shard 2/4, got %.40r" % (text,))
    return shard


def _batch_in_shard(custom_id: str, shard: Tuple[int, int]) -> bool:
    import zlib

    return zlib.crc32(custom_id.encode("utf-8")) % shard[1] == shard[0] - 1


def _batch_scan_output(data: bytes) -> Tuple[set[str], List[Tuple[int, int, Optional[str], bool]], int]:
    """An earlier output file: the custom_ids with a success line, each whole line as (start,
    end, custom_id, succeeded), and the length of the whole lines (a torn last line, from a kill
    in mid-write, is past it)."""
    done: set[str] = set()
    lines = []
    whole = data.rfind(b"\n") + 1
    start = 0
    while start < whole:
        end = data.index(b"\n", start) + 1
        custom_id, ok = None, False
        try:
            line = json.loads(data[start:end].decode("utf-8"))
        except (UnicodeDecodeError,) + _JSON_ERRORS:
            line = None
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            custom_id = line["custom_id"]
            response = line.get("response")
            ok = line.get("error") is None and isinstance(response, dict) and response.get("status_code") == 200
            if ok:
                done.add(custom_id)
        lines.append((start, end, custom_id, ok))
        start = end
    return done, lines, whole


def _batch_resume(path: str, ids: Iterable[str]) -> set[str]:
    """Read an earlier output at `path`; return the custom_ids already done. The file is repaired
    for appending: a torn last line is cut off, and the failure lines of requests that will run
    again are dropped (the file is rewritten beside itself and renamed over), so each request
    ends up with exactly one line."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return set()  # /dev/stdout, a pipe: nothing to resume from
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise ConfigError("cannot read the output file %s: %s" % (path, exc.strerror or exc)) from None
    done, lines, whole = _batch_scan_output(data)
    rerun = set(ids) - done
    drop = [(start, end) for start, end, custom_id, ok in lines if not ok and custom_id in rerun]
    if drop:
        kept = b"".join(data[start:end] for start, end, custom_id, ok in lines if ok or custom_id not in rerun)
        temporary = "%s.%d.tmp" % (path, os.getpid())
        with open(temporary, "wb") as file:
            try:
                file.write(kept)
                file.flush()
                os.fsync(file.fileno())
            except BaseException:
                os.remove(temporary)  # a full disk: no half-written copy left behind
                raise
        os.replace(temporary, path)
    elif whole < len(data):
        os.truncate(path, whole)
    return done


def _batch_retry(request: _BatchRequest, error: StreamliteError, retries: int) -> Optional[Tuple[float, bool]]:
    """Whether to send a failed request again: (delay, shared) or None to give up. A rate-limit
    answer is shared: every worker waits `delay` (the server's Retry-After)."""
    status = getattr(error, "status", None)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, APIError) and (status == 429 or (status == 503 and retry_after)):
        if request.throttled >= _BATCH_RATE_LIMIT_RETRIES or (retry_after or 0) > MAX_RETRY_AFTER_SECONDS:
            return None
        request.throttled += 1
        return (retry_after if retry_after else _batch_backoff(request.throttled - 1)), True
    if isinstance(error, APIError):
        transient = status is not None and (status in (408, 409) or status >= 500)
    else:
        transient = isinstance(error, APIConnectionError)  # timeouts and cut-off streams too
    if not transient or request.failures >= retries:
        return None
    request.failures += 1
    return _batch_backoff(request.failures - 1), False


def _batch_backoff(attempt: int) -> float:
    return float(min(0.5 * 2**attempt, 8.0))


class _BatchPlan:
    """Which request starts next, and when; what a finished request means. No I/O: every method
    takes the clock (time.monotonic()) from its caller, and the drivers hold its lock.

    Starts are spaced evenly: 60/rpm seconds apart, and a start reserves its estimated tokens
    for tokens*60/tpm seconds, so the budget of a minute is never spent as one burst. A shared
    cooldown (a rate-limit answer) holds every start until it ends. At most `concurrency`
    requests are in flight.
    """

    def __init__(
        self, requests: Sequence[_BatchRequest], *, concurrency: int, rpm: Optional[float], tpm: Optional[float], retries: int
    ) -> None:
        import collections

        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency must be a whole number >= 1, got %r" % (concurrency,))
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ConfigError("%s must be a positive number, got %r" % (name, value))
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError("retries must be a whole number >= 0, got %r" % (retries,))
        self.concurrency = concurrency
        self.retries = retries
        self.interval = 60.0 / rpm if rpm else 0.0
        self.token_seconds = 60.0 / tpm if tpm else 0.0  # seconds each estimated token reserves
        self.pending = collections.deque(request for request in requests if request.problem is None)
        self.total = len(self.pending)
        self.later: List[Tuple[float, int, _BatchRequest]] = []  # (not before, order, request): retries
        self.order = 0
        self.running = 0
        self.next_start = float("-inf")  # rpm: the earliest next start
        self.tokens_free = float("-inf")  # tpm: when the last start's tokens are paid for
        self.cooldown_until = float("-inf")
        self.stopped = False
        self.reached = False  # an HTTP answer came back: the endpoint can be reached
        self.fatal: Optional[BaseException] = None  # the error that ends the run, to raise
        self.succeeded = self.failed = self.throttled = self.tokens = 0

    @property
    def finished(self) -> bool:
        """True once no request is waiting or in flight (or the run was stopped)."""
        return self.stopped or (not self.pending and not self.later and not self.running)

    def take(self, now: float) -> Union[_BatchRequest, float, None]:
        """The request to start now, or how long to wait before asking again (None: until a
        request in flight finishes)."""
        if self.stopped or self.running >= self.concurrency:
            return None
        soonest = min(self.later) if self.later else None  # few: at most the requests that were in flight
        ready = soonest is not None and soonest[0] <= now
        if not ready and not self.pending:
            return soonest[0] - now if soonest is not None else None
        wait = max(self.cooldown_until, self.next_start, self.tokens_free) - now
        if wait > 0:
            return wait
        if soonest is not None and ready:
            self.later.remove(soonest)
            request = soonest[2]
        else:
            request = self.pending.popleft()
        self.running += 1
        request.attempts += 1
        self.next_start = now + self.interval
        self.tokens_free = now + request.tokens * self.token_seconds
        return request

    def finish(
        self, request: _BatchRequest, completion: Optional[Completion], error: Optional[StreamliteError], now: float
    ) -> Optional[BatchResult]:
        """Record the end of a request: its BatchResult, or None when it will be sent again."""
        self.running -= 1
        if error is None:
            assert completion is not None
            self.reached = True
            self.succeeded += 1
            usage = completion.usage
            self.tokens += (usage.total_tokens or 0) if usage is not None else 0
            return BatchResult(request.custom_id, completion, None, request.line, 200, completion.request_id, request.attempts)
        status = getattr(error, "status", None)
        self.reached = self.reached or status is not None or error.partial is not None
        if status == 429:
            self.throttled += 1
        retry = None if self.stopped else _batch_retry(request, error, self.retries)
        if retry is not None:
            delay, shared = retry
            if shared:
                self.cooldown_until = max(self.cooldown_until, now + delay)
            self.order += 1
            self.later.append((now + delay, self.order, request))
            return None
        connected = isinstance(error, APITimeoutError) and error.which != "connect"
        if not self.reached and isinstance(error, APIConnectionError) and error.partial is None and not connected:
            self.fatal = error  # nothing reached the server: stop instead of failing every request
            self.stopped = True
            return None
        self.failed += 1
        if status is None and error.partial is not None:
            status = 200  # the answer started, then broke off
        return BatchResult(request.custom_id, None, error, request.line, status, getattr(error, "request_id", None), request.attempts)

    def stop(self) -> None:
        self.stopped = True

    def abort(self, error: BaseException) -> None:
        """A worker failed outside any request (the caller's on_retry hook raised): the run
        stops, and the caller gets the error."""
        if self.fatal is None:
            self.fatal = error
        self.stopped = True


def _batch_invalid(request: _BatchRequest) -> BatchResult:
    error = ConfigError("%s (line %d)" % (request.problem, request.line))
    return BatchResult(request.custom_id, None, error, request.line, None, None, 0)


def _batch_call(request: _BatchRequest) -> Tuple[Messages, Dict[str, Any]]:
    """The arguments of client.stream() for a request: messages (or input, prompt), then keywords."""
    body = dict(request.body)
    api = body.get("api", "chat")
    messages = body.pop("messages", None)
    if messages is None:
        messages = body.pop(_BATCH_INPUT_FIELD.get(api, "messages"), None)
    system = body.get("system")
    if system is not None and isinstance(messages, (list, tuple)) and messages:
        first = messages[0]
        if isinstance(first, Mapping) and first.get("role") in ("system", "developer"):
            del body["system"]  # the request has its own system message
    return messages, body


def _batch_outcome_error(exc: BaseException) -> StreamliteError:
    if isinstance(exc, StreamliteError):
        return exc
    return ConfigError("the request cannot be sent: %s" % (exc,))  # e.g. a body field named like a parameter


def _batch_planned(requests: Iterable[Any], concurrency: int, rpm: Optional[float], tpm: Optional[float],
                   defaults: Optional[Mapping[str, Any]], retries: int = 0) -> Tuple[List[_BatchRequest], _BatchPlan]:
    """The requests, checked (ConfigError before any I/O for bad arguments or a repeated
    custom_id), and the plan of their starts."""
    prepared = _batch_prepare(requests, defaults)
    return prepared, _BatchPlan(prepared, concurrency=concurrency, rpm=rpm, tpm=tpm, retries=retries)


_BATCH_WORKER_DONE = object()  # what a worker hands over last


class _BatchThreads:
    """The thread side of _batch: workers take steps from the plan (under `condition`) and
    hand results over (under `delivered`); stop() ends them and closes streams in flight."""

    def __init__(self, client: Client, plan: _BatchPlan) -> None:
        import collections
        import threading

        self.client = client
        self.plan = plan
        self.condition = threading.Condition()  # guards the plan
        self.delivered = threading.Condition()  # guards results
        self.results: Any = collections.deque()
        self.streams: Dict[int, _Link] = {}  # the request each worker is on, by thread
        self.streams_lock = threading.Lock()
        self.stopping = False
        count = min(plan.concurrency, plan.total)
        self.workers = [threading.Thread(target=self.work, name="streamlite-batch", daemon=True) for _ in range(count)]

    def next_step(self) -> Optional[_BatchRequest]:
        """The next request to send, when the plan lets it start; None when all is done."""
        with self.condition:
            while True:
                step = self.plan.take(time.monotonic())
                if isinstance(step, _BatchRequest):
                    return step
                if self.plan.finished:
                    self.condition.notify_all()
                    return None
                self.condition.wait(step)

    def work(self) -> None:
        try:
            step = self.next_step()
            while step is not None:
                completion, error = self.send(step)
                with self.condition:
                    result = self.plan.finish(step, completion, error, time.monotonic())
                    self.condition.notify_all()
                if result is not None:
                    self.hand_over(result)
                step = self.next_step()
        except Exception as exc:  # the caller's on_retry hook raised: end the whole run with it
            with self.condition:
                self.plan.abort(exc)
                self.condition.notify_all()
        finally:
            self.hand_over(_BATCH_WORKER_DONE)

    def send(self, request: _BatchRequest) -> Tuple[Optional[Completion], Optional[StreamliteError]]:
        """Send one request as client.stream() would and read it to the end. Its link is known
        from the start: stop() interrupts it while it is sent, answered, paused or read."""
        import threading

        key, link = threading.get_ident(), _Link()
        with self.streams_lock:
            if self.stopping:
                link.closed = True  # stop() came first: nothing more is sent
            self.streams[key] = link
        try:
            messages, kwargs = _batch_call(request)
            call = _Call(**{name: kwargs.pop(name) for name in _Call._fields[:-1] if name in kwargs})  # not tap
            with Stream(*self.client._prepare(messages, call, kwargs), link) as stream:
                for _ in stream:
                    pass
            return stream.completion, None
        except (StreamliteError, TypeError, ValueError) as exc:
            return None, _batch_outcome_error(exc)
        finally:
            with self.streams_lock:
                self.streams.pop(key, None)

    def hand_over(self, item: Any) -> None:
        with self.delivered:
            self.results.append(item)
            self.delivered.notify()

    def collect(self) -> Iterator[BatchResult]:
        alive = len(self.workers)
        while alive:
            with self.delivered:
                while not self.results:
                    self.delivered.wait()
                result = self.results.popleft()
            if result is _BATCH_WORKER_DONE:
                alive -= 1
                if self.plan.fatal is not None:
                    return  # the run ends now: stop() closes what is still in flight
            else:
                yield result

    def stop(self) -> None:
        with self.condition:
            self.plan.stop()
            self.condition.notify_all()
        with self.streams_lock:
            self.stopping = True
            links = list(self.streams.values())
        for link in links:
            link.interrupt()  # from this thread: the worker's send, wait or read ends at once
        deadline = time.monotonic() + 5.0
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))


def _batch_run(client: Client, prepared: Sequence[_BatchRequest], plan: _BatchPlan) -> Iterator[BatchResult]:
    for request in prepared:
        if request.problem is not None:
            yield _batch_invalid(request)
    threads = _BatchThreads(client, plan)
    for worker in threads.workers:
        worker.start()
    try:
        yield from threads.collect()
        if plan.fatal is not None:
            raise plan.fatal
    finally:
        threads.stop()


async def _abatch_send(aclient: AsyncClient, request: _BatchRequest) -> Tuple[Optional[Completion], Optional[StreamliteError]]:
    try:
        messages, kwargs = _batch_call(request)
        async with aclient.astream(messages, **kwargs) as stream:
            async for _ in stream:
                pass
        return stream.completion, None
    except (StreamliteError, TypeError, ValueError) as exc:
        return None, _batch_outcome_error(exc)


class _BatchTasks:
    """The asyncio side of _abatch: tasks take steps from the plan; `changed` wakes the ones
    waiting for the plan to let them start."""

    def __init__(self, aclient: AsyncClient, plan: _BatchPlan) -> None:
        import asyncio

        self.aclient = aclient
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.results: Any = asyncio.Queue()
        self.changed = self.loop.create_future()  # resolved (and replaced) when the plan changes

    def notify(self) -> None:
        if not self.changed.done():
            self.changed.set_result(None)
        self.changed = self.loop.create_future()

    async def work(self) -> None:
        import asyncio

        try:
            while True:
                step = self.plan.take(time.monotonic())
                if isinstance(step, _BatchRequest):
                    completion, error = await _abatch_send(self.aclient, step)
                    result = self.plan.finish(step, completion, error, time.monotonic())
                    self.notify()
                    if result is not None:
                        self.results.put_nowait(result)
                elif self.plan.finished:
                    self.notify()
                    return
                else:
                    await asyncio.wait([self.changed], timeout=step)
        except Exception as exc:  # the caller's on_retry hook raised: end the whole run with it
            self.plan.abort(exc)
            self.notify()
        finally:
            self.results.put_nowait(_BATCH_WORKER_DONE)


async def _abatch_run(aclient: AsyncClient, prepared: Sequence[_BatchRequest], plan: _BatchPlan) -> Any:
    import asyncio

    for request in prepared:
        if request.problem is not None:
            yield _batch_invalid(request)
    tasks = _BatchTasks(aclient, plan)
    workers = [asyncio.ensure_future(tasks.work()) for _ in range(min(plan.concurrency, plan.total))]
    try:
        alive = len(workers)
        while alive:
            result = await tasks.results.get()
            if result is _BATCH_WORKER_DONE:
                alive -= 1
                if plan.fatal is not None:
                    break  # the run ends now: the tasks still in flight are cancelled below
            else:
                yield result
        if plan.fatal is not None:
            raise plan.fatal
    finally:
        plan.stop()
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)


def _batch_message(choice: Choice, base: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    message: Dict[str, Any] = dict(base) if base else {"role": "assistant"}
    message.setdefault("role", "assistant")
    if "content" not in message:
        message["content"] = choice.content if choice.content or not (choice.tool_calls or choice.refusal) else None
    if choice.refusal is not None:
        message.setdefault("refusal", choice.refusal)
    if choice.reasoning:
        message.setdefault("reasoning_content", choice.reasoning)
    if choice.tool_calls and "tool_calls" not in message:
        message["tool_calls"] = [
            {"id": call.id, "type": call.type, "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ]
    return message


def _batch_completion_body(completion: Completion) -> Dict[str, Any]:
    """A Completion as the chat.completion object of a non-streaming answer."""
    choices = completion.choices or (
        Choice(index=0, content=completion.content, reasoning=completion.reasoning, refusal=completion.refusal,
               tool_calls=completion.tool_calls, finish_reason=completion.finish_reason),
    )
    first = getattr(completion, "message", None)  # the round-trip message, where the client has one
    usage = completion.usage
    if usage is None:
        usage_json: Optional[Dict[str, Any]] = None
    elif usage.raw:
        usage_json = dict(usage.raw)
    else:
        counts = (("prompt_tokens", usage.prompt_tokens), ("completion_tokens", usage.completion_tokens), ("total_tokens", usage.total_tokens))
        usage_json = {name: value for name, value in counts if value is not None}
    return {
        "id": completion.id or "chatcmpl-" + os.urandom(12).hex(),
        "object": "chat.completion",
        "created": completion.created if completion.created is not None else int(time.time()),
        "model": completion.model,
        "choices": [
            {
                "index": choice.index,
                "message": _batch_message(choice, first if choice.index == 0 and isinstance(first, Mapping) else None),
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for choice in choices
        ],
        "usage": usage_json,
    }


def _batch_error_code(error: StreamliteError) -> str:
    if isinstance(error, APIError):
        if isinstance(error.code, str) and error.code:
            return error.code
        return "http_%d" % error.status if error.status else "api_error"
    if isinstance(error, APITimeoutError):
        return "timeout"
    if isinstance(error, APIConnectionError):
        return "cut_off" if error.partial is not None else "connection_error"
    if isinstance(error, ProtocolError):
        return "protocol_error"
    return "invalid_request"


def _batch_output_line(result: BatchResult) -> Dict[str, Any]:
    """A result in the OpenAI Batch output shape: {"id", "custom_id", "response": {"status_code",
    "request_id", "body"}, "error"}. A failure has "error": {"code", "message"}, and a response
    when the server answered: the partial chat.completion if part of it arrived, else its error body."""
    line: Dict[str, Any] = {"id": "batch_req_" + os.urandom(12).hex(), "custom_id": result.custom_id, "response": None, "error": None}
    error = result.error
    if error is None:
        assert result.completion is not None
        line["response"] = {"status_code": 200, "request_id": result.request_id, "body": _batch_completion_body(result.completion)}
        return line
    line["error"] = {"code": _batch_error_code(error), "message": " ".join(str(error).split()) or type(error).__name__}
    if error.partial is not None:
        body: Any = _batch_completion_body(error.partial)
    else:
        body = getattr(error, "body", None)
        body = body if isinstance(body, Mapping) else None
    if result.status_code is not None or error.partial is not None:
        line["response"] = {"status_code": result.status_code, "request_id": result.request_id, "body": body}
    return line

###############################################################################
# Command line ################################################################
###############################################################################
#
# `python streamlite.py ...`, `python -m streamlite ...` and the `streamlite` script. The only
# place that prints, and the only place that catches broadly: StreamliteError (a line on stderr
# and a distinct exit code), KeyboardInterrupt (130), SIGTERM (143) and a closed pipe (141, quiet).
# Options are declared in one table (_OPTIONS) and their ranges checked from another (_RANGES).

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_CONNECTION = 4
EXIT_TIMEOUT = 5
EXIT_CUT_OFF = 6
EXIT_PROTOCOL = 7
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143

_CLI_EPILOG = """\
examples:
  streamlite "Tell me a joke"                       # key from OPENAI_API_KEY
  cat notes.txt | streamlite -m gpt-4.1 "Summarise"  # stdin becomes context after the prompt
  streamlite -a photo.jpg -a https://example.com/cat.png "What is in these pictures?"
  streamlite -c talk.json "Name three rivers"; streamlite -c talk.json "Which is longest?"
  streamlite chat -c talk.json                       # an interactive session (/help inside)
  streamlite --base-url http://127.0.0.1:8080/v1 --jsonl "Hi" | jq -c .
  streamlite -X reasoning_effort='"high"' -X top_p=0.9 --stats "Why is the sky blue?"
  streamlite -- chat                                 # the word "chat" as a prompt
  streamlite batch prompts.txt -o results.jsonl -m gpt-4.1-mini   # a file of requests (batch --help)

environment:
  OPENAI_API_KEY     the API key (or the variable named by --api-key-env); AZURE_OPENAI_API_KEY
                     for an Azure host when OPENAI_API_KEY is unset
  OPENAI_BASE_URL    the API root (default https://api.openai.com/v1)
  STREAMLITE_MODEL   the default model
  NO_COLOR           no colour on stderr
  HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE   as for curl

exit codes:
  0 success   2 usage error (also: input or an environment variable that is not UTF-8, an
               unreadable -c or -a file, output that cannot be written)
  3 API error (HTTP status or an error in the stream)
  4 connection failure   5 timeout   6 stream cut off mid-way   7 protocol error
  130 interrupted (Ctrl-C)   141 output pipe closed   143 terminated (SIGTERM)
"""

_MAX_TOKENS_HELP = (
    "the longest reply, in tokens, sent as max_tokens (default: the server's limit); reasoning "
    "models (OpenAI o-series, gpt-5) count their reasoning too and take "
    "-X max_completion_tokens=N instead")

# (flags, argparse keywords): every option has its default and a sentence of help
_OPTIONS: Tuple[Tuple[Tuple[str, ...], Dict[str, Any]], ...] = (
    (("-m", "--model"), dict(help="the model (default: $STREAMLITE_MODEL, else none: the server's default)")),
    (("-s", "--system"), dict(help="a system message (default: none; with -c only when the file starts)")),
    (("-c", "--conversation"), dict(metavar="FILE", help=(
        "read the conversation (a JSON array of messages) from FILE if it exists, then write it back "
        "with this turn added, atomically (default: no file)"))),
    (("-a", "--attach"), dict(action="append", default=[], metavar="FILE|URL", help=(
        "attach an image, .wav/.mp3 audio, PDF or text file, or an image URL (not fetched) to "
        "the prompt; repeatable (default: none)"))),
    (("--no-stdin",), dict(action="store_true", help="never read stdin, even when it is a pipe (default: off)")),
    (("--base-url",), dict(help="the API root (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)")),
    (("--api",), dict(choices=("chat", "responses", "completions"), help=(
        "the wire API: chat (/chat/completions), responses (/responses) or completions "
        "(legacy /completions) (default: chat)"))),
    (("--azure",), dict(action="store_true", default=None, help=(
        "Azure OpenAI: api-key header, deployment URLs, AZURE_OPENAI_API_KEY (default: when the "
        "host is *.openai.azure.com or another Azure OpenAI host)"))),
    (("--api-key-env",), dict(default="OPENAI_API_KEY", metavar="NAME",
                              help="read the key from this environment variable (default: OPENAI_API_KEY)")),
    (("-H", "--header"), dict(dest="header", action="append", default=[], metavar="'NAME: VALUE'",
                              help="an extra request header; repeatable (default: none)")),
    (("-t", "--temperature"), dict(type=float, help="the sampling temperature (default: the server's)")),
    (("--max-tokens",), dict(type=int, metavar="N", help=_MAX_TOKENS_HELP)),
    (("-X",), dict(dest="extra", action="append", default=[], metavar="KEY=JSON", help=(
        "any other body field, e.g. -X top_p=0.9 -X 'stop=[\"\\n\"]'; a value that is not JSON "
        "is a string; repeatable (default: none)"))),
    (("--no-usage",), dict(action="store_true", help="do not ask for the usage chunk (default: ask)")),
    (("--reasoning",), dict(choices=("show", "hide", "only"), default="show", help=(
        "show: reasoning on stderr; hide: not at all (no reasoning lines with --jsonl either); "
        "only: reasoning on stdout, no content (default: show)"))),
    (("--jsonl",), dict(action="store_true", help=(
        "one JSON object per delta on stdout, then the completion, or an error object (default: off)"))),
    (("--stats",), dict(action="store_true", help="timings on stderr at the end, also after an error (default: off)")),
    (("--raw",), dict(action="store_true", help="print the response body exactly as received (default: off)")),
    (("--color",), dict(choices=("auto", "always", "never"), default="auto",
                        help="dim the reasoning on stderr (default: auto: on a terminal without NO_COLOR)")),
    (("-v", "--verbose"), dict(action="store_true", help=(
        "say on stderr what each retry follows and how long it waits (default: on when stderr "
        "is a terminal)"))),
    (("--connect-timeout",), dict(type=float, default=10.0, metavar="S",
                                  help="seconds to connect, TLS included (default: 10)")),
    (("--read-timeout",), dict(type=float, default=120.0, metavar="S",
                               help="the longest silence from the server, in seconds (default: 120)")),
    (("--total-timeout",), dict(type=float, metavar="S", help="a deadline for the whole call, in seconds (default: none)")),
    (("--max-retries",), dict(type=int, default=2, metavar="N", help=(
        "retries of connection failures, 408, 409, 429 and 5xx before the reply starts (default: 2)"))),
    (("--ca-file",), dict(help="a CA bundle to verify TLS with (default: $SSL_CERT_FILE, else the system's)")),
    (("--insecure",), dict(action="store_true", help="do not verify TLS certificates (default: verify)")),
    (("--proxy",), dict(help="an http:// proxy; \"\" for none (default: $HTTPS_PROXY / $HTTP_PROXY)")),
)

# (attribute, flag, what it must be, test): checked after parsing; None means "not given"
_RANGES: Tuple[Tuple[str, str, str, Callable[[Any], bool]], ...] = (
    ("connect_timeout", "--connect-timeout", "a positive number of seconds", lambda v: 0 < v < 1e9),
    ("read_timeout", "--read-timeout", "a positive number of seconds", lambda v: 0 < v < 1e9),
    ("total_timeout", "--total-timeout", "a positive number of seconds", lambda v: 0 < v < 1e9),
    ("max_retries", "--max-retries", "a whole number from 0 to 100", lambda v: 0 <= v <= 100),
    ("max_tokens", "--max-tokens", "a whole number of 1 or more", lambda v: v >= 1),
    ("temperature", "--temperature", "a finite number", lambda v: v == v and abs(v) != float("inf")),
)


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="streamlite",
        usage="streamlite [options] [prompt ...]\n       streamlite chat [options]\n"
        "       streamlite batch [options] IN.jsonl",
        description="Stream a chat completion from any OpenAI-compatible API. "
        "`streamlite chat` starts an interactive session; `streamlite batch` runs a file of "
        "requests (see `streamlite batch --help`).",
        epilog=_CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="*", help=(
        'the prompt; "-" reads stdin; piped stdin is added after the prompt (default: stdin)'))
    for flags, keywords in _OPTIONS:
        parser.add_argument(*flags, **keywords)
    parser.add_argument("--version", action="version", version="streamlite " + __version__,
                        help="print the version and exit")
    return parser


def _parse_args(argv: Sequence[str]) -> Any:
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    # `streamlite chat [options]` is the session; `streamlite -- chat` the prompt "chat"
    args.chat = args.prompt == ["chat"] and "--" not in argv
    if args.raw and args.jsonl:
        parser.error("--raw and --jsonl cannot be combined: --raw prints the body as it came")
    try:
        args.body = _extra_fields(args.extra)
        args.headers = _header_fields(args.header)
    except ValueError as exc:
        parser.error(str(exc))
    if args.model is None and "model" not in args.body:
        args.model = os.environ.get("STREAMLITE_MODEL") or None
    return args


def _check_ranges(args: Any) -> None:
    for name, flag, requirement, test in _RANGES:
        value = getattr(args, name)
        if value is not None and not test(value):
            raise ConfigError("%s must be %s, got %s" % (flag, requirement, "%g" % value if isinstance(value, float) else value))


def _extra_fields(pairs: Sequence[str]) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError("-X takes KEY=VALUE, got %r" % pair)
        try:
            body[key] = json.loads(value)
        except _JSON_ERRORS:
            body[key] = value
    return body


def _header_fields(lines: Sequence[str]) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or _has_control(value):
            raise ValueError("-H takes 'Name: value' (a token, a colon, no line breaks), got %r" % _clip(line, 60))
        headers[name] = value
    return headers


# What the CLI and the Client read from the environment as text (paths such as SSL_CERT_FILE
# may be any bytes: the OS takes them back as they came)
_ENVIRON_TEXT = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_VERSION", "STREAMLITE_MODEL",
                 "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


def _check_environ(key_name: str) -> None:
    """Variables the OS handed over in another encoding hold lone surrogates: a usage error that
    names the variable (never its value: it may be a key), before anything is sent."""
    for name in _ENVIRON_TEXT + (key_name,):
        value = os.environ.get(name)
        if value is not None and not _is_utf8(value):
            raise ConfigError("the environment variable %s is not valid UTF-8; set it in UTF-8" % name)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_problem(data: bytes) -> Optional[str]:
    """Where `data` stops being UTF-8 ("byte 0xe9 at offset 3"), or None when it is UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "byte 0x%02x at offset %d" % (data[exc.start], exc.start)
    return None


def _check_argv(argv: Sequence[str]) -> None:
    """Arguments the OS handed over in another encoding arrive as lone surrogates: say which."""
    for number, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("argument %d is not valid UTF-8 (%s); pass text in UTF-8"
                              % (number, arg.encode("utf-8", "backslashreplace").decode("ascii")[:60])) from None


def _read_stdin() -> str:
    """All of stdin as text; not UTF-8 is a ConfigError that says where."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, embedding)
        return sys.stdin.read()
    data = stream.read()
    problem = _utf8_problem(data)
    if problem is not None:
        raise ConfigError("stdin is not valid UTF-8 (%s); convert it first, e.g. with iconv -f latin1 -t utf-8" % problem)
    return str(data.decode("utf-8-sig"))


def _stdin_text() -> Optional[str]:
    """Piped or redirected stdin, or None for a terminal, /dev/null or no stdin at all."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return None
    return _read_stdin()


def _prompt(words: Sequence[str], use_stdin: bool = True) -> Optional[str]:
    piped: Optional[str] = None
    if "-" in words:
        words = [word for word in words if word != "-"]
        piped = _read_stdin() if use_stdin else None
    elif use_stdin:
        piped = _stdin_text()
    prompt = " ".join(words)
    if piped and prompt:
        return prompt + "\n\n" + piped
    return prompt or piped or None


def _plain(value: Any) -> Any:
    """A value type as dicts and lists for json.dumps. Unlike dataclasses.asdict it does not
    copy the decoded JSON the types hold (raw, extra, extras): a copy would recurse in Python
    and fail on JSON nested a few hundred levels deep."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


_DELTA_NAMES = {ContentDelta: "content", ReasoningDelta: "reasoning", RefusalDelta: "refusal",
                ToolCallDelta: "tool_call", Finish: "finish"}


def _delta_json(delta: Delta) -> Dict[str, Any]:
    kind = type(delta)
    if kind is Usage:
        return dict(type="usage", **{k: v for k, v in _plain(delta).items() if k != "choice"})
    out: Dict[str, Any] = {"type": _DELTA_NAMES.get(kind, kind.__name__.lower())}
    out.update((k, v) for k, v in _plain(delta).items() if k != "raw")
    return out


def _completion_json(completion: Completion, reasoning: bool = True) -> Dict[str, Any]:
    out: Dict[str, Any] = _plain(completion)
    out["type"] = "completion"
    if completion.stats is not None:
        out["stats"]["tokens_per_second"] = _rate(completion.stats)
    if not reasoning:  # --reasoning hide: none of it on stdout
        for holder in [out] + list(out.get("choices") or ()):
            holder.pop("reasoning", None)
            holder.pop("reasoning_details", None)
    return out


def _error_json(error: StreamliteError) -> Dict[str, Any]:
    """The --jsonl error object: every field a script may branch on (the key never in any)."""
    return {
        "type": "error",
        "error": type(error).__name__,
        "message": str(error),
        "status": getattr(error, "status", None),
        "code": getattr(error, "code", None),
        "error_type": getattr(error, "type", None),
        "request_id": getattr(error, "request_id", None),
        "retry_after": getattr(error, "retry_after", None),
        "which": getattr(error, "which", None),
    }


def _rate(stats: Stats) -> Optional[float]:
    """Tokens per second, only for a streamed reply: one event (stream=false) has no rate."""
    return stats.tokens_per_second if stats.events > 1 else None


def _format_stats(stats: Stats) -> str:
    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else "%.3f s" % value

    def millis(value: Optional[float]) -> str:
        return "-" if value is None else "%.1f ms" % (value * 1000)

    rate = _rate(stats)
    return "streamlite: stats: first byte %s, first reasoning %s, first content %s, total %s, %s, %d events, gaps p50 %s p95 %s max %s, %d bytes, %d retries, %s connection" % (
        seconds(stats.time_to_first_byte), seconds(stats.time_to_first_reasoning),
        seconds(stats.time_to_first_content), seconds(stats.duration),
        "-" if rate is None else "%.1f tokens/s" % rate, stats.events,
        millis(stats.gap_p50), millis(stats.gap_p95), millis(stats.gap_max), stats.bytes, stats.retries,
        "reused" if stats.connection_reused else "new",
    )


_CUT_SHORT = {
    "length": "the reply was cut short by the token limit (finish_reason length); raise --max-tokens",
    "content_filter": "the reply was cut short by the provider's content filter (finish_reason content_filter)",
}


class _Printer:
    """Writes deltas as the CLI shows them; remembers whether stdout needs a final newline.
    Plain output shows choice 0 only (-X n=2 would interleave them); --jsonl shows every choice."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.out = sys.stdout
        self.err = sys.stderr
        color = args.color == "always" or (
            args.color == "auto" and not os.environ.get("NO_COLOR") and self.err.isatty()
            and os.environ.get("TERM") != "dumb"
        )
        self.dim, self.undim = ("\x1b[2m", "\x1b[0m") if color else ("", "")
        self.out_tail = "\n"  # the last character written to stdout
        self.err_tail = "\n"

    def write(self, text: str, *, to_err: bool = False) -> None:
        if not text:
            return
        stream = self.err if to_err else self.out
        if to_err:  # noted first: Ctrl-C or SIGTERM may land inside flush(), after the bytes left
            self.err_tail = text[-1]
        else:
            self.out_tail = text[-1]
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk; on stderr there is nowhere left to say so
            if not to_err:
                raise _OutputFailed(exc.strerror or str(exc)) from None

    def note(self, text: str) -> None:
        """One line on stderr, on a line of its own; control characters (a server's) made visible."""
        self.end_line()
        self.write("streamlite: %s\n" % _visible(text), to_err=True)

    def delta(self, delta: Delta) -> None:
        kind = type(delta)
        mode = self.args.reasoning
        if self.args.jsonl:
            if not (kind is ReasoningDelta and mode == "hide"):
                self.write(_json_text(_delta_json(delta), ensure_ascii=False) + "\n")
            return
        if delta.choice != 0:  # type: ignore[attr-defined]
            return
        if kind is ReasoningDelta and mode != "hide":
            if mode == "only":
                self.write(delta.text)  # type: ignore[attr-defined]
            else:
                self.write(self.dim + delta.text + self.undim, to_err=True)  # type: ignore[attr-defined]
        elif kind in (ContentDelta, RefusalDelta) and mode != "only":
            if self.err_tail != "\n":
                self.write("\n", to_err=True)  # reasoning ended; content starts
            self.write(delta.text)  # type: ignore[attr-defined]

    def finish(self, completion: Completion) -> None:
        if self.args.jsonl:
            line = _completion_json(completion, self.args.reasoning != "hide")
            self.write(_json_text(line, ensure_ascii=False) + "\n")
            return
        if completion.choices and all(choice.index != 0 for choice in completion.choices):
            self._other_choice(completion.choices[0])
            return
        if self.args.reasoning != "only":
            for call in completion.tool_calls:
                self.end_line()
                self.write("[tool call %s] %s %s\n" % (call.id or call.index, call.name, call.arguments))
        self.end_line()
        if completion.finish_reason in _CUT_SHORT:
            self.note(_CUT_SHORT[completion.finish_reason])
        if len(completion.choices) > 1:
            self.note("the server sent %d choices; this shows choice 0 (--jsonl shows all)" % len(completion.choices))

    def _other_choice(self, choice: Choice) -> None:
        """A reply without a choice 0 (its deltas were not shown): the first choice, whole, now."""
        self.end_line()
        self.write(choice.reasoning if self.args.reasoning == "only" else choice.content or choice.refusal or "")
        self.end_line()
        self.note("the server sent no choice 0; this is choice %d (--jsonl shows every choice)" % choice.index)

    def stats(self, stats: Stats) -> None:
        self.end_line()
        self.write(_format_stats(stats) + "\n", to_err=True)

    def end_line(self) -> None:
        if self.out_tail != "\n":
            self.write("\n")
        if self.err_tail != "\n":
            self.write("\n", to_err=True)


class _OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`) while the stream was writing to it."""


class _OutputFailed(Exception):
    """stdout cannot be written (a full disk): one error line, exit 2. Not an OSError: the
    stream must not see it when the --raw tap raises it."""


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    """Text for a line on stderr: C0 and C1 controls but tab and newline (ESC, BEL: a server's
    terminal escape sequences) as \\x1b-style escapes."""
    return _CONTROLS.sub(lambda match: "\\x%02x" % ord(match.group()), text)


def _error_line(error: StreamliteError) -> str:
    return "streamlite: error: %s\n" % _visible(" ".join(str(error).split()) or type(error).__name__)


def _quiet_stdout() -> None:
    """stdout is gone or full: point it at /dev/null so the exit flush is quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _Terminated(KeyboardInterrupt):
    """SIGTERM: stopped like Ctrl-C (the connection closes, stdout ends its line), exit 143."""


def _exit_code(error: StreamliteError) -> int:
    if isinstance(error, APITimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, APIConnectionError):
        return EXIT_CUT_OFF if error.partial is not None else EXIT_CONNECTION
    if isinstance(error, APIError):
        return EXIT_API_ERROR
    if isinstance(error, ProtocolError):
        return EXIT_PROTOCOL
    return EXIT_USAGE  # ConfigError


def _report_error(printer: _Printer, error: StreamliteError) -> int:
    printer.end_line()
    if printer.args.jsonl:
        printer.write(_json_text(_error_json(error), ensure_ascii=False) + "\n")
    printer.write(_error_line(error), to_err=True)
    return _exit_code(error)


class _Retries:
    """Counts retries and, when visible (--verbose, or stderr on a terminal), reports each."""

    def __init__(self, printer: _Printer, visible: bool) -> None:
        self.printer = printer
        self.visible = visible
        self.count = 0

    def __call__(self, attempt: int, error: BaseException, delay: float) -> None:
        self.count += 1
        if self.visible:
            _report_retry(attempt, error, delay, self.printer)


def _report_retry(attempt: int, error: BaseException, delay: float, printer: Optional[_Printer] = None) -> None:
    """One line on stderr per retry: which attempt failed, why, and how long until the next.
    The client calls it as on_retry(attempt, error, delay) (attempt counts from 1)."""
    status = getattr(error, "status", None)
    reason = getattr(error, "message", None) if status else None
    reason = " ".join((reason or str(error)).split()) or type(error).__name__
    text = _visible("attempt %d failed (%s%s); retrying in %.1f s" % (
        attempt, "HTTP %s: " % status if status else "", _clip(reason, 200), delay))
    if printer is not None:
        printer.note(text)
    else:
        sys.stderr.write("streamlite: %s\n" % text)
        sys.stderr.flush()


# The conversation file (-c) ----------------------------------------------------------------


def _load_conversation(path: str) -> List[Dict[str, Any]]:
    """The messages in FILE ([] when it does not exist or is empty); anything else is a ConfigError."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError("cannot read conversation %s: %s" % (path, exc.strerror or exc)) from None
    if not data.strip():
        return []
    try:
        messages = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError("conversation %s is not valid JSON: %s" % (path, _clip(str(exc), 120))) from None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ConfigError("conversation %s must be a JSON array of messages with a role each" % path)
    return messages


def _save_conversation(path: str, messages: Sequence[Mapping[str, Any]]) -> None:
    """Write the messages to a temporary file in FILE's folder, then rename it over FILE: an
    interruption at any moment leaves the old file whole, or the new one."""
    import tempfile

    text = json.dumps(list(messages), indent=2, ensure_ascii=False) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError("cannot write conversation %s: %s" % (path, exc.strerror or exc)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(text)  # backslashreplace: a lone surrogate becomes a valid JSON escape
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, _file_mode(path))
        os.replace(temp, path)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ConfigError("cannot write conversation %s: %s" % (path, exc.strerror or exc)) from None
        raise


def _file_mode(path: str) -> int:
    """The mode FILE has, or the one a new file gets (mkstemp's 0600 would surprise)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


# One turn ----------------------------------------------------------------------------------


def _client(args: Any, retries: _Retries) -> Client:
    return _new_client(args, retries.printer.note, on_retry=retries)


def _new_client(args: Any, note: Callable[[str], None], **overrides: Any) -> Client:
    """The Client of a single call, a chat or a batch (the same key rules and warning)."""
    options: Dict[str, Any] = dict(
        connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
        total_timeout=args.total_timeout, max_retries=args.max_retries, ca_file=args.ca_file,
        verify=not args.insecure, proxy=args.proxy, include_usage=not args.no_usage,
    )
    if args.azure:
        options["azure"] = True
    if args.headers:  # Client headers: credentials given this way are scrubbed from errors too
        options["headers"] = args.headers
    options.update(overrides)
    client = Client(args.base_url, _api_key(args), **options)
    warning = _key_warning(args, client)
    if warning is not None:
        note(warning)
    return client


def _api_key(args: Any) -> Optional[str]:
    """The key from --api-key-env's variable; None lets Client() read OPENAI_API_KEY (or, for an
    Azure host, AZURE_OPENAI_API_KEY), exactly as it does in Python."""
    if args.api_key_env == "OPENAI_API_KEY":
        return None
    key = os.environ.get(args.api_key_env, "")
    if not key.strip():  # named on purpose but unset: never fall back to another variable's key
        raise ConfigError("--api-key-env %s: that environment variable is not set" % args.api_key_env)
    return key


def _key_warning(args: Any, client: Client) -> Optional[str]:
    """The warning for a call that goes out without any key, or None."""
    if args.api_key_env != "OPENAI_API_KEY" or os.environ.get("OPENAI_API_KEY", "").strip():
        return None
    if client.azure and os.environ.get("AZURE_OPENAI_API_KEY", "").strip():
        return None
    if {name.lower() for name in args.headers} & {"authorization", "api-key", "x-api-key"}:
        return None
    hint = " (AZURE_OPENAI_API_KEY is read for an Azure host or with --azure)" if os.environ.get("AZURE_OPENAI_API_KEY") else ""
    return "warning: no API key: OPENAI_API_KEY is not set%s; sending none (fine for a local server)" % hint


# -X names that are stream()'s own parameters: sent as body fields through extra_body
_CALL_PARAMETERS = ("system", "api", "timeout", "extra_headers", "extra_body", "extra_query", "accumulate")


def _call_options(args: Any) -> Dict[str, Any]:
    """model (-m, else -X model=...), the body fields of the flags, and api= only when given."""
    options = dict(args.body)
    if "messages" in options:
        raise ConfigError("-X messages=... cannot be given: the prompt (arguments or stdin) and -c FILE make the messages")
    model = options.pop("model", None)
    extra = {name: options.pop(name) for name in _CALL_PARAMETERS if name in options}
    if extra:
        options["extra_body"] = extra
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    options["model"] = args.model if args.model is not None else model
    if args.api is not None:
        options["api"] = args.api
    return options


class _RawOut:
    """--raw: the body's bytes on stdout as they arrive. With a secret to hide (the key, a
    credential header) each line waits for its end, so that a key a server echoes back is
    redacted as in error messages, also when it comes cut in two pieces."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.out = sys.stdout.buffer
        self.secrets = [secret for secret in secrets if secret]
        self.pending = b""

    def __call__(self, piece: bytes) -> None:
        data = self.pending + piece
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1 if self.secrets else len(data)
        self.pending = data[end:]
        self._write(data[:end])

    def flush(self) -> None:
        data, self.pending = self.pending, b""
        self._write(data)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        if self.secrets:  # surrogateescape: bytes that are not UTF-8 come out as they came
            data = _scrub_text(data.decode("utf-8", "surrogateescape"), self.secrets).encode("utf-8", "surrogateescape")
        try:
            self.out.write(data)
            self.out.flush()
        except BrokenPipeError:
            raise _OutputClosed() from None  # not an OSError: the stream must not see it
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from None


def _open_stream(client: Client, messages: Messages, args: Any, raw: Optional[_RawOut]) -> Stream:
    options = _call_options(args)
    if raw is None:
        return client.stream(messages, **options)
    # --raw needs the body's bytes as they arrive: the tap of a call, the one private hook here
    call = _Call(options.pop("model"), api=options.pop("api", None), extra_body=options.pop("extra_body", None), tap=raw)
    return Stream(*client._prepare(messages, call, options))


def _one_turn(client: Client, args: Any, printer: _Printer, messages: Messages, retries: _Retries) -> Completion:
    """Stream one reply to the printer and return it; --stats prints even after an error,
    also one that came before the body (the call's own clock, the retries counted)."""
    started = time.monotonic()
    stream: Optional[Stream] = None
    raw = _RawOut(client._secrets) if args.raw else None
    try:
        stream = _open_stream(client, messages, args, raw)
        with stream:
            for delta in stream:
                if raw is None:
                    printer.delta(delta)
    finally:
        if raw is not None:
            raw.flush()
        if args.stats:
            stats = stream.stats if stream is not None else Stats(duration=time.monotonic() - started, retries=retries.count)
            printer.stats(stats)
    completion = stream.completion
    if not args.raw:
        printer.finish(completion)
    return completion


def _first_messages(args: Any, history: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The conversation before the first prompt: -s only when it starts (a loop may pass it
    every time; the file's own system message stands)."""
    if history:
        return history
    return [{"role": "system", "content": args.system}] if args.system is not None else []


def _run_cli(args: Any, printer: _Printer, retries: _Retries) -> int:
    prompt = _prompt(args.prompt, not args.no_stdin)
    if prompt is None:
        raise ConfigError("no prompt: give one as arguments or on stdin (see --help)")
    if args.api == "completions":  # the legacy API takes the prompt itself
        if args.attach or args.conversation or args.system is not None:
            raise ConfigError("--api completions takes a prompt only (no -a, -c or -s)")
        _one_turn(_client(args, retries), args, printer, prompt, retries)
        return EXIT_OK
    history = _load_conversation(args.conversation) if args.conversation else []
    message = user(prompt, *args.attach)
    client = _client(args, retries)
    messages = _first_messages(args, history) + [message]
    completion = _one_turn(client, args, printer, messages, retries)
    if args.conversation:
        _save_conversation(args.conversation, messages + [completion.message])
    return EXIT_OK


# main --------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_argv(argv)
    except ConfigError as exc:
        sys.stderr.write(_error_line(exc))
        return EXIT_USAGE
    if argv and argv[0] == "batch":
        return _batch_main(argv[1:])
    try:
        with _sigterm_interrupts():
            return _main(argv)
    except (BrokenPipeError, _OutputClosed):  # also while reporting a later error
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except _OutputFailed as exc:
        _quiet_stdout()
        sys.stderr.write("streamlite: error: cannot write to stdout: %s\n" % exc)
        return EXIT_USAGE


def _main(argv: List[str]) -> int:
    args = _parse_args(argv)
    printer = _Printer(args)
    retries = _Retries(printer, args.verbose or printer.err.isatty())
    try:
        _check_ranges(args)
        _check_environ(args.api_key_env)
        return _chat(args, printer, retries) if args.chat else _run_cli(args, printer, retries)
    except StreamliteError as exc:
        return _report_error(printer, exc)
    except _Terminated:
        printer.end_line()
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        printer.end_line()
        return EXIT_INTERRUPTED


class _sigterm_interrupts:
    """SIGTERM raises _Terminated in the main thread while the CLI runs (then the old handler)."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.previous: Any = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc_info: Any) -> None:
        if self.previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self.previous)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise _Terminated()


# streamlite chat ---------------------------------------------------------------------------

_CHAT_HELP = """\
Each line is a turn; the reply streams as it arrives. Ctrl-C stops a reply, Ctrl-D leaves.
  a line ending in \\   continues on the next line
  \"\"\"               on a line of its own starts a block; another \"\"\" ends it
  /system TEXT        set the system message      /clear   forget the conversation
  /save FILE          write the conversation      /exit    leave (also /quit, Ctrl-D)
"""


class _ChatSession:
    """The conversation of `streamlite chat`, saved to -c FILE after every turn."""

    def __init__(self, args: Any, printer: _Printer) -> None:
        self.path = args.conversation
        self.printer = printer
        history = _load_conversation(self.path) if self.path else []
        self.messages = _first_messages(args, history)
        self.attachments = list(args.attach)  # go with the first turn

    def command(self, line: str, printer: _Printer) -> bool:
        """Run a /command; False means leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/clear":
            self.messages = [m for m in self.messages[:1] if m.get("role") == "system"]
            self._save()
        elif name == "/system" and rest:
            system = {"role": "system", "content": rest}
            has = bool(self.messages) and self.messages[0].get("role") == "system"
            self.messages[:1 if has else 0] = [system]
            self._save()
        elif name == "/save" and rest:
            if self._write(os.path.expanduser(rest)):
                printer.note("saved %d messages to %s" % (len(self.messages), rest))
        else:
            printer.write(_CHAT_HELP, to_err=True)
        return True

    def add_turn(self, message: Dict[str, Any], reply: Dict[str, Any]) -> None:
        self.messages += [message, reply]
        self.attachments = []
        self._save()

    def _save(self) -> None:
        if self.path:
            self._write(self.path)

    def _write(self, path: str) -> bool:
        """Save to `path`; a failure is reported and the session goes on (the messages are kept)."""
        try:
            _save_conversation(path, self.messages)
        except ConfigError as exc:
            self.printer.write(_error_line(exc), to_err=True)
            self.printer.note("the conversation is kept in memory; /save FILE writes it elsewhere")
            return False
        return True


def _read_turn(interactive: bool) -> Optional[str]:
    """One turn's text: a line, lines joined by a trailing backslash, or a triple-quoted
    block; None at the end of input (Ctrl-D)."""
    lines: List[str] = []
    block = False
    while True:
        try:
            line = input(("... " if lines or block else "> ") if interactive else "")
        except EOFError:
            return "\n".join(lines) if lines else None
        if line.strip() == '"""':
            if block:
                return "\n".join(lines)
            block = True
        elif block:
            lines.append(line)
        elif line.endswith("\\"):
            lines.append(line[:-1])
        else:
            lines.append(line)
            return "\n".join(lines)


def _chat(args: Any, printer: _Printer, retries: _Retries) -> int:
    try:
        import readline  # noqa: F401  (history and line editing for input(), where it exists)
    except ImportError:  # pragma: no cover - Windows
        pass
    session = _ChatSession(args, printer)
    client = _client(args, retries)
    interactive = sys.stdin.isatty()
    if interactive:
        printer.write("streamlite chat: /help for help, Ctrl-D to leave\n", to_err=True)
    with _lenient_stdin():
        while True:
            try:
                text = _read_turn(interactive)
            except _Terminated:
                raise
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, as in Python's REPL
                printer.write("\n", to_err=True)
                continue
            if text is None:
                printer.end_line()
                return EXIT_OK
            if not _valid_turn(text, printer):
                continue
            if text.startswith("/") and not session.command(text.strip(), printer):
                return EXIT_OK
            if text.strip() and not text.startswith("/"):
                _chat_turn(client, args, printer, session, text, retries)


class _lenient_stdin:
    """While chat runs, stdin decodes with surrogateescape: a line that is not UTF-8 reaches
    _valid_turn (which says so) instead of raising UnicodeDecodeError out of input()."""

    def __enter__(self) -> None:
        self.errors = getattr(sys.stdin, "errors", None)
        if self.errors is not None and hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors="surrogateescape")

    def __exit__(self, *exc_info: Any) -> None:
        if self.errors is not None and hasattr(sys.stdin, "reconfigure"):
            sys.stdin.reconfigure(errors=self.errors)


def _valid_turn(text: str, printer: _Printer) -> bool:
    """False (and a line on stderr) for a turn that came in bytes stdin's encoding cannot read."""
    if _is_utf8(text):
        return True
    encoding = getattr(sys.stdin, "encoding", None) or "utf-8"
    data = text.encode(encoding, "surrogateescape")
    where = _utf8_problem(data) if encoding.replace("-", "").lower() == "utf8" else None
    name = "UTF-8" if where is not None else encoding
    printer.write(_error_line(ConfigError("this turn is not valid %s%s; it is not sent, the session goes on"
                                          % (name, " (%s)" % where if where else ""))), to_err=True)
    return False


def _chat_turn(client: Client, args: Any, printer: _Printer, session: _ChatSession, text: str, retries: _Retries) -> None:
    """One turn: kept when the reply completes; Ctrl-C or an error drops it (the session goes on)."""
    message = user(text, *session.attachments)
    try:
        completion = _one_turn(client, args, printer, session.messages + [message], retries)
    except _Terminated:
        raise
    except KeyboardInterrupt:
        printer.note("stopped; this turn is not kept")
        return
    except StreamliteError as exc:
        if isinstance(exc, ConfigError):
            raise
        _report_error(printer, exc)
        printer.note("this turn is not kept; the session goes on")
        return
    session.add_turn(message, completion.message)


_BATCH_EPILOG = """\
input (IN.jsonl, "-" for stdin), one request per line:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4.1", "messages": [...]}}
  {"custom_id": "q2", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
  any other line is a prompt (custom_id line-N, N its line number)

output: one line per request in the OpenAI Batch output shape, in completion order. When OUT
exists, requests that already have a success line in it are skipped: run the same command again
until it exits 0.

examples:
  streamlite batch prompts.txt -o results.jsonl -m gpt-4.1-mini --rpm 500
  streamlite batch requests.jsonl -o part-2.jsonl --shard 2/4 -j 16

exit codes:
  0 every request succeeded   3 some failed (each failure is a line in OUT)
  2 usage error (also: OUT is IN, OUT cannot be written or repaired for resuming)
  4 the server could not be reached   5 timeout   130 interrupted   143 terminated (SIGTERM)
"""


def _batch_parse_args(argv: Sequence[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="streamlite batch",
        description="Run every request of a JSONL file (or a file of prompts): paced, retried, resumable.",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("input", metavar="IN.jsonl", help='the requests, one per line ("-": stdin)')
    add("-o", "--output", metavar="OUT.jsonl", help="append results here, skipping requests already done (default: stdout)")
    add("-j", "--concurrency", type=int, default=8, metavar="N", help="requests in flight at most (default 8)")
    add("--rpm", type=float, metavar="N", help="requests per minute, spaced evenly")
    add("--tpm", type=float, metavar="N", help="tokens per minute (estimated: text length / 4 + max_tokens)")
    add("--shard", metavar="K/N", help="run only the K-th of N parts (by custom_id), for N machines or jobs")
    add("--quiet", action="store_true", help="no progress on stderr, only errors")
    add("-m", "--model", default=os.environ.get("STREAMLITE_MODEL"), help="model, unless a line gives one (default: $STREAMLITE_MODEL)")
    add("-s", "--system", help="a system message, for lines without one")
    add("--api", choices=("chat", "responses", "completions"), help="the API, unless a line's url says (default chat)")
    add("--base-url", help="API root (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    add("--api-key-env", default="OPENAI_API_KEY", metavar="NAME", help="read the key from this variable")
    add("--azure", action="store_true", default=None, help=(
        "Azure OpenAI: api-key header, deployment URLs, AZURE_OPENAI_API_KEY (default: for an Azure OpenAI host)"))
    add("-t", "--temperature", type=float)
    add("--max-tokens", type=int)
    add("-X", dest="extra", action="append", default=[], metavar="KEY=JSON", help="any other body field, for lines without it")
    add("--no-usage", action="store_true", help="do not ask for the usage chunk")
    add("--connect-timeout", type=float, default=10.0, metavar="S")
    add("--read-timeout", type=float, default=120.0, metavar="S", help="longest silence (default 120)")
    add("--total-timeout", type=float, metavar="S", help="deadline for each request")
    add("--max-retries", type=int, default=2, help="retries of a failed request (rate limits: until the server lets it through)")
    add("--ca-file", help="CA bundle for TLS (also $SSL_CERT_FILE)")
    add("--insecure", action="store_true", help="do not verify TLS certificates")
    add("--proxy", help="http:// proxy (default: $HTTPS_PROXY / $HTTP_PROXY)")
    args = parser.parse_args(argv)
    args.headers = {}
    try:
        args.body = _extra_fields(args.extra)
    except ValueError as exc:
        parser.error(str(exc))
    return args


class _BatchProgress:
    """Progress on stderr: a live line on a terminal, a line every few seconds otherwise."""

    def __init__(self, plan: _BatchPlan, skipped: int, invalid: int, quiet: bool) -> None:
        import threading

        self.plan = plan
        self.skipped = skipped
        self.total = plan.total + invalid  # invalid lines are failed results, never sent
        self.succeeded = self.failed = 0  # results written so far
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="streamlite-batch-progress", daemon=True)
        if not quiet:
            self.thread.start()

    def line(self) -> str:
        plan = self.plan
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = self.succeeded + self.failed
        rate = finished * 60.0 / elapsed
        left = self.total - finished
        eta = " ETA %s" % _batch_duration(left * 60.0 / rate) if rate and left > 0 else ""
        return "streamlite: batch: %d/%d done, %d failed, %d running, %.0f req/min, %.0f tokens/min%s" % (
            finished, self.total, self.failed, plan.running, rate, plan.tokens * 60.0 / elapsed, eta)

    def _run(self) -> None:
        every = 0.5 if self.live else 5.0
        while not self.stopped.wait(every):
            self._write("\r\x1b[K" + self.line() if self.live else self.line() + "\n")

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def close(self, interrupted: bool = False) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(2.0)
        if self.live:
            self._write("\r\x1b[K")
        if self.quiet:
            return
        summary = "streamlite: batch: %d succeeded, %d failed" % (self.succeeded, self.failed)
        if self.skipped:
            summary += ", %d already done" % self.skipped
        if self.total - self.succeeded - self.failed:
            summary += ", %d not run" % (self.total - self.succeeded - self.failed)
        summary += " in %s; %d rate-limit answers (429)" % (_batch_duration(time.monotonic() - self.started), self.plan.throttled)
        self._write(summary + "\n")


def _batch_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


class _BatchOutput:
    """Writes each output line with one write and a flush: a kill leaves at most a torn last line."""

    def __init__(self, path: Optional[str]) -> None:
        self.where = "stdout" if path is None else "the output file %s" % path
        if path is None:
            self.file: Any = sys.stdout.buffer
            self.own = False
        else:
            try:
                self.file = open(path, "ab", buffering=0)
            except OSError as exc:
                raise ConfigError("cannot write %s: %s" % (self.where, exc.strerror or exc)) from None
            self.own = True

    def write(self, line: Dict[str, Any]) -> None:
        data = (_json_text(line, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        try:
            while data:
                written = self.file.write(data)
                data = data[written:] if written is not None else b""
            self.file.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk: the lines written so far stay whole, the rest run again
            if not self.own:
                _quiet_stdout()
            raise ConfigError("cannot write %s: %s" % (self.where, exc.strerror or exc)) from None

    def close(self) -> None:
        if self.own:
            self.file.close()


def _batch_main(argv: Sequence[str]) -> int:
    """`streamlite batch ...`: run a file of requests; return the exit code."""
    args = _batch_parse_args(argv)
    try:
        with _sigterm_interrupts():
            return _batch_cli(args)
    except StreamliteError as exc:
        _batch_stop_progress(args)
        sys.stderr.write(_error_line(exc))
        return _exit_code(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as _Terminated: the summary, then the code
        _batch_stop_progress(args, interrupted=True)
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def _batch_stop_progress(args: Any, interrupted: bool = False) -> None:
    progress = getattr(args, "progress", None)
    if progress is not None:
        args.progress = None
        progress.close(interrupted)


def _batch_cli(args: Any) -> int:
    _check_ranges(args)
    _check_environ(args.api_key_env)
    shard = _batch_shard(args.shard) if args.shard is not None else None
    if args.concurrency < 1:
        raise ConfigError("-j must be at least 1, got %d" % args.concurrency)
    _BatchPlan([], concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, retries=args.max_retries)  # checks them
    client = _batch_client(args)
    requests = _batch_prepare(_batch_parse_lines(_batch_input(args.input)), _batch_defaults(args))
    if shard is not None:
        requests = [request for request in requests if _batch_in_shard(request.custom_id, shard)]
    done = _batch_done(args, requests)
    todo = [request for request in requests if request.custom_id not in done]
    plan = _BatchPlan(todo, concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, retries=args.max_retries)
    output = _BatchOutput(args.output)
    invalid = sum(request.problem is not None for request in todo)
    args.progress = _BatchProgress(plan, len(requests) - len(todo), invalid, args.quiet)
    progress = args.progress
    try:
        _batch_write(_batch_run(client, todo, plan), output, progress)
    finally:
        output.close()
    _batch_stop_progress(args)
    return EXIT_API_ERROR if progress.failed else EXIT_OK


def _batch_done(args: Any, requests: Sequence[_BatchRequest]) -> set[str]:
    """The custom_ids OUT already has a success line for (none without -o), OUT repaired for
    appending; OUT must not be the input, under any name."""
    if not args.output:
        return set()
    if _same_file(args.input, args.output):
        raise ConfigError("the output file %s is the input file; give -o another file" % args.output)
    try:
        return _batch_resume(args.output, [request.custom_id for request in requests])
    except OSError as exc:  # a folder or file the user cannot write: nothing was changed
        raise ConfigError("cannot prepare the output file %s for resuming (%s: %s); it is left as it was"
                          % (args.output, exc.strerror or exc, exc.filename or args.output)) from None


def _same_file(input_path: str, output: str) -> bool:
    """Whether the output is a regular file that is also the input (a symlink, another path, stdin)."""
    import stat

    try:
        out = os.stat(output)
        source = os.fstat(sys.stdin.fileno()) if input_path == "-" else os.stat(input_path)
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (source.st_dev, source.st_ino)


def _server_request_id(completion: Completion) -> Optional[str]:
    """The server's request id, when the Completion carries one: never one made up here."""
    found = getattr(completion, "request_id", None)
    return found if isinstance(found, str) and found else None


def _batch_write(results: Iterator[BatchResult], output: Any, progress: Any) -> None:
    try:
        for result in results:
            line = _batch_output_line(result)
            if result.completion is not None:  # BatchResult.request_id may be a local one
                line["response"]["request_id"] = _server_request_id(result.completion)
            output.write(line)
            if result.error is None:
                progress.succeeded += 1
            else:
                progress.failed += 1
    finally:
        results.close()  # type: ignore[attr-defined]


def _batch_client(args: Any) -> Client:
    # max_retries=0: every rate-limit answer reaches the batch at once, to pause all workers
    return _new_client(args, _batch_note, max_retries=0)


def _batch_note(text: str) -> None:
    sys.stderr.write("streamlite: %s\n" % _visible(text))
    sys.stderr.flush()


def _batch_input(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc.strerror or exc)) from None


def _batch_defaults(args: Any) -> Dict[str, Any]:
    """The fields the flags give every request that does not set them."""
    defaults = dict(args.body)
    for name, value in (("temperature", args.temperature), ("max_tokens", args.max_tokens), ("model", args.model),
                        ("system", args.system), ("api", args.api if args.api != "chat" else None)):
        if value is not None:
            defaults[name] = value
    return defaults


def _console_main() -> None:  # pragma: no cover - the installed `streamlite` script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
