"""CLI exit codes and failure output, each produced by a real misbehaving server on 127.0.0.1."""

import os
import pathlib
import subprocess
import sys

import pytest

import streamlite
from loopback import FaultServer, close, send, sleep
from loopback import hold as loopback_hold
from wire import Recording, text_reply

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-SENTINEL-cli-exit-31b7"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"partial text"}}]}\n\n'


def _serve_once(reply, hold=False):
    """Accept one connection, read the request, send `reply` bytes, then close (or hold the
    connection until server.release())."""
    return FaultServer([send(reply)] + ([loopback_hold()] if hold else []) + [close()], lifetime=60.0)


def _cli(url, *flags):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = KEY
    return subprocess.run([sys.executable, "streamlite.py", "--base-url", url, "--max-retries", "0", *flags, "hi"],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, reply, flags, code, stdout", [
    ("api-error", b'HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n'
                  b'{"error":{"message":"bad key","code":"invalid_key"}}', [], streamlite.EXIT_API_ERROR, ""),
    ("cut-off", HEAD + CONTENT, [], streamlite.EXIT_CUT_OFF, "partial text\n"),
    ("protocol", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html><title>Portal</title></html>",
     [], streamlite.EXIT_PROTOCOL, ""),
    ("stream-error", HEAD + CONTENT + b'data: {"error":{"message":"overloaded","code":"server_error"}}\n\n', [],
     streamlite.EXIT_API_ERROR, "partial text\n"),
])
def test_failure_exit_codes_keep_output_and_print_one_line(name, reply, flags, code, stdout):
    with _serve_once(reply) as server:
        result = _cli(server.url, *flags)
    assert result.returncode == code, result.stderr
    assert result.stdout == stdout
    assert result.stderr.startswith("streamlite: error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and KEY not in result.stderr + result.stdout


def test_read_timeout_exit_code():
    with _serve_once(HEAD + CONTENT, hold=True) as server:
        result = _cli(server.url, "--read-timeout", "0.5")
    assert result.returncode == streamlite.EXIT_TIMEOUT
    assert result.stdout == "partial text\n"
    assert "read timeout" in result.stderr


def test_usage_error_exit_code():
    result = subprocess.run([sys.executable, "streamlite.py", "--no-such-flag"], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == streamlite.EXIT_USAGE


# Review findings (CLI): the environment, an output that cannot be written, what a server may
# put in an error line, --raw and the key ---------------------------------------------------

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 130, 141, 143}


def _run(*args, env=None, **options):
    """`python streamlite.py ARGS` with bytes out; extra environment from `env` (None drops a name)."""
    merged = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "STREAMLITE_"))}
    merged["OPENAI_API_KEY"] = KEY
    for name, value in (env or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    options.setdefault("stdin", subprocess.DEVNULL)
    options.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "streamlite.py", *args], cwd=str(ROOT), env=merged,
                          stderr=subprocess.PIPE, timeout=60, **options)


def _no_traceback(result):
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-1500:]
    assert result.returncode in DOCUMENTED, (result.returncode, err[-500:])
    return err


@pytest.mark.parametrize("name", ["STREAMLITE_MODEL", "OPENAI_BASE_URL", "HTTPS_PROXY"])
def test_environment_value_that_is_not_utf8_is_a_usage_error_never_sent(name):
    # bytes such as \xff arrive in os.environ as lone surrogates ("\udcff")
    with Recording([text_reply("ok")]) as server:
        value = "m\udcff" if name == "STREAMLITE_MODEL" else server.url + "\udcff"
        result = _run("--base-url", server.url, "--max-retries", "0", "hi", env={name: value})
        sent = len(server.requests)
    err = _no_traceback(result)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0
    assert err == "streamlite: error: the environment variable %s is not valid UTF-8; set it in UTF-8\n" % name


def test_stdout_that_cannot_be_written_is_one_error_line_exit_2():
    # `streamlite hi > /dev/full`: a full disk
    with Recording([text_reply("ok")]) as server, open("/dev/full", "wb") as full:
        result = _run("--base-url", server.url, "hi", stdout=full)
        raw = _run("--base-url", server.url, "--raw", "hi", stdout=full)
    for done in (result, raw):
        err = _no_traceback(done)
        assert done.returncode == streamlite.EXIT_USAGE
        assert err == "streamlite: error: cannot write to stdout: No space left on device\n", err


def test_error_and_retry_lines_carry_no_terminal_control_sequences():
    # ESC ] 0 ; ... BEL sets the terminal title (OSC 52 would write the clipboard), ESC [ 2 J clears
    body = b'{"error":{"message":"denied\\u001b]0;pwned\\u0007\\u001b[2J\\u009b bye"}}'
    reply = (b"HTTP/1.1 503 Busy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    with FaultServer([send(reply), close()], max_connections=2) as server:
        result = _run("--base-url", server.url, "--max-retries", "1", "-v", "hi")
    assert result.returncode == streamlite.EXIT_API_ERROR
    err = result.stderr.decode()
    assert not any(c in err for c in "\x1b\x07\x9b"), err
    assert "attempt 1 failed (HTTP 503: denied\\x1b]0;pwned\\x07\\x1b[2J\\x9b bye)" in err
    assert err.endswith("streamlite: error: 503 Service Unavailable: denied\\x1b]0;pwned\\x07\\x1b[2J\\x9b bye\n"), err


@pytest.mark.parametrize("split", [False, True])
def test_raw_never_prints_the_key_a_server_echoes_in_an_error_event(split):
    # every other mode scrubs the key from this error; --raw redacts it in the body it copies,
    # also when the key comes cut in two pieces of the body
    error = b'data: {"error": {"message": "invalid key ' + KEY.encode() + b'", "code": "' + KEY.encode() + b'"}}\n\n'
    head = HEAD + CONTENT
    actions = [send(head + error[:50]), sleep(0.2), send(error[50:])] if split else [send(head + error)]
    with FaultServer(actions + [close()], lifetime=60.0) as server:
        result = _run("--base-url", server.url, "--raw", "--max-retries", "0", "hi")
    assert result.returncode == streamlite.EXIT_API_ERROR
    assert KEY[:6].encode() not in result.stdout + result.stderr, result.stdout
    assert result.stdout == CONTENT + b'data: {"error": {"message": "invalid key [redacted]", "code": "[redacted]"}}\n\n'
