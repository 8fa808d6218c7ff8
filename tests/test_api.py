"""The public names are a contract (DESIGN.md): they exist, with the documented shapes."""

import ast
import dataclasses
import pathlib

import pytest

import streamlite

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name",
    "StreamliteError ConfigError APIError APIConnectionError APITimeoutError ProtocolError "
    "ServerSentEvent SSEDecoder Delta ContentDelta ReasoningDelta RefusalDelta ToolCallDelta "
    "Usage Finish ToolCall Choice Completion Accumulator parse_chunk Client Stream stream "
    "complete main __version__".split(),
)
def test_public_name_exists(name):
    assert hasattr(streamlite, name)


def test_error_hierarchy_and_standard_bases():
    s = streamlite
    assert issubclass(s.ConfigError, (s.StreamliteError, ValueError))
    assert issubclass(s.ConfigError, ValueError)
    assert issubclass(s.APIError, s.StreamliteError)
    assert issubclass(s.APIConnectionError, ConnectionError)
    assert issubclass(s.APITimeoutError, s.APIConnectionError)
    assert issubclass(s.APITimeoutError, TimeoutError)
    assert issubclass(s.ProtocolError, ValueError)
    assert issubclass(s.ProtocolError, s.StreamliteError)


@pytest.mark.parametrize(
    "cls", ["ContentDelta", "ReasoningDelta", "RefusalDelta", "ToolCallDelta", "Usage", "Finish"]
)
def test_deltas_are_frozen_dataclasses_with_choice(cls):
    kind = getattr(streamlite, cls)
    assert issubclass(kind, streamlite.Delta)
    assert dataclasses.is_dataclass(kind)
    assert "choice" in {f.name for f in dataclasses.fields(kind)}
    instance = kind(*([0] if cls in ("ToolCallDelta",) else ["x"] if cls != "Usage" else []))
    with pytest.raises(dataclasses.FrozenInstanceError):
        instance.choice = 1


def test_api_error_str_starts_with_status_and_message():
    error = streamlite.APIError("Rate limit reached", status=429, code="rate_limit_exceeded")
    assert str(error).startswith("429 Too Many Requests: Rate limit reached")
    assert error.status == 429 and error.code == "rate_limit_exceeded"


def test_print_only_in_the_command_line_section():
    """The library never prints; only the CLI section (after its banner) may."""
    source = (ROOT / "streamlite.py").read_text(encoding="utf-8")
    cli_line = next(i for i, line in enumerate(source.splitlines(), 1) if line.startswith("# Command line"))
    tree = ast.parse(source)
    offenders = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
        and node.lineno < cli_line
    ]
    assert offenders == []


def test_runtime_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "streamlite.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    stdlib = {
        "__future__", "argparse", "asyncio", "base64", "dataclasses", "datetime", "email", "http", "io",
        "ipaddress", "json", "math", "os", "random", "re", "socket", "ssl", "stat", "sys",
        "time", "typing", "urllib", "zlib", "threading", "collections", "functools", "select",
        "tempfile", "signal", "inspect", "readline",  # the CLI: -c files, SIGTERM, chat
    }
    assert names <= stdlib, names - stdlib
