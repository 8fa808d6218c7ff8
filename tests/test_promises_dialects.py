"""Issue 13's promises for the Responses API and legacy completions dialects: a hostile server
over real loopback HTTP, through both clients. Each test failed before its fix: non-finite
numbers, ids and call ids invented per event (memory), one chunk of 30k choices (CPU), lone
surrogates outside the text deltas."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import streamlite
from loopback import FaultServer, send
from test_promises import Meter, assert_typed, head, response, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


def ev(obj):
    """One SSE event; `obj` is a JSON object or already-encoded JSON text (bytes)."""
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode("utf-8")
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"
COMPLETED = ev({"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "output": []}})


def text_delta(text, item="msg_1"):
    return ev({"type": "response.output_text.delta", "item_id": item, "output_index": 0, "content_index": 0,
               "delta": text})


# 1. Untyped exceptions ######################################################


@CLIENTS
@pytest.mark.parametrize("created_at", [b"1e400", b"Infinity", b"-Infinity", b"NaN"])
def test_a_non_finite_created_at_is_no_untyped_error(use_async, created_at):
    """`response.created_at` of 1e400 / Infinity / NaN (JSON that Python's json accepts):
    today OverflowError / ValueError from int(value) in _ResponsesDecoder._note_info escapes the
    library. It should be ignored (created None) or a typed error."""
    body = (ev(b'{"type":"response.created","response":{"id":"resp_1","created_at":' + created_at + b'}}')
            + text_delta("Hi") + COMPLETED)
    with FaultServer([send(response(body))]) as server:
        _, completion, error = run(use_async, server.url, api="responses")
    if error is not None:
        assert_typed(error)
    else:
        assert completion.content == "Hi" and completion.created is None


@CLIENTS
def test_a_non_finite_created_at_in_a_whole_json_response_is_no_untyped_error(use_async):
    """The same through a 200 application/json Response object (a server that ignored stream)."""
    body = (b'{"object":"response","id":"resp_1","status":"completed","created_at":1e999,"output":'
            b'[{"type":"message","id":"m","content":[{"type":"output_text","text":"Hi"}]}]}')
    with FaultServer([send(response(body, ctype="application/json"))]) as server:
        _, completion, error = run(use_async, server.url, api="responses")
    if error is not None:
        assert_typed(error)
    else:
        assert completion.content == "Hi"


# 2. Bounded memory ##########################################################


@CLIENTS
def test_argument_deltas_with_a_new_call_id_each_hold_no_memory_per_event(use_async):
    """A function call added once (item id `fc_1`), then 60k argument deltas that name that item
    and a *fresh* call_id each: every event adds an alias key to _ResponsesDecoder._calls (no cap
    there: `for key in keys: self._calls.setdefault(key, call)` in _call), ~95 bytes per event
    with accumulate=False (~5.5 MB here, without end). It should stay constant."""
    count = 60000
    events = [ev({"type": "response.output_item.added", "output_index": 0,
                  "item": {"type": "function_call", "id": "fc_1", "call_id": "call_0", "name": "f", "arguments": ""}})]
    events += [ev({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "call_id": "call_%d" % i,
                   "output_index": 0, "delta": "x"}) for i in range(1, count + 1)]
    body = b"".join(events) + COMPLETED
    meter, seen = measured_responses(use_async, [send(response(body))], start_at=2)
    assert seen >= count
    assert meter.peak < 2 * 2**20, "peak %.1f MB over %d argument deltas" % (meter.peak / 2**20, count)


def measured_responses(use_async, script, start_at):
    """Run a Responses stream with accumulate=False, measuring memory from its `start_at`-th
    delta on; return (the meter, how many deltas came). Only a typed error may end it."""
    meter = Meter()
    seen = [0]

    def consume(item, stream):
        seen[0] += 1
        if seen[0] == start_at:
            meter.__enter__()

    with FaultServer(script, lifetime=60, io_timeout=20) as server:
        _, _, error = run(use_async, server.url, api="responses", accumulate=False, keep=False,
                          consume=consume, read_timeout=20)
        meter.__exit__()
    assert error is None or isinstance(error, streamlite.StreamliteError), repr(error)
    return meter, seen[0]


@CLIENTS
def test_long_item_ids_are_not_kept_whole_for_the_whole_stream(use_async):
    """128 text deltas, each naming a new item whose id is 256 KiB long (each event is well under
    max_event_bytes): _ResponsesDecoder._items keeps every id string until the stream ends
    (10000 of them allowed), so accumulate=False holds 32 MB here, ~160 GB at the item cap.
    Only a bit per kind is needed per item: ids should be kept bounded (hashed or clipped)."""
    count, size = 128, 256 * 1024
    body = b"".join(text_delta("x", item="%04d" % i + "i" * size) for i in range(count)) + COMPLETED
    meter, seen = measured_responses(use_async, [send(head(length=len(body))), send(body)], start_at=1)
    assert seen >= count
    assert meter.peak < 8 * 2**20, "peak %.1f MB for %d items" % (meter.peak / 2**20, count)


@CLIENTS
def test_think_tags_hold_no_memory_per_invented_choice_index(use_async):
    """api="completions", think_tags=True: 60k chunks each with a new `choices[].index` and the
    text "<" (which could start <think>, so it is held and never reaches the Accumulator's
    1024-choice cap). ChunkDecoder._think gets one _ThinkSplitter per index with no cap (~190
    bytes per event): ~11 MB here, with accumulate=False. It should be bounded like the
    Accumulator's choices (or a ProtocolError past _MAX_CHOICES)."""
    count = 60000
    body = b"".join(ev({"id": "cmpl-1", "object": "text_completion", "choices": [{"index": i, "text": "<"}]})
                    for i in range(1, count + 1)) + DONE
    with FaultServer([send(response(body))], lifetime=60) as server:
        with Meter() as meter:
            _, _, error = run(use_async, server.url, api="completions", think_tags=True, accumulate=False,
                              keep=False, read_timeout=20)
    assert error is None or isinstance(error, streamlite.StreamliteError), repr(error)
    assert meter.peak < 4 * 2**20, "peak %.1f MB for %d chunks" % (meter.peak / 2**20, count)


# 3. CPU: quadratic work in one event #######################################


CHILD_QUADRATIC = """
import asyncio, json, sys, time
root = sys.argv[3]
sys.path[:0] = [root, root + "/tests"]
import streamlite
from loopback import FaultServer, send
from test_promises import response

count, use_async = int(sys.argv[1]), sys.argv[2] == "async"
choices = [{"index": i, "text": "", "delta": {"reasoning_details": []}} for i in range(count)]
body = b"data: " + json.dumps({"id": "cmpl-1", "object": "text_completion", "choices": choices}).encode() + b"\\n\\n"
body += b"data: [DONE]\\n\\n"
opts = dict(connect_timeout=5, read_timeout=20, total_timeout=3, max_retries=0, proxy="", api="completions")
with FaultServer([send(response(body))], lifetime=120, io_timeout=60) as server:
    start = time.process_time()
    error = None
    try:
        if use_async:
            async def go():
                return await streamlite.AsyncClient(server.url, "sk-x", **opts).acomplete("hi")
            asyncio.run(go())
        else:
            streamlite.Client(server.url, "sk-x", **opts).complete("hi")
    except Exception as exc:
        error = exc
    cpu = time.process_time() - start
print(json.dumps({"cpu": cpu, "error": type(error).__name__ if error else None}))
"""


@CLIENTS
def test_one_chunk_with_many_choices_is_decoded_in_linear_time(use_async):
    """One completions chunk (~2 MB, far below max_event_bytes) with 30k distinct choices that
    each carry `delta.reasoning_details`: Accumulator.add_chunk_info calls choices.index(choice)
    for each (O(n^2) dict comparisons), ~12 s of CPU here (a 16 MB event: ~15 minutes), with the
    GIL held so total_timeout=3 cannot end it. It should take well under a second (enumerate)."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD_QUADRATIC), "30000",
                               "async" if use_async else "sync", ROOT], cwd=ROOT, capture_output=True, text=True,
                              timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("one chunk of 30k choices did not finish within 90 s")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["cpu"] < 4.0, "one chunk of 30k choices took %.1f s of CPU (total_timeout=3)" % result["cpu"]


# 4. Text is always valid Unicode ############################################


def _strings_of(delta):
    for name in ("text", "arguments", "id", "name", "reason"):
        value = getattr(delta, name, None)
        if isinstance(value, str):
            yield "%s.%s" % (type(delta).__name__, name), value


@CLIENTS
def test_tool_call_argument_fragments_and_ids_are_valid_unicode(use_async):
    """A surrogate pair split across two `function_call_arguments.delta` events (`\\ud83d`, then
    `\\ude00`) and a lone `\\ud800` in the call_id and name: the ToolCallDeltas handed out hold
    lone surrogates (the _SurrogateMender only mends Content/Reasoning/RefusalDelta), so
    `delta.arguments.encode("utf-8")` raises. Every fragment handed out should be valid Unicode,
    as content is (the pair joined, or U+FFFD)."""
    body = (ev(b'{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call",'
               b'"id":"fc_1","call_id":"call_\\ud800","name":"f\\udfff","arguments":""}}')
            + ev(b'{"type":"response.function_call_arguments.delta","item_id":"fc_1","delta":"{\\"a\\":\\"\\ud83d"}')
            + ev(b'{"type":"response.function_call_arguments.delta","item_id":"fc_1","delta":"\\ude00\\"}"}')
            + COMPLETED)
    with FaultServer([send(response(body))]) as server:
        deltas, completion, error = run(use_async, server.url, api="responses")
    assert error is None, repr(error)
    bad = _invalid_strings(deltas)
    assert not bad, "invalid Unicode handed out: %r" % bad
    call = completion.tool_calls[0]
    for value in (call.id, call.name, call.arguments):
        value.encode("utf-8")


def _invalid_strings(deltas):
    """(where, value) of every string in `deltas` that is not valid Unicode."""
    bad = []
    for d in deltas:
        for where, value in _strings_of(d):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                bad.append((where, value))
    return bad


@CLIENTS
@pytest.mark.parametrize("api", ["responses", "completions"])
def test_finish_reason_id_and_model_are_valid_unicode(use_async, api):
    """A lone `\\ud800` in the incomplete reason (Responses) / `finish_reason` (completions), and
    in the response id and model: Finish.reason, completion.finish_reason, .id and .model hold
    the lone surrogate (encode("utf-8") raises). They should be valid Unicode (U+FFFD)."""
    if api == "responses":
        body = (ev(b'{"type":"response.created","response":{"id":"resp_\\ud800","model":"m\\ud800"}}')
                + text_delta("Hi")
                + ev(b'{"type":"response.incomplete","response":{"incomplete_details":{"reason":"odd\\ud800"}}}'))
    else:
        body = (ev(b'{"id":"cmpl_\\ud800","model":"m\\ud800","choices":[{"index":0,"text":"Hi"}]}')
                + ev(b'{"id":"cmpl_\\ud800","model":"m\\ud800","choices":[{"index":0,"text":"","finish_reason":"odd\\ud800"}]}')
                + DONE)
    with FaultServer([send(response(body))]) as server:
        deltas, completion, error = run(use_async, server.url, api=api)
    assert error is None, repr(error)
    assert completion.content == "Hi"
    bad = _invalid_strings(deltas)
    for name in ("finish_reason", "id", "model"):
        value = getattr(completion, name)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:
            bad.append(("completion." + name, value))
    assert not bad, "invalid Unicode handed out: %r" % bad
