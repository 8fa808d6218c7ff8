"""SSE decoder (sans-I/O): WHATWG examples and rules, every way of splitting the bytes."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlite import ProtocolError, ServerSentEvent, SSEDecoder

E = ServerSentEvent

# (name, bytes, expected events) -- the first four are the WHATWG spec's own examples (9.2.5/9.2.6)
VECTORS = [
    ("spec-stock", b"data: YHOO\ndata: +2\ndata: 10\n\n", [E("message", "YHOO\n+2\n10")]),
    ("spec-ids", b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
     [E("message", "first event", "1"), E("message", "second event", ""), E("message", " third event", "")]),
    ("spec-empty-data", b"data\n\ndata\ndata\n\ndata:", [E("message", ""), E("message", "\n")]),
    ("spec-space", b"data:test\n\ndata: test\n\n", [E("message", "test"), E("message", "test")]),
    ("crlf", b"data: a\r\n\r\ndata: b\r\n\r\n", [E("message", "a"), E("message", "b")]),
    ("cr", b"data: a\r\rdata: b\r\r", [E("message", "a"), E("message", "b")]),
    ("lf-cr-is-two-line-ends", b"data: a\n\rdata: b\n\n", [E("message", "a"), E("message", "b")]),
    ("bom-once", b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n", [E("message", "a")]),
    ("event-type", b"event: ping\ndata: x\n\ndata: y\n\n", [E("ping", "x"), E("message", "y")]),
    ("id-with-nul-ignored", b"id: 7\ndata: a\n\nid: 8\x009\ndata: b\n\n", [E("message", "a", "7"), E("message", "b", "7")]),
    ("retry-own-block", b"retry: 1500\ndata: a\n\nretry: 2x\ndata: b\n\nretry: 10\n\n", [E("message", "a", "", 1500), E("message", "b")]),
    ("id-only-block-dispatches-nothing-but-sets-id", b"id: 5\n\ndata: a\n\n", [E("message", "a", "5")]),
    ("unknown-field-and-comment", b": keep-alive\nfoo: bar\ndata: a\n\n", [E("message", "a")]),
    ("invalid-utf8", b"data: \xff\xfe ok\n\n", [E("message", "\ufffd\ufffd ok")]),
    ("unterminated-dropped", b"data: a\n\ndata: b\n", [E("message", "a")]),
    ("done-no-space", b"data:[DONE]\n\n", [E("message", "[DONE]")]),
]


def _decode(pieces, **options):
    decoder = SSEDecoder(**options)
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def _splits(data, seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@pytest.mark.parametrize("name, data, expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_whole_bytewise_and_random_splits(name, data, expected):
    assert _decode([data]) == expected
    assert _decode([data[i : i + 1] for i in range(len(data))]) == expected
    for seed in range(5):
        assert _decode(_splits(data, seed)) == expected


def test_cr_at_end_of_one_feed_and_lf_at_start_of_next_is_one_line_end():
    assert _decode([b"data: a\r", b"\n\r", b"\n"]) == [E("message", "a")]


def test_line_over_the_limit_raises_even_when_it_trickles_in():
    decoder = SSEDecoder(1024)
    with pytest.raises(ProtocolError, match="1024"):
        for _ in range(2000):
            decoder.feed(b"x")
    with pytest.raises(ProtocolError):
        decoder.feed(b"\n\n")


def test_event_over_the_limit_raises():
    with pytest.raises(ProtocolError, match="limit"):
        _decode([b"data: " + b"y" * 600 + b"\n"] * 3, max_event_bytes=1024)


def test_lenient_error_field_is_reported_only_when_asked():
    data = b'error: {"message": "boom"}\n\ndata: [DONE]\n\n'
    assert _decode([data]) == [E("message", "[DONE]")]
    assert _decode([data], lenient_error_field=True)[0] == E("error", '{"message": "boom"}')


field_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from(["", "ping", "update"]), st.lists(field_text, min_size=1, max_size=3)), max_size=6),
    eol=st.sampled_from([b"\n", b"\r", b"\r\n"]),
    seed=st.integers(0, 10**6),
)
def test_encoded_events_round_trip_under_any_split(events, eol, seed):
    out = b""
    expected = []
    for kind, lines in events:
        block = [b": comment"] + ([b"event: " + kind.encode()] if kind else [])
        block += [b"data: " + line.encode() for line in lines]
        out += eol.join(block) + eol + eol
        expected.append(E(kind or "message", "\n".join(lines)))
    assert _decode(_splits(out, seed) if out else []) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 10**6))
def test_arbitrary_bytes_are_split_invariant_and_raise_only_protocol_errors(data, seed):
    try:
        whole = _decode([data], max_event_bytes=1024)
    except ProtocolError:
        return
    assert _decode(_splits(data, seed) if data else [], max_event_bytes=1024) == whole


class _LineByLine(SSEDecoder):
    """The decoder without its block-at-a-time fast path: every line through _interpret."""

    def _blocks(self, text):
        return self._interpret(text[:-1].split("\n"), [])


SSE_LINES = st.sampled_from([
    "data: x", "data: {\"a\": 1}", "data:", "data", "data:  two spaces", "data: [DONE]", "", "", "",
    ": comment", "event: error", "event:", "id: 7", "id", "retry: 100", "retry: x", "error: boom", "other: 1",
    "data: " + "y" * 1015, "data: " + "z" * 1030,  # at and over the 1024-byte limit
])


def _events_or_error(decoder, pieces):
    events = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
        events += decoder.close()
    except ProtocolError as exc:
        return events, str(exc)
    return events, None


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(SSE_LINES, max_size=30), eol=st.sampled_from(["\n", "\r\n", "\r"]), seed=st.integers(0, 10**6),
       lenient=st.booleans())
def test_the_fast_path_gives_exactly_the_events_of_the_line_by_line_path(lines, eol, seed, lenient):
    data = (eol.join(lines) + eol).encode()
    pieces = _splits(data, seed)
    fast, slow = SSEDecoder(1024, lenient_error_field=lenient), _LineByLine(1024, lenient_error_field=lenient)
    assert _events_or_error(fast, pieces) == _events_or_error(slow, pieces)


def test_events_before_an_oversized_line_in_the_same_feed_come_out_first():
    decoder = SSEDecoder(64)
    events = decoder.feed(b"data: one\n\nevent: x\ndata: two\n\ndata: " + b"z" * 100 + b"\n\n")
    assert events == [E("message", "one"), E("x", "two")]
    assert isinstance(decoder.failed, ProtocolError)
    with pytest.raises(ProtocolError, match="larger than the limit of 64 bytes"):
        decoder.feed(b"data: more\n\n")
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(b"data: more\n\n")


def test_a_held_back_error_is_raised_by_close_too():
    decoder = SSEDecoder(64)
    assert decoder.feed(b"data: one\n\n: " + b"c" * 100 + b"\n") == [E("message", "one")]
    with pytest.raises(ProtocolError, match="longer than the limit of 64 bytes"):
        decoder.close()


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text("abc{}\" ", max_size=20), min_size=1, max_size=10), seed=st.integers(0, 10**6),
       fault=st.sampled_from([b"data: " + b"y" * 80 + b"\n", b": " + b"c" * 80 + b"\n", b"data: " + b"x" * 200]))
def test_every_event_before_a_fault_comes_out_under_any_split(texts, seed, fault):
    wire = b"".join(b"data: " + t.encode() + b"\n\n" for t in texts) + fault
    decoder = SSEDecoder(64)
    events = []
    with pytest.raises(ProtocolError, match="limit of 64 bytes"):
        for piece in _splits(wire, seed):
            events += decoder.feed(piece)
        decoder.close()
    assert events == [E("message", t) for t in texts]
