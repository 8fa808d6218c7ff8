"""Run one scenario through either client: `streamlite.Client(...).stream` (or `.complete`) or
`streamlite.AsyncClient(...).astream` (or `.acomplete`) in a fresh event loop (asyncio.run).

    outcome = run(server.url, "hi", KEY, read_timeout=0.3)       # the `run` fixture (conftest.py)
    outcome.deltas, outcome.completion, outcome.error, outcome.elapsed, outcome.stream

Both drivers do the same steps in the same order and catch only streamlite's own errors (into
`error`); anything else (an AttributeError for a missing `stream.retries`, say) propagates so
that a test sees it. `on_delta(delta)` runs after each delta is handed out; a true return
leaves the loop (the stream is closed by its with block). `call="complete"` uses complete()/
acomplete() instead of a stream.
"""

import asyncio
import collections
import time

import streamlite

Outcome = collections.namedtuple("Outcome", "deltas completion error elapsed stream first_at ended_at mode")


def _call_options(model, stream_options):
    options = dict(stream_options or {})
    if model is not None:
        options["model"] = model
    return options


def run_sync(url, prompt="hi", api_key=None, *, call="stream", on_delta=None, keep=True, model=None,
             stream_options=None, **client_options):
    deltas, error, stream, completion, first_at = [], None, None, None, None
    started = time.monotonic()
    client = None
    try:
        client = streamlite.Client(url, api_key, **client_options)
        if call == "complete":
            completion = client.complete(prompt, **_call_options(model, stream_options))
        else:
            stream = client.stream(prompt, **_call_options(model, stream_options))
            with stream:
                for delta in stream:
                    first_at = first_at or time.monotonic()
                    if keep:
                        deltas.append(delta)
                    if on_delta is not None and on_delta(delta):
                        break
    except streamlite.StreamliteError as exc:
        error = exc
    finally:
        if client is not None:
            client.close()  # its idle connection, as `with Client(...)` would (PyPy has no refcounting)
    ended_at = time.monotonic()
    if stream is not None and error is None:
        completion = stream.completion
    return Outcome(deltas, completion, error, ended_at - started, stream, first_at, ended_at, "sync")


def run_async(url, prompt="hi", api_key=None, *, call="stream", on_delta=None, keep=True, model=None,
              stream_options=None, **client_options):
    deltas, box = [], {"stream": None, "completion": None, "first_at": None}

    async def go():
        client = streamlite.AsyncClient(url, api_key, **client_options)
        if call == "complete":
            box["completion"] = await client.acomplete(prompt, **_call_options(model, stream_options))
            return
        stream = box["stream"] = client.astream(prompt, **_call_options(model, stream_options))
        async with stream:
            async for delta in stream:
                box["first_at"] = box["first_at"] or time.monotonic()
                if keep:
                    deltas.append(delta)
                if on_delta is not None and on_delta(delta):
                    break

    error = None
    started = time.monotonic()
    try:
        asyncio.run(go())
    except streamlite.StreamliteError as exc:
        error = exc
    ended_at = time.monotonic()
    stream, completion = box["stream"], box["completion"]
    if stream is not None and error is None:
        completion = stream.completion
    return Outcome(deltas, completion, error, ended_at - started, stream, box["first_at"], ended_at, "async")


RUNNERS = {"sync": run_sync, "async": run_async}
