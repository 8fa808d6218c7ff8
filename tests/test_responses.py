"""The Responses API (api="responses"): recorded and official event streams replayed over real
HTTP on 127.0.0.1 in several chunkings through Client and AsyncClient; the request that was
sent (path, input items, tools); the I/O-free decoder and request translation on their own."""

import json

import pytest
from hypothesis import given, settings, strategies as st

import streamlite
from wire_replay import CHUNKINGS, DATA, KEY, ReplayServer, check, meta, names, run_async, run_sync

CORPUS = "responses"
NAMES = names(CORPUS)


def test_corpus_found():
    assert len(NAMES) >= 20
    for name in NAMES:
        info = meta(CORPUS, name)
        assert info["sources"] and info["scenario"], name  # every file says where its shape came from


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
    deltas, completion, error = run_sync(_base(server, name, CHUNKINGS[chunking]), "responses")
    check(CORPUS, name, deltas, completion, error)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
def test_replay_async(server, name, chunking):
    deltas, completion, error = run_async(_base(server, name, CHUNKINGS[chunking]), "responses")
    check(CORPUS, name, deltas, completion, error)


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_the_request_goes_to_responses_with_input_items_and_no_stream_options(server, run):
    server.requests.clear()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    deltas, completion, error = run(_base(server, "openai_text", 0), "responses", messages, tools=tools,
                                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                    max_tokens=50, temperature=0.2)
    assert error is None and completion.content.startswith("Streams")
    request = server.requests[-1]
    assert request["path"] == "/responses/openai_text/0/v1/responses"
    body = request["body"]
    assert body["stream"] is True and "stream_options" not in body and "messages" not in body
    assert "api" not in body and "max_tokens" not in body
    assert body["model"] == "m" and body["temperature"] == 0.2 and body["max_output_tokens"] == 50
    assert body["input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    ]
    assert body["tools"] == [{"type": "function", "name": "get_weather", "description": "Weather now",
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_a_prompt_string_and_system_become_input_messages(server, run):
    server.requests.clear()
    run(_base(server, "openai_text", 0), "responses", "Tell me a joke", system="You are terse.")
    assert server.requests[-1]["body"]["input"] == [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a joke"}]


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_per_request_options_are_never_sent_in_the_body(server, run):
    # NEEDS the lead's client (issue 15: timeout=, extra_headers=, extra_body=, extra_query=); the
    # temporary api= hook only keeps `api` out of the body.
    server.requests.clear()
    deltas, completion, error = run(_base(server, "openai_text", 0), "responses", "hi", timeout=30,
                                    extra_headers={"X-Trace": "1"}, extra_body={"store": False}, extra_query={"q": "1"})
    assert error is None
    request = server.requests[-1]
    body = request["body"]
    assert not {"api", "timeout", "extra_headers", "extra_body", "extra_query"} & set(body)
    assert body["store"] is False and request["path"].endswith("/v1/responses?q=1")


def test_the_client_default_api_is_used_and_a_per_call_api_wins(server):
    server.requests.clear()
    client = streamlite.Client(_base(server, "openai_text", 0), KEY, api="responses", max_retries=0)
    assert client.complete("hi").id == meta(CORPUS, "openai_text")["expected"]["id"]
    assert server.requests[-1]["path"].endswith("/v1/responses")
    with pytest.raises(streamlite.StreamliteError):  # the chat decoder finds no finish in Responses events
        client.complete("hi", api="chat")
    assert server.requests[-1]["path"].endswith("/v1/chat/completions")
    assert "input" not in server.requests[-1]["body"]


@pytest.mark.parametrize("api", ["chatt", "", None, 3, "Responses"])
def test_an_unknown_api_is_a_config_error(api):
    if api is not None:
        with pytest.raises(streamlite.ConfigError, match="api must be"):
            streamlite.Client("http://127.0.0.1:9", KEY, api=api)
    with pytest.raises(streamlite.ConfigError, match="api must be"):
        streamlite.Client("http://127.0.0.1:9", KEY).stream("hi", api=api or "x")
    with pytest.raises(streamlite.ConfigError, match="api must be"):
        streamlite.AsyncClient("http://127.0.0.1:9", KEY).astream("hi", api=api or "x")


def test_a_completion_id_is_the_response_id_for_previous_response_id(server):
    info = meta(CORPUS, "openai_reasoning_summary_cached")["expected"]
    completion = streamlite.Client(_base(server, "openai_reasoning_summary_cached", 0), KEY).complete("hi", api="responses")
    assert completion.id == info["id"] and completion.id.startswith("resp_")
    assert completion.usage.cached_tokens == 1152 and completion.usage.reasoning_tokens == 192


# Azure paths ####################################################################


@pytest.mark.parametrize("target, api, expected", [
    ("/v1/chat/completions", "responses", "/v1/responses"),
    ("/v1/chat/completions", "completions", "/v1/completions"),
    ("/v1/chat/completions", "chat", "/v1/chat/completions"),
    ("/openai/v1/chat/completions", "responses", "/openai/v1/responses"),
    ("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", "completions",
     "/openai/deployments/gpt4o/completions?api-version=2024-10-21"),
    ("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", "responses",
     "/openai/responses?api-version=2025-04-01-preview"),
])
def test_api_targets(monkeypatch, target, api, expected):
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    assert streamlite._api_target(target, api, azure="/openai/" in target) == expected


def test_azure_responses_keep_an_explicit_api_version():
    target = "/openai/deployments/d/chat/completions?api-version=2025-03-01-preview"
    assert streamlite._api_target(target, "responses", True, "2025-03-01-preview") == "/openai/responses?api-version=2025-03-01-preview"


# The decoder (no I/O) ###############################################################


def _events(name):
    """The decoded JSON events of a corpus file, in order (the SSE decoder on the whole body)."""
    body = (DATA / CORPUS / (name + ".sse")).read_bytes()
    decoder = streamlite.SSEDecoder()
    events = decoder.feed(body) + decoder.close()
    return [json.loads(e.data) for e in events if not e.data.startswith("[DONE]")]


def _decode_all(chunks):
    """Deltas and the error of feeding byte chunks through SSEDecoder + the Responses decoder."""
    sse = streamlite.SSEDecoder()
    wire = streamlite._ResponsesDecoder()
    out = []
    try:
        for chunk in list(chunks) + [None]:
            events = sse.feed(chunk) if chunk is not None else sse.close()
            for event in events:
                if event.data.startswith("[DONE]"):
                    continue
                out.extend(wire.decode(json.loads(event.data)))
    except streamlite.StreamliteError as exc:
        return out, (type(exc).__name__, getattr(exc, "message", str(exc)))
    return out, None


STREAM_NAMES = [n for n in NAMES if meta(CORPUS, n)["headers"]["Content-Type"].startswith("text/event-stream")]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STREAM_NAMES), st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_any_split_gives_the_same_deltas(name, cuts):
    body = (DATA / CORPUS / (name + ".sse")).read_bytes()
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
    assert _decode_all(chunks) == _decode_all([body])


def test_done_events_never_double_arguments_or_text():
    d = streamlite._ResponsesDecoder()
    events = [
        {"type": "response.output_item.added", "item": {"id": "fc", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a"}},
        {"type": "response.function_call_arguments.delta", "item_id": "fc", "delta": "{\"a"},
        {"type": "response.function_call_arguments.done", "item_id": "fc", "arguments": "{\"a\":1}"},
        {"type": "response.output_item.done", "item": {"id": "fc", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\":1}"}},
        {"type": "response.output_text.delta", "item_id": "m", "delta": "Hi"},
        {"type": "response.output_text.done", "item_id": "m", "text": "Hi"},
        {"type": "response.output_item.done", "item": {"id": "m", "type": "message", "content": [{"type": "output_text", "text": "Hi"}]}},
        {"type": "response.completed", "response": {"output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}},
    ]
    deltas = [x for e in events for x in d.decode(e)]
    assert "".join(x.arguments for x in deltas if isinstance(x, streamlite.ToolCallDelta)) == '{"a":1}'
    assert [x.text for x in deltas if isinstance(x, streamlite.ContentDelta)] == ["Hi"]
    assert deltas[-1] == streamlite.Finish("tool_calls") and d.terminal


def test_arguments_only_in_added_are_handed_out_at_the_end():
    d = streamlite._ResponsesDecoder()
    out = d.decode({"type": "response.output_item.added", "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}})
    assert out == [streamlite.ToolCallDelta(0, "c", "f", "")]
    out = d.decode({"type": "response.completed", "response": {}})
    assert out == [streamlite.ToolCallDelta(0, None, None, "{}"), streamlite.Finish("tool_calls")]


def test_deltas_naming_an_unknown_item_belong_to_the_call_added_without_an_id():
    d = streamlite._ResponsesDecoder()
    out = d.decode({"type": "response.output_item.added", "item": {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": ""}})
    out += d.decode({"type": "response.function_call_arguments.delta", "item_id": "item_0", "delta": "{}"})
    out += d.decode({"type": "response.function_call_arguments.done", "item_id": "item_0", "arguments": "{}"})
    out += d.decode({"type": "response.output_item.done", "item": {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": "{}"}})
    assert out == [streamlite.ToolCallDelta(0, "call_9", "f", ""), streamlite.ToolCallDelta(0, None, None, "{}")]


def test_an_arguments_done_without_any_item_gets_a_new_call_and_whole_arguments():
    d = streamlite._ResponsesDecoder()
    out = d.decode({"type": "response.function_call_arguments.done", "item_id": "x", "call_id": "call_x", "name": "g", "arguments": "{\"k\":2}"})
    assert out == [streamlite.ToolCallDelta(0, "call_x", "g", "{\"k\":2}")]


@pytest.mark.parametrize("event, message, code", [
    ({"type": "error", "code": "server_error", "message": "boom", "param": None}, "boom", "server_error"),
    ({"type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "nested"}}, "nested", "bad"),
    ({"error": {"message": "chat style", "code": 429}}, "chat style", 429),
    ({"type": "response.failed", "response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow down"}}},
     "slow down", "rate_limit_exceeded"),
    ({"type": "response.failed", "response": {"status": "failed", "error": None}}, "the response failed (status failed)", None),
])
def test_error_events_raise_api_errors(event, message, code):
    d = streamlite._ResponsesDecoder()
    assert d.decode({"type": "response.output_text.delta", "delta": "x"}) == [streamlite.ContentDelta("x")]
    with pytest.raises(streamlite.APIError) as caught:
        d.decode(event)
    assert (caught.value.message, caught.value.code) == (message, code)
    assert caught.value.body == event


def test_incomplete_reasons():
    for reason, finish in [("max_output_tokens", "length"), ("content_filter", "content_filter"), ("turn_limit", "turn_limit"), (None, "length")]:
        d = streamlite._ResponsesDecoder()
        details = {"reason": reason} if reason else None
        out = d.decode({"type": "response.incomplete", "response": {"incomplete_details": details, "usage": {"input_tokens": 1}}})
        assert out[-1] == streamlite.Finish(finish)
        assert out[0].prompt_tokens == 1 and out[0].completion_tokens is None and out[0].total_tokens is None


def test_early_draft_reasoning_event_names_and_object_deltas():
    d = streamlite._ResponsesDecoder()
    out = d.decode({"type": "response.reasoning.delta", "item_id": "r", "delta": {"content": "We"}})
    out += d.decode({"type": "response.reasoning.delta", "item_id": "r", "delta": " think"})
    out += d.decode({"type": "response.reasoning_summary.delta", "item_id": "r", "delta": "summary"})
    assert out == [streamlite.ReasoningDelta("We"), streamlite.ReasoningDelta(" think")]


def test_unknown_and_untyped_events_are_ignored():
    d = streamlite._ResponsesDecoder()
    for event in [{"type": "response.web_search_call.searching"}, {"type": "response.audio.delta", "delta": "AAA"},
                  {}, {"sequence_number": 4}, {"type": 7}, {"type": "response.output_text.annotation.added", "annotation": {}}]:
        assert d.decode(event) == []
    assert not d.terminal


def test_per_item_state_is_bounded():
    d = streamlite._ResponsesDecoder()
    with pytest.raises(streamlite.ProtocolError, match="more than"):
        for i in range(streamlite._MAX_RESPONSE_ITEMS + 1):
            d.decode({"type": "response.output_item.added", "item": {"type": "function_call", "id": "i%d" % i, "call_id": "c%d" % i, "name": "f"}})
    d = streamlite._ResponsesDecoder()
    with pytest.raises(streamlite.ProtocolError, match="more than"):
        for i in range(streamlite._MAX_RESPONSE_ITEMS + 1):
            d.decode({"type": "response.output_text.delta", "item_id": "m%d" % i, "delta": "x"})


def test_many_deltas_of_one_call_keep_constant_state():
    d = streamlite._ResponsesDecoder()
    d.decode({"type": "response.output_item.added", "item": {"type": "function_call", "id": "i", "call_id": "c", "name": "f", "arguments": ""}})
    for _ in range(1000):
        d.decode({"type": "response.function_call_arguments.delta", "item_id": "i", "delta": "xx"})
    (call,) = d._call_list
    assert call.sent == 2000 and call.held is None and len(d._calls) == 2


# Request translation (no I/O) ##########################################################


def test_content_parts_become_responses_parts():
    body = streamlite._responses_body([
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "input_text", "text": "already responses"},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "A "}, {"type": "text", "text": "cat."}]},
    ], {"model": "gpt-4.1"})
    assert body["input"] == [
        {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "high"},
            {"type": "input_image", "image_url": "https://example.test/cat.jpg", "detail": "auto"},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
            {"type": "input_text", "text": "already responses"},
        ]},
        {"role": "assistant", "content": "A cat."},
    ]
    assert list(body)[:2] == ["model", "input"] and body["stream"] is True


def test_the_user_helper_message_translates():
    message = streamlite.user("look", b"\x89PNG\r\n\x1a\n" + b"0" * 8)
    (item,) = streamlite._responses_body([message], {})["input"]
    kinds = [part["type"] for part in item["content"]]
    assert kinds[0] == "input_text" and "input_image" in kinds


def test_assistant_text_with_tool_calls_and_tool_outputs():
    items = streamlite._responses_body([
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": {"x": 1}}}],
         "reasoning_content": "hidden", "refusal": None},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "tool", "tool_call_id": "c2", "content": {"ok": True}},
    ], {})["input"]
    assert items == [
        {"role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "onetwo"},
        {"type": "function_call_output", "call_id": "c2", "output": '{"ok": true}'},
    ]


def test_items_already_in_responses_shape_pass_unchanged():
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
        {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
        {"type": "item_reference", "id": "msg_9"},
    ]
    assert streamlite._responses_body(items, {})["input"] == items


def test_body_fields_translate_and_others_pass_unchanged():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    body = streamlite._responses_body("hi", {
        "model": "o4-mini", "max_completion_tokens": 99, "max_tokens": 7, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "num", "schema": schema, "strict": True}},
        "tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": schema}}, {"type": "web_search_preview"}],
        "tool_choice": "required", "parallel_tool_calls": False, "store": False, "previous_response_id": "resp_1",
        "metadata": {"k": "v"}, "stream_options": {"include_usage": True}, "text": {"verbosity": "low"},
    })
    assert body == {
        "model": "o4-mini", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 99,
        "reasoning": {"effort": "low"}, "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "num", "schema": schema, "strict": True}},
        "tools": [{"type": "function", "name": "f", "parameters": schema, "strict": True}, {"type": "web_search_preview"}],
        "tool_choice": "required", "parallel_tool_calls": False, "store": False, "previous_response_id": "resp_1",
        "metadata": {"k": "v"}, "stream": True,
    }
    assert streamlite._responses_body("hi", {"response_format": {"type": "json_object"}})["text"] == {"format": {"type": "json_object"}}
    assert streamlite._responses_body("hi", {"max_output_tokens": 5, "max_tokens": 9})["max_output_tokens"] == 5
    assert streamlite._responses_body("hi", {"reasoning": {"summary": "auto"}, "reasoning_effort": "high"})["reasoning"] == {"summary": "auto", "effort": "high"}


def test_bad_messages_are_config_errors():
    with pytest.raises(streamlite.ConfigError):
        streamlite._responses_body(["not a dict"], {})
    with pytest.raises(streamlite.ConfigError):
        streamlite._responses_body(42, {})
    with pytest.raises(streamlite.ConfigError, match="input="):
        streamlite._responses_body("hi", {"input": "x"})
