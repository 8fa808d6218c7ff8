"""Chunk decoding and accumulation alone: dicts in, deltas and Completions out (no bytes, no sockets)."""

from hypothesis import given, strategies as st

from streamlite import (Accumulator, ChunkDecoder, ContentDelta, Finish, ReasoningDelta, RefusalDelta,
                        ToolCallDelta, parse_chunk)


def chunk(delta=None, finish=None, index=0, **top):
    choice = {"index": index, "delta": delta or {}, "finish_reason": finish}
    return dict({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}, **top)


def test_reasoning_fields_are_never_doubled():
    both = chunk({"reasoning": "think", "reasoning_details": [{"type": "reasoning.text", "text": "think"}]})
    assert parse_chunk(both) == [ReasoningDelta("think")]
    assert parse_chunk(chunk({"reasoning_details": [{"type": "reasoning.text", "text": "a"}]})) == [ReasoningDelta("a")]
    assert parse_chunk(chunk({"reasoning_content": "r", "content": None})) == [ReasoningDelta("r")]


def test_usage_variants():
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
             "completion_tokens_details": {"reasoning_tokens": 3}, "prompt_tokens_details": {"cached_tokens": 2}}
    (only,) = parse_chunk({"choices": [], "usage": usage})
    assert (only.prompt_tokens, only.completion_tokens, only.reasoning_tokens, only.cached_tokens) == (5, 7, 3, 2)
    (groq,) = parse_chunk({"choices": None, "x_groq": {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}})
    assert groq.total_tokens == 3
    (deepseek,) = parse_chunk({"usage": {"prompt_tokens": 4, "completion_tokens": 1, "prompt_cache_hit_tokens": 4}})
    assert deepseek.cached_tokens == 4


def test_unknown_fields_empty_finish_and_missing_choices_are_harmless():
    assert parse_chunk({"foo": {"bar": 1}}) == []
    assert parse_chunk(chunk({"content": "x", "weird": [1]}, finish="")) == [ContentDelta("x")]


def test_magistral_content_parts_and_refusal():
    parts = [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}, {"type": "text", "text": "ok"}]
    assert parse_chunk(chunk({"content": parts})) == [ReasoningDelta("hm"), ContentDelta("ok")]
    assert parse_chunk(chunk({"refusal": "no"})) == [RefusalDelta("no")]


def test_index_less_tool_calls_are_numbered_by_id_then_order():
    decoder = ChunkDecoder()
    first = decoder.decode(chunk({"tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "function": {"name": "g", "arguments": "{\"x\""}}]}))
    more = decoder.decode(chunk({"tool_calls": [{"id": "b", "function": {"arguments": ":1}"}}]}, finish="stop"))
    accumulator = Accumulator()
    for delta in first + more:
        accumulator.add(delta)
    calls = accumulator.result().tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [(0, "a", "f", "{}"), (1, "b", "g", '{"x":1}')]


def test_repeated_id_and_empty_name_are_not_concatenated():
    accumulator = Accumulator()
    for piece in ['{"q"', ':"x"}']:
        for delta in parse_chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "" if piece != '{"q"' else "s", "arguments": piece}}]})):
            accumulator.add(delta)
    (call,) = accumulator.result().tool_calls
    assert (call.id, call.name, call.arguments) == ("call_1", "s", '{"q":"x"}')


def test_choices_are_kept_apart_and_refusal_is_none_until_sent():
    accumulator = Accumulator()
    for delta in [ContentDelta("a", 0), ContentDelta("b", 1), Finish("stop", 0), Finish("length", 1)]:
        accumulator.add(delta)
    result = accumulator.result()
    assert [(c.index, c.content, c.finish_reason) for c in result.choices] == [(0, "a", "stop"), (1, "b", "length")]
    assert result.refusal is None and result.content == "a"


def test_think_tags_split_across_deltas():
    decoder = ChunkDecoder(think_tags=True)
    out = []
    for text in ["<thi", "nk>plan", "</think>\n\nAns", "wer"]:
        out += decoder.decode(chunk({"content": text}))
    out += decoder.flush()
    assert "".join(d.text for d in out if isinstance(d, ReasoningDelta)) == "plan"
    assert "".join(d.text for d in out if isinstance(d, ContentDelta)) == "Answer"


@given(st.lists(st.text(min_size=1, max_size=5), max_size=30))
def test_content_fragments_accumulate_back(pieces):
    accumulator = Accumulator()
    for piece in pieces:
        for delta in parse_chunk(chunk({"content": piece})):
            accumulator.add(delta)
    assert accumulator.result().content == "".join(pieces)


@given(st.integers(0, 5000), st.integers(1, 3))
def test_long_streams_accumulate_back_across_compactions(count, choices):
    """Fragments are joined into blocks as they pile up; the text and its order survive, for
    content and reasoning, in every choice, and the Completion so far is right at any point."""
    accumulator = Accumulator()
    for i in range(count):
        accumulator.add(ContentDelta(str(i % 10), i % choices))
        if i % 3 == 0:
            accumulator.add(ReasoningDelta(chr(97 + i % 26), i % choices))
        if i == count // 2:
            half = accumulator.result()
            assert half.content == "".join(str(j % 10) for j in range(0, i + 1, choices))
    result = accumulator.result()
    assert len(result.choices) == min(count, choices)
    for choice in result.choices:
        mine = range(choice.index, count, choices)
        assert choice.content == "".join(str(i % 10) for i in mine)
        assert choice.reasoning == "".join(chr(97 + i % 26) for i in mine if i % 3 == 0)


def test_accumulating_many_tiny_fragments_holds_blocks_not_fragments():
    """200,000 four-character fragments would take ~12 MB as separate str objects (53 bytes
    each) for 800 KB of text; the accumulator keeps at most 1,023 of them, the rest as blocks.
    (Counted, not measured: PyPy has neither tracemalloc nor sys.getsizeof.)"""
    accumulator = Accumulator()
    for i in range(200_000):
        accumulator.add(ContentDelta("ab%02d" % (i % 100)))  # a new str each time, as JSON gives
    held = accumulator._choices[0].content
    assert len(held) == 200_000 % 1024 and len(held.blocks) == 200_000 // 1024
    assert all(len(block) == 4 * 1024 for block in held.blocks)
    assert accumulator.result().content == "".join("ab%02d" % (i % 100) for i in range(200_000))


def test_tool_call_delta_keeps_raw_extra_fields():
    (delta,) = parse_chunk(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": None},
                                                 "extra_content": {"google": {"thought_signature": "sig"}}}]}))
    assert isinstance(delta, ToolCallDelta) and delta.arguments == ""
    accumulator = Accumulator()
    accumulator.add(delta)
    assert accumulator.result().tool_calls[0].extra["extra_content"]["google"]["thought_signature"] == "sig"
