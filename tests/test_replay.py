"""Provider transcripts (tests/data/streams) replayed over real HTTP on 127.0.0.1 in several
chunkings, through the sync and async clients; the Completion or the error must match."""

import asyncio
import json
import pathlib

import pytest

import streamlite
from loopback import ReplayServer

DATA = pathlib.Path(__file__).parent / "data" / "streams"
NAMES = sorted(p.stem for p in DATA.glob("*.sse"))
KEY = "sk-SENTINEL-replay-4d2e"
CHUNKINGS = {"whole": None, "7-bytes": 7, "1-byte": 1}


def test_transcripts_found():
    assert len(NAMES) >= 30


def _respond(request):
    """/<name>/<size>/...: the transcript <name> with its recorded status and headers, the body
    in chunks of <size> bytes (0: one chunk)."""
    name, size = request.target.split("/")[1:3]
    meta = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
    headers = [(key, value) for key, value in meta["headers"].items()
               if key.lower() not in ("content-length", "transfer-encoding", "connection")]
    return meta["status"], headers, (DATA / (name + ".sse")).read_bytes(), int(size) or None


@pytest.fixture
def server():
    with ReplayServer(_respond, max_connections=2, lifetime=30.0) as replay:
        yield "http://127.0.0.1:%d" % replay.port


def _summary(completion):
    if completion is None:
        return dict(content="", reasoning="", refusal=None, finish_reason=None, tool_calls=[], usage=None, choices=0)
    return dict(
        content=completion.content,
        reasoning=completion.reasoning,
        refusal=completion.refusal,
        finish_reason=completion.finish_reason,
        tool_calls=[dict(index=t.index, id=t.id, name=t.name, arguments=t.arguments) for t in completion.tool_calls],
        usage=dict(completion.usage.raw) if completion.usage else None,
        choices=len(completion.choices),
    )


def _check(name, completion, error):
    meta = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
    expected = meta["expected"]
    got = _summary(completion if error is None else error.partial)
    for key, value in got.items():
        assert value == expected[key], key
    for per in expected.get("per_choice", []):
        choice = (completion or error.partial).choices[per["index"]]
        assert (choice.content, choice.finish_reason) == (per["content"], per["finish_reason"])
    wanted = expected.get("error")
    if wanted is None:
        assert error is None
    elif wanted["message"] == "incomplete stream":
        assert isinstance(error, streamlite.APIConnectionError)
    else:
        assert isinstance(error, streamlite.APIError)
        assert (error.message, error.code) == (wanted["message"], wanted.get("code"))
        if meta["status"] >= 400:
            assert error.status == meta["status"]
            assert str(error).startswith(str(meta["status"]))
    if error is not None:
        assert KEY not in str(error) and KEY not in repr(error)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
def test_replay_sync(server, name, chunking):
    size = CHUNKINGS[chunking] or 0
    client = streamlite.Client("%s/%s/%d/v1" % (server, name, size), KEY, max_retries=0, read_timeout=10)
    completion = error = None
    try:
        completion = client.complete("hi", model="m")
    except streamlite.StreamliteError as exc:
        error = exc
    _check(name, completion, error)


@pytest.mark.parametrize("name", NAMES)
def test_replay_async(server, name):
    client = streamlite.AsyncClient("%s/%s/5/v1" % (server, name), KEY, max_retries=0, read_timeout=10)

    async def run():
        try:
            return await client.acomplete("hi", model="m"), None
        except streamlite.StreamliteError as exc:
            return None, exc

    completion, error = asyncio.run(run())
    _check(name, completion, error)
