"""The README's first command, the CLI and the local example server, end to end as a user runs them."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import streamlite

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from server import ChatServer, REASONING, reply_for  # noqa: E402
from loopback import refused_port  # noqa: E402


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMLITE_"))}
    env.update(extra)
    return env


def test_demo_runs_offline():
    result = subprocess.run([sys.executable, "examples/demo.py"], cwd=str(ROOT), env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert reply_for([]) in result.stdout
    assert "usage:" in result.stdout


@pytest.fixture(scope="module")
def server():
    with ChatServer() as srv:
        yield srv


def test_client_streams_reasoning_content_tool_call_and_usage(server):
    client = streamlite.Client(server.url, "sk-test")
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    with client.stream("hi", model="m", tools=tools) as stream:
        kinds = [type(delta).__name__ for delta in stream]
    result = stream.completion
    assert result.content == reply_for([]) and result.reasoning == REASONING
    assert result.tool_calls[0].name == "search"
    assert result.tool_calls[0].parsed_arguments() == {"query": "lighthouse stories"}
    assert result.finish_reason == "tool_calls"
    assert result.usage.reasoning_tokens > 0 and kinds[-1] == "Usage"


def test_breaking_early_closes_the_stream(server):
    client = streamlite.Client(server.url, "sk-test")
    stream = client.stream("hi")
    first = next(iter(stream))
    stream.close()
    assert isinstance(first, streamlite.ReasoningDelta)
    assert stream.completion.reasoning == first.text
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize("flags, stdout_part", [
    ([], reply_for([])),
    (["--reasoning", "only"], REASONING),
])
def test_cli_prints_stream(server, flags, stdout_part):
    result = subprocess.run([sys.executable, "streamlite.py", "--base-url", server.url, *flags, "hello"],
                            cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stdout_part in result.stdout and result.stdout.endswith("\n")


def test_cli_jsonl_lines_parse(server):
    result = subprocess.run([sys.executable, "-m", "streamlite", "--base-url", server.url, "--jsonl", "hi"],
                            cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["type"] for line in lines} >= {"reasoning", "content", "finish", "usage", "completion"}
    assert lines[-1]["content"] == reply_for([])


def test_cli_connection_failure_exit_code():
    with refused_port() as port:
        result = subprocess.run([sys.executable, "streamlite.py", "--base-url", "http://127.0.0.1:%d/v1" % port,
                                 "--max-retries", "0", "hi"], cwd=str(ROOT),
                                env=_env(OPENAI_API_KEY="sk-SENTINEL-cli-77aa"), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == streamlite.EXIT_CONNECTION
    assert result.stderr.startswith("streamlite: error:") and result.stderr.count("\n") == 1
    assert "SENTINEL" not in result.stderr + result.stdout


def test_async_client_against_local_server(server):
    import asyncio

    async def run():
        client = streamlite.AsyncClient(server.url, "sk-test")
        results = await asyncio.gather(*[client.acomplete("hi") for _ in range(8)])
        return [r.content for r in results]

    assert asyncio.run(run()) == [reply_for([])] * 8


@pytest.mark.parametrize("name, expected", [
    ("stream_text", reply_for([])),
    ("reasoning", "[thinking]"),
    ("collect", "finish_reason: stop"),
    ("usage", "reasoning 13"),
    ("tool_calls", "search({'query': 'lighthouse stories'})"),
    ("offline_replay", "Paris is the capital of France"),
])
def test_examples_run_against_the_local_server(name, expected):
    result = subprocess.run([sys.executable, "examples/%s.py" % name], cwd=str(ROOT), env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_close_delimited_body_streams_to_the_end():
    with ChatServer(chunked=False) as close_delimited:
        result = streamlite.Client(close_delimited.url, "sk-test").complete("hi")
    assert result.content == reply_for([]) and result.usage is not None
