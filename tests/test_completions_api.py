"""The legacy completions API (api="completions"): recorded bodies replayed over real HTTP on
127.0.0.1 in several chunkings through Client and AsyncClient; the request (path, prompt); the
decoder and body building on their own."""

import json

import pytest
from hypothesis import given, settings, strategies as st

import streamlite
from wire_replay import CHUNKINGS, DATA, KEY, ReplayServer, check, meta, names, run_async, run_sync

CORPUS = "completions"
NAMES = names(CORPUS)


def test_corpus_found():
    assert len(NAMES) >= 8
    for name in NAMES:
        assert meta(CORPUS, name)["sources"], name


@pytest.fixture(scope="module")
def server():
    httpd = ReplayServer()
    yield httpd
    httpd.stop()


def _base(server, name, size):
    return "%s/%s/%s/%d/v1" % (server.url, CORPUS, name, size)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
def test_replay_sync(server, name, chunking):
    deltas, completion, error = run_sync(_base(server, name, CHUNKINGS[chunking]), "completions", "Say this is a test")
    check(CORPUS, name, deltas, completion, error)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
def test_replay_async(server, name, chunking):
    deltas, completion, error = run_async(_base(server, name, CHUNKINGS[chunking]), "completions", "Say this is a test")
    check(CORPUS, name, deltas, completion, error)


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_the_request_goes_to_completions_with_the_prompt(server, run):
    server.requests.clear()
    deltas, completion, error = run(_base(server, "openai_legacy_echo", 0), "completions", "Say this is a test",
                                    echo=True, logprobs=2, suffix="\n", max_tokens=16)
    assert error is None and completion.content.startswith("Say this is a test")
    request = server.requests[-1]
    assert request["path"] == "/completions/openai_legacy_echo/0/v1/completions"
    assert request["body"] == {"model": "m", "prompt": "Say this is a test", "echo": True, "logprobs": 2, "suffix": "\n",
                               "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_a_list_of_prompts_is_sent_as_it_is(server, run):
    server.requests.clear()
    run(_base(server, "openai_legacy_n2", 0), "completions", ["first", "second"])
    assert server.requests[-1]["body"]["prompt"] == ["first", "second"]


@pytest.mark.parametrize("client_class", [streamlite.Client, streamlite.AsyncClient])
def test_messages_are_a_config_error_for_completions(client_class):
    client = client_class("http://127.0.0.1:9", KEY, api="completions")
    start = client.stream if client_class is streamlite.Client else client.astream
    with pytest.raises(streamlite.ConfigError, match="prompt string"):
        start([{"role": "user", "content": "hi"}])
    with pytest.raises(streamlite.ConfigError, match="system="):
        start("hi", system="be nice")


def test_body_building():
    assert streamlite._completions_body("p", {"model": "m", "n": 2}) == {"model": "m", "prompt": "p", "n": 2, "stream": True}
    assert streamlite._completions_body([1, 2, 3], {})["prompt"] == [1, 2, 3]
    assert streamlite._completions_body([[1, 2], "x"], {})["prompt"] == [[1, 2], "x"]
    for bad in ([], [{"role": "user", "content": "x"}], {"prompt": "x"}, None, 3):
        with pytest.raises(streamlite.ConfigError):
            streamlite._completions_body(bad, {})


def test_the_decoder_reads_text_once_and_keeps_chat_chunks_working():
    decoder = streamlite._ChatDialect()
    assert decoder.decode({"choices": [{"index": 0, "text": "a", "delta": {"content": "a"}}]}) == [streamlite.ContentDelta("a")]
    assert decoder.decode({"choices": [{"index": 1, "text": "b", "finish_reason": "stop"}]}) == [
        streamlite.ContentDelta("b", 1), streamlite.Finish("stop", 1)]
    assert decoder.decode({"choices": [{"index": 0, "delta": {"content": "c"}}]}) == [streamlite.ContentDelta("c")]
    assert decoder.decode({"choices": [{"index": 0, "text": "", "delta": {}, "finish_reason": "length"}]}) == [streamlite.Finish("length")]
    usage = decoder.decode({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    assert usage[0].total_tokens == 3


def _decode_all(chunks):
    sse = streamlite.SSEDecoder()
    decoder = streamlite._ChatDialect()
    out = []
    for chunk in list(chunks) + [None]:
        for event in sse.feed(chunk) if chunk is not None else sse.close():
            if not event.data.startswith("[DONE]"):
                out.extend(decoder.decode(json.loads(event.data)))
    return out


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(NAMES), st.lists(st.integers(min_value=0, max_value=10**6), max_size=30))
def test_any_split_gives_the_same_deltas(name, cuts):
    body = (DATA / CORPUS / (name + ".sse")).read_bytes()
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
    assert _decode_all(chunks) == _decode_all([body])
