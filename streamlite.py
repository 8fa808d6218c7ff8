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
"""Stream chat completions from any OpenAI-compatible API with nothing but the standard library.

One file, Python 3.8 or newer, no dependencies: copy it into a project and import it. The data
path is socket bytes -> SSEDecoder -> json.loads -> parse_chunk -> typed deltas -> Accumulator.

Sections, top to bottom (each uses only the ones above it; `grep -n '^# .* ####' streamlite.py`
prints them): errors, value types, SSE decoder (sans-I/O), chunk decoding, accumulator,
transport, client API, command line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
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
        super().__init__(self._render())

    def _render(self) -> str:
        if self.status is None:
            text = "error in stream: " + self.message
        else:
            reason = _reason_phrase(self.status)
            message = _text_of_body(self.message)  # an HTML page shows as its title
            text = "%d%s: %s" % (self.status, " " + reason if reason else "", message)
        if self.code not in (None, "") and str(self.code) != str(self.status):
            text += " (code %s)" % (self.code,)
        return text


class APIConnectionError(StreamliteError, ConnectionError):
    """Could not connect, or the connection broke before the stream ended."""

    def __init__(self, message: str, *, partial: Optional[Completion] = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial

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


def _reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status ("Too Many Requests"), or ""."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


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
class ContentDelta(Delta):
    """A fragment of the answer text."""

    text: str
    choice: int = 0


@dataclass(frozen=True)
class ReasoningDelta(Delta):
    """A fragment of the model's reasoning ("thinking") text."""

    text: str
    choice: int = 0


@dataclass(frozen=True)
class RefusalDelta(Delta):
    """A fragment of a refusal message (OpenAI structured outputs)."""

    text: str
    choice: int = 0


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

    @property
    def tokens_per_second(self) -> Optional[float]:
        """Completion tokens per second after the first token, when usage was reported."""
        first = self.time_to_first_reasoning or self.time_to_first_content
        if not self.completion_tokens or first is None or self.duration <= first:
            return None
        return self.completion_tokens / (self.duration - first)


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


###############################################################################
# SSE decoder (sans-I/O) ######################################################
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
            raise error
        self.failed = error

    def _raise_failed(self) -> None:
        error, self.failed = self.failed, None
        raise error or ProtocolError("the SSE decoder already failed; it takes no more input")

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
            if value.isdigit() and value.isascii():
                self._retry = int(value)
        elif name == "error" and self._lenient:
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
# Chunk decoding ##############################################################
###############################################################################
#
# All knowledge of providers' field names lives here. A chunk is one decoded `data:` object,
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
            message = "; ".join(str(item) for item in message)
        return (
            str(message) if message else _clip(_json_text(inner)),
            code,
            _as_str(inner.get("type") or inner.get("status")),
        )
    if payload.get("object") == "error" or ("message" in payload and "choices" not in payload):
        message = payload.get("message") or payload.get("detail")
        if message:
            return str(message), payload.get("code"), _as_str(payload.get("type"))
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
    the next delta shows whether it does (flush() hands it over at the end of the stream).
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.inside = False
        self.held = ""
        self.trim = False  # drop the blank lines between </think> and the answer

    def split(self, text: str) -> List[Tuple[bool, str]]:
        """Return (is_reasoning, text) pieces of `text`, in order."""
        text = self.held + text
        self.held = ""
        pieces: List[Tuple[bool, str]] = []
        while text:
            tag = self.CLOSE if self.inside else self.OPEN
            found = text.find(tag)
            if found < 0:
                keep = next((k for k in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:k])), 0)
                self.held = text[len(text) - keep :]
                text = text[: len(text) - keep]
                self._emit(text, pieces)
                break
            self._emit(text[:found], pieces)
            text = text[found + len(tag) :]
            self.inside = not self.inside
            self.trim = not self.inside
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
            splitter = self._think[index] = _ThinkSplitter()
        for is_reasoning, piece in splitter.split(text):
            out.append(ReasoningDelta(piece, index) if is_reasoning else ContentDelta(piece, index))

    def decode(self, chunk: Mapping[str, Any]) -> List[Delta]:
        """Return the deltas of one chunk, in wire order; usage comes last."""
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
        count = self._call_count.get(choice, 0)
        if type(index) is not int:
            if call_id is not None and (choice, call_id) in self._call_ids:
                index = self._call_ids[choice, call_id]
            elif call_id is None and name is None and choice in self._last_call:
                index = self._last_call[choice]  # a continuation: arguments only
            else:
                index = count
        if call_id is not None:
            self._call_ids.setdefault((choice, call_id), index)
        self._call_count[choice] = max(count, index + 1)
        self._last_call[choice] = index
        return index  # type: ignore[no-any-return]


def parse_chunk(obj: Mapping[str, Any]) -> List[Delta]:
    """Turn one `chat.completion.chunk` object into typed deltas (stateless).

    Tool-call fragments without an `index` are numbered by their position in this chunk; a
    Stream uses a ChunkDecoder, which remembers them across chunks.
    """
    return ChunkDecoder().decode(obj)


###############################################################################
# Accumulator #################################################################
###############################################################################


class _ToolCallParts:
    __slots__ = ("index", "id", "name", "arguments", "type", "extra")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: Optional[str] = None
        self.name: Optional[str] = None
        self.arguments: List[str] = []
        self.type = "function"
        self.extra: Dict[str, Any] = {}

    def add(self, delta: ToolCallDelta) -> None:
        if self.id is None:
            self.id = delta.id
        if self.name is None:
            self.name = delta.name
        if delta.arguments:
            self.arguments.append(delta.arguments)
        raw = delta.raw
        if len(raw) > 3 or "type" in raw:
            kind = raw.get("type")
            if isinstance(kind, str) and kind:
                self.type = kind
            for key, value in raw.items():
                if key not in _TOOL_CALL_KEYS:
                    self.extra[key] = value

    def result(self) -> ToolCall:
        return ToolCall(
            self.index, self.id, self.name, "".join(self.arguments), self.type, dict(self.extra)
        )


_FRAGMENTS_PER_BLOCK = 1024


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
        return "".join(self.blocks) + "".join(self)


class _ChoiceParts:
    __slots__ = ("index", "content", "reasoning", "refusal", "tool_calls", "finish_reason")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content = _Fragments()
        self.reasoning = _Fragments()
        self.refusal: Optional[List[str]] = None
        self.tool_calls: Dict[int, _ToolCallParts] = {}
        self.finish_reason: Optional[str] = None

    def result(self) -> Choice:
        calls = tuple(self.tool_calls[i].result() for i in sorted(self.tool_calls))
        refusal = None if self.refusal is None else "".join(self.refusal)
        return Choice(
            self.index,
            self.content.text(),
            self.reasoning.text(),
            refusal,
            calls,
            self.finish_reason,
        )


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
        self.finished = False  # a finish reason arrived for some choice
        self._shape: Any = None  # the keys of the last chunk, and those of them not standard
        self._unknown: List[str] = []

    def _choice(self, index: int) -> _ChoiceParts:
        parts = self._choices.get(index)
        if parts is None:
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
                parts.refusal = []
            parts.refusal.append(delta.text)  # type: ignore[attr-defined]

    def _add_tool_call(self, delta: ToolCallDelta) -> None:
        calls = self._choice(delta.choice).tool_calls
        call = calls.get(delta.index)
        if call is None:
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
        for key in self._unknown:
            self.extras[key] = chunk[key]

    def result(self, stats: Optional[Stats] = None) -> Completion:
        """The Completion so far (complete once the stream has ended)."""
        choices = tuple(self._choices[i].result() for i in sorted(self._choices))
        first = choices[0] if choices and choices[0].index == 0 else Choice(0)
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
        )


###############################################################################
# Transport ###################################################################
###############################################################################
#
# Strategy: the standard library's socket and ssl modules (with an explicit SSL context) carry
# the bytes; HTTP/1.1 itself is written here, small and sans-I/O where it can be: the request
# head, CONNECT tunnels, the response head (_Head) and the body framing (chunked, sized or
# close-delimited). Every recv honours both the idle timeout and the total deadline (a server
# that trickles bytes, or sends endless 1xx responses or trailers, cannot outlive the deadline)
# and each piece of the body is handed over the moment it arrives: one recv, one piece, never
# waiting for a buffer to fill. The sync and async paths share all of it but the socket calls.
# (http.client is not used: it costs 25 ms of import and 5 MB of memory, reads chunked bodies
# one HTTP chunk per call, and closes its socket under a body still being read.)

_RETRY_STATUSES = frozenset((408, 409, 429))
_READ_SIZE = 65536
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CREDENTIAL_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password")  # header names whose values are secrets


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 and char != "\t" or ord(char) == 127 for char in text)


def _check_header(name: str, value: str) -> None:
    """Refuse header names and values that could split the request (no value in the message)."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise ConfigError("header %r must be a str with a str value" % (_clip(name, 60),))
    if not name or _has_control(name) or ":" in name or " " in name:
        raise ConfigError("invalid header name %r" % (_clip(name, 60),))
    if _has_control(value):
        raise ConfigError("the value of header %r contains a control character" % (name,))


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    target: str  # path and query

    @property
    def origin(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


def _split_url(url: str, what: str) -> Any:
    if not isinstance(url, str) or _has_control(url) or " " in url:
        raise ConfigError("%s must be a URL without spaces or control characters" % what)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            "%s must be an http:// or https:// URL, got %r" % (what, _clip(parts.scheme, 20) or url[:20])
        )
    try:
        parts.port
    except ValueError:
        raise ConfigError("%s has an invalid port" % what) from None
    if not parts.hostname:
        raise ConfigError("%s has no host name" % what)
    return parts


def _is_azure_host(host: str) -> bool:
    return host.endswith((".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"))


def _endpoint(
    base_url: str, *, azure: bool, model: Optional[str], api_version: Optional[str]
) -> _Endpoint:
    """Where to POST: base_url + /chat/completions (Azure: the deployment URL, api-version)."""
    parts = _split_url(base_url, "base_url")
    if parts.username or parts.password:
        raise ConfigError("base_url must not hold credentials; pass api_key or headers instead")
    path = parts.path.rstrip("/")
    query = parts.query
    if azure and "/deployments/" not in path and not path.endswith("/v1"):
        if not model:
            raise ConfigError("Azure OpenAI needs model= (the deployment name) or a deployment URL")
        if not path.endswith("/openai"):
            path += "/openai"
        path += "/deployments/" + quote(model, safe="")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    if azure and "/deployments/" in path and "api-version=" not in query:
        version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
        query = (query + "&" if query else "") + "api-version=" + quote(version, safe="")
    default_port = 443 if parts.scheme == "https" else 80
    target = path + ("?" + query if query else "")
    return _Endpoint(parts.scheme, parts.hostname, parts.port or default_port, target)


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
            import ipaddress

            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if entry.startswith("[") and "]" in entry:
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:
            entry = entry.split(":")[0]
        entry = entry.lstrip("*").lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
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
        if urlsplit(url).scheme != "http":
            raise ConfigError(
                "only http:// proxies are supported (https to the target still goes through "
                "a CONNECT tunnel), got %r" % urlsplit(url).scheme
            )
        parts = _split_url(url, "proxy")
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

    def __repr__(self) -> str:
        return "<proxy %s:%d>" % (self.host, self.port)


def _ssl_context(verify: bool, ca_file: Optional[str]) -> ssl.SSLContext:
    """An explicit client context: certificates and host names verified unless verify=False."""
    import ssl

    if not verify:
        context = ssl._create_unverified_context()  # the caller said verify=False
        return context
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


class _TimedReader:
    """Reads a connected socket, each recv bounded by the budget (idle timeout and total
    deadline). Counts bytes and notes when the first one came."""

    def __init__(self, sock: socket.socket, budget: _Budget) -> None:
        self.sock = sock
        self.budget = budget
        self.bytes = 0
        self.first_byte_at: Optional[float] = None
        self._timeout: Optional[float] = None  # the socket's, changed only when it must be

    def recv(self, size: int = 65536) -> bytes:
        timeout = self.budget.timeout()
        if timeout != self._timeout:  # settimeout() costs two system calls
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise self.budget.expired() from None
        if data:
            if self.first_byte_at is None:
                self.first_byte_at = time.monotonic()
            self.bytes += len(data)
        return data

    def sendall(self, data: bytes) -> None:
        self._timeout = self.budget.timeout()
        self.sock.settimeout(self._timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise self.budget.expired() from None


class _Head:
    """An HTTP response head, parsed from bytes (sans-I/O): feed() until it returns the bytes
    that follow the head. 1xx interim responses are skipped; the head's size is bounded."""

    MAX_BYTES = 65536
    MAX_FIELDS = 128

    def __init__(self) -> None:
        self._buffer = b""
        self.status = 0
        self.reason = ""
        self.headers: Dict[str, str] = {}

    def feed(self, data: bytes) -> Optional[bytes]:
        """Add bytes; once the (final) head is complete, return the bytes after it."""
        buffer = self._buffer + data
        while True:
            found = _HEAD_END.search(buffer)
            if found is None:
                if len(buffer) > self.MAX_BYTES:
                    raise ProtocolError("the response head is larger than %d bytes" % self.MAX_BYTES)
                if buffer.count(b"\n") > self.MAX_FIELDS:  # fail now, not when the head ends
                    self._too_many_lines()
                self._buffer = buffer
                return None
            head, buffer = buffer[: found.start()], buffer[found.end() :]
            self._parse(head.decode("latin-1"))
            if not 100 <= self.status < 200:  # 1xx: an interim response, the real one follows
                self._buffer = b""
                return buffer

    def _too_many_lines(self) -> None:
        raise ProtocolError("the response head has more than %d header lines" % self.MAX_FIELDS)

    def _parse(self, head: str) -> None:
        lines = head.split("\n")
        status_line = lines[0].rstrip("\r")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise ProtocolError("the server did not answer with valid HTTP: %r" % _clip(status_line, 80))
        self.status = int(parts[1])
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
            if not colon or not name:
                raise ProtocolError("the response head has a malformed line: %r" % _clip(line, 80))
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        self.headers = headers

    def framer(self) -> _BodyFramer:
        """How the body that follows this head is delimited."""
        if self.status in (204, 304):
            return _BodyFramer(False, 0)
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return _BodyFramer(True, None)
        length = self.headers.get("content-length", "").split(",")[0].strip()
        return _BodyFramer(False, int(length) if length.isdigit() else None)


class _ChunkedDecoder:
    """Decode a chunked transfer-coded body incrementally (sans-I/O): feed(bytes) -> payload.

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
            self.failed = exc
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
        if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError("malformed chunked body: bad chunk size %r" % (_clip(line, 40),))
        self._left = int(text, 16)
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
    never more than _READ_SIZE bytes of output per step, so memory stays bounded."""

    def __init__(self, encoding: str) -> None:
        import zlib

        self._error = zlib.error
        if encoding in ("gzip", "x-gzip"):
            self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:  # deflate: zlib-wrapped, as the RFC says
            self._decompressor = zlib.decompressobj(zlib.MAX_WBITS)

    @staticmethod
    def for_encoding(encoding: str) -> Optional[_Inflater]:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return None
        if encoding in ("gzip", "x-gzip", "deflate"):
            return _Inflater(encoding)
        raise ProtocolError(
            "the server sent a %r-encoded body although streamlite asked for identity; only gzip "
            "and deflate can be decoded" % (_clip(encoding, 40),)
        )

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces, made one at a time as the caller takes them: a small input that
        inflates to gigabytes (a zip bomb) never sits in memory at once."""
        try:
            while True:
                piece = self._decompressor.decompress(data, _READ_SIZE)
                data = self._decompressor.unconsumed_tail
                if piece:
                    yield piece
                if not data and len(piece) < _READ_SIZE:
                    return  # a full piece may leave output pending inside zlib: go round again
        except self._error as exc:
            raise ProtocolError("the compressed body is corrupt: %s" % exc) from None


class _BodyFramer:
    """Find the body in the bytes after the response head (sans-I/O): chunked, sized by
    Content-Length, or delimited by the connection closing. feed() returns payload bytes."""

    def __init__(self, chunked: bool, length: Optional[int]) -> None:
        self._chunks = _ChunkedDecoder() if chunked else None
        self.length = length
        self.left = length

    @property
    def complete(self) -> bool:
        if self._chunks is not None:
            return self._chunks.done
        return self.left is not None and self.left <= 0

    def wanted(self) -> int:
        """How much to read next without reading past the body."""
        return _READ_SIZE if self.left is None or self._chunks is not None else min(_READ_SIZE, self.left)

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


class _Response:
    """An HTTP response whose head has been read; the body comes from pieces()."""

    def __init__(self, reader: _TimedReader, head: _Head, rest: bytes) -> None:
        self.reader = reader
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers
        self.content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        self._framer = head.framer()
        self._rest = rest  # body bytes that came with the head

    def pieces(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives (de-chunked and decompressed)."""
        framer = self._framer
        recv = self.reader.recv
        inflater = _Inflater.for_encoding(self.headers.get("content-encoding", ""))
        data, self._rest = self._rest, b""
        while not framer.complete:
            if not data:
                data = recv(framer.wanted())
                if not data:
                    framer.eof()
                    return
            payload = framer.feed(data)
            data = b""
            if payload:
                if inflater is None:
                    yield payload
                else:
                    yield from inflater.feed(payload)
                if framer.failed is not None:
                    raise framer.failed

    def read_bounded(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (an error body); the rest is not read."""
        out = bytearray()
        try:
            for piece in self.pieces():
                out += piece
                if len(out) >= limit:
                    del out[limit:]
                    break
        except (StreamliteError, OSError):
            pass  # keep what arrived: the status already tells the story
        return bytes(out)

    def close(self) -> None:
        self.reader.sock.close()


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """The server's requested delay: retry-after-ms, else Retry-After (seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC, though parsedate_to_datetime leaves it naive
        import datetime

        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    override = headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return override == "true"
    return status in _RETRY_STATUSES or status >= 500


def _error_from_body(status: int, reason: str, headers: Dict[str, str], body: bytes) -> APIError:
    """An APIError with the provider's own message, from a JSON, text or HTML error body."""
    text = body.decode("utf-8", "replace")
    payload: Any = None
    if text.strip()[:1] in ("{", "["):
        try:
            payload = json.loads(text)
        except _JSON_ERRORS:
            payload = None
    fields = error_fields(payload) if payload is not None else None
    if fields is not None:
        message, code, kind = fields
    else:
        message, code, kind = text.strip() or reason or "no message", None, None
    if 300 <= status < 400 and headers.get("location"):
        message = "redirect to %s not followed (%s)" % (_clip(headers["location"], 200), message)
    return APIError(
        message,
        status=status,
        code=code,
        type=kind,
        body=payload if payload is not None else text,
        headers=headers,
        retry_after=_retry_after(headers),
        request_id=headers.get("x-request-id") or headers.get("apim-request-id")
        or headers.get("x-generation-id") or headers.get("request-id") or headers.get("cf-ray"),
    )


def _text_of_body(text: str) -> str:
    """Readable text of a non-JSON body: an HTML page's title (or its text), else the text."""
    lowered = text.lower()
    if "<html" in lowered or "<!doctype" in lowered or "<title" in lowered:
        start = lowered.find("<title")
        if start >= 0:
            start = lowered.find(">", start) + 1
            end = lowered.find("</title", start)
            if 0 < start <= end:
                return _clip(text[start:end], 200)
        text = re.sub(r"(?s)<(script|style).*?</\1>|<[^>]*>", " ", text)
    return _clip(text, 300)


class _Transport:
    """Sends one request and returns a response with a 2xx head, retrying what is safe to retry:
    connection failures before any response, and 408, 409, 429 and 5xx (or x-should-retry)."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        ca_file: Optional[str],
        verify: bool,
        proxy: Optional[str],
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.ca_file = ca_file
        self.verify = verify
        self.proxy = _Proxy(proxy) if proxy else None
        self.no_proxy = proxy == ""  # proxy="" turns the environment's proxies off
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

    def open(
        self,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        body: bytes,
        deadline: Optional[float],
        on_retry: Optional[Callable[[], None]] = None,
    ) -> _Response:
        attempt = 0
        while True:
            try:
                response = self._exchange(endpoint, headers, body, deadline)
                if 200 <= response.status < 300:
                    return response
                error: StreamliteError = self._http_error(response)
            except APIConnectionError as exc:
                error = exc
            time.sleep(self.retry_delay(error, attempt, deadline))
            attempt += 1
            if on_retry is not None:
                on_retry()

    def retry_delay(self, error: StreamliteError, attempt: int, deadline: Optional[float]) -> float:
        """How long to wait before retrying after `error`; raises it when not to retry."""
        if attempt >= self.max_retries:
            raise error
        if isinstance(error, APIError):
            if not _should_retry(error.status or 0, error.headers or {}):
                raise error
            if error.retry_after is not None and error.retry_after > MAX_RETRY_AFTER_SECONDS:
                raise error
            delay = error.retry_after if error.retry_after else _backoff(attempt)
        elif getattr(error, "retryable", False):
            delay = _backoff(attempt)
        else:
            raise error
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise error
        return delay

    def _http_error(self, response: _Response) -> APIError:
        try:
            body = response.read_bounded(MAX_ERROR_BODY_BYTES)
        finally:
            response.close()
        return _error_from_body(response.status, response.reason, response.headers, body)

    def _exchange(
        self,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        body: bytes,
        deadline: Optional[float],
    ) -> _Response:
        proxy = self.proxy_for(endpoint)
        sock = self._connect(endpoint, proxy, deadline)
        try:
            reader = _TimedReader(sock, _Budget(self.read_timeout, deadline))
            target = endpoint.target
            if proxy is not None and endpoint.scheme == "http":
                target = endpoint.origin + target  # absolute-form, to a forwarding proxy
                headers = dict(headers, **proxy.headers)
            reader.sendall(_request_head("POST", target, _host_header(endpoint), headers, len(body)) + body)
            head = _Head()
            rest = None
            while rest is None:
                data = reader.recv()
                if not data:
                    raise _closed_before_responding()
                rest = head.feed(data)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError) and not isinstance(exc, StreamliteError):
                raise _translate_request_error(exc) from None
            raise
        return _Response(reader, head, rest)

    def _connect(self, endpoint: _Endpoint, proxy: Optional[_Proxy], deadline: Optional[float]) -> socket.socket:
        """A connected socket (through the proxy's tunnel, with TLS for https), all within the
        connect timeout."""
        timeout = self.connect_budget(deadline)
        ends = time.monotonic() + timeout
        host, port = (proxy.host, proxy.port) if proxy is not None else (endpoint.host, endpoint.port)
        context = self.context() if endpoint.scheme == "https" else None  # a bad CA file: before any I/O
        try:
            sock = socket.create_connection((host, port), timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if endpoint.scheme == "https":
                    if proxy is not None:
                        _tunnel(sock, endpoint, proxy, ends)
                    sock.settimeout(max(0.001, ends - time.monotonic()))
                    sock = context.wrap_socket(sock, server_hostname=endpoint.host)  # type: ignore[union-attr]
            except BaseException:
                sock.close()
                raise
        except StreamliteError:
            raise
        except OSError as exc:
            raise self.connect_error(exc, endpoint, proxy, deadline) from None
        return sock

    def connect_budget(self, deadline: Optional[float]) -> float:
        """The time connecting may take: the connect timeout, cut short by the deadline."""
        if deadline is None:
            return self.connect_timeout
        return max(0.001, min(self.connect_timeout, deadline - time.monotonic()))

    def connect_error(
        self, exc: BaseException, endpoint: _Endpoint, proxy: Optional[_Proxy], deadline: Optional[float]
    ) -> StreamliteError:
        """A clear, typed error for a failure to connect (TCP, proxy tunnel or TLS)."""
        import ssl

        where = "%s:%d" % (endpoint.host, endpoint.port)
        via = " through the proxy %s:%d" % (proxy.host, proxy.port) if proxy else ""
        if isinstance(exc, (socket.timeout, TimeoutError)) and not isinstance(exc, StreamliteError):
            if deadline is not None and deadline - time.monotonic() < 0.01:
                return APITimeoutError("the total timeout expired while connecting to %s%s" % (where, via), which="total")
            return APITimeoutError(
                "could not connect to %s%s within %g s (the connect timeout)"
                % (where, via, self.connect_timeout),
                which="connect",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = str(exc.verify_message or exc.reason).rstrip(".")
            if "mismatch" in reason:
                advice = (
                    "the certificate is for another name: check the host in base_url (verify=False "
                    "turns checking off)"
                )
            elif "expired" in reason or "not yet valid" in reason:
                advice = (
                    "the server's certificate is outside its validity dates: it must be renewed, or "
                    "this machine's clock is wrong (verify=False turns checking off)"
                )
            else:
                advice = (
                    "if a corporate proxy or a private CA signs this certificate, pass ca_file= or "
                    "set SSL_CERT_FILE to a CA bundle that includes it (verify=False turns checking off)"
                )
            return APIConnectionError(
                "TLS certificate verification failed for %s: %s; %s" % (endpoint.host, reason, advice)
            )
        if isinstance(exc, ssl.SSLError):
            return APIConnectionError("TLS handshake with %s failed: %s" % (where, exc.reason or exc))
        error = APIConnectionError(
            "could not connect to %s%s: %s" % (where, via, getattr(exc, "strerror", None) or exc.__class__.__name__)
        )
        error.retryable = True  # type: ignore[attr-defined]
        return error


def _tunnel(sock: socket.socket, endpoint: _Endpoint, proxy: _Proxy, ends: float) -> None:
    """Open a CONNECT tunnel through the proxy to the endpoint, before `ends`."""
    sock.settimeout(max(0.001, ends - time.monotonic()))
    sock.sendall(_connect_request(endpoint, proxy))
    head = _Head()
    rest = None
    while rest is None:
        sock.settimeout(max(0.001, ends - time.monotonic()))
        data = sock.recv(_READ_SIZE)
        if not data:
            raise APIConnectionError("the proxy %s:%d closed the connection during CONNECT" % (proxy.host, proxy.port))
        rest = head.feed(data)
    if head.status != 200:
        raise _tunnel_error(head.status, head.reason, endpoint, proxy)
    if rest:
        raise ProtocolError("the proxy sent data before the tunnel was open")


def _connect_request(endpoint: _Endpoint, proxy: _Proxy) -> bytes:
    authority = _authority(endpoint)
    return _request_head("CONNECT", authority, authority, proxy.headers, None)


def _tunnel_error(status: int, reason: str, endpoint: _Endpoint, proxy: _Proxy) -> APIError:
    what = "needs credentials (407 Proxy Authentication Required)" if status == 407 else "refused it"
    return APIError(
        "the proxy %s:%d was asked for a CONNECT tunnel to %s and %s"
        % (proxy.host, proxy.port, _authority(endpoint), what),
        status=status,
    )


def _authority(endpoint: _Endpoint) -> str:
    host = "[%s]" % endpoint.host if ":" in endpoint.host else endpoint.host
    return "%s:%d" % (host, endpoint.port)


def _closed_before_responding() -> APIConnectionError:
    error = APIConnectionError("the server closed the connection before responding")
    error.retryable = True  # type: ignore[attr-defined]
    return error


def _translate_request_error(exc: OSError) -> StreamliteError:
    """A failure while sending the request or reading the response head."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return _closed_before_responding()
    error = APIConnectionError("the connection failed: %s" % (getattr(exc, "strerror", None) or exc))
    error.retryable = True  # type: ignore[attr-defined]
    return error


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.5 s doubling, capped at 8 s."""
    import random

    return float(min(0.5 * 2**attempt, 8.0) * (0.75 + random.random() / 4))


class _AsyncResponse:
    """An HTTP response read with asyncio streams; the same framing and budget as _Response."""

    def __init__(self, reader: Any, writer: Any, budget: _Budget) -> None:
        self._reader = reader
        self._writer = writer
        self.budget = budget
        self.bytes = 0
        self.first_byte_at: Optional[float] = None
        self.status = 0
        self.reason = ""
        self.headers: Dict[str, str] = {}
        self.content_type = ""
        self._framer = _BodyFramer(False, None)
        self._rest = b""  # body bytes that came with the head

    async def _wait(self, operation: Any) -> Any:
        import asyncio

        try:
            return await asyncio.wait_for(operation, self.budget.timeout())
        except asyncio.TimeoutError:
            raise self.budget.expired() from None

    async def read_head(self) -> None:
        """Read the status line and headers, skipping 1xx responses (within the deadline)."""
        head = _Head()
        rest = None
        while rest is None:
            data = await self._wait(self._reader.read(_READ_SIZE))
            if not data:
                raise _closed_before_responding()
            self._note(len(data))
            rest = head.feed(data)
        self.status, self.reason, self.headers = head.status, head.reason, head.headers
        self.content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        self._framer = head.framer()
        self._rest = rest

    def _note(self, count: int) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        self.bytes += count

    async def pieces(self) -> Any:
        """The body, piece by piece as it arrives (an async iterator)."""
        framer = self._framer
        inflater = _Inflater.for_encoding(self.headers.get("content-encoding", ""))
        data, self._rest = self._rest, b""
        while not framer.complete:
            if not data:
                data = await self._wait(self._reader.read(framer.wanted()))
                if not data:
                    framer.eof()
                    return
                self._note(len(data))
            payload = framer.feed(data)
            data = b""
            if payload:
                for piece in [payload] if inflater is None else inflater.feed(payload):
                    yield piece
                if framer.failed is not None:
                    raise framer.failed

    async def read_bounded(self, limit: int) -> bytes:
        out = bytearray()
        try:
            async for piece in self.pieces():
                out += piece
                if len(out) >= limit:
                    del out[limit:]
                    break
        except (StreamliteError, OSError):
            pass
        return bytes(out)

    def close(self) -> None:
        self._writer.close()


def _request_head(method: str, target: str, host: str, headers: Mapping[str, str], length: Optional[int]) -> bytes:
    """A request head; a body's length makes it a POST that asks the server to close after it."""
    lines = ["%s %s HTTP/1.1" % (method, target)]
    if not any(name.lower() == "host" for name in headers):
        lines.append("Host: " + host)
    lines += ["%s: %s" % item for item in headers.items()]
    if length is not None:
        lines += ["Content-Length: %d" % length, "Connection: close"]
    lines += ["", ""]
    return "\r\n".join(lines).encode("latin-1", "strict")


def _host_header(endpoint: _Endpoint) -> str:
    host = "[%s]" % endpoint.host if ":" in endpoint.host else endpoint.host
    default = 443 if endpoint.scheme == "https" else 80
    return host if endpoint.port == default else "%s:%d" % (host, endpoint.port)


async def _async_open(
    transport: _Transport,
    endpoint: _Endpoint,
    headers: Dict[str, str],
    body: bytes,
    deadline: Optional[float],
    on_retry: Callable[[], None],
) -> _AsyncResponse:
    """The async twin of _Transport.open: same retry policy, asyncio streams for the bytes."""
    import asyncio

    attempt = 0
    while True:
        try:
            response = await _async_exchange(transport, endpoint, headers, body, deadline)
            if 200 <= response.status < 300:
                return response
            try:
                data = await response.read_bounded(MAX_ERROR_BODY_BYTES)
            finally:
                response.close()
            error: StreamliteError = _error_from_body(response.status, response.reason, response.headers, data)
        except APIConnectionError as exc:
            error = exc
        await asyncio.sleep(transport.retry_delay(error, attempt, deadline))
        attempt += 1
        on_retry()


async def _async_exchange(
    transport: _Transport, endpoint: _Endpoint, headers: Dict[str, str], body: bytes, deadline: Optional[float]
) -> _AsyncResponse:
    import asyncio

    proxy = transport.proxy_for(endpoint)
    budget = _Budget(transport.read_timeout, deadline)
    connect_timeout = transport.connect_budget(deadline)
    tls = transport.context() if endpoint.scheme == "https" else None
    try:
        if proxy is None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, ssl=tls, limit=_READ_SIZE), connect_timeout
            )
        else:
            reader, writer = await asyncio.wait_for(
                _async_proxy_connect(proxy, endpoint, tls), connect_timeout
            )
    except asyncio.TimeoutError as exc:
        raise transport.connect_error(TimeoutError(str(exc)), endpoint, proxy, deadline) from None
    except OSError as exc:
        raise transport.connect_error(exc, endpoint, proxy, deadline) from None
    response = _AsyncResponse(reader, writer, budget)
    target = endpoint.target
    if proxy is not None and tls is None:
        target = endpoint.origin + target
        headers = dict(headers, **proxy.headers)
    try:
        writer.write(_request_head("POST", target, _host_header(endpoint), headers, len(body)) + body)
        await response._wait(writer.drain())
        await response.read_head()
    except BaseException as exc:
        writer.close()
        if isinstance(exc, OSError) and not isinstance(exc, StreamliteError):
            raise _translate_request_error(exc) from None
        raise
    return response


async def _async_proxy_connect(proxy: _Proxy, endpoint: _Endpoint, tls: Any) -> Tuple[Any, Any]:
    """Connect to an http:// proxy; for an https target, open a CONNECT tunnel and start TLS."""
    import asyncio

    if tls is not None and getattr(asyncio.StreamWriter, "start_tls", None) is None:  # before any I/O
        raise ConfigError("AsyncClient needs Python 3.11+ for https through a proxy; use Client")
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port, limit=_READ_SIZE)
    if tls is None:
        return reader, writer
    writer.write(_connect_request(endpoint, proxy))
    head = _Head()
    rest = None
    while rest is None:
        data = await reader.read(_READ_SIZE)
        if not data:
            writer.close()
            raise APIConnectionError("the proxy %s:%d closed the connection during CONNECT" % (proxy.host, proxy.port))
        rest = head.feed(data)
    if head.status != 200:
        writer.close()
        raise _tunnel_error(head.status, head.reason, endpoint, proxy)
    await getattr(writer, "start_tls")(tls, server_hostname=endpoint.host)  # 3.11+, checked above
    return reader, writer


###############################################################################
# Client API ##################################################################
###############################################################################


class _GapHistogram:
    """Inter-event gaps in logarithmic buckets (about 9 % wide): percentiles in constant memory."""

    _SCALE = 8.0  # buckets per doubling

    def __init__(self) -> None:
        self.counts: Dict[int, int] = {}
        self.total = 0
        self.max = 0.0

    def add(self, gap: float, zeros: int = 0) -> None:
        import math

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


class _StreamState:
    """The sans-I/O heart of a stream, shared by Stream and AsyncStream: body pieces in,
    deltas out. An error found in a piece is kept in `error` and raised by the caller after it
    has handed out the deltas that came before it (nothing that arrived is withheld)."""

    def __init__(
        self,
        content_type: str,
        max_event_bytes: int,
        accumulate: bool,
        tap: Optional[Callable[[bytes], None]],
        think_tags: bool = False,
    ) -> None:
        self.started = time.monotonic()
        self.content_type = content_type
        self.max_event_bytes = max_event_bytes
        self.tap = tap
        self.accumulator = Accumulator()
        self.add = self.accumulator.add if accumulate else self._add_summary
        self.sse = SSEDecoder(max_event_bytes, lenient_error_field=True)
        self.chunks = ChunkDecoder(think_tags=think_tags)
        self.last_chunk: Optional[Dict[str, Any]] = None
        self.chunk_log: Optional[List[Dict[str, Any]]] = None  # every chunk, for Stream.chunks()
        self.error: Optional[StreamliteError] = None
        self.done = False  # [DONE] arrived
        self.first_piece = True
        self.events = 0
        self.retries = 0
        self.gaps = _GapHistogram()
        self.last_event_at: Optional[float] = None
        self.first_reasoning: Optional[float] = None
        self.first_content: Optional[float] = None
        self.counters: Any = None  # the response's byte counter: .bytes, .first_byte_at
        self.secrets: Sequence[str] = ()  # scrubbed from the text of errors raised here
        self.ended_at: Optional[float] = None

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"

    def feed(self, piece: bytes) -> Iterator[Delta]:
        """Decode one piece of an event stream into deltas (then check `error` and `done`).

        A generator: `last_chunk` is the chunk of the delta just handed out. The caller passes
        each delta to add() as it hands it out, so the Completion always holds exactly what the
        caller has been given."""
        if self.tap is not None:
            self.tap(piece)
        if self.first_piece:
            self.first_piece = False
            _refuse_non_sse(self.content_type, piece)
        events = self.sse.feed_tuples(piece)
        if not events:
            return
        self._note_events(len(events))
        loads = _loads
        for kind, data, _, _ in events:
            if kind != "message":
                try:
                    chunk = self._named_event(kind, data)
                except StreamliteError as exc:
                    self.error = exc
                    return
                if chunk is None:
                    continue
            elif data[:6] == "[DONE]":
                self.done = True
                return
            else:
                try:
                    chunk = loads(data)
                except _JSON_ERRORS as exc:
                    self.error = ProtocolError(
                        "event %d is not valid JSON (%s): %r" % (self.events, exc, _clip(data, 80))
                    )
                    return
                if type(chunk) is not dict:
                    self.error = _non_object_error(chunk, self.events)
                    return
            yield from self._chunk_deltas(chunk)
            if self.error is not None:  # an error chunk: its deltas are out, now stop
                return
        if self.sse.failed is not None:  # a fault after whole events: they are out, now stop
            self.error = self.sse.failed

    def flush(self) -> List[Delta]:
        """Deltas held back by the chunk decoder, handed out when the stream ends."""
        return self.chunks.flush()

    def end(self) -> None:
        """The body ended: raise if the stream was cut off (no [DONE], no finish reason)."""
        for kind, data, _, _ in self.sse.close_tuples():  # an unterminated `error:` line (old llama.cpp)
            self._named_event(kind, data)
        if not self.accumulator.finished:
            raise APIConnectionError(
                "the stream ended without [DONE] and without a finish reason: the connection "
                "was cut off after %d events" % self.events
            )

    def whole_json(self, body: bytes) -> List[Delta]:
        """A 200 with one JSON object: a server that ignored "stream", or an error."""
        if len(body) > self.max_event_bytes:
            raise ProtocolError("the JSON response is larger than the limit of %d bytes" % self.max_event_bytes)
        text = body.decode("utf-8", "replace")
        try:
            chunk = json.loads(text)
        except _JSON_ERRORS:
            raise ProtocolError(
                "expected an event stream, got an application/json body that is not valid JSON: %r"
                % _clip(text, 80)
            ) from None
        if type(chunk) is not dict:
            raise _non_object_error(chunk, 1)
        if "choices" not in chunk:
            _raise_chunk_error(chunk)
            raise ProtocolError("expected an event stream, got a JSON object without choices: %r" % _clip(text, 120))
        self._note_events(1)
        out = list(self._chunk_deltas(chunk))
        if self.error is None and not any(type(delta) is Finish for delta in out):
            self.error = APIConnectionError("the JSON response has no finish reason")
        return out

    def _chunk_deltas(self, chunk: Dict[str, Any]) -> List[Delta]:
        """The deltas of one chunk; an error in it is kept in `error`."""
        self.last_chunk = chunk
        if self.chunk_log is not None:
            self.chunk_log.append(chunk)
        deltas = self.chunks.decode(chunk)
        self.accumulator.add_chunk_info(chunk)
        if self.first_content is None:
            for delta in deltas:
                self._note_first_token(delta)
        if "error" in chunk or "x_groq" in chunk or chunk.get("object") == "error":
            try:
                _raise_chunk_error(chunk)
            except APIError as exc:
                self.error = exc
        if self.chunks.failed_choice is not None and self.error is None:
            self.error = _finish_reason_error(self.chunks.failed_choice, chunk)
        return deltas

    def _add_summary(self, delta: Delta) -> None:
        """Without accumulation, keep only what ending the stream needs (constant memory)."""
        kind = type(delta)
        if kind is Finish:
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
        try:
            payload = json.loads(data)
        except _JSON_ERRORS:
            payload = None
        if kind == "error":
            fields = error_fields(payload) if payload is not None else None
            if fields is None:
                fields = (_clip(data, 500) or "the server sent an error event", None, None)
            body = payload if payload is not None else data
            raise APIError(fields[0], code=fields[1], type=fields[2], body=body)
        if isinstance(payload, dict) and ("choices" in payload or "error" in payload or "usage" in payload):
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
        )

    def completion(self) -> Completion:
        return self.accumulator.result(self.stats())

    def attach_partial(self, error: StreamliteError) -> StreamliteError:
        """The error to raise: with the Completion so far, and without secrets a server echoed."""
        if error.partial is None:
            error.partial = self.completion()
        _scrub(error, self.secrets)
        return error

    def note_retry(self) -> None:
        self.retries += 1


class Stream:
    """A streaming chat completion: an iterator of deltas and a context manager.

    Iterating yields each Delta the moment its event arrives. `completion` is the Completion so
    far; `last_chunk` is the raw chunk object the latest deltas came from. Leaving early (break,
    close(), the `with` block, garbage collection) closes the connection.
    """

    def __init__(
        self,
        client: Client,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        payload: Dict[str, Any],
        *,
        accumulate: bool = True,
        tap: Optional[Callable[[bytes], None]] = None,
    ) -> None:
        self._response: Optional[_Response] = None
        self._state = state = _StreamState("", client.max_event_bytes, accumulate, tap, client.think_tags)
        total = client.total_timeout
        deadline = state.started + total if total else None
        state.secrets = client._secrets
        self._response = client._open(endpoint, headers, payload, deadline, state)
        state.content_type = self._response.content_type
        state.counters = self._response.reader
        self._iterator = self._run()

    def __iter__(self) -> Iterator[Delta]:
        return self._iterator

    def __next__(self) -> Delta:
        return next(self._iterator)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_response", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._response is None else "open"
        return "<streamlite.Stream %s, %d events>" % (state, self._state.events)

    def close(self) -> None:
        """Close the connection (idempotent). The Completion so far stays readable."""
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and not iterator.gi_running:
            iterator.close()  # later next() calls end the iteration
        response = self._response
        if response is not None:
            self._response = None
            if self._state.ended_at is None:
                self._state.ended_at = time.monotonic()
            response.close()

    @property
    def completion(self) -> Completion:
        """The Completion so far (complete once the stream has ended)."""
        return self._state.completion()

    @property
    def stats(self) -> Stats:
        """Timings of this stream so far."""
        return self._state.stats()

    @property
    def last_chunk(self) -> Optional[Dict[str, Any]]:
        """The raw chunk object the latest deltas came from."""
        return self._state.last_chunk

    @property
    def events(self) -> int:
        return self._state.events

    @property
    def retries(self) -> int:
        return self._state.retries

    def chunks(self) -> Iterator[Dict[str, Any]]:
        """Iterate the raw chunk objects instead of deltas, every one of them, also those that
        hold no delta (deltas are still accumulated)."""
        log = self._state.chunk_log = []
        for _ in self._iterator:
            while log:
                yield log.pop(0)
        yield from log
        log.clear()

    def _run(self) -> Iterator[Delta]:
        response = self._response
        state = self._state
        assert response is not None
        try:
            add = state.add
            if state.is_json:
                for delta in state.whole_json(response.read_bounded(state.max_event_bytes + 1)):
                    add(delta)
                    yield delta
            else:
                feed = state.feed
                for piece in response.pieces():
                    for delta in feed(piece):
                        add(delta)
                        yield delta
                    if state.error is not None or state.done:
                        break
                for delta in state.flush():
                    add(delta)
                    yield delta
                if state.error is None and not state.done:
                    state.end()
            if state.error is not None:
                raise state.error
        except StreamliteError as exc:
            raise state.attach_partial(exc)
        except OSError as exc:
            error = APIConnectionError(
                "the connection broke during the stream: %s" % (getattr(exc, "strerror", None) or exc)
            )
            raise state.attach_partial(error) from None
        finally:
            self.close()


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
        return APIError(fields[0], code=fields[1], type=fields[2], body=value)
    return ProtocolError("event %d holds JSON that is not an object: %r" % (number, _clip(_json_text(value), 80)))


def _raise_chunk_error(chunk: Mapping[str, Any]) -> None:
    groq = chunk.get("x_groq")
    if chunk.get("error") or chunk.get("object") == "error" or (isinstance(groq, dict) and groq.get("error")):
        fields = error_fields(chunk)
        if fields is not None:
            raise APIError(fields[0], code=fields[1], type=fields[2], body=dict(chunk))


def _finish_reason_error(choice: Mapping[str, Any], chunk: Mapping[str, Any]) -> APIError:
    """A choice that ended with finish_reason "error" but no top-level error object."""
    fields = error_fields(choice) if choice.get("error") else None
    if fields is None:
        fields = ('the provider ended choice %s with finish_reason "error"' % choice.get("index", 0), None, None)
    return APIError(fields[0], code=fields[1], type=fields[2], body=dict(chunk))


_CLIENT_OPTIONS = (
    "base_url", "api_key", "connect_timeout", "read_timeout", "total_timeout", "max_retries",
    "headers", "ca_file", "verify", "proxy", "include_usage", "max_event_bytes", "azure",
    "api_version", "think_tags",
)


def _positive(name: str, value: Any, *, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError("%s must be a positive number of seconds, got %r" % (name, value))
    return float(value)


class Client:
    """A client for one OpenAI-compatible endpoint; safe to share between threads.

    Args:
        base_url: the API root, e.g. "https://api.openai.com/v1" (default: OPENAI_BASE_URL,
            else OpenAI). A URL that already ends in /chat/completions is used as it is.
        api_key: sent as "Authorization: Bearer" ("api-key" for Azure); default OPENAI_API_KEY.
        connect_timeout: seconds to establish the connection (TCP, proxy tunnel and TLS).
        read_timeout: the longest silence between bytes, also the wait for the first byte.
        total_timeout: a deadline for the whole call, retries included (None: no deadline).
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
    """

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
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigError("unknown option %r; the options are: %s" % (sorted(unknown)[0], ", ".join(_CLIENT_OPTIONS)))
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        host = _split_url(self.base_url, "base_url").hostname
        self.azure = _is_azure_host(host) if azure is None else bool(azure)
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY")
            if api_key is None and self.azure:
                api_key = os.environ.get("AZURE_OPENAI_API_KEY")
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigError("api_key must be a str")
        self._api_key = (api_key or "").strip() or None
        if self._api_key is not None and _has_control(self._api_key):
            raise ConfigError("api_key contains a control character")
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.read_timeout = _positive("read_timeout", read_timeout)
        self.total_timeout = _positive("total_timeout", total_timeout, optional=True)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError("max_retries must be a whole number >= 0, got %r" % (max_retries,))
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 1024:
            raise ConfigError("max_event_bytes must be a whole number >= 1024, got %r" % (max_event_bytes,))
        self.max_retries = max_retries
        self.max_event_bytes = max_event_bytes
        self.include_usage = bool(include_usage)
        self.api_version = api_version
        self.think_tags = bool(think_tags)
        self.headers: Dict[str, str] = {}
        for name, value in (headers or {}).items():
            _check_header(name, value)
            self.headers[name] = value
        self._transport = _Transport(
            connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
            read_timeout=self.read_timeout,  # type: ignore[arg-type]
            max_retries=max_retries,
            ca_file=ca_file,
            verify=bool(verify),
            proxy=proxy,
        )
        # scrubbed from error text a server might echo; too short a string would mangle words
        self._secrets = self._secrets_of(host)

    def _secrets_of(self, host: str) -> List[str]:
        """What must never show in an error: the key, and the credentials of every proxy this
        client may use (explicit or from the environment) with their base64 tokens. Strings
        under 8 characters are left out: replacing them would mangle ordinary words."""
        proxies = [self._transport.proxy]
        if self._transport.proxy is None and not self._transport.no_proxy:
            for scheme in ("http", "https"):
                url = _proxy_from_env(scheme, host)
                try:
                    proxies.append(_Proxy(url) if url else None)
                except ConfigError:
                    pass  # a malformed proxy variable: the request will say so
        found = [self._api_key] + [secret for proxy in proxies if proxy is not None for secret in proxy.secrets]
        for name, value in self.headers.items():  # credentials passed as headers= (x-api-key, ...)
            if _CREDENTIAL_HEADER.search(name):
                found += [value.strip(), value.strip().split(" ")[-1]]  # "Bearer <token>": the token too
        return [secret for secret in found if secret and len(secret) >= 8]

    def __repr__(self) -> str:
        return "Client(base_url=%r)" % (self.base_url,)

    def stream(
        self,
        messages: Messages,
        *,
        model: Optional[str] = None,
        system: Optional[str] = None,
        accumulate: bool = True,
        **body: Any,
    ) -> Stream:
        """Start a streaming chat completion and return its Stream.

        Args:
            messages: a prompt (str), or a list of OpenAI chat messages.
            model: the model name (Azure: the deployment); omitted from the body when None.
            system: a system message put before the messages.
            accumulate: keep a running Completion (False: constant memory; only the finish
                reason and usage are kept).
            **body: any other field of the request body, sent unchanged (temperature,
                max_tokens, tools, response_format, provider-specific fields...).
        Raises:
            ConfigError before any I/O; APIError, APIConnectionError, ProtocolError.
        """
        return self._stream(messages, model, system, accumulate, body, None)

    def complete(self, messages: Messages, *, model: Optional[str] = None, system: Optional[str] = None, **body: Any) -> Completion:
        """Stream a chat completion to its end and return the Completion."""
        with self.stream(messages, model=model, system=system, **body) as stream:
            for _ in stream:
                pass
        return stream.completion

    def batch(self, requests: Iterable[Any], *, concurrency: int = 8, rpm: Optional[float] = None, tpm: Optional[float] = None, **body: Any) -> Iterator[BatchResult]:  # batch: wrapper, re-add
        """Run many requests (prompts or request objects) paced and concurrently; yield a BatchResult for each in completion order. `body` fields (model=...) apply to requests without them."""  # batch: wrapper, re-add
        return _batch(self, requests, concurrency=concurrency, rpm=rpm, tpm=tpm, defaults=body)  # batch: wrapper, re-add

    def _stream(
        self,
        messages: Messages,
        model: Optional[str],
        system: Optional[str],
        accumulate: bool,
        body: Dict[str, Any],
        tap: Optional[Callable[[bytes], None]],
    ) -> Stream:
        endpoint = _endpoint(self.base_url, azure=self.azure, model=model, api_version=self.api_version)
        payload = self._payload(messages, model, system, body)
        return Stream(self, endpoint, self._request_headers(), payload, accumulate=accumulate, tap=tap)

    def _payload(self, messages: Messages, model: Optional[str], system: Optional[str], body: Dict[str, Any]) -> Dict[str, Any]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif not isinstance(messages, (list, tuple)):
            raise ConfigError("messages must be a str prompt or a list of messages, got %s" % type(messages).__name__)
        messages = list(messages)
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        payload: Dict[str, Any] = {}
        if model is not None:
            payload["model"] = model
        payload["messages"] = messages
        payload.update(body)
        payload.setdefault("stream", True)
        if self.include_usage and payload["stream"] and "stream_options" not in payload:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _request_headers(self) -> Dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        given = {name.lower() for name in self.headers}
        if self._api_key is not None and not given & {"authorization", "api-key"}:
            if self.azure:
                headers["api-key"] = self._api_key
            else:
                headers["Authorization"] = "Bearer " + self._api_key
        headers.update(self.headers)
        return headers

    def _open(
        self,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        payload: Dict[str, Any],
        deadline: Optional[float],
        state: _StreamState,
    ) -> _Response:
        """Send the request (retrying as the transport allows); scrub secrets from errors."""
        try:
            try:
                return self._transport.open(endpoint, headers, _encode(payload), deadline, state.note_retry)
            except APIError as exc:
                if not _rejects_stream_options(exc, payload):
                    raise
            payload = _without_stream_options(payload, state)
            return self._transport.open(endpoint, headers, _encode(payload), deadline, state.note_retry)
        except StreamliteError as exc:
            _scrub(exc, self._secrets)
            raise


class AsyncStream:
    """The asyncio twin of Stream: an async iterator of deltas and an async context manager.

    The connection opens on `async with` (or the first `async for` step). Cancelling the task,
    leaving the loop or the block, or aclose() closes the connection.
    """

    def __init__(
        self,
        client: AsyncClient,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        payload: Dict[str, Any],
        accumulate: bool,
    ) -> None:
        self._client = client
        self._request = (endpoint, headers, payload)
        self._state = _StreamState("", client.max_event_bytes, accumulate, None, client.think_tags)
        self._response: Optional[_AsyncResponse] = None
        self._iterator: Optional[Any] = None

    async def _open(self) -> None:
        if self._iterator is not None:
            return
        state = self._state
        endpoint, headers, payload = self._request
        total = self._client.total_timeout
        deadline = state.started + total if total else None
        state.secrets = self._client._secrets
        self._response = await self._client._aopen(endpoint, headers, payload, deadline, state)
        state.content_type = self._response.content_type
        state.counters = self._response
        self._iterator = self._run()

    async def __aenter__(self) -> AsyncStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Delta:
        await self._open()
        assert self._iterator is not None
        delta: Delta = await self._iterator.__anext__()
        return delta

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        iterator = self._iterator
        if iterator is not None:
            await iterator.aclose()
        self._finish()

    def __del__(self) -> None:
        if getattr(self, "_response", None) is not None:
            self._finish()

    def _finish(self) -> None:
        response = self._response
        if response is not None:
            self._response = None
            if self._state.ended_at is None:
                self._state.ended_at = time.monotonic()
            response.close()

    @property
    def completion(self) -> Completion:
        """The Completion so far (complete once the stream has ended)."""
        return self._state.completion()

    @property
    def stats(self) -> Stats:
        return self._state.stats()

    @property
    def last_chunk(self) -> Optional[Dict[str, Any]]:
        return self._state.last_chunk

    async def _run(self) -> Any:
        response = self._response
        state = self._state
        assert response is not None
        try:
            add = state.add
            if state.is_json:
                for delta in state.whole_json(await response.read_bounded(state.max_event_bytes + 1)):
                    add(delta)
                    yield delta
            else:
                async for piece in response.pieces():
                    for delta in state.feed(piece):
                        add(delta)
                        yield delta
                    if state.error is not None or state.done:
                        break
                for delta in state.flush():
                    add(delta)
                    yield delta
                if state.error is None and not state.done:
                    state.end()
            if state.error is not None:
                raise state.error
        except StreamliteError as exc:
            raise state.attach_partial(exc)
        except OSError as exc:
            error = APIConnectionError("the connection broke during the stream: %s" % (exc.strerror or exc))
            raise state.attach_partial(error) from None
        finally:
            self._finish()


class AsyncClient(Client):
    """The asyncio client: the same options as Client, with astream() and acomplete()."""

    def astream(
        self,
        messages: Messages,
        *,
        model: Optional[str] = None,
        system: Optional[str] = None,
        accumulate: bool = True,
        **body: Any,
    ) -> AsyncStream:
        """Return an AsyncStream: `async with client.astream(...) as s: async for delta in s:`."""
        endpoint = _endpoint(self.base_url, azure=self.azure, model=model, api_version=self.api_version)
        payload = self._payload(messages, model, system, body)
        return AsyncStream(self, endpoint, self._request_headers(), payload, accumulate)

    def abatch(self, requests: Iterable[Any], *, concurrency: int = 8, rpm: Optional[float] = None, tpm: Optional[float] = None, **body: Any) -> Any:  # batch: wrapper, re-add
        """The async Client.batch: `async for result in aclient.abatch(requests, model=...)`."""  # batch: wrapper, re-add
        return _abatch(self, requests, concurrency=concurrency, rpm=rpm, tpm=tpm, defaults=body)  # batch: wrapper, re-add

    async def acomplete(
        self, messages: Messages, *, model: Optional[str] = None, system: Optional[str] = None, **body: Any
    ) -> Completion:
        """Stream a chat completion to its end and return the Completion."""
        async with self.astream(messages, model=model, system=system, **body) as stream:
            async for _ in stream:
                pass
        return stream.completion

    async def _aopen(
        self,
        endpoint: _Endpoint,
        headers: Dict[str, str],
        payload: Dict[str, Any],
        deadline: Optional[float],
        state: _StreamState,
    ) -> _AsyncResponse:
        try:
            try:
                return await _async_open(self._transport, endpoint, headers, _encode(payload), deadline, state.note_retry)
            except APIError as exc:
                if not _rejects_stream_options(exc, payload):
                    raise
            payload = _without_stream_options(payload, state)
            return await _async_open(self._transport, endpoint, headers, _encode(payload), deadline, state.note_retry)
        except StreamliteError as exc:
            _scrub(exc, self._secrets)
            raise


def _encode(payload: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ConfigError("the request body cannot be encoded as JSON: %s" % exc) from None


def _without_stream_options(payload: Dict[str, Any], state: _StreamState) -> Dict[str, Any]:
    state.accumulator.warnings.append(
        "the server rejected stream_options; the request was sent again without it, so usage "
        "may be missing"
    )
    return {key: value for key, value in payload.items() if key != "stream_options"}


def _rejects_stream_options(error: APIError, payload: Mapping[str, Any]) -> bool:
    if error.status not in (400, 422) or "stream_options" not in payload:
        return False
    text = (error.message + " " + str(error.body)).lower()
    return "stream_options" in text or "include_usage" in text


def _scrub(error: StreamliteError, secrets: Sequence[str]) -> None:
    """Remove secrets from an error's text, in case a server echoed them back."""
    if not secrets:
        return

    def clean(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
        return text

    for name in ("message", "body"):
        value = getattr(error, name, None)
        if isinstance(value, str):
            setattr(error, name, clean(value))
        elif value is not None and any(secret in _json_text(value) for secret in secrets):
            setattr(error, name, "[redacted: the body contained a secret]")
    if isinstance(error, APIError):
        error.args = (error._render(),)
    else:
        error.args = tuple(clean(arg) if isinstance(arg, str) else arg for arg in error.args)


def _split_options(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    options = {name: kwargs.pop(name) for name in _CLIENT_OPTIONS if name in kwargs}
    return options, kwargs


def stream(messages: Messages, **kwargs: Any) -> Stream:
    """Stream a chat completion with a throwaway Client.

    Keywords that are Client options (base_url, api_key, timeouts, ...) configure the client;
    model, system and everything else go to Client.stream().
    """
    options, rest = _split_options(dict(kwargs))
    return Client(**options).stream(messages, **rest)


def complete(messages: Messages, **kwargs: Any) -> Completion:
    """Stream a chat completion to its end with a throwaway Client; return the Completion."""
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
            file.write(kept)
            file.flush()
            os.fsync(file.fileno())
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


def _batch_request_id(completion: Completion) -> str:
    """The server's request id when the Completion carries one, else a local one."""
    found = getattr(completion, "request_id", None) or getattr(completion.stats, "request_id", None)
    return found if isinstance(found, str) and found else "req_" + os.urandom(12).hex()


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
        self.fatal: Optional[StreamliteError] = None  # nothing could run: the error to raise
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
            return BatchResult(request.custom_id, completion, None, request.line, 200, _batch_request_id(completion), request.attempts)
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


def _batch_send(client: Client, request: _BatchRequest, streams: Dict[int, Any], lock: Any) -> Tuple[Optional[Completion], Optional[StreamliteError]]:
    """Send one request with client.stream() and read it to the end (thread worker side)."""
    import threading

    key = threading.get_ident()
    try:
        messages, kwargs = _batch_call(request)
        stream = client.stream(messages, **kwargs)
        with lock:
            streams[key] = stream
        try:
            with stream:
                for _ in stream:
                    pass
            return stream.completion, None
        finally:
            with lock:
                streams.pop(key, None)
    except (StreamliteError, TypeError, ValueError) as exc:
        return None, _batch_outcome_error(exc)


def _batch(
    client: Client,
    requests: Iterable[Any],
    *,
    concurrency: int = 8,
    rpm: Optional[float] = None,
    tpm: Optional[float] = None,
    retries: int = 0,
    defaults: Optional[Mapping[str, Any]] = None,
) -> Iterator[BatchResult]:
    """Run requests on `concurrency` threads; yield a BatchResult for each, in completion order.

    Invalid requests come first, as failed results. ConfigError (before any I/O) for bad
    arguments or a repeated custom_id; APIConnectionError when no request could reach the server.
    Stopping early (break, close()) stops the workers and closes the streams in flight.
    """
    prepared = _batch_prepare(requests, defaults)
    plan = _BatchPlan(prepared, concurrency=concurrency, rpm=rpm, tpm=tpm, retries=retries)
    return _batch_run(client, prepared, plan)


def _batch_run(client: Client, prepared: Sequence[_BatchRequest], plan: _BatchPlan) -> Iterator[BatchResult]:
    import collections
    import threading

    for request in prepared:
        if request.problem is not None:
            yield _batch_invalid(request)
    condition = threading.Condition()  # guards the plan
    delivered = threading.Condition()  # guards results
    results: Any = collections.deque()
    streams: Dict[int, Any] = {}
    streams_lock = threading.Lock()
    finished = object()

    def work() -> None:
        try:
            while True:
                with condition:
                    while True:
                        step = plan.take(time.monotonic())
                        if isinstance(step, _BatchRequest):
                            break
                        if plan.finished:
                            condition.notify_all()
                            return
                        condition.wait(step)
                completion, error = _batch_send(client, step, streams, streams_lock)
                with condition:
                    result = plan.finish(step, completion, error, time.monotonic())
                    condition.notify_all()
                if result is not None:
                    with delivered:
                        results.append(result)
                        delivered.notify()
        finally:
            with delivered:
                results.append(finished)
                delivered.notify()

    workers = [threading.Thread(target=work, name="streamlite-batch", daemon=True) for _ in range(min(plan.concurrency, plan.total))]
    for worker in workers:
        worker.start()
    try:
        alive = len(workers)
        while alive:
            with delivered:
                while not results:
                    delivered.wait()
                result = results.popleft()
            if result is finished:
                alive -= 1
            else:
                yield result
        if plan.fatal is not None:
            raise plan.fatal
    finally:
        with condition:
            plan.stop()
            condition.notify_all()
        with streams_lock:
            open_streams = list(streams.values())
        for stream in open_streams:
            stream.close()  # from this thread: the worker's read ends at once
        deadline = time.monotonic() + 5.0
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


async def _abatch_send(aclient: AsyncClient, request: _BatchRequest) -> Tuple[Optional[Completion], Optional[StreamliteError]]:
    try:
        messages, kwargs = _batch_call(request)
        async with aclient.astream(messages, **kwargs) as stream:
            async for _ in stream:
                pass
        return stream.completion, None
    except (StreamliteError, TypeError, ValueError) as exc:
        return None, _batch_outcome_error(exc)


def _abatch(
    aclient: AsyncClient,
    requests: Iterable[Any],
    *,
    concurrency: int = 8,
    rpm: Optional[float] = None,
    tpm: Optional[float] = None,
    retries: int = 0,
    defaults: Optional[Mapping[str, Any]] = None,
) -> Any:
    """The asyncio twin of _batch: an async iterator of BatchResult on `concurrency` tasks."""
    prepared = _batch_prepare(requests, defaults)
    plan = _BatchPlan(prepared, concurrency=concurrency, rpm=rpm, tpm=tpm, retries=retries)
    return _abatch_run(aclient, prepared, plan)


async def _abatch_run(aclient: AsyncClient, prepared: Sequence[_BatchRequest], plan: _BatchPlan) -> Any:
    import asyncio

    for request in prepared:
        if request.problem is not None:
            yield _batch_invalid(request)
    loop = asyncio.get_event_loop()
    results: Any = asyncio.Queue()
    changed = [loop.create_future()]  # resolved (and replaced) whenever the plan changes
    finished = object()

    def notify() -> None:
        if not changed[0].done():
            changed[0].set_result(None)
        changed[0] = loop.create_future()

    async def work() -> None:
        try:
            while True:
                step = plan.take(time.monotonic())
                if isinstance(step, _BatchRequest):
                    completion, error = await _abatch_send(aclient, step)
                    result = plan.finish(step, completion, error, time.monotonic())
                    notify()
                    if result is not None:
                        results.put_nowait(result)
                elif plan.finished:
                    notify()
                    return
                else:
                    await asyncio.wait([changed[0]], timeout=step)
        finally:
            results.put_nowait(finished)

    tasks = [asyncio.ensure_future(work()) for _ in range(min(plan.concurrency, plan.total))]
    try:
        alive = len(tasks)
        while alive:
            result = await results.get()
            if result is finished:
                alive -= 1
            else:
                yield result
        if plan.fatal is not None:
            raise plan.fatal
    finally:
        plan.stop()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


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
# and a distinct exit code), KeyboardInterrupt (130) and a closed pipe (quiet).

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_CONNECTION = 4
EXIT_TIMEOUT = 5
EXIT_CUT_OFF = 6
EXIT_PROTOCOL = 7
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_CLI_EPILOG = """\
examples:
  streamlite "Tell me a joke"                       # key from OPENAI_API_KEY
  cat notes.txt | streamlite -m gpt-4.1 "Summarise"  # stdin becomes context after the prompt
  streamlite --base-url http://127.0.0.1:8080/v1 --jsonl "Hi" | jq -c .
  streamlite -X reasoning_effort='"high"' -X top_p=0.9 --stats "Why is the sky blue?"

environment:
  OPENAI_API_KEY     the API key (or the variable named by --api-key-env)
  OPENAI_BASE_URL    the API root (default https://api.openai.com/v1)
  STREAMLITE_MODEL   the default model
  NO_COLOR           no colour on stderr
  HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE   as for curl

exit codes:
  0 success   2 usage error   3 API error (HTTP status or an error in the stream)
  4 connection failure   5 timeout   6 stream cut off mid-way   7 protocol error
  130 interrupted (Ctrl-C)   141 output pipe closed
"""


def _parse_args(argv: Optional[Sequence[str]]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="streamlite",
        description="Stream a chat completion from any OpenAI-compatible API.",
        epilog=_CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("prompt", nargs="*", help='the prompt; "-" reads stdin (piped stdin is added after the prompt)')
    add("-m", "--model", default=os.environ.get("STREAMLITE_MODEL"), help="model (default: $STREAMLITE_MODEL)")
    add("-s", "--system", help="a system message")
    add("--base-url", help="API root (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    add("--api-key-env", default="OPENAI_API_KEY", metavar="NAME", help="read the key from this variable")
    add("-t", "--temperature", type=float)
    add("--max-tokens", type=int)
    add("-X", dest="extra", action="append", default=[], metavar="KEY=JSON",
        help="any other body field, e.g. -X top_p=0.9 -X 'stop=[\"\\n\"]' (not JSON: a string)")
    add("--no-usage", action="store_true", help="do not ask for the usage chunk")
    add("--reasoning", choices=("show", "hide", "only"), default="show",
        help="show: reasoning on stderr (default); hide; only: reasoning on stdout, no content")
    add("--jsonl", action="store_true", help="one JSON object per delta on stdout, then the completion")
    add("--stats", action="store_true", help="timings on stderr at the end")
    add("--raw", action="store_true", help="print the response body exactly as received")
    add("--color", choices=("auto", "always", "never"), default="auto", help="dim reasoning on stderr")
    add("--connect-timeout", type=float, default=10.0, metavar="S")
    add("--read-timeout", type=float, default=120.0, metavar="S", help="longest silence (default 120)")
    add("--total-timeout", type=float, metavar="S", help="deadline for the whole call")
    add("--max-retries", type=int, default=2)
    add("--ca-file", help="CA bundle for TLS (also $SSL_CERT_FILE)")
    add("--insecure", action="store_true", help="do not verify TLS certificates")
    add("--proxy", help="http:// proxy (default: $HTTPS_PROXY / $HTTP_PROXY)")
    add("--version", action="version", version="streamlite " + __version__)
    args = parser.parse_args(argv)
    try:
        args.body = _extra_fields(args.extra)
    except ValueError as exc:
        parser.error(str(exc))
    return args


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


def _stdin_text() -> Optional[str]:
    """Piped or redirected stdin, or None for a terminal, /dev/null or no stdin at all."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return None
    return sys.stdin.read()


def _prompt(words: Sequence[str]) -> Optional[str]:
    if "-" in words:
        words = [word for word in words if word != "-"]
        piped: Optional[str] = sys.stdin.read()
    else:
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


def _delta_json(delta: Delta) -> Dict[str, Any]:
    kind = type(delta)
    if kind is Usage:
        return dict(type="usage", **{k: v for k, v in _plain(delta).items() if k != "choice"})
    names = {ContentDelta: "content", ReasoningDelta: "reasoning", RefusalDelta: "refusal", ToolCallDelta: "tool_call", Finish: "finish"}
    out: Dict[str, Any] = {"type": names.get(kind, kind.__name__.lower())}
    out.update((k, v) for k, v in _plain(delta).items() if k != "raw")
    return out


def _completion_json(completion: Completion) -> Dict[str, Any]:
    out: Dict[str, Any] = _plain(completion)
    out["type"] = "completion"
    if completion.stats is not None:
        out["stats"]["tokens_per_second"] = completion.stats.tokens_per_second
    return out


def _format_stats(stats: Stats) -> str:
    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else "%.3f s" % value

    def millis(value: Optional[float]) -> str:
        return "-" if value is None else "%.1f ms" % (value * 1000)

    rate = stats.tokens_per_second
    return "streamlite: stats: first byte %s, first reasoning %s, first content %s, total %s, %s, %d events, gaps p50 %s p95 %s max %s, %d bytes, %d retries" % (
        seconds(stats.time_to_first_byte), seconds(stats.time_to_first_reasoning),
        seconds(stats.time_to_first_content), seconds(stats.duration),
        "-" if rate is None else "%.1f tokens/s" % rate, stats.events,
        millis(stats.gap_p50), millis(stats.gap_p95), millis(stats.gap_max), stats.bytes, stats.retries,
    )


class _Printer:
    """Writes deltas as the CLI shows them; remembers whether stdout needs a final newline."""

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
        stream.write(text)
        stream.flush()
        if to_err:
            self.err_tail = text[-1]
        else:
            self.out_tail = text[-1]

    def delta(self, delta: Delta) -> None:
        if self.args.jsonl:
            self.write(_json_text(_delta_json(delta), ensure_ascii=False) + "\n")
            return
        kind = type(delta)
        mode = self.args.reasoning
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
            self.write(_json_text(_completion_json(completion), ensure_ascii=False) + "\n")
        elif self.args.reasoning != "only":
            for call in completion.tool_calls:
                self.end_line()
                self.write("[tool call %s] %s %s\n" % (call.id or call.index, call.name, call.arguments))
        self.end_line()

    def end_line(self) -> None:
        if self.out_tail != "\n":
            self.write("\n")
        if self.err_tail != "\n":
            self.write("\n", to_err=True)


class _OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`) while the stream was writing to it."""


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)  # batch: the subcommand dispatch
    if argv and argv[0] == "batch": return _batch_main(argv[1:])  # noqa: E701  batch: the subcommand dispatch
    args = _parse_args(argv)
    printer = _Printer(args)
    try:
        return _run_cli(args, printer)
    except StreamliteError as exc:
        printer.end_line()
        if args.jsonl:
            printer.write(json.dumps({"type": "error", "error": type(exc).__name__, "message": str(exc),
                                      "status": getattr(exc, "status", None)}) + "\n")
        printer.write("streamlite: error: %s\n" % (" ".join(str(exc).split()) or type(exc).__name__), to_err=True)
        return _exit_code(exc)
    except KeyboardInterrupt:
        printer.end_line()
        return EXIT_INTERRUPTED
    except (BrokenPipeError, _OutputClosed):
        try:  # stdout is gone: point it at /dev/null so the exit flush is quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE


def _run_cli(args: Any, printer: _Printer) -> int:
    prompt = _prompt(args.prompt)
    if prompt is None:
        raise ConfigError("no prompt: give one as arguments or on stdin (see --help)")
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key.strip() and args.api_key_env != "OPENAI_API_KEY":
        # named on purpose but unset: never fall back to another variable's key
        raise ConfigError("--api-key-env %s: that environment variable is not set" % args.api_key_env)
    client = Client(
        args.base_url,
        api_key,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        total_timeout=args.total_timeout,
        max_retries=args.max_retries,
        ca_file=args.ca_file,
        verify=not args.insecure,
        proxy=args.proxy,
        include_usage=not args.no_usage,
    )
    body = dict(args.body)
    if args.temperature is not None:
        body["temperature"] = args.temperature
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    tap = None
    if args.raw:
        raw_out = sys.stdout.buffer

        def tap(piece: bytes) -> None:
            try:
                raw_out.write(piece)
                raw_out.flush()
            except BrokenPipeError:
                raise _OutputClosed() from None  # not an OSError: the stream must not see it

    stream = client._stream(prompt, args.model, args.system, True, body, tap)
    with stream:
        try:
            for delta in stream:
                if not args.raw:
                    printer.delta(delta)
        finally:
            if args.stats:
                printer.end_line()
                printer.write(_format_stats(stream.stats) + "\n", to_err=True)
    if not args.raw:
        printer.finish(stream.completion)
    return EXIT_OK


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
  0 every request succeeded   3 some failed (each failure is a line in OUT)   2 usage error
  4 the server could not be reached   5 timeout   130 interrupted
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
        if path is None:
            self.file: Any = sys.stdout.buffer
            self.own = False
        else:
            try:
                self.file = open(path, "ab", buffering=0)
            except OSError as exc:
                raise ConfigError("cannot write the output file %s: %s" % (path, exc.strerror or exc)) from None
            self.own = True

    def write(self, line: Dict[str, Any]) -> None:
        data = (_json_text(line, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        while data:
            written = self.file.write(data)
            data = data[written:] if written is not None else b""
        self.file.flush()

    def close(self) -> None:
        if self.own:
            self.file.close()


def _batch_main(argv: Sequence[str]) -> int:
    """`streamlite batch ...`: run a file of requests; return the exit code."""
    args = _batch_parse_args(argv)
    try:
        return _batch_cli(args)
    except StreamliteError as exc:
        _batch_stop_progress(args)
        sys.stderr.write("streamlite: error: %s\n" % (" ".join(str(exc).split()) or type(exc).__name__))
        return _exit_code(exc)
    except KeyboardInterrupt:
        _batch_stop_progress(args, interrupted=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        try:  # stdout is gone: point it at /dev/null so the exit flush is quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE


def _batch_stop_progress(args: Any, interrupted: bool = False) -> None:
    progress = getattr(args, "progress", None)
    if progress is not None:
        args.progress = None
        progress.close(interrupted)


def _batch_cli(args: Any) -> int:
    shard = _batch_shard(args.shard) if args.shard is not None else None
    if args.concurrency < 1:
        raise ConfigError("-j must be at least 1, got %d" % args.concurrency)
    if args.max_retries < 0:
        raise ConfigError("--max-retries must be >= 0, got %d" % args.max_retries)
    _BatchPlan([], concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, retries=args.max_retries)  # checks them
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key.strip() and args.api_key_env != "OPENAI_API_KEY":
        raise ConfigError("--api-key-env %s: that environment variable is not set" % args.api_key_env)
    # max_retries=0: every rate-limit answer reaches the batch at once, to pause all workers
    client = Client(
        args.base_url,
        api_key,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        total_timeout=args.total_timeout,
        max_retries=0,
        ca_file=args.ca_file,
        verify=not args.insecure,
        proxy=args.proxy,
        include_usage=not args.no_usage,
    )
    try:
        if args.input == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.input, "rb") as file:
                data = file.read()
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (args.input, exc.strerror or exc)) from None
    defaults = dict(args.body)
    for name, value in (("temperature", args.temperature), ("max_tokens", args.max_tokens), ("model", args.model),
                        ("system", args.system), ("api", args.api if args.api != "chat" else None)):
        if value is not None:
            defaults[name] = value
    requests = _batch_prepare(_batch_parse_lines(data), defaults)
    if shard is not None:
        requests = [request for request in requests if _batch_in_shard(request.custom_id, shard)]
    done = _batch_resume(args.output, [request.custom_id for request in requests]) if args.output else set()
    todo = [request for request in requests if request.custom_id not in done]
    plan = _BatchPlan(todo, concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm, retries=args.max_retries)
    output = _BatchOutput(args.output)
    invalid = sum(request.problem is not None for request in todo)
    args.progress = _BatchProgress(plan, len(requests) - len(todo), invalid, args.quiet)
    progress = args.progress
    try:
        results = _batch_run(client, todo, plan)
        try:
            for result in results:
                output.write(_batch_output_line(result))
                if result.error is None:
                    progress.succeeded += 1
                else:
                    progress.failed += 1
        finally:
            results.close()  # type: ignore[attr-defined]
    finally:
        output.close()
    _batch_stop_progress(args)
    return EXIT_API_ERROR if progress.failed else EXIT_OK


def _console_main() -> None:  # pragma: no cover - the installed `streamlite` script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
