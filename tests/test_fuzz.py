"""Property tests: random and mutated bytes and objects through every decoding layer (HTTP head,
chunked framing, SSE + JSON + chunk decoding + accumulation) raise nothing but streamlite's
typed errors, and never lose what was decoded before a failure."""

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlite
from streamlite import Accumulator, ChunkDecoder, ProtocolError, StreamliteError

STREAMS = sorted((pathlib.Path(__file__).parent / "data" / "streams").glob("*.sse"))
BODIES = [path.read_bytes() for path in STREAMS]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw):
    """A recorded provider body with a few bytes flipped, inserted, deleted, or cut short."""
    body = bytearray(draw(st.sampled_from(BODIES)))
    for _ in range(draw(st.integers(0, 6))):
        if not body:
            break
        at = draw(st.integers(0, len(body) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            body[at] = draw(st.integers(0, 255))
        elif action == "insert":
            body[at:at] = draw(st.sampled_from([b"\n", b"\r", b":", b"{", b"}", b'"', b"\x00", b"\xff", b"data: ",
                                                b"event: error\n", b"error: x\n", b"[DONE]", b"\n\n"]))
        elif action == "delete":
            del body[at : at + draw(st.integers(1, 16))]
        else:
            del body[at:]
    return bytes(body)


def splits(data, sizes):
    pieces, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        pieces.append(data[at : at + size])
        at += size
    if at < len(data):
        pieces.append(data[at:])
    return pieces


def run_state(pieces, accumulate=True):
    """Drive the client's sans-I/O stream state as Stream does; return (deltas, error)."""
    options = streamlite._StreamOptions(1 << 16, accumulate, None, True, "chat")
    state = streamlite._StreamDecoder("text/event-stream", options)
    deltas = []
    try:
        for piece in pieces:
            for delta in state.feed(piece):
                state.add(delta)
                deltas.append(delta)
            if state.error is not None or state.done:
                break
        for delta in state.flush():
            state.add(delta)
            deltas.append(delta)
        if state.error is None and not state.done:
            state.end()
        if state.error is not None:
            raise state.error
    except StreamliteError as exc:
        return deltas, state.attach_partial(exc, ()), state
    return deltas, None, state


@FUZZ
@given(mutated(), st.lists(st.integers(1, 64), max_size=40))
def test_mutated_provider_bodies_raise_only_typed_errors_and_keep_what_came(body, sizes):
    deltas, error, state = run_state(splits(body, sizes))
    completion = state.completion() if error is None else error.partial
    text = "".join(d.text for d in deltas if type(d) is streamlite.ContentDelta and d.choice == 0)
    assert completion.content == text  # the Completion holds exactly what was handed out


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(1, 64), max_size=40))
def test_random_bytes_through_the_stream_state_raise_only_typed_errors(data, sizes):
    run_state(splits(data, sizes), accumulate=False)


@FUZZ
@given(st.binary(max_size=1024), st.lists(st.integers(1, 32), max_size=40))
def test_chunked_framing_of_random_bytes_raises_only_protocol_errors(data, sizes):
    decoder = streamlite._ChunkedDecoder()
    try:
        for piece in splits(data, sizes):
            decoder.feed(piece)
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.lists(st.integers(1, 32), max_size=40))
def test_chunked_framing_is_split_invariant(payloads, sizes):
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"
    decoder = streamlite._ChunkedDecoder()
    out = b"".join(decoder.feed(piece) for piece in splits(wire, sizes))
    assert out == b"".join(payloads) and decoder.done


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.lists(st.integers(1, 64), max_size=40),
       st.sampled_from([b"zz\r\n", b"5\r\nabcdeXY", b"\r\n"]))
def test_chunked_framing_hands_out_every_whole_chunk_before_bad_framing(payloads, sizes, garbage):
    """However the bytes are split, the chunks before the bad framing all come out, then it raises."""
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + garbage
    decoder = streamlite._ChunkedDecoder()
    out = []
    with pytest.raises(ProtocolError, match="malformed chunked body"):
        for piece in splits(wire, sizes) + [b"\r\n"]:  # a last piece: an incomplete bad line fails too
            out.append(decoder.feed(piece))
            if decoder.failed is not None:
                raise decoder.failed
    assert b"".join(out)[: len(b"".join(payloads))] == b"".join(payloads)
    assert len(b"".join(out)) <= len(b"".join(payloads)) + 5  # at most the bad chunk's own data


@FUZZ
@given(st.binary(max_size=1024), st.lists(st.integers(1, 32), max_size=40))
def test_response_heads_of_random_bytes_raise_only_protocol_errors(data, sizes):
    head = streamlite._Head()
    try:
        for piece in splits(b"HTTP/1.1 " + data, sizes):
            if head.feed(piece) is not None:
                head.framer()
                break
    except ProtocolError:
        pass


JSON_KEYS = ["choices", "delta", "message", "content", "reasoning_content", "reasoning", "reasoning_details",
             "text", "type", "tool_calls", "function", "name", "arguments", "id", "index", "finish_reason",
             "refusal", "usage", "prompt_tokens", "completion_tokens", "total_tokens", "x_groq", "error",
             "message", "code", "object", "created", "model", "completion_tokens_details", "role"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.sampled_from(["", "x", "<think>", "stop"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(JSON_KEYS), children, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(JSON_KEYS), JSON, max_size=6), max_size=6))
def test_chunk_decoding_and_accumulation_never_break_on_odd_objects(chunks):
    for think_tags in (False, True):
        decoder, accumulator = ChunkDecoder(think_tags=think_tags), Accumulator()
        for chunk in chunks:
            for delta in decoder.decode(chunk):
                assert isinstance(delta, streamlite.Delta)
                accumulator.add(delta)
            accumulator.add_chunk_info(chunk)
        for delta in decoder.flush():
            accumulator.add(delta)
        accumulator.result()
        for chunk in chunks:
            streamlite.error_fields(chunk)
