"""CLI exit codes and failure output, each produced by a real misbehaving server on 127.0.0.1."""

import os
import pathlib
import subprocess
import sys

import pytest

import streamlite
from loopback import FaultServer, close, send
from loopback import hold as loopback_hold

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
