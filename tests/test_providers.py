"""Provider behaviour beyond the recorded bodies, against a recording server on 127.0.0.1:
Azure's header and deployment URLs, a provider that rejects stream_options, inline <think>
tags, and raw chunks reachable for fields nobody has typed."""

import json

import pytest

import streamlite
from loopback import RecordingServer, http_head

KEY = "sk-SENTINEL-providers-3c8d"


def sse(*chunks):
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


def content(text, index=0, **extra):
    return dict(extra, choices=[{"index": index, "delta": {"content": text}, "finish_reason": None}])


def finish(reason="stop"):
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def Recorder(*replies):
    """Answers each POST with the next (status, content type, body) of `replies`, recording
    path, headers and JSON body (request["path"], ["headers"], ["body"]). Serves at most
    len(replies) requests, then stops."""
    def reply(status, ctype, payload):
        return http_head(status, None, [("Content-Type", ctype), ("Content-Length", str(len(payload))),
                                        ("Connection", "close")]) + payload

    return RecordingServer([reply(*r) for r in replies], max_connections=len(replies), lifetime=15.0,
                           path="")


OK = (200, "text/event-stream", sse(content("Hello"), finish()))


# Azure OpenAI ################################################################


def test_azure_sends_api_key_header_to_the_deployment_url_with_api_version():
    with Recorder(OK) as server:
        client = streamlite.Client(server.url, KEY, azure=True, api_version="2024-10-21")
        assert client.complete("hi", model="my-gpt4o deployment").content == "Hello"
    request = server.requests[0]
    assert request["path"] == "/openai/deployments/my-gpt4o%20deployment/chat/completions?api-version=2024-10-21"
    assert request["headers"]["api-key"] == KEY and "authorization" not in request["headers"]


def test_azure_v1_endpoint_keeps_the_model_in_the_body_and_needs_no_api_version():
    with Recorder(OK) as server:
        client = streamlite.Client(server.url + "/openai/v1", KEY, azure=True)
        client.complete("hi", model="gpt-4o")
    request = server.requests[0]
    assert request["path"] == "/openai/v1/chat/completions"
    assert request["body"]["model"] == "gpt-4o" and request["headers"]["api-key"] == KEY


@pytest.mark.parametrize("url, azure", [
    ("https://myres.openai.azure.com", True),
    ("https://myres.cognitiveservices.azure.com/openai/deployments/gpt4o", True),
    ("https://myproject.services.ai.azure.com/openai/v1", True),
    ("https://api.openai.com/v1", False),
    ("https://openai.azure.com.evil.example/v1", False),
])
def test_azure_is_detected_from_the_host_name(url, azure):
    assert streamlite.Client(url, KEY).azure is azure


def test_azure_api_version_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-04-01-preview")
    with Recorder(OK) as server:
        streamlite.Client(server.url, KEY, azure=True).complete("hi", model="dep")
    assert server.requests[0]["path"].endswith("?api-version=2025-04-01-preview")


def test_azure_without_a_deployment_is_a_config_error():
    with pytest.raises(streamlite.ConfigError, match="deployment"):
        streamlite.Client("http://127.0.0.1:9", KEY, azure=True).stream("hi")


def test_azure_filter_results_and_content_filter_finish():
    body = sse(
        {"id": "", "choices": [], "created": 0, "model": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}]},
        content("Once", content_filter_results={"hate": {"filtered": False, "severity": "safe"}}),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter",
                      "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}}}]},
    )
    with Recorder((200, "text/event-stream", body)) as server:
        with streamlite.Client(server.url, KEY, azure=True).stream("hi", model="dep") as stream:
            chunks = list(stream.chunks())
    completion = stream.completion
    assert completion.content == "Once" and completion.finish_reason == "content_filter"
    assert completion.extras["prompt_filter_results"][0]["prompt_index"] == 0
    assert chunks[-1]["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    assert len(chunks) == 3  # the first chunk holds no delta and is still there


# stream_options rejected #####################################################


@pytest.mark.parametrize("status", [400, 422])
def test_a_provider_rejecting_stream_options_gets_the_request_again_without_it(status):
    refusal = json.dumps({"error": {"message": "Unrecognized request argument supplied: stream_options",
                                    "type": "invalid_request_error"}}).encode()
    with Recorder((status, "application/json", refusal), OK) as server:
        completion = streamlite.Client(server.url, KEY, max_retries=0).complete("hi")
    assert completion.content == "Hello"
    first, second = (request["body"] for request in server.requests)
    assert first["stream_options"] == {"include_usage": True} and "stream_options" not in second
    assert any("stream_options" in warning for warning in completion.warnings)


def test_other_400s_are_not_sent_again():
    refusal = json.dumps({"error": {"message": "model not found", "code": "model_not_found"}}).encode()
    with Recorder((400, "application/json", refusal)) as server:
        with pytest.raises(streamlite.APIError) as caught:
            streamlite.Client(server.url, KEY, max_retries=3).complete("hi")
    assert len(server.requests) == 1 and caught.value.code == "model_not_found"


# Inline <think> tags ##########################################################


THINKING = sse(content("<thi"), content("nk>Let me"), content(" see.</th"), content("ink>\n\nParis"), finish())


def test_inline_think_tags_stay_in_the_content_by_default():
    with Recorder((200, "text/event-stream", THINKING)) as server:
        completion = streamlite.Client(server.url, KEY).complete("hi")
    assert completion.content == "<think>Let me see.</think>\n\nParis" and completion.reasoning == ""


def test_think_tags_option_splits_them_into_reasoning_deltas():
    with Recorder((200, "text/event-stream", THINKING)) as server:
        with streamlite.Client(server.url, KEY, think_tags=True).stream("hi") as stream:
            deltas = list(stream)
    reasoning = "".join(d.text for d in deltas if isinstance(d, streamlite.ReasoningDelta))
    content_text = "".join(d.text for d in deltas if isinstance(d, streamlite.ContentDelta))
    assert reasoning == "Let me see." and content_text.strip() == "Paris"
    assert stream.completion.reasoning == reasoning and stream.completion.content == content_text
    assert not any("<" in d.text for d in deltas if hasattr(d, "text"))


# Raw chunks ###################################################################


def test_every_raw_chunk_is_reachable_and_last_chunk_belongs_to_the_delta():
    body = sse(
        content("A", id="c1", timings={"predicted_n": 1}),
        {"choices": [], "x_keepalive": True},
        content("B", citations=["https://example.test/a"]),
        dict(finish(), timings={"predicted_n": 2, "predicted_per_second": 40.5}),
    )
    with Recorder((200, "text/event-stream", body)) as server:
        with streamlite.Client(server.url, KEY).stream("hi") as stream:
            seen = [(delta, stream.last_chunk) for delta in stream]
    assert [(getattr(d, "text", None), chunk.get("citations")) for d, chunk in seen] == [
        ("A", None), ("B", ["https://example.test/a"]), (None, None)]
    extras = stream.completion.extras
    assert extras["timings"] == {"predicted_n": 2, "predicted_per_second": 40.5}  # the last one wins
    assert extras["citations"] == ["https://example.test/a"] and extras["x_keepalive"] is True


def test_chunks_yields_all_chunks_even_when_several_arrive_in_one_piece():
    chunks = [content(str(i)) for i in range(5)] + [{"choices": [], "note": "no delta"}, finish()]
    with Recorder((200, "text/event-stream", sse(*chunks))) as server:
        with streamlite.Client(server.url, KEY).stream("hi") as stream:
            got = list(stream.chunks())
    assert got == chunks
    assert stream.completion.content == "01234"
