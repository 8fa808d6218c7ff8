"""The command line as a user drives it from a shell: every flag, prompt source and output mode.

Requests go to servers on 127.0.0.1 (ports from the OS): a small recording server defined here
(keeps each request's JSON body and headers, answers a fixed event stream) and the example
ChatServer for reasoning, tool calls, long and paced streams. The CLI runs both in-process
(`streamlite.main([...])`) and as a real process (`python streamlite.py`, `python -m streamlite`).
"""

import contextlib
import io
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time
import types

import pytest

import streamlite
from loopback import RecordingServer, close, http_head, send

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from server import REASONING, ChatServer, arguments_for, bench_content, reply_for  # noqa: E402

STORY = reply_for([])
KEY = "sk-SENTINEL-flags-5d21c0"
TIMEOUT = 30  # seconds: the bound on every subprocess and server

# What the recording server answers, byte for byte: a comment, CRLF and LF line ends, an
# `id:` field, non-ASCII text; sent as HTTP chunks cut at awkward places (inside a UTF-8
# sequence, inside a line end) so that --raw has something to get wrong.
SSE_BODY = (
    b": keep-alive\r\n\r\n"
    b'data: {"id":"rec-1","object":"chat.completion.chunk","model":"rec-model","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\r\n\r\n'
    b'id: 7\ndata: {"choices":[{"index":0,"delta":{"reasoning_content":"Pondering."}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":" w\xc3\xb6rld"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}\n\n'
    b"data: [DONE]\n\n"
)
SSE_CONTENT = "Hello w\u00f6rld"
SSE_REASONING = "Pondering."


def _pieces(body):
    """SSE_BODY cut at awkward places: mid line end, mid UTF-8 sequence, mid JSON."""
    cuts = sorted({1, body.index(b"\r\n") + 1, body.index(b"\xc3") + 1, len(body) // 2, len(body) - 3})
    return [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]


class Recorder(RecordingServer):
    """An HTTP server on 127.0.0.1 that records every POST and answers SSE_BODY.

    `requests` holds the requests: request["path"], request["headers"] (names lower-cased) and
    request["body"] (the parsed JSON). It serves until stop() or TIMEOUT seconds, whichever comes
    first. `sent[i].count`: the bytes written on connection i, status line to the last chunk.
    """

    def __init__(self, body=SSE_BODY, fail_first=0):
        self.body = body
        self.fail_first = fail_first  # answer this many requests with a 503 first
        super().__init__(self._reply, max_connections=32, lifetime=TIMEOUT, io_timeout=TIMEOUT)

    def _reply(self, index, request):
        if index < self.fail_first:
            error = b'{"error":{"message":"busy","type":"server_error"}}'
            return http_head(503, None, [("Content-Type", "application/json"), ("Content-Length", str(len(error))),
                                         ("retry-after-ms", "10")]) + error
        head = http_head(200, None, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                                     ("Connection", "close")])
        chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in _pieces(self.body)]
        chunks[-1] += b"0\r\n\r\n"  # the last chunk and the end of the body in one write
        return [send(head)] + [send(chunk) for chunk in chunks] + [close()]

    @property
    def sent(self):
        return [types.SimpleNamespace(count=count) for _, count in sorted(super().sent.items())]


def _clean_env(**extra):
    """The environment without anything that would steer the CLI: keys, URLs, model, proxies, colour,
    and PYTHONUNBUFFERED (a user's shell has block-buffered pipes; the CLI must flush by itself)."""
    drop = ("OPENAI_", "AZURE_", "STREAMLITE_")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(drop) and "PROXY" not in k.upper() and k not in ("NO_COLOR", "TERM", "PYTHONUNBUFFERED")}
    env["OPENAI_API_KEY"] = KEY  # without any key the CLI warns on stderr (tested on its own)
    env.update(extra)
    return env


@pytest.fixture
def env(monkeypatch):
    """In-process: the same clean environment, and a stdin that is neither a pipe nor a file."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_", "STREAMLITE_")) or "PROXY" in name.upper() or name in ("NO_COLOR", "TERM"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no fileno: like a terminal (even under pytest -s)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # without any key the CLI warns on stderr (tested on its own)
    return monkeypatch


@pytest.fixture
def recorder():
    with Recorder() as rec:
        yield rec


@pytest.fixture(scope="module")
def chat():
    with ChatServer() as srv:
        yield srv


def _run(*args, stdin=subprocess.DEVNULL, input=None, env=None, module=False, timeout=TIMEOUT):
    """Run the CLI as a process from the project root; text output."""
    cmd = [sys.executable, "-m", "streamlite"] if module else [sys.executable, "streamlite.py"]
    kwargs = {"input": input} if input is not None else {"stdin": stdin}
    return subprocess.run(cmd + list(args), cwd=str(ROOT), env=_clean_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@contextlib.contextmanager
def _swapped(name, stream):
    """sys.<name> replaced for the block only (not by monkeypatch: capsys must restore its own first)."""
    saved = getattr(sys, name)
    setattr(sys, name, stream)
    try:
        yield stream
    finally:
        setattr(sys, name, saved)


def _main(capsys, *argv):
    code = streamlite.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# 1. Every flag reaches the request
# ---------------------------------------------------------------------------------------------


def test_defaults_request_shape(env, recorder, capsys):
    env.delenv("OPENAI_API_KEY")
    code, out, err = _main(capsys, "--base-url", recorder.url, "hello", "world")
    assert code == 0, err
    assert out == SSE_CONTENT + "\n"
    assert err.startswith("streamlite: warning: no API key")  # and still sent, for a local server
    request = recorder.last
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["messages"] == [{"role": "user", "content": "hello world"}]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "model" not in body and "temperature" not in body and "max_tokens" not in body
    assert "authorization" not in request["headers"]
    assert request["headers"]["accept"] == "text/event-stream"


@pytest.mark.parametrize("flags, environ, model", [
    (["-m", "short-model"], {}, "short-model"),
    (["--model", "long-model"], {}, "long-model"),
    ([], {"STREAMLITE_MODEL": "env-model"}, "env-model"),
    (["-m", "flag-wins"], {"STREAMLITE_MODEL": "env-model"}, "flag-wins"),
])
def test_model_from_flag_or_environment(env, recorder, capsys, flags, environ, model):
    for name, value in environ.items():
        env.setenv(name, value)
    code, _, err = _main(capsys, "--base-url", recorder.url, *flags, "hi")
    assert code == 0, err
    assert recorder.last["body"]["model"] == model


def test_model_from_environment_in_a_process(recorder):
    result = _run("--base-url", recorder.url, "hi", env=_clean_env(STREAMLITE_MODEL="proc-model"))
    assert result.returncode == 0, result.stderr
    assert recorder.last["body"]["model"] == "proc-model"


@pytest.mark.parametrize("flag", ["-s", "--system"])
def test_system_message_comes_first(env, recorder, capsys, flag):
    code, _, err = _main(capsys, "--base-url", recorder.url, flag, "Be terse.", "Why?")
    assert code == 0, err
    assert recorder.last["body"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Why?"},
    ]


def test_base_url_flag_beats_environment(env, recorder, capsys):
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: nothing answers
    code, out, err = _main(capsys, "--base-url", recorder.url, "--max-retries", "0", "hi")
    assert code == 0, err
    assert out == SSE_CONTENT + "\n" and len(recorder.requests) == 1


def test_base_url_from_environment(env, recorder, capsys):
    env.setenv("OPENAI_BASE_URL", recorder.url)
    code, out, err = _main(capsys, "hi")
    assert code == 0, err
    assert out == SSE_CONTENT + "\n" and recorder.last["path"] == "/v1/chat/completions"


def test_key_from_openai_api_key(recorder):
    result = _run("--base-url", recorder.url, "hi", env=_clean_env(OPENAI_API_KEY=KEY))
    assert result.returncode == 0, result.stderr
    assert recorder.last["headers"]["authorization"] == "Bearer " + KEY
    assert KEY not in result.stdout + result.stderr


def test_key_from_api_key_env(recorder):
    other = "sk-other-provider-key-99"
    result = _run("--base-url", recorder.url, "--api-key-env", "MY_PROVIDER_KEY", "hi",
                  env=_clean_env(OPENAI_API_KEY=KEY, MY_PROVIDER_KEY=other), module=True)
    assert result.returncode == 0, result.stderr
    assert recorder.last["headers"]["authorization"] == "Bearer " + other


def test_unset_api_key_env_never_falls_back_to_the_openai_key(recorder):
    result = _run("--base-url", recorder.url, "--api-key-env", "GROQ_API_KEY", "hi",
                  env=_clean_env(OPENAI_API_KEY=KEY, GROQ_API_KEY=""))
    assert result.returncode == streamlite.EXIT_USAGE
    assert result.stderr == "streamlite: error: --api-key-env GROQ_API_KEY: that environment variable is not set\n"
    assert recorder.requests == [] and KEY not in result.stdout + result.stderr


def test_key_from_api_key_env_in_process(env, recorder, capsys):
    env.setenv("GROQ_KEY_FOR_TEST", "gsk-in-process-key")
    code, _, err = _main(capsys, "--base-url", recorder.url, "--api-key-env", "GROQ_KEY_FOR_TEST", "hi")
    assert code == 0, err
    assert recorder.last["headers"]["authorization"] == "Bearer gsk-in-process-key"


@pytest.mark.parametrize("flags, field, value", [
    (["-t", "0.25"], "temperature", 0.25),
    (["--temperature", "1"], "temperature", 1.0),
    (["--max-tokens", "17"], "max_tokens", 17),
])
def test_sampling_flags(env, recorder, capsys, flags, field, value):
    code, _, err = _main(capsys, "--base-url", recorder.url, *flags, "hi")
    assert code == 0, err
    sent = recorder.last["body"][field]
    assert sent == value and type(sent) is type(value)


def test_extra_fields_json_and_string_fallback(env, recorder, capsys):
    code, _, err = _main(
        capsys, "--base-url", recorder.url,
        "-X", "top_p=0.9",
        "-X", 'stop=["\\n", "END"]',
        "-X", 'reasoning_effort="high"',
        "-X", "user=alice",  # not JSON: sent as the string
        "-X", "seed=42",
        "-X", "logprobs=true",
        "-X", 'metadata={"a": {"b": null}}',
        "-X", "suffix=a=b",  # only the first = splits
        "-X", "empty=",  # not JSON either: the empty string
        "hi",
    )
    assert code == 0, err
    body = recorder.last["body"]
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n", "END"]
    assert body["reasoning_effort"] == "high"
    assert body["user"] == "alice"
    assert body["seed"] == 42 and type(body["seed"]) is int
    assert body["logprobs"] is True
    assert body["metadata"] == {"a": {"b": None}}
    assert body["suffix"] == "a=b"
    assert body["empty"] == ""


def test_extra_field_repeated_last_wins_and_flags_override(env, recorder, capsys):
    code, _, err = _main(capsys, "--base-url", recorder.url, "-X", "top_p=0.1", "-X", "top_p=0.2",
                         "-X", "temperature=2", "-t", "0.5", "hi")
    assert code == 0, err
    body = recorder.last["body"]
    assert body["top_p"] == 0.2 and body["temperature"] == 0.5


@pytest.mark.parametrize("bad", ["novalue", "=5", ""])
def test_bad_extra_field_is_a_usage_error(bad):
    result = _run("-X", bad, "hi", env=_clean_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1"))
    assert result.returncode == streamlite.EXIT_USAGE
    assert "-X takes KEY=VALUE" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_extra_field_in_process(env, capsys):
    with pytest.raises(SystemExit) as info:
        streamlite.main(["-X", "oops", "hi"])
    assert info.value.code == streamlite.EXIT_USAGE
    assert "-X takes KEY=VALUE" in capsys.readouterr().err


def test_no_usage_drops_stream_options(env, recorder, capsys):
    code, _, err = _main(capsys, "--base-url", recorder.url, "--no-usage", "hi")
    assert code == 0, err
    body = recorder.last["body"]
    assert "stream_options" not in body and body["stream"] is True


def test_timeout_and_retry_flags_are_accepted(recorder):
    result = _run("--base-url", recorder.url, "--connect-timeout", "3", "--read-timeout", "4.5",
                  "--total-timeout", "20", "--max-retries", "0", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SSE_CONTENT + "\n"


def test_total_timeout_takes_effect():
    with ChatServer(pace=0.05, reasoning=False) as slow:  # about 3 s of events
        start = time.monotonic()
        result = _run("--base-url", slow.url, "--total-timeout", "0.6", "--max-retries", "0", "hi")
        elapsed = time.monotonic() - start
    assert result.returncode == streamlite.EXIT_TIMEOUT, result.stderr
    assert elapsed < 2.5
    assert result.stdout and STORY.startswith(result.stdout.rstrip("\n"))


@pytest.mark.parametrize("flag", ["--connect-timeout", "--read-timeout", "--total-timeout"])
def test_non_positive_timeout_is_a_usage_error(env, capsys, flag):
    code, out, err = _main(capsys, "--base-url", "http://127.0.0.1:9/v1", flag, "0", "hi")
    assert code == streamlite.EXIT_USAGE
    assert err == "streamlite: error: %s must be a positive number of seconds, got 0\n" % flag and out == ""


# ---------------------------------------------------------------------------------------------
# 2. Where the prompt comes from
# ---------------------------------------------------------------------------------------------


def test_prompt_from_arguments_only(recorder):
    result = _run("--base-url", recorder.url, "Tell", "me  a", "joke")
    assert result.returncode == 0, result.stderr
    assert recorder.last["body"]["messages"] == [{"role": "user", "content": "Tell me  a joke"}]


def test_prompt_from_piped_stdin_without_arguments(recorder):
    result = _run("--base-url", recorder.url, input="piped question\nsecond line\n")
    assert result.returncode == 0, result.stderr
    assert recorder.last["body"]["messages"][-1]["content"] == "piped question\nsecond line\n"


def test_prompt_from_dash_in_process(env, recorder, capsys):
    env.setattr(sys, "stdin", io.StringIO("from stdin, not a file"))
    code, _, err = _main(capsys, "--base-url", recorder.url, "-")
    assert code == 0, err
    assert recorder.last["body"]["messages"] == [{"role": "user", "content": "from stdin, not a file"}]


def test_prompt_from_redirected_file_in_process(env, recorder, capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    with open(str(notes)) as handle:
        env.setattr(sys, "stdin", handle)
        code, _, err = _main(capsys, "--base-url", recorder.url, "Summarise")
    assert code == 0, err
    assert recorder.last["body"]["messages"][-1]["content"] == "Summarise\n\nline one\nline two\n"


def test_cat_file_pipe_puts_stdin_after_the_prompt(recorder, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting moved to Tuesday.\nBring the slides.\n")
    command = 'cat "$NOTES" | "$PY" streamlite.py --base-url "$URL" -m gpt-4.1 summarise'
    result = subprocess.run(["sh", "-c", command], cwd=str(ROOT), capture_output=True, text=True, timeout=TIMEOUT,
                            env=_clean_env(NOTES=str(notes), PY=sys.executable, URL=recorder.url))
    assert result.returncode == 0, result.stderr
    body = recorder.last["body"]
    assert body["messages"] == [{"role": "user",
                                 "content": "summarise\n\nThe meeting moved to Tuesday.\nBring the slides.\n"}]
    assert body["model"] == "gpt-4.1"


def test_dash_with_words_puts_stdin_after_the_prompt(recorder):
    result = _run("--base-url", recorder.url, "Translate:", "-", input="bonjour", module=True)
    assert result.returncode == 0, result.stderr
    assert recorder.last["body"]["messages"][-1]["content"] == "Translate:\n\nbonjour"


@pytest.mark.parametrize("args, stdin_text", [
    ([], None),  # no words, stdin /dev/null
    ([""], None),  # an empty word
    (["-"], ""),  # "-" and an empty pipe
    ([], ""),  # an empty pipe
])
def test_no_prompt_is_a_usage_error(recorder, args, stdin_text):
    result = _run("--base-url", recorder.url, *args, input=stdin_text)
    assert result.returncode == streamlite.EXIT_USAGE
    assert result.stderr.startswith("streamlite: error: no prompt") and "Traceback" not in result.stderr
    assert result.stdout == "" and recorder.requests == []


def test_no_prompt_in_process(env, recorder, capsys):
    code, out, err = _main(capsys, "--base-url", recorder.url)
    assert code == streamlite.EXIT_USAGE
    assert "no prompt" in err and out == "" and recorder.requests == []


# ---------------------------------------------------------------------------------------------
# 3. Content, reasoning and colour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, stdout, stderr", [
    ([], STORY + "\n", REASONING + "\n"),
    (["--reasoning", "show"], STORY + "\n", REASONING + "\n"),
    (["--reasoning", "hide"], STORY + "\n", ""),
    (["--reasoning", "only"], REASONING + "\n", ""),
    (["--reasoning", "only", "--color", "always"], REASONING + "\n", ""),  # never escapes on stdout
    (["--reasoning", "hide", "--color", "always"], STORY + "\n", ""),
])
def test_reasoning_modes(chat, flags, stdout, stderr):
    result = _run("--base-url", chat.url, *flags, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == stdout
    assert result.stderr == stderr


def test_reasoning_only_prints_no_content_in_process(env, chat, capsys):
    code, out, err = _main(capsys, "--base-url", chat.url, "--reasoning", "only", "hi")
    assert code == 0, err
    assert out == REASONING + "\n" and err == ""
    assert "lighthouse" not in out


class _TtyText(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


@pytest.mark.parametrize("flags, environ, tty, dimmed", [
    (["--color", "always"], {}, False, True),
    (["--color", "always"], {"NO_COLOR": "1"}, True, True),  # an explicit flag beats NO_COLOR
    ([], {}, True, True),  # auto on a terminal
    (["--color", "auto"], {}, False, False),  # auto, not a terminal
    (["--color", "never"], {}, True, False),
    ([], {"NO_COLOR": "1"}, True, False),
    ([], {"TERM": "dumb"}, True, False),
])
def test_color_of_reasoning_in_process(env, chat, capsys, flags, environ, tty, dimmed):
    for name, value in environ.items():
        env.setenv(name, value)
    err_stream = _TtyText() if tty else io.StringIO()
    with _swapped("stderr", err_stream):
        code = streamlite.main(["--base-url", chat.url, *flags, "hi"])
    out = capsys.readouterr().out
    err = err_stream.getvalue()
    assert code == 0, err
    assert out == STORY + "\n"  # stdout never gets escapes
    if dimmed:
        words = REASONING.split(" ")
        pieces = words[:1] + [" " + word for word in words[1:]]  # one reasoning delta each
        assert err == "".join("\x1b[2m%s\x1b[0m" % piece for piece in pieces) + "\n"
    else:
        assert "\x1b" not in err and err == REASONING + "\n"


def test_color_always_in_a_process(chat):
    result = _run("--base-url", chat.url, "--color", "always", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("\x1b[2m") and "\x1b[0m" in result.stderr
    assert re.sub(r"\x1b\[[0-9]*m", "", result.stderr) == REASONING + "\n"
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize("flags, environ", [([], {}), (["--color", "never"], {}), ([], {"NO_COLOR": "1"})])
def test_no_escapes_on_a_pipe_or_when_turned_off(chat, flags, environ):
    result = _run("--base-url", chat.url, *flags, "hi", env=_clean_env(**environ))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr + result.stdout
    assert result.stderr == REASONING + "\n"


def _stderr_on_a_terminal(url, flags, environ):
    """Run the CLI with stderr on a pseudo-terminal; return (exit code, stdout, stderr bytes)."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "streamlite.py", "--base-url", url, *flags, "hi"],
                                cwd=str(ROOT), env=_clean_env(**environ), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        err = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    piece = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not piece:
                    break
                err += piece
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, out, err
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


@pytest.mark.parametrize("flags, environ, dimmed", [
    ([], {"TERM": "xterm"}, True),
    (["--color", "never"], {"TERM": "xterm"}, False),
    ([], {"TERM": "xterm", "NO_COLOR": "1"}, False),
])
def test_color_auto_follows_a_real_terminal(chat, flags, environ, dimmed):
    code, out, err = _stderr_on_a_terminal(chat.url, flags, environ)
    assert code == 0, err
    assert out == (STORY + "\n").encode()
    assert REASONING.split()[0].encode() in err
    assert (b"\x1b[" in err) is dimmed


# ---------------------------------------------------------------------------------------------
# 4. --jsonl
# ---------------------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}}
KINDS = ["reasoning", "content", "tool_call", "finish", "usage", "completion"]


def _jsonl(stdout):
    assert stdout.endswith("\n")
    return [json.loads(line) for line in stdout.split("\n")[:-1]]  # every line, none blank


def _in_order(lines):
    """The line types, checked to come in the order of KINDS (each kind one run)."""
    kinds = [line["type"] for line in lines]
    runs = [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]
    assert runs == sorted(runs, key=KINDS.index) and len(runs) == len(set(runs)), runs
    return runs


def test_jsonl_prints_extras_nested_deeper_than_dataclasses_asdict_goes():
    """A chunk whose extra fields nest 600 levels (json.loads takes it; dataclasses.asdict, which
    copies in Python, does not on CPython): the lines still come, no traceback."""
    deep = b"[" * 600 + b"]" * 600
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"ok\xc3\xa9"},"finish_reason":"stop"}],"deep":' + deep
            + b',"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"x":' + deep + b'}}\r\n\r\n'
            + b"data: [DONE]\n\n")
    with Recorder(body=body) as rec:
        result = _run("--base-url", rec.url, "--jsonl", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = _jsonl(result.stdout)
    assert [line["type"] for line in lines] == ["content", "finish", "usage", "completion"]
    assert lines[-1]["content"] == "ok\u00e9" and lines[-1]["usage"]["total_tokens"] == 2
    assert json.dumps(lines[-1]["extras"]["deep"]) == deep.decode()


def test_json_too_deep_for_json_dumps_is_printed_pruned():
    deep = []
    for _ in range(5000):  # built in a loop: deeper than any json.dumps or repr goes
        deep = [deep]
    completion = streamlite.Completion(content="ok", extras={"deep": deep})
    line = streamlite._json_text(streamlite._completion_json(completion), ensure_ascii=False)
    printed = json.loads(line)
    assert printed["content"] == "ok" and "(nested too deeply)" in line
    assert "(nested too deeply)" in streamlite._clip(deep)


def test_jsonl_lines_in_order_and_content_adds_up(chat):
    result = _run("--base-url", chat.url, "--jsonl", "hi")
    assert result.returncode == 0, result.stderr
    lines = _jsonl(result.stdout)
    assert _in_order(lines) == ["reasoning", "content", "finish", "usage", "completion"]
    assert "".join(line["text"] for line in lines if line["type"] == "content") == STORY
    assert "".join(line["text"] for line in lines if line["type"] == "reasoning") == REASONING
    completion = lines[-1]
    assert completion["type"] == "completion" and completion["content"] == STORY
    assert completion["reasoning"] == REASONING and completion["finish_reason"] == "stop"
    assert completion["tool_calls"] == []
    usage = [line for line in lines if line["type"] == "usage"]
    assert len(usage) == 1 and usage[0]["completion_tokens"] == completion["usage"]["completion_tokens"] > 0
    assert result.stderr == ""  # reasoning is in the JSON, not on stderr


def test_jsonl_tool_calls(chat):
    result = _run("--base-url", chat.url, "--jsonl", "-X", "tools=" + json.dumps([TOOL]),
                  "-X", 'tool_choice="auto"', "find stories", module=True)
    assert result.returncode == 0, result.stderr
    lines = _jsonl(result.stdout)
    assert _in_order(lines) == ["reasoning", "content", "tool_call", "finish", "usage", "completion"]
    calls = [line for line in lines if line["type"] == "tool_call"]
    assert len(calls) >= 2 and calls[0]["name"] == "search" and calls[0]["id"]
    assert {call["index"] for call in calls} == {0}
    arguments = "".join(call["arguments"] for call in calls)
    assert arguments == arguments_for(TOOL) and json.loads(arguments) == {"q": "lighthouse stories", "n": 3}
    completion = lines[-1]
    assert completion["finish_reason"] == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in completion["tool_calls"]] == [("search", arguments)]
    assert [line["reason"] for line in lines if line["type"] == "finish"] == ["tool_calls"]


def test_plain_output_prints_tool_calls(chat):
    result = _run("--base-url", chat.url, "--reasoning", "hide", "-X", "tools=" + json.dumps([TOOL]), "hi")
    assert result.returncode == 0, result.stderr
    expected = re.escape(STORY) + r"\n\[tool call call_local_\d+_0\] search " + re.escape(arguments_for(TOOL)) + r"\n"
    assert re.fullmatch(expected, result.stdout), result.stdout


def test_jsonl_in_process_with_recorder(env, recorder, capsys):
    code, out, err = _main(capsys, "--base-url", recorder.url, "--jsonl", "--no-usage", "hi")
    assert code == 0, err
    lines = _jsonl(out)
    assert [line["type"] for line in lines] == ["reasoning", "content", "content", "finish", "usage", "completion"]
    assert "".join(line["text"] for line in lines if line["type"] == "content") == SSE_CONTENT
    assert lines[-1]["content"] == SSE_CONTENT and lines[-1]["model"] == "rec-model"
    assert lines[-1]["stats"]["events"] == 7


# ---------------------------------------------------------------------------------------------
# 5. --stats
# ---------------------------------------------------------------------------------------------

STATS = re.compile(
    r"^streamlite: stats: first byte (?P<byte>[\d.]+) s, first reasoning (?P<reasoning>[\d.]+) s, "
    r"first content (?P<content>[\d.]+) s, total (?P<total>[\d.]+) s, (?P<rate>[\d.]+) tokens/s, "
    r"(?P<events>\d+) events, gaps p50 (?P<p50>[\d.]+) ms p95 (?P<p95>[\d.]+) ms max (?P<max>[\d.]+) ms, "
    r"(?P<bytes>\d+) bytes, (?P<retries>\d+) retries, (?P<connection>new|reused) connection$"
)


def _stats(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("streamlite: stats:")]
    assert len(lines) == 1, stderr
    match = STATS.match(lines[0])
    assert match, lines[0]
    return {name: value if name == "connection" else float(value) for name, value in match.groupdict().items()}


def test_stats_figures_match_what_the_server_sent():
    with Recorder(fail_first=1) as rec:
        result = _run("--base-url", rec.url, "--stats", "--max-retries", "2", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SSE_CONTENT + "\n"
    stats = _stats(result.stderr)
    assert result.stderr.startswith(SSE_REASONING + "\nstreamlite: stats:")
    assert stats["events"] == 7  # six chunks and [DONE]; the comment is not an event
    assert stats["retries"] == 1 and len(rec.requests) == 2
    assert stats["connection"] == "new"  # one request per connection here: the closed one is not reused
    assert stats["bytes"] == rec.sent[-1].count  # every byte of the answer that streamed
    assert 0 < stats["byte"] <= stats["reasoning"] <= stats["content"] <= stats["total"] < TIMEOUT
    assert stats["rate"] > 0
    assert stats["p50"] <= stats["p95"] <= stats["max"]


def test_stats_on_a_paced_stream(env, capsys):
    pace = 0.01
    with ChatServer(pace=pace, words=10) as paced:
        code, out, err = _main(capsys, "--base-url", paced.url, "--stats", "--reasoning", "hide", "hi")
    assert code == 0, err
    assert out == reply_for([], words=10) + "\n"
    stats = _stats(err)
    assert stats["events"] == 1 + 13 + 10 + 1 + 1 + 1  # role, reasoning, content, finish, usage, [DONE]
    assert stats["retries"] == 0 and stats["bytes"] > len(out)
    assert stats["reasoning"] < stats["content"]  # 13 paced reasoning events came first
    assert stats["total"] >= 26 * pace * 0.9
    assert pace * 1000 * 0.5 <= stats["p50"] <= stats["max"]
    assert stats["rate"] > 0


def test_stats_printed_even_when_the_stream_fails():
    with ChatServer(pace=0.05, reasoning=False) as slow:
        result = _run("--base-url", slow.url, "--stats", "--total-timeout", "0.5", "hi")
    assert result.returncode == streamlite.EXIT_TIMEOUT
    assert "streamlite: stats: first byte" in result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1].startswith("streamlite: error:")


# ---------------------------------------------------------------------------------------------
# 6. --raw
# ---------------------------------------------------------------------------------------------


def test_raw_prints_the_body_byte_for_byte(recorder):
    result = subprocess.run([sys.executable, "streamlite.py", "--base-url", recorder.url, "--raw", "hi"],
                            cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SSE_BODY
    assert result.stderr == b""


def test_raw_with_stats_keeps_stdout_exact(recorder):
    result = subprocess.run([sys.executable, "-m", "streamlite", "--base-url", recorder.url, "--raw", "--stats", "hi"],
                            cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SSE_BODY
    assert b"streamlite: stats:" in result.stderr and b"7 events" in result.stderr


def test_raw_of_a_long_chat_stream():
    with ChatServer(content_events=300) as bench:
        result = subprocess.run([sys.executable, "streamlite.py", "--base-url", bench.url, "--raw", "hi"],
                                cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    events = result.stdout.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    chunks = [json.loads(event[len(b"data: "):]) for event in events[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == bench_content(300)


# ---------------------------------------------------------------------------------------------
# 7. A reader that stops early: `| head -1`
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--jsonl"], ["--raw"], ["--reasoning", "only", "-X", "n=1"]])
def test_head_closing_the_pipe_ends_quietly(flags):
    with ChatServer(content_events=20000) as bench:  # about 5 MB of events
        shell = '("$PY" streamlite.py --base-url "$URL" %s hi; echo "cli-exit=$?" >&2) | head -1' % " ".join(
            "'%s'" % flag for flag in flags)
        start = time.monotonic()
        result = subprocess.run(["sh", "-c", shell], cwd=str(ROOT), capture_output=True, text=True, timeout=TIMEOUT,
                                env=_clean_env(PY=sys.executable, URL=bench.url))
        elapsed = time.monotonic() - start
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1 and result.stdout.endswith("\n")
    first = result.stdout
    if flags == ["--jsonl"]:
        assert json.loads(first)["type"] == "reasoning"
    if flags == ["--raw"]:
        assert first.startswith("data: {")
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower()
    if "--reasoning" in flags:  # the reasoning is one line: the CLI may finish before head closes
        assert first == REASONING + "\n"
        assert re.fullmatch(r"cli-exit=(0|141)\n", result.stderr), result.stderr
    else:
        assert result.stderr == "cli-exit=%d\n" % streamlite.EXIT_BROKEN_PIPE
    assert elapsed < 10


# ---------------------------------------------------------------------------------------------
# 8. Output appears as it streams
# ---------------------------------------------------------------------------------------------


def _read_all(fd, deadline):
    """Read fd to EOF; return [(monotonic time, bytes), ...] of every read."""
    reads = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        piece = os.read(fd, 65536)
        if not piece:
            break
        reads.append((time.monotonic(), piece))
    return reads


def _reap(proc):
    """Kill the process if it still runs, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(TIMEOUT)
    proc.stdout.close()
    proc.stderr.close()


def _watch(cmd, watched):
    """Run the CLI, timing every read of the `watched` stream ("stdout" or "stderr").

    Returns (exit code, [(time, bytes), ...] of the watched stream, the other stream, end time)."""
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    other = proc.stderr if watched == "stdout" else proc.stdout
    try:
        reads = _read_all(getattr(proc, watched).fileno(), time.monotonic() + TIMEOUT)
        end = time.monotonic()
        rest = other.read()
        proc.wait(TIMEOUT)
    finally:
        _reap(proc)
    return proc.returncode, reads, rest, end


@pytest.mark.parametrize("module", [False, True])
def test_content_reaches_a_pipe_as_it_arrives(module):
    pace, events = 0.05, 30
    with ChatServer(pace=pace, reasoning=False, content_events=events) as paced:
        cmd = [sys.executable] + (["-m", "streamlite"] if module else ["streamlite.py"])
        code, reads, stderr, end = _watch(cmd + ["--base-url", paced.url, "hi"], "stdout")
    assert code == 0, stderr
    out = b"".join(piece for _, piece in reads)
    assert out == (bench_content(events) + "\n").encode()
    first_at = reads[0][0]
    # the stream lasts about (events + 3) * pace; the first piece must come long before the end
    assert first_at < end - 10 * pace, (first_at, end)
    assert len(reads) >= 10  # the text came in many pieces, not one at exit
    assert bench_content(events).encode().startswith(reads[0][1])
    spread = reads[-1][0] - reads[0][0]
    assert spread > (events - 10) * pace * 0.5


def test_reasoning_reaches_stderr_as_it_arrives():
    pace = 0.03
    with ChatServer(pace=pace, words=20) as paced:
        code, reads, out, end = _watch([sys.executable, "streamlite.py", "--base-url", paced.url, "hi"], "stderr")
    assert code == 0
    assert b"".join(piece for _, piece in reads) == (REASONING + "\n").encode()
    assert out == (reply_for([], words=20) + "\n").encode()
    # 20 content events were still to come when the reasoning had been read
    assert len(reads) >= 5 and reads[0][0] < end - 15 * pace


# ---------------------------------------------------------------------------------------------
# 9. --version and --help
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [False, True])
def test_version(module):
    result = _run("--version", module=module)
    assert result.returncode == 0
    assert result.stdout == "streamlite %s\n" % streamlite.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", streamlite.__version__)


def test_help_mentions_exit_codes_examples_and_flags():
    result = _run("--help")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    assert text.startswith("usage: streamlite")
    assert "examples:" in text and 'streamlite "Tell me a joke"' in text and "| streamlite" in text
    assert "exit codes:" in text
    for code in (streamlite.EXIT_OK, streamlite.EXIT_USAGE, streamlite.EXIT_API_ERROR, streamlite.EXIT_CONNECTION,
                 streamlite.EXIT_TIMEOUT, streamlite.EXIT_CUT_OFF, streamlite.EXIT_PROTOCOL,
                 streamlite.EXIT_INTERRUPTED, streamlite.EXIT_BROKEN_PIPE):
        assert re.search(r"(^|\s)%d [A-Za-z]" % code, text.split("exit codes:")[1]), code
    for flag in ("--model", "--system", "--base-url", "--api-key-env", "--temperature", "--max-tokens", "-X",
                 "--no-usage", "--reasoning", "--jsonl", "--stats", "--raw", "--color", "--connect-timeout",
                 "--read-timeout", "--total-timeout", "OPENAI_API_KEY", "STREAMLITE_MODEL", "NO_COLOR"):
        assert flag in text, flag


def test_help_in_process(capsys):
    with pytest.raises(SystemExit) as info:
        streamlite.main(["-h"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "130 interrupted" in out and "examples:" in out


# ---------------------------------------------------------------------------------------------
# 10. Ctrl-C
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--jsonl"]])
def test_ctrl_c_exits_130_and_keeps_the_output(flags):
    pace = 0.05
    with ChatServer(pace=pace, reasoning=False, content_events=400) as paced:  # about 20 s if not stopped
        proc = subprocess.Popen([sys.executable, "streamlite.py", "--base-url", paced.url, *flags, "hi"],
                                cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            fd = proc.stdout.fileno()
            out = b""
            deadline = time.monotonic() + TIMEOUT
            enough = (lambda data: data.count(b"\n") >= 3) if flags else (lambda data: len(data) >= 12)
            while not enough(out) and time.monotonic() < deadline:  # three content events at least
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                piece = os.read(fd, 65536) if ready else b""
                if not piece:
                    break
                out += piece
            assert out, "no output before the interrupt"
            proc.send_signal(signal.SIGINT)
            sent_at = time.monotonic()
            out += b"".join(piece for _, piece in _read_all(fd, time.monotonic() + TIMEOUT))
            proc.wait(TIMEOUT)
            waited = time.monotonic() - sent_at
            stderr = proc.stderr.read().decode()
        finally:
            _reap(proc)
    assert proc.returncode == streamlite.EXIT_INTERRUPTED, stderr
    assert waited < 5
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert out.endswith(b"\n")
    text = out.decode()
    if flags:
        lines = _jsonl(text)
        assert lines and all(line["type"] == "content" for line in lines)
        shown = "".join(line["text"] for line in lines)
    else:
        shown = text[:-1]
    assert len(shown) >= 12 and bench_content(400).startswith(shown)
    assert len(shown) < len(bench_content(400))  # it really was cut short


def test_ctrl_c_in_process(env, capsys):
    class Interrupting(io.StringIO):
        """A stdout where Ctrl-C is pressed (once) after 10 characters have been printed."""

        pressed = False

        def write(self, text):
            super().write(text)
            if len(self.getvalue()) >= 10 and not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt
            return len(text)

    with ChatServer(reasoning=False) as srv:
        out = Interrupting()
        with _swapped("stdout", out):
            code = streamlite.main(["--base-url", srv.url, "hi"])
    err = capsys.readouterr().err
    assert code == streamlite.EXIT_INTERRUPTED
    text = out.getvalue()
    assert out.pressed and text.endswith("\n") and err == ""
    assert len(text) >= 11 and STORY.startswith(text[:-1]) and len(text) < len(STORY)


# ---------------------------------------------------------------------------------------------
# 11. Input that is not UTF-8, closed pipes, SIGTERM, several choices, output modes
# ---------------------------------------------------------------------------------------------

from faults import FaultServer, send, sleep  # noqa: E402
from wire import Recording, delta, sse, text_reply  # noqa: E402


def test_stdin_that_is_not_utf8_is_a_clear_usage_error(recorder):
    result = subprocess.run([sys.executable, "streamlite.py", "--base-url", recorder.url, "Summarise"],
                            cwd=str(ROOT), env=_clean_env(), input=b"caf\xe9 au lait\n", capture_output=True, timeout=TIMEOUT)
    assert result.returncode == streamlite.EXIT_USAGE
    assert result.stderr.decode() == ("streamlite: error: stdin is not valid UTF-8 (byte 0xe9 at offset 3); "
                                      "convert it first, e.g. with iconv -f latin1 -t utf-8\n")
    assert recorder.requests == []


def test_argument_that_is_not_utf8_is_a_clear_usage_error(recorder):
    result = subprocess.run([sys.executable, "streamlite.py", "--base-url", recorder.url, b"caf\xe9"],
                            cwd=str(ROOT), env=_clean_env(LC_ALL="C.UTF-8"), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == streamlite.EXIT_USAGE
    assert result.stderr.decode().startswith("streamlite: error: argument 3 is not valid UTF-8")
    assert b"Traceback" not in result.stderr and recorder.requests == []


def test_argument_that_is_not_utf8_in_process(env, capsys):
    code, out, err = _main(capsys, "caf\udce9")
    assert code == streamlite.EXIT_USAGE and out == "" and "argument 1 is not valid UTF-8" in err


@pytest.mark.parametrize("flags", [[], ["--jsonl"]])
def test_closed_pipe_while_reporting_a_later_error_exits_141_quietly(flags):
    reply = sse(delta({"content": "Hello there"}), done=False)
    error = b'data: {"error":{"message":"overloaded","code":"server_error"}}\n\n'
    with FaultServer([send(reply), sleep(1.0), send(error)]) as server:
        script = '%s streamlite.py --base-url %s %s hi | head -c 1 >/dev/null; echo "cli-exit=${PIPESTATUS[0]}" >&2' % (
            sys.executable, server.url, " ".join(flags))
        result = subprocess.run(["bash", "-c", script], cwd=str(ROOT), env=_clean_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stderr == "cli-exit=%d\n" % streamlite.EXIT_BROKEN_PIPE


def test_several_choices_print_choice_zero_only(chat):
    result = _run("--base-url", chat.url, "--reasoning", "hide", "-X", "n=2", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == STORY + "\n"
    assert "2 choices; this shows choice 0 (--jsonl shows all)" in result.stderr
    lines = _jsonl(_run("--base-url", chat.url, "--jsonl", "-X", "n=2", "hi").stdout)
    assert {line.get("choice") for line in lines if line["type"] == "content"} == {0, 1}


def test_raw_and_jsonl_together_is_a_usage_error():
    result = _run("--raw", "--jsonl", "hi")
    assert result.returncode == streamlite.EXIT_USAGE
    assert "--raw and --jsonl cannot be combined" in result.stderr and result.stdout == ""


def test_jsonl_reasoning_hide_emits_no_reasoning(chat):
    result = _run("--base-url", chat.url, "--jsonl", "--reasoning", "hide", "hi")
    lines = _jsonl(result.stdout)
    assert result.returncode == 0 and lines
    assert not [line for line in lines if line["type"] == "reasoning"]
    assert "reasoning" not in lines[-1] and lines[-1]["content"] == STORY
    assert REASONING not in result.stdout


def _error_reply(status, reason, headers, body):
    head = "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status, reason, len(body), "".join("%s: %s\r\n" % pair for pair in headers))
    return head.encode() + body


def test_jsonl_error_object_has_every_field():
    body = b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}'
    reply = _error_reply(429, "Too Many Requests", [("retry-after", "7"), ("x-request-id", "req_123")], body)
    with FaultServer([send(reply)]) as server:
        result = _run("--base-url", server.url, "--jsonl", "--max-retries", "0", "hi")
    assert result.returncode == streamlite.EXIT_API_ERROR
    error = _jsonl(result.stdout)[-1]
    assert error == {"type": "error", "error": "APIError", "message": error["message"], "status": 429,
                     "code": "rate_limit_exceeded", "error_type": "requests", "request_id": "req_123",
                     "retry_after": 7.0, "which": None}
    assert "Rate limit reached" in error["message"]


def test_fastapi_detail_body_gives_the_message():
    reply = _error_reply(404, "Not Found", [], b'{"detail":"Model llama-9 not found"}')
    with FaultServer([send(reply)]) as server:
        result = _run("--base-url", server.url, "--max-retries", "0", "hi")
    assert result.returncode == streamlite.EXIT_API_ERROR
    assert "Model llama-9 not found" in result.stderr and "detail" not in result.stderr


def test_azure_key_is_read_for_azure(recorder):
    env = _clean_env(AZURE_OPENAI_API_KEY="azure-key-123456")
    del env["OPENAI_API_KEY"]
    result = _run("--base-url", recorder.url, "--azure", "-m", "dep", "hi", env=env)
    assert result.returncode == 0, result.stderr
    assert recorder.last["headers"]["api-key"] == "azure-key-123456" and "warning" not in result.stderr
    assert "authorization" not in recorder.last["headers"]
    plain = _run("--base-url", recorder.url, "hi", env=env)  # not Azure: the Azure key is not sent
    assert "api-key" not in recorder.last["headers"] and "authorization" not in recorder.last["headers"]
    assert "AZURE_OPENAI_API_KEY is read for an Azure host or with --azure" in plain.stderr


def test_no_key_warns_but_still_sends(recorder):
    env = _clean_env()
    del env["OPENAI_API_KEY"]
    result = _run("--base-url", recorder.url, "hi", env=env)
    assert result.returncode == 0 and result.stdout == SSE_CONTENT + "\n"
    assert result.stderr.startswith("streamlite: warning: no API key")
    quiet = _run("--base-url", recorder.url, "-H", "Authorization: Bearer sk-by-header-123", "hi", env=env)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_stats_without_streaming_print_no_absurd_rate(chat):
    result = _run("--base-url", chat.url, "-X", "stream=false", "--stats", "hi")
    assert result.returncode == 0, result.stderr
    line = [line for line in result.stderr.splitlines() if line.startswith("streamlite: stats:")][0]
    assert "tokens/s" not in line and ", -, 1 events" in line


def test_stats_when_the_error_came_before_the_body():
    reply = _error_reply(401, "Unauthorized", [], b'{"error":{"message":"bad key"}}')
    with FaultServer([send(reply)]) as server:
        result = _run("--base-url", server.url, "--stats", "--max-retries", "0", "hi")
    lines = result.stderr.splitlines()
    assert result.returncode == streamlite.EXIT_API_ERROR
    assert lines[0].startswith("streamlite: stats: first byte -") and "0 events" in lines[0]
    assert lines[1].startswith("streamlite: error:") and "bad key" in lines[1]


@pytest.mark.parametrize("finish, words", [("length", "token limit"), ("content_filter", "content filter")])
def test_reply_cut_short_says_so(finish, words):
    with Recording([sse(delta({"content": "Once upon"}), delta({}, finish))]) as server:
        result = _run("--base-url", server.url, "hi")
        jsonl = _run("--base-url", server.url, "--jsonl", "hi")
    assert result.returncode == 0 and result.stdout == "Once upon\n"
    assert result.stderr == "streamlite: the reply was cut short by the %s (finish_reason %s)%s\n" % (
        words if finish == "length" else "provider's content filter", finish,
        "; raise --max-tokens" if finish == "length" else "")
    assert jsonl.stderr == ""  # --jsonl has it in the completion's finish_reason


def test_sigterm_exits_143_and_ends_the_line():
    with ChatServer(pace=0.05, reasoning=False, content_events=400) as paced:
        proc = subprocess.Popen([sys.executable, "streamlite.py", "--base-url", paced.url, "hi"], cwd=str(ROOT),
                                env=_clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out = proc.stdout.read(12)
            proc.send_signal(signal.SIGTERM)
            out += proc.stdout.read()
            proc.wait(TIMEOUT)
            stderr = proc.stderr.read().decode()
        finally:
            _reap(proc)
    assert proc.returncode == streamlite.EXIT_TERMINATED, stderr
    assert out.endswith(b"\n") and bench_content(400).startswith(out[:-1].decode())
    assert "Traceback" not in stderr


def test_header_flag_is_sent_and_a_malformed_one_is_a_usage_error(recorder):
    result = _run("--base-url", recorder.url, "-H", "X-Trace: abc 123", "--header", "HTTP-Referer:https://me.example", "hi")
    assert result.returncode == 0, result.stderr
    assert recorder.last["headers"]["x-trace"] == "abc 123"
    assert recorder.last["headers"]["http-referer"] == "https://me.example"
    for bad in ("no colon", ": empty name", "Bad Name: x"):
        failed = _run("--base-url", recorder.url, "-H", bad, "hi")
        assert failed.returncode == streamlite.EXIT_USAGE and "-H takes 'Name: value'" in failed.stderr
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("flags, message", [
    (["--max-retries", "-1"], "--max-retries must be a whole number from 0 to 100, got -1"),
    (["--max-tokens", "0"], "--max-tokens must be a whole number of 1 or more, got 0"),
    (["--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["--read-timeout", "inf"], "--read-timeout must be a positive number of seconds, got inf"),
])
def test_range_errors_name_the_flag(env, capsys, flags, message):
    code, out, err = _main(capsys, "--base-url", "http://127.0.0.1:9/v1", *flags, "hi")
    assert code == streamlite.EXIT_USAGE and err == "streamlite: error: %s\n" % message and out == ""


def test_every_option_has_a_default_and_a_sentence():
    for action in streamlite._parser()._actions:
        if action.dest in ("help", "version"):
            continue
        assert action.help and "default" in action.help and len(action.help.split()) >= 5, action.option_strings
    text = _run("--help").stdout
    assert "max_completion_tokens" in text and "143 terminated" in text


def test_double_dash_chat_is_a_prompt(recorder):
    result = _run("--base-url", recorder.url, "--", "chat")
    assert result.returncode == 0, result.stderr
    assert recorder.last["body"]["messages"] == [{"role": "user", "content": "chat"}]


# The next two need the lead's Client: api= per call (issue 15) and an on_retry hook.


@pytest.mark.parametrize("api, path", [("completions", "/v1/completions"), ("responses", "/v1/responses"),
                                       ("chat", "/v1/chat/completions")])
def test_api_flag_picks_the_wire_api(api, path):
    completions = sse({"object": "text_completion", "choices": [{"index": 0, "text": "Hi", "finish_reason": "stop"}]})
    responses = sse({"type": "response.output_text.delta", "delta": "Hi"},
                    {"type": "response.completed", "response": {"id": "resp_1", "output": [], "usage": {}}}, done=False)
    reply = {"completions": completions, "responses": responses, "chat": text_reply("Hi")}[api]
    with Recording([reply]) as server:
        result = _run("--base-url", server.url, "--api", api, "hi")
        request = server.requests[0]
    assert result.returncode == 0, result.stderr
    assert request.target.split("?")[0] == path and result.stdout == "Hi\n"
    assert "api" not in json.loads(request.body)


def test_retries_are_visible_with_verbose():
    with Recorder(fail_first=1) as recorder:
        result = _run("--base-url", recorder.url, "--verbose", "hi")
    assert result.returncode == 0, result.stderr
    assert "streamlite: attempt 1 failed (HTTP 503: busy" in result.stderr and "retrying in 0.0 s" in result.stderr


def test_report_retry_line(capsys):
    streamlite._report_retry(2, streamlite.APIConnectionError("connection refused"), 1.5)
    assert capsys.readouterr().err == "streamlite: attempt 2 failed (connection refused); retrying in 1.5 s\n"


def test_help_names_every_subcommand(capsys):
    """`streamlite --help` shows the chat and batch subcommands next to the plain call."""
    with pytest.raises(SystemExit) as exit_info:
        streamlite.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "streamlite chat [options]" in out and "streamlite batch [options]" in out


def test_help_examples_include_a_batch_run():
    text = _run("--help").stdout
    assert "streamlite batch prompts.txt -o results.jsonl" in text


# -X with the names of the call's own parameters (review finding) --------------------------------


def test_x_messages_is_a_usage_error_before_any_request():
    with Recording([text_reply("ok")]) as server:
        result = _run("--base-url", server.url, "-X", "messages=5", "hi")
        sent = len(server.requests)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("streamlite: error: -X messages=... cannot be given")


@pytest.mark.parametrize("flags, environ, model", [
    (["-X", "model=gpt-x"], {}, "gpt-x"),                                   # -X model without -m: sent
    (["-X", "model=gpt-x"], {"STREAMLITE_MODEL": "env-model"}, "gpt-x"),   # -X beats the environment
    (["-X", "model=gpt-x", "-m", "gpt-m"], {}, "gpt-m"),                    # -m beats -X
    ([], {"STREAMLITE_MODEL": "env-model"}, "env-model"),
])
def test_x_model_is_sent_when_m_is_not_given(flags, environ, model):
    with Recording([text_reply("ok")]) as server:
        result = _run("--base-url", server.url, *flags, "hi", env=_clean_env(**environ))
        body = json.loads(server.requests[0].body)
    assert result.returncode == 0, result.stderr
    assert body["model"] == model and result.stdout == "ok\n"


def test_x_names_of_stream_parameters_go_in_the_body():
    # -X sets any body field, also one named like a stream() parameter (system, timeout, ...)
    with Recording([text_reply("ok")]) as server:
        result = _run("--base-url", server.url, "-X", "timeout=5", "-X", 'system="s"', "hi")
        raw = _run("--base-url", server.url, "--raw", "-X", "timeout=5", "hi")
        bodies = [json.loads(request.body) for request in server.requests]
    assert result.returncode == 0 and raw.returncode == 0, result.stderr + raw.stderr
    assert bodies[0]["timeout"] == 5 and bodies[0]["system"] == "s" and bodies[1]["timeout"] == 5


def test_plain_output_of_a_reply_without_choice_0_prints_it_with_a_note():
    # the only choice has index 1: its text is printed at the end, and stderr says which it is
    with FaultServer([send(sse(delta({"content": "hello"}, index=1), delta({}, "stop", index=1))), close()]) as server:
        result = _run("--base-url", server.url, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    assert result.stderr == "streamlite: the server sent no choice 0; this is choice 1 (--jsonl shows every choice)\n"
