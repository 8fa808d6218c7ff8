"""Batch: Client.batch, AsyncClient.abatch and `streamlite batch`, against a loopback server that
enforces a rate limit (429 + Retry-After) and injects failures (tests/batch_server.py)."""

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import pytest

import streamlite
from batch_server import BatchServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-batch-test-5f2c9e"


def run_batch(kind, url, requests, max_retries=0, **options):
    """All results of a batch through the sync or the async client."""
    if kind == "sync":
        with_client = streamlite.Client(url, KEY, max_retries=max_retries, proxy="")
        return list(with_client.batch(requests, **options))

    async def go():
        aclient = streamlite.AsyncClient(url, KEY, max_retries=max_retries, proxy="")
        return [result async for result in aclient.abatch(requests, **options)]

    return asyncio.run(go())


def cli(*args, stdin=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = KEY
    return subprocess.run([sys.executable, "streamlite.py", "batch", *args], cwd=str(ROOT), env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def read_out(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def starts(server, status=None):
    return sorted(t for t, _, s in server.log if status is None or s == status)


def max_in_window(times, window):
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


both = pytest.mark.parametrize("kind", ["sync", "async"])


# I/O-free pieces ######################################################################


def test_input_lines_become_requests_or_error_lines_numbered_by_physical_line():
    data = "\n".join([
        "What is 2+2?",
        "",
        '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}',
        '{"custom_id": "b", "messages": [{"role": "user", "content": "y"}], "temperature": 0}',
        '{"messages": [{"role": "user", "content": "z"}]}',
        "[1, 2]",
        '{"model": "m"}',
        "{not json",
        '"quoted prompt"',
        '{"custom_id": "c", "url": "/v1/embeddings", "body": {"input": "e"}}',
        '{"custom_id": 7, "messages": []}',
        "   ",
        '{"custom_id": "r", "url": "/v1/responses", "body": {"input": "hi"}}',
    ]).encode() + b"\n\xff\xfe\n"
    got = {r.custom_id: r for r in streamlite._batch_parse_lines(data)}
    assert sorted(got) == sorted(["line-1", "a", "b", "line-5", "line-6", "line-7", "line-8", "line-9", "c", "line-11", "r", "line-14"])
    assert got["line-1"].body == {"messages": [{"role": "user", "content": "What is 2+2?"}]} and got["line-1"].problem is None
    assert got["a"].body == {"model": "m", "messages": [{"role": "user", "content": "x"}]} and got["a"].line == 3
    assert got["b"].body == {"messages": [{"role": "user", "content": "y"}], "temperature": 0}
    assert got["line-5"].problem is None
    assert got["line-9"].body["messages"][0]["content"] == "quoted prompt"
    assert got["r"].body == {"input": "hi", "api": "responses"} and got["r"].problem is None
    assert "JSON array" in got["line-6"].problem
    assert "no messages" in got["line-7"].problem
    assert "not valid JSON" in got["line-8"].problem
    assert "/v1/embeddings" in got["c"].problem
    assert "custom_id must be a non-empty string" in got["line-11"].problem
    assert "not UTF-8" in got["line-14"].problem


def test_repeated_custom_id_is_a_config_error_before_any_io():
    with pytest.raises(streamlite.ConfigError, match=r"custom_id 'line-2' is used twice \(lines 2 and 3\)"):
        streamlite._batch_prepare(["a", "b", {"custom_id": "line-2", "messages": []}])
    client = streamlite.Client("http://127.0.0.1:9/v1", KEY, proxy="")
    with pytest.raises(streamlite.ConfigError):
        client.batch([{"custom_id": "x", "messages": []}, {"custom_id": "x", "messages": []}])


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_partition_any_ids(n):
    ids = ["line-%d" % i for i in range(1, 200)] + ["q%d" % i for i in range(50)] + ["ünï", ""]
    owners = [[k for k in range(1, n + 1) if streamlite._batch_in_shard(i, (k, n))] for i in ids]
    assert all(len(found) == 1 for found in owners)
    assert all(streamlite._batch_in_shard(i, (zlib.crc32(i.encode()) % n + 1, n)) for i in ids)


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_shard_outside_one_to_n_is_a_config_error(text):
    with pytest.raises(streamlite.ConfigError, match="--shard takes K/N"):
        streamlite._batch_shard(text)


def _plan(n=20, **options):
    requests = streamlite._batch_prepare(["prompt %d" % i for i in range(n)])
    options.setdefault("concurrency", 4)
    options.setdefault("rpm", None)
    options.setdefault("tpm", None)
    return streamlite._BatchPlan(requests, retries=options.pop("retries", 0), **options)


def _drive(plan, finish_after, until=1000.0):
    """Start requests on a fake clock; each takes `finish_after` seconds. Returns start times."""
    now, running, started = 0.0, [], []
    while not plan.finished and now < until:
        step = plan.take(now)
        if isinstance(step, streamlite._BatchRequest):
            started.append(now)
            running.append((now + finish_after, step))
            continue
        ends = sorted(end for end, _ in running)
        wake = [now + step] if step is not None else []
        now = min(wake + ends[:1])
        for item in [r for r in running if r[0] <= now]:
            running.remove(item)
            completion = streamlite.Completion(content="ok")
            plan.finish(item[1], completion, None, now)
    return started


def test_plan_spaces_starts_evenly_by_rpm_never_a_burst():
    started = _drive(_plan(30, rpm=120, concurrency=8), finish_after=0.1)
    gaps = [b - a for a, b in zip(started, started[1:])]
    assert len(started) == 30 and min(gaps) >= 0.5 - 1e-9 and max(gaps) <= 0.5 + 1e-9


def test_plan_caps_concurrency():
    plan = _plan(10, concurrency=3)
    taken = [plan.take(0.0) for _ in range(5)]
    assert [isinstance(t, streamlite._BatchRequest) for t in taken] == [True] * 3 + [False] * 2
    assert taken[3] is None  # wait for a request in flight to finish


def test_plan_spaces_starts_by_estimated_tokens():
    requests = streamlite._batch_prepare(["x" * 400] * 5, {"max_tokens": 100})
    assert requests[0].tokens == len(json.dumps([{"role": "user", "content": "x" * 400}])) // 4 + 100
    plan = streamlite._BatchPlan(requests, concurrency=5, rpm=None, tpm=requests[0].tokens * 60, retries=0)
    started = _drive(plan, finish_after=0.01)
    assert [round(t, 6) for t in started] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_plan_rate_limit_is_one_shared_cooldown_and_the_request_is_retried():
    plan = _plan(4, concurrency=4)
    first, second = plan.take(0.0), plan.take(0.0)
    error = streamlite.APIError("slow down", status=429, retry_after=2.0)
    assert plan.finish(first, None, error, 0.5) is None  # retried, not a result
    assert plan.take(1.0) == pytest.approx(1.5)  # every start waits for the cooldown
    assert plan.take(2.5) is first  # the throttled request goes first
    result = plan.finish(second, None, streamlite.APIError("bad", status=400), 2.6)
    assert result.error is not None and result.status_code == 400 and plan.failed == 1 and plan.throttled == 1


def test_plan_retries_transient_failures_per_request_then_gives_up():
    plan = _plan(1, retries=2)
    request = plan.take(0.0)
    for attempt, now in enumerate([0.0, 10.0, 20.0]):
        result = plan.finish(request, None, streamlite.APIError("boom", status=502), now)
        if attempt < 2:
            assert result is None and plan.cooldown_until == float("-inf")  # not shared
            assert plan.take(now) == pytest.approx(0.5 * 2**attempt)
            request = plan.take(now + 9.0)
            assert request is not None
    assert result.status_code == 502 and result.attempts == 3


def test_output_scan_ignores_a_torn_last_line():
    good = json.dumps({"custom_id": "a", "response": {"status_code": 200}, "error": None})
    bad = json.dumps({"custom_id": "b", "response": None, "error": {"code": "x", "message": "y"}})
    data = (good + "\n" + bad + "\n" + good[:20]).encode()
    done, lines, whole = streamlite._batch_scan_output(data)
    assert done == {"a"} and [line[2:] for line in lines] == [("a", True), ("b", False)]
    assert whole == len(good) + len(bad) + 2


# Client.batch and AsyncClient.abatch ##################################################


@both
def test_every_request_answered_exactly_once_and_failures_recorded(kind):
    prompts = ["prompt %d" % i for i in range(24)] + ["fail-always 1", "cut 2", "flaky 3"]
    with BatchServer(delay=0.005) as server:
        results = run_batch(kind, server.url, prompts + [["not", "a", "request"]], max_retries=2, concurrency=5, model="m")
    by_id = {r.custom_id: r for r in results}
    assert len(results) == len(by_id) == 28
    assert all(server.answers.get(p) == 1 for p in prompts[:24] + ["flaky 3"])
    for number, prompt in enumerate(prompts[:24] + ["flaky 3"], 1):
        result = by_id["line-%d" % (number if number <= 24 else 27)]
        assert result.ok and result.completion.content == "echo: " + prompt and result.status_code == 200
    failed = by_id["line-25"]
    assert isinstance(failed.error, streamlite.APIError) and failed.error.status == 400 and failed.completion is None
    cut = by_id["line-26"]
    assert isinstance(cut.error, streamlite.APIConnectionError) and cut.error.partial.content == "echo:"
    assert isinstance(by_id["line-28"].error, streamlite.ConfigError) and by_id["line-28"].attempts == 0
    assert results[0].custom_id == "line-28"  # invalid requests are reported first


@both
def test_rpm_spaces_starts(kind):
    with BatchServer() as server:
        results = run_batch(kind, server.url, ["p%d" % i for i in range(16)], concurrency=8, rpm=1200)
    assert all(r.ok for r in results) and len(results) == 16
    times = starts(server)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    # 50 ms apart when they leave the client; the server's clock sees them with some jitter
    assert gaps[len(gaps) // 2] > 0.04 and max_in_window(times, 0.2) <= 5, gaps
    assert times[-1] - times[0] < 5.0


@both
def test_a_429_pauses_every_worker_and_the_request_is_retried(kind):
    with BatchServer(throttle_first=1, retry_after=0.6, delay=0.01) as server:
        results = run_batch(kind, server.url, ["p%d" % i for i in range(12)], concurrency=4, rpm=1200)
    assert sorted(r.custom_id for r in results) == sorted("line-%d" % i for i in range(1, 13))
    assert all(r.ok for r in results)
    assert all(count == 1 for count in server.answers.values()) and len(server.answers) == 12
    (throttled_at,) = starts(server, 429)
    paused = [t for t in starts(server) if throttled_at + 0.1 < t < throttled_at + 0.55]
    assert paused == []  # without the shared cooldown ~9 requests would start in this gap


@both
def test_rate_limited_server_with_retry_after_completes_everything(kind):
    with BatchServer(limit=5, window=0.5) as server:
        results = run_batch(kind, server.url, ["p%d" % i for i in range(20)], concurrency=4)
    assert len(results) == 20 and all(r.ok for r in results)
    assert sorted(server.answers) == sorted("p%d" % i for i in range(20))
    assert all(count == 1 for count in server.answers.values())
    assert max_in_window(starts(server, 200), 0.5) <= 5


@both
def test_unreachable_server_stops_the_batch_with_a_connection_error(kind):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(streamlite.APIConnectionError):
        run_batch(kind, "http://127.0.0.1:%d/v1" % port, ["p%d" % i for i in range(50)])


@both
def test_stopping_early_stops_the_workers(kind):
    with BatchServer(delay=0.05) as server:
        if kind == "sync":
            results = streamlite.Client(server.url, KEY, max_retries=0, proxy="").batch(["p%d" % i for i in range(40)], concurrency=2)
            first = next(results)
            results.close()
            left = [t for t in threading.enumerate() if t.name == "streamlite-batch"]
        else:
            async def go():
                results = streamlite.AsyncClient(server.url, KEY, max_retries=0, proxy="").abatch(["p%d" % i for i in range(40)], concurrency=2)
                first = await results.__anext__()
                await results.aclose()
                return first, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            first, left = asyncio.run(go())
        assert first.ok and left == []
        assert len(server.log) <= 4


# The command line #####################################################################


def write_input(path, prompts):
    path.write_text("".join(p + "\n" for p in prompts))


def test_cli_output_shape_failures_bad_lines_and_exit_code(tmp_path):
    source = tmp_path / "in.jsonl"
    lines = ["hello %d" % i for i in range(10)] + [
        "",
        '{"custom_id": "batch-shape", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m2", "messages": [{"role": "user", "content": "hi"}]}}',
        "fail-always now",
        "[1]",
    ]
    write_input(source, lines)
    out = tmp_path / "out.jsonl"
    with BatchServer() as server:
        done = cli(str(source), "-o", str(out), "--base-url", server.url, "-m", "m", "--proxy", "")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("streamlite: batch: 11 succeeded, 2 failed")
    rows = {row["custom_id"]: row for row in read_out(out)}
    assert sorted(rows) == sorted(["line-%d" % i for i in range(1, 11)] + ["batch-shape", "line-13", "line-14"])
    ok = rows["line-3"]
    assert set(ok) == {"id", "custom_id", "response", "error"} and ok["error"] is None and ok["id"].startswith("batch_req_")
    request_id = ok["response"]["request_id"]  # the server's x-request-id, never a made-up one
    assert ok["response"]["status_code"] == 200
    assert (request_id or "").startswith("req-"), request_id
    body = ok["response"]["body"]
    assert body["object"] == "chat.completion" and body["model"] == "m" and body["id"] and body["created"] == 1700000000
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "echo: hello 2"}, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert rows["batch-shape"]["response"]["body"]["model"] == "m2"  # the line's model wins over -m
    failed = rows["line-13"]
    assert failed["error"]["code"] == "injected" and "400" in failed["error"]["message"]
    assert failed["response"]["status_code"] == 400
    assert rows["line-14"]["response"] is None and rows["line-14"]["error"]["code"] == "invalid_request"


def test_cli_stdin_to_stdout_paced_by_rpm(tmp_path):
    with BatchServer() as server:
        done = cli("-", "--base-url", server.url, "--proxy", "", "--rpm", "1200", "-j", "8", "--quiet",
                   stdin="".join("q%d\n" % i for i in range(12)))
    assert done.returncode == 0 and done.stderr == ""  # --quiet: no progress, no summary
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(row["custom_id"] for row in rows) == sorted("line-%d" % i for i in range(1, 13))
    times = starts(server)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert gaps[len(gaps) // 2] > 0.04 and max_in_window(times, 0.2) <= 5, gaps


def test_cli_resumes_after_kill_9_without_duplicates(tmp_path):
    source = tmp_path / "in.jsonl"
    write_input(source, ["item %d" % i for i in range(40)])
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = KEY
    with BatchServer(delay=0.05) as server:
        args = [sys.executable, "streamlite.py", "batch", str(source), "-o", str(out), "--base-url", server.url, "--proxy", "", "-j", "4", "--quiet"]
        process = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 10):
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(10)
        first = read_out(out) if out.read_bytes().endswith(b"\n") else None
        assert first is None or 10 <= len(first) < 40
        again = cli(str(source), "-o", str(out), "--base-url", server.url, "--proxy", "", "-j", "4", "--quiet")
        assert again.returncode == 0, again.stderr
    rows = read_out(out)
    assert sorted(row["custom_id"] for row in rows) == sorted("line-%d" % i for i in range(1, 41))
    assert all(row["error"] is None for row in rows)
    assert sum(server.answers.values()) <= 40 + 4  # at most the requests in flight were lost


def test_cli_repairs_a_torn_last_line_and_reruns_failures_once(tmp_path):
    source = tmp_path / "in.jsonl"
    write_input(source, ["a", "b", "c", "d"])
    out = tmp_path / "out.jsonl"
    with BatchServer() as server:
        assert cli(str(source), "-o", str(out), "--base-url", server.url, "--proxy", "", "--quiet").returncode == 0
        rows = read_out(out)
        kept = [row for row in rows if row["custom_id"] in ("line-1", "line-2")]
        failed = dict(rows[0], custom_id="line-3", response=None, error={"code": "x", "message": "earlier failure"})
        torn = json.dumps([row for row in rows if row["custom_id"] == "line-4"][0])[:-15]
        out.write_text("".join(json.dumps(row) + "\n" for row in kept + [failed]) + torn)
        again = cli(str(source), "-o", str(out), "--base-url", server.url, "--proxy", "")
        assert again.returncode == 0, again.stderr
        assert "2 succeeded, 0 failed, 2 already done" in again.stderr
    rows = read_out(out)
    assert sorted(row["custom_id"] for row in rows) == ["line-1", "line-2", "line-3", "line-4"]
    assert all(row["error"] is None for row in rows)
    assert server.answers == {"a": 1, "b": 1, "c": 2, "d": 2}


def test_cli_shards_partition_the_file(tmp_path):
    source = tmp_path / "in.jsonl"
    write_input(source, ["s%d" % i for i in range(30)])
    parts = []
    with BatchServer() as server:
        for k in (1, 2, 3):
            out = tmp_path / ("part-%d.jsonl" % k)
            done = cli(str(source), "-o", str(out), "--shard", "%d/3" % k, "--base-url", server.url, "--proxy", "", "--quiet")
            assert done.returncode == 0, done.stderr
            parts.append([row["custom_id"] for row in read_out(out)])
    assert all(parts)
    ids = [i for part in parts for i in part]
    assert sorted(ids) == sorted("line-%d" % i for i in range(1, 31))
    for k, part in enumerate(parts, 1):
        assert all(zlib.crc32(i.encode()) % 3 == k - 1 for i in part)


@pytest.mark.parametrize("args, lines, message", [
    (["--shard", "4/3"], ["a"], "--shard takes K/N"),
    (["--shard", "0/3"], ["a"], "--shard takes K/N"),
    ([], ['{"custom_id": "x", "messages": []}', "b", '{"custom_id": "x", "messages": []}'], "custom_id 'x' is used twice (lines 1 and 3)"),
])
def test_cli_usage_errors_exit_2_before_any_request(tmp_path, args, lines, message):
    source = tmp_path / "in.jsonl"
    write_input(source, lines)
    with BatchServer() as server:
        done = cli(str(source), "--base-url", server.url, "--proxy", "", *args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    assert server.log == []


def test_cli_unreachable_exits_4(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    source = tmp_path / "in.jsonl"
    write_input(source, ["p%d" % i for i in range(20)])
    done = cli(str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url", "http://127.0.0.1:%d/v1" % port, "--proxy", "", "--max-retries", "0")
    assert done.returncode == 4 and "streamlite: error:" in done.stderr


# Review findings (CLI): what batch owes like the single call -----------------------------

from loopback import FaultServer, close, hold, send  # noqa: E402
from wire import Recording, delta, sse, text_reply  # noqa: E402

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 130, 141, 143}


def _env(**extra):
    """A clean environment (no keys, URLs, model, proxies) with KEY; None drops a name."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "AZURE_", "STREAMLITE_")) and "proxy" not in k.lower()}
    env["OPENAI_API_KEY"] = KEY
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _batch(*args, input=None, env=None, stdout=subprocess.PIPE, user=None):
    """`python streamlite.py batch ARGS`, bytes out; stdin is /dev/null unless `input` is given."""
    return subprocess.run([sys.executable, "streamlite.py", "batch", *args], cwd=str(ROOT), env=env or _env(),
                          input=input, stdin=subprocess.DEVNULL if input is None else None, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=60)


def _no_traceback(result):
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-1500:]
    assert result.returncode in DOCUMENTED, (result.returncode, err[-500:])
    return err


@pytest.mark.parametrize("to_file", [True, False])
def test_cli_output_that_cannot_be_written_is_one_line_exit_2(to_file):
    # `-o` on a full disk, or stdout on one
    with Recording([text_reply("ok")]) as server, open("/dev/full", "wb") as full:
        if to_file:
            result = _batch("-", "-o", "/dev/full", "--base-url", server.url, "--quiet", input=b"hi\n")
        else:
            result = _batch("-", "--base-url", server.url, "--quiet", input=b"hi\n", stdout=full)
    err = _no_traceback(result)
    where = "the output file /dev/full" if to_file else "stdout"
    assert result.returncode == streamlite.EXIT_USAGE
    assert err == "streamlite: error: cannot write %s: No space left on device\n" % where, err


def _as_nobody():
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run the CLI as nobody")
@pytest.mark.parametrize("torn", [False, True])
def test_cli_resume_that_cannot_repair_the_output_is_a_usage_error(torn):
    # The output needs repair: a failure line to drop (a temporary file in a folder the user
    # cannot write) or a torn last line (os.truncate of a file the user cannot write)
    import shutil
    import tempfile

    folder = pathlib.Path(tempfile.mkdtemp(prefix="streamlite-resume-"))  # pytest's tmp_path is root's only
    try:
        _resume_as_nobody(folder, torn)
    finally:
        shutil.rmtree(str(folder), ignore_errors=True)


def _resume_as_nobody(folder, torn):
    folder.chmod(0o755)  # nobody (the user) may read it, not write it
    (folder / "in.txt").write_text("hi\n")
    out = folder / "out.jsonl"
    if torn:
        out.write_text('{"custom_id": "zz", "response": {"status_code": 200}, "error": null}\n{"custom_id": "line-1", "resp')
    else:
        out.write_text('{"custom_id": "line-1", "response": {"status_code": 500}, "error": {"code": "x", "message": "y"}}\n')
        os.chown(str(out), 65534, 65534)  # the file is the user's, its folder is not
    before = out.read_bytes()
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable  # one nobody can run
    with Recording([text_reply("ok")]) as server:
        result = subprocess.run([python, str(ROOT / "streamlite.py"), "batch", str(folder / "in.txt"), "-o", str(out),
                                 "--base-url", server.url, "--quiet"], cwd="/", env=_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=60, preexec_fn=_as_nobody)
        sent = len(server.requests)
    err = _no_traceback(result)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0
    assert err.startswith("streamlite: error: cannot prepare the output file %s for resuming (Permission denied: " % out), err
    assert err.endswith("); it is left as it was\n") and out.read_bytes() == before


@pytest.mark.parametrize("how", ["same path", "another path", "symlink", "stdin"])
def test_cli_output_that_is_the_input_file_is_refused(tmp_path, how):
    requests = tmp_path / "requests.jsonl"
    text = ('{"custom_id": "q1", "messages": [{"role": "user", "content": "a"}]}\n'
            '{"custom_id": "q2", "messages": [{"role": "user", "content": "b"}]}\n')
    requests.write_text(text)
    output = {"same path": requests, "another path": tmp_path / "." / "requests.jsonl", "symlink": tmp_path / "link.jsonl",
              "stdin": requests}[how]
    if how == "symlink":
        output.symlink_to(requests)
    with Recording([text_reply("ok")]) as server:
        if how == "stdin":
            with open(str(requests), "rb") as stdin:
                result = subprocess.run([sys.executable, "streamlite.py", "batch", "-", "-o", str(output), "--base-url",
                                         server.url, "--quiet"], cwd=str(ROOT), env=_env(), stdin=stdin,
                                        capture_output=True, timeout=60)
        else:
            result = _batch(str(requests), "-o", str(output), "--base-url", server.url, "--quiet")
        sent = len(server.requests)
    err = _no_traceback(result)
    assert requests.read_text() == text and result.returncode == streamlite.EXIT_USAGE and sent == 0
    assert err == "streamlite: error: the output file %s is the input file; give -o another file\n" % output


@pytest.mark.parametrize("flag", [[], ["--azure"]])
def test_cli_reads_the_azure_key_for_an_azure_host(flag):
    # The Azure host is reached through a loopback "proxy" that records the absolute-form request
    # (no DNS, no traffic off the machine); --azure does the same for a host that does not look like one
    env = _env(AZURE_OPENAI_API_KEY="az-key-0123456789", OPENAI_API_KEY=None)
    host = "http://gateway.example/openai" if flag else "http://myres.openai.azure.com/openai"
    with Recording([text_reply("ok")]) as server:
        proxy = server.url.rsplit("/v1", 1)[0]
        result = _batch("-", "--base-url", host, "--proxy", proxy, "-m", "dep", "--quiet", *flag, input=b"hi\n", env=env)
        request = server.requests[0]
    assert result.returncode == 0, result.stderr
    assert request.headers.get("api-key") == "az-key-0123456789" and "/deployments/dep/" in request.target


def test_cli_without_any_key_warns_like_the_single_call():
    with Recording([text_reply("ok")]) as server:
        result = _batch("-", "--base-url", server.url, "--quiet", input=b"hi\n", env=_env(OPENAI_API_KEY=None))
    assert result.returncode == 0
    assert result.stderr.decode() == ("streamlite: warning: no API key: OPENAI_API_KEY is not set; sending none "
                                      "(fine for a local server)\n")


def test_cli_request_id_is_the_servers():
    # the server's x-request-id (Completion.request_id), never a made-up "req_<hex>"
    reply = text_reply("ok").replace(b"Connection: close\r\n", b"Connection: close\r\nx-request-id: req_server_42\r\n")
    with FaultServer([send(reply), close()], max_connections=2) as server:
        result = _batch("-", "--base-url", server.url, "--quiet", input=b"hi\n")
    line = json.loads(result.stdout)
    assert result.returncode == 0
    assert line["response"]["request_id"] == "req_server_42"


@pytest.mark.parametrize("flags, message", [
    (["-t", "nan"], "--temperature must be a finite number, got nan"),
    (["--max-tokens", "0"], "--max-tokens must be a whole number of 1 or more, got 0"),
    (["--read-timeout", "0"], "--read-timeout must be a positive number of seconds, got 0"),
    (["--max-retries", "-1"], "--max-retries must be a whole number from 0 to 100, got -1"),
])
def test_cli_flags_are_range_checked_like_the_single_call(flags, message):
    with Recording([text_reply("ok")]) as server:
        result = _batch("-", "--base-url", server.url, "--quiet", *flags, input=b"hi\nho\n")
        sent = len(server.requests)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0
    assert result.stderr.decode() == "streamlite: error: %s\n" % message


def test_cli_environment_that_is_not_utf8_is_a_usage_error():
    with Recording([text_reply("ok")]) as server:
        result = _batch("-", "--base-url", server.url, "--quiet", input=b"hi\n", env=_env(STREAMLITE_MODEL="m\udcff"))
        sent = len(server.requests)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0
    assert result.stderr.decode() == "streamlite: error: the environment variable STREAMLITE_MODEL is not valid UTF-8; set it in UTF-8\n"


def test_cli_sigterm_exits_143_with_its_summary(tmp_path):
    # like Ctrl-C's 130: the workers stop, the summary line, the output holds whole lines only
    out = tmp_path / "out.jsonl"
    with FaultServer([send(sse(delta({"content": "partial"}), done=False)), hold(), close()], max_connections=4,
                     lifetime=60) as server:
        proc = subprocess.Popen([sys.executable, "streamlite.py", "batch", "-", "-o", str(out), "--base-url", server.url],
                                cwd=str(ROOT), env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(b"hi\n")
            proc.stdin.close()
            proc.stdin = None  # communicate() must not flush it again
            server.wait_connections(1, timeout=20)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(60)
            server.release()
    assert proc.returncode == streamlite.EXIT_TERMINATED, err
    assert b"Traceback" not in err and err.endswith(b"\n") and b"streamlite: batch: 0 succeeded, 0 failed, 1 not run in " in err
    assert out.read_bytes() == b""


def _file_size_limit():
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a POSIX file size limit")
def test_cli_resume_that_fills_the_disk_leaves_no_temporary_file(tmp_path):
    # Repairing the output for a resume writes a copy, then renames it: when the copy cannot be
    # written whole (a full disk; here a file size limit), it is removed and the output kept
    (tmp_path / "in.txt").write_text("hi\n")
    out = tmp_path / "out.jsonl"
    kept = '{"custom_id": "zz", "response": {"status_code": 200, "body": "%s"}, "error": null}\n' % ("x" * 8000)
    failed = '{"custom_id": "line-1", "response": {"status_code": 500}, "error": {"code": "x", "message": "y"}}\n'
    out.write_text(kept + failed)
    before = out.read_bytes()
    with Recording([text_reply("ok")]) as server:
        result = subprocess.run([sys.executable, str(ROOT / "streamlite.py"), "batch", str(tmp_path / "in.txt"), "-o",
                                 str(out), "--base-url", server.url, "--quiet"], cwd=str(ROOT), env=_env(),
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=60, preexec_fn=_file_size_limit)
        sent = len(server.requests)
    err = _no_traceback(result)
    assert result.returncode == streamlite.EXIT_USAGE and sent == 0, err
    assert "cannot prepare the output file" in err
    assert out.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]
