"""Conversations from Python and the shell: Completion.message, tool_result(), user() with
attachments, a tool loop to its end, and the CLI's -c FILE, -a and --no-stdin, each against a
recording server on 127.0.0.1 (tests/wire.py), through Client and AsyncClient."""

import base64
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import streamlite
from faults import hold, send
from wire import (TOOL_TURN, TOOL_TURN_MESSAGE, TOOLS, Recording, delta, run_complete, sse, text_reply)

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-SENTINEL-conversation-71c2"
TIMEOUT = 30
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 20
GIF = b"GIF89a" + b"\x01\x00" * 10
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 20
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 20
MP3 = b"ID3\x03\x00" + b"\x00" * 20
KINDS = ["sync", "async"]


def b64(data):
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Completion.message and Choice.message
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_message_of_a_tool_turn_keeps_every_round_trip_field(kind):
    with Recording([TOOL_TURN]) as server:
        result = run_complete(kind, server.url, "Weather in Sydney and Auckland?", tools=TOOLS)
    assert result.message == TOOL_TURN_MESSAGE
    assert result.choices[0].message == TOOL_TURN_MESSAGE
    assert "reasoning_content" not in json.dumps(result.message)
    assert result.reasoning == "Check the sky."  # reasoning text is not doubled by the details


@pytest.mark.parametrize("kind", KINDS)
def test_message_of_a_plain_reply(kind):
    reply = sse(delta({"role": "assistant", "reasoning_content": "hmm"}), delta({"content": "Hi there"}), delta({}, "stop"))
    with Recording([reply]) as server:
        result = run_complete(kind, server.url, "hi")
    assert result.message == {"role": "assistant", "content": "Hi there"}  # never reasoning_content


def test_message_content_is_an_empty_string_without_tool_calls_and_keeps_a_refusal():
    assert streamlite.Completion().message == {"role": "assistant", "content": ""}
    refused = streamlite.Completion(refusal="I can't help with that.", choices=(streamlite.Choice(0, refusal="I can't help with that."),))
    assert refused.message == {"role": "assistant", "content": "", "refusal": "I can't help with that."}


def test_message_of_each_choice_and_a_tool_call_without_id():
    call = streamlite.ToolCall(0, None, "f", "")
    choice = streamlite.Choice(1, content="two", tool_calls=(call,))
    assert choice.message == {"role": "assistant", "content": "two", "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert streamlite.tool_result(call, "ok")["tool_call_id"] == "call_0"  # the same made-up id


def test_reasoning_details_are_bounded():
    acc = streamlite.Accumulator()
    for number in range(5000):  # distinct entries: kept up to a limit, not one dict each
        acc.add_chunk_info({"choices": [{"index": 0, "delta": {"reasoning_details": [
            {"type": "reasoning.text", "text": "x", "index": number}]}}]})
    acc.add(streamlite.ContentDelta("a"))
    details = acc.result().choices[0].reasoning_details
    assert 0 < len(details) <= 256
    acc = streamlite.Accumulator()
    acc.round_trip = False  # a stream that does not accumulate keeps none
    acc.add_chunk_info({"choices": [{"index": 0, "delta": {"reasoning_details": [{"type": "reasoning.text", "text": "x"}]}}]})
    acc.add(streamlite.ContentDelta("a"))
    assert acc.result().choices[0].reasoning_details == ()


# ---------------------------------------------------------------------------------------------
# tool_result() and a whole tool loop
# ---------------------------------------------------------------------------------------------


def test_tool_result_shapes():
    call = streamlite.ToolCall(0, "call_9", "f", "{}")
    assert streamlite.tool_result(call, "sunny") == {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}
    assert streamlite.tool_result("call_7", {"temp": 21, "sky": "\u2600"}) == {
        "role": "tool", "tool_call_id": "call_7", "content": '{"temp": 21, "sky": "\u2600"}'}
    assert streamlite.tool_result({"id": "call_8", "type": "function"}, [1, 2])["content"] == "[1, 2]"
    for bad in (None, "", 5):
        with pytest.raises(streamlite.ConfigError):
            streamlite.tool_result(bad, "x")
    with pytest.raises(streamlite.ConfigError):
        streamlite.tool_result("call_1", object())


@pytest.mark.parametrize("kind", KINDS)
def test_tool_loop_second_request_carries_the_turn_exactly(kind):
    with Recording([TOOL_TURN, text_reply("It is sunny in both.")]) as server:
        messages = [{"role": "user", "content": "Weather in Sydney and Auckland?"}]
        result = run_complete(kind, server.url, messages, model="m", tools=TOOLS)
        temps = {"Sydney": 21, "Auckland": 17}
        messages += [result.message] + [
            streamlite.tool_result(call, {"temp": temps[call.parsed_arguments()["location"]]}) for call in result.tool_calls]
        final = run_complete(kind, server.url, messages, model="m", tools=TOOLS)
        bodies = server.bodies()
    assert final.content == "It is sunny in both." and final.message == {"role": "assistant", "content": "It is sunny in both."}
    assert len(bodies) == 2
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "Weather in Sydney and Auckland?"},
        TOOL_TURN_MESSAGE,
        {"role": "tool", "tool_call_id": "function-call-1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "function-call-2", "content": '{"temp": 17}'},
    ]


def test_tool_loop_example_runs_to_the_end():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMLITE_"))}
    result = subprocess.run([sys.executable, "examples/tool_loop.py"], cwd=str(ROOT), env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "tool call" in result.stdout and "final answer:" in result.stdout


# ---------------------------------------------------------------------------------------------
# user() and attachments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, name, part", [
    (PNG, "a.png", {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}),
    (JPEG, "a.JPG", {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + b64(JPEG)}}),
    (GIF, "a.gif", {"type": "image_url", "image_url": {"url": "data:image/gif;base64," + b64(GIF)}}),
    (WEBP, "a.webp", {"type": "image_url", "image_url": {"url": "data:image/webp;base64," + b64(WEBP)}}),
    (PNG, "no-suffix", {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}}),
    (WEBP, "pic.bin", {"type": "image_url", "image_url": {"url": "data:image/webp;base64," + b64(WEBP)}}),
    (WAV, "a.wav", {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}}),
    (MP3, "a.mp3", {"type": "input_audio", "input_audio": {"data": b64(MP3), "format": "mp3"}}),
    ("notes: caf\u00e9\n".encode(), "notes.txt", {"type": "text", "text": "notes: caf\u00e9\n"}),
    (b"%PDF-1.4 x", "doc.pdf", {"type": "file", "file": {"filename": "doc.pdf", "file_data": "data:application/pdf;base64," + b64(b"%PDF-1.4 x")}}),
])
def test_user_attaches_files_by_path_and_path_object(tmp_path, data, name, part):
    path = tmp_path / name
    path.write_bytes(data)
    for given in (str(path), path):
        assert streamlite.user("Look", given) == {"role": "user", "content": [{"type": "text", "text": "Look"}, part]}


@pytest.mark.parametrize("data, mime", [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")])
def test_user_sniffs_image_bytes(data, mime):
    for given in (data, bytearray(data), memoryview(data)):
        assert streamlite.user("x", given)["content"][1] == {
            "type": "image_url", "image_url": {"url": "data:%s;base64,%s" % (mime, b64(data))}}


def test_user_sniffs_audio_bytes_and_passes_urls_untouched():
    content = streamlite.user("x", WAV, MP3, "https://example.com/cat.png", "http://example.com/a.jpg")["content"]
    assert content[1]["input_audio"]["format"] == "wav" and content[2]["input_audio"]["format"] == "mp3"
    assert content[3:] == [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                           {"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}]
    assert streamlite.user("just text") == {"role": "user", "content": "just text"}


def test_user_refuses_what_it_cannot_send(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as file:
        file.truncate(streamlite.MAX_ATTACHMENT_BYTES + 1)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\xff\xfe\x01" * 10)
    for bad, words in ((str(big), "limited to 20 MB"), (str(tmp_path / "missing.png"), "No such file"),
                       (str(binary), "not an image"), (b"\x00\xff" * 5, "not an image"), (3.5, "cannot attach a float")):
        with pytest.raises(streamlite.ConfigError) as info:
            streamlite.user("x", bad)
        assert words in str(info.value)
    with pytest.raises(streamlite.ConfigError):
        streamlite.user("x", b"\x89PNG\r\n\x1a\n" + bytes(streamlite.MAX_ATTACHMENT_BYTES))


@pytest.mark.parametrize("kind", KINDS)
def test_attachments_arrive_as_parts(kind, tmp_path):
    (tmp_path / "p.png").write_bytes(PNG)
    with Recording([text_reply("A cat.")]) as server:
        run_complete(kind, server.url, [streamlite.user("What is this?", tmp_path / "p.png", "https://example.com/c.jpg")])
        body = server.bodies()[0]
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}},
        {"type": "image_url", "image_url": {"url": "https://example.com/c.jpg"}}]}]


# ---------------------------------------------------------------------------------------------
# The command line: -c FILE, -a, --no-stdin
# ---------------------------------------------------------------------------------------------


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "AZURE_", "STREAMLITE_")) and "PROXY" not in k.upper() and k not in ("NO_COLOR", "TERM")}
    env["OPENAI_API_KEY"] = KEY
    env.update(extra)
    return env


def cli(*args, input=None, env=None):
    kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([sys.executable, "streamlite.py", *args], cwd=str(ROOT), env=env or _env(),
                          capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def test_conversation_file_grows_turn_by_turn(tmp_path):
    path = tmp_path / "talk.json"
    with Recording([text_reply("Nile, Amazon, Yangtze."), text_reply("The Nile.")]) as server:
        first = cli("--base-url", server.url, "-c", str(path), "-s", "Be brief.", "Name three rivers")
        second = cli("--base-url", server.url, "-c", str(path), "-s", "Ignored now.", "Which is longest?")
        bodies = server.bodies()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == "Nile, Amazon, Yangtze.\n" and second.stdout == "The Nile.\n"
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers"}]
    assert bodies[0]["messages"] == turn1
    turn2 = turn1 + [{"role": "assistant", "content": "Nile, Amazon, Yangtze."}, {"role": "user", "content": "Which is longest?"}]
    assert bodies[1]["messages"] == turn2
    assert json.loads(path.read_text("utf-8")) == turn2 + [{"role": "assistant", "content": "The Nile."}]
    assert os.listdir(str(tmp_path)) == ["talk.json"]  # no temporary file left behind


def test_conversation_file_keeps_the_tool_turn_exactly(tmp_path):
    path = tmp_path / "tools.json"
    with Recording([TOOL_TURN]) as server:
        result = cli("--base-url", server.url, "-c", str(path), "-X", "tools=" + json.dumps(TOOLS), "Weather?")
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text("utf-8")) == [{"role": "user", "content": "Weather?"}, TOOL_TURN_MESSAGE]


@pytest.mark.parametrize("reply, code", [
    (sse(delta({"content": "half an ans"}), done=False), streamlite.EXIT_CUT_OFF),
    (b"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"error\":{\"message\":\"x\"}}", streamlite.EXIT_API_ERROR),
])
def test_conversation_file_untouched_by_a_failed_turn(tmp_path, reply, code):
    path = tmp_path / "talk.json"
    old = '[{"role": "user", "content": "before"}, {"role": "assistant", "content": "kept"}]'
    path.write_text(old, "utf-8")
    with Recording([reply]) as server:
        result = cli("--base-url", server.url, "--max-retries", "0", "-c", str(path), "more")
    assert result.returncode == code, result.stderr
    assert path.read_text("utf-8") == old and os.listdir(str(tmp_path)) == ["talk.json"]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_conversation_file_survives_a_killed_process(tmp_path, how):
    path = tmp_path / "talk.json"
    old = '[{"role": "user", "content": "before"}, {"role": "assistant", "content": "kept"}]\n'
    path.write_text(old, "utf-8")
    started = delta({"role": "assistant", "content": "streaming..."})
    with Recording([[send(sse(started, done=False)), hold(TIMEOUT)]]) as server:
        proc = subprocess.Popen([sys.executable, "streamlite.py", "--base-url", server.url, "-c", str(path), "more"],
                                cwd=str(ROOT), env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.read(len("streaming...")) == b"streaming..."  # mid-stream now
            proc.send_signal(how)
            rest = proc.stdout.read()
            proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
    expected = {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: streamlite.EXIT_INTERRUPTED, signal.SIGTERM: streamlite.EXIT_TERMINATED}
    assert proc.returncode == expected[how]
    assert rest == (b"" if how == signal.SIGKILL else b"\n")  # stopped cleanly: the line ended
    assert path.read_text("utf-8") == old and os.listdir(str(tmp_path)) == ["talk.json"]


def test_conversation_file_that_is_not_a_conversation_is_a_usage_error(tmp_path):
    for text in ("{not json", '{"role": "user"}', '[1, 2]'):
        path = tmp_path / "bad.json"
        path.write_text(text, "utf-8")
        result = cli("--base-url", "http://127.0.0.1:9/v1", "-c", str(path), "hi")
        assert result.returncode == streamlite.EXIT_USAGE and "bad.json" in result.stderr
        assert path.read_text("utf-8") == text


def test_new_conversation_file_gets_ordinary_permissions(tmp_path):
    path = tmp_path / "new.json"
    with Recording([text_reply("ok")]) as server:
        assert cli("--base-url", server.url, "-c", str(path), "hi").returncode == 0
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_attach_flag_sends_parts(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(JPEG)
    (tmp_path / "notes.txt").write_text("line one\n", "utf-8")
    with Recording([text_reply("Seen.")]) as server:
        result = cli("--base-url", server.url, "-a", str(tmp_path / "photo.jpg"), "-a", "https://example.com/x.png",
                     "--attach", str(tmp_path / "notes.txt"), "Describe")
        body = server.bodies()[0]
    assert result.returncode == 0, result.stderr
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + b64(JPEG)}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        {"type": "text", "text": "line one\n"}]}]


def test_attach_missing_file_is_a_usage_error_before_any_request(tmp_path):
    with Recording([text_reply("x")]) as server:
        result = cli("--base-url", server.url, "-a", str(tmp_path / "nope.png"), "hi")
        assert server.requests == []
    assert result.returncode == streamlite.EXIT_USAGE and "nope.png" in result.stderr


def test_no_stdin_leaves_a_pipe_unread():
    with Recording([text_reply("one"), text_reply("two")]) as server:
        script = "for q in a b; do %s streamlite.py --base-url %s --no-stdin \"$q\"; done" % (sys.executable, server.url)
        result = subprocess.run(["sh", "-c", script], cwd=str(ROOT), env=_env(), input="piped\n",
                                capture_output=True, text=True, timeout=TIMEOUT)
        bodies = server.bodies()
    assert result.returncode == 0 and result.stdout == "one\ntwo\n", result.stderr
    assert [b["messages"] for b in bodies] == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
