"""streamlite batch against the ideal pacing, on a loopback server that enforces a rate limit.

    python3 tests/benchmarks/bench_batch.py            # 1,000 requests per scenario, about a minute
    python3 tests/benchmarks/bench_batch.py --quick    # 200 requests per scenario
    python3 tests/benchmarks/bench_batch.py --json out.json

The server (tests/batch_server.py, in its own process so it does not share the GIL with the
client) admits `limit` requests per sliding one-second window and answers every other request
with 429 + Retry-After (the time until a slot frees); an admitted request is answered after a
fixed delay. Scenarios:

  rpm-bound          --rpm at the server's limit; ideal = requests / rpm
  concurrency-bound  a limit the client cannot reach; ideal = requests x delay / concurrency
  no-rpm             no --rpm, the limit binds: only 429 + Retry-After and the shared cooldown
                     pace it; ideal = (requests - limit) / limit + delay (the window's first
                     `limit` requests go through at once)
  cli                `streamlite batch` itself (rpm-bound), output to a file

Reported per scenario: wall time, the ideal and their ratio (target: at most 1.3), 429s
received, client CPU per request, and a check that every request was answered exactly once and
nothing was lost or duplicated (the server's answer count and the results). Figures, never a
timed assertion.
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import streamlite  # noqa: E402

SERVER = """
import json, sys, time
sys.path.insert(0, %r)
from batch_server import BatchServer
server = BatchServer(limit=%r, window=1.0, delay=%r, lifetime=600)
with server:
    print(server.url, flush=True)
    for line in sys.stdin:  # "stats": report; EOF: stop
        with server.lock:
            answers = dict(server.answers)
            throttled = sum(1 for entry in server.log if entry[2] == 429)
        print(json.dumps({"answers": answers, "throttled": throttled}), flush=True)
"""


class Server:
    def __init__(self, limit, delay):
        self.process = subprocess.Popen([sys.executable, "-c", SERVER % (os.path.join(ROOT, "tests"), limit, delay)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()

    def stats(self):
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait(10)


def check(prompts, ids, stats):
    """Every request answered exactly once, and one result per request."""
    answers = stats["answers"]
    lost = [p for p in prompts if answers.get(p, 0) == 0]
    twice = [p for p in prompts if answers.get(p, 0) > 1]
    return {"results": len(ids), "unique_results": len(set(ids)), "lost": len(lost), "answered_twice": len(twice),
            "ok": not lost and not twice and len(ids) == len(set(ids)) == len(prompts)}


def run_python(kind, n, limit, delay, concurrency, rpm):
    server = Server(limit, delay)
    prompts = ["request %d" % i for i in range(n)]
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        if kind == "sync":
            client = streamlite.Client(server.url, "sk-bench-batch", max_retries=0, proxy="")
            results = list(client.batch(prompts, concurrency=concurrency, rpm=rpm, model="m"))
        else:
            async def go():
                aclient = streamlite.AsyncClient(server.url, "sk-bench-batch", max_retries=0, proxy="")
                return [r async for r in aclient.abatch(prompts, concurrency=concurrency, rpm=rpm, model="m")]
            results = asyncio.run(go())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = server.stats()
    finally:
        server.close()
    failed = sum(1 for r in results if not r.ok)
    return wall, cpu, stats, check(prompts, [r.custom_id for r in results], stats), failed


def run_cli(n, limit, delay, concurrency, rpm):
    server = Server(limit, delay)
    prompts = ["request %d" % i for i in range(n)]
    with tempfile.TemporaryDirectory() as folder:
        source, out = os.path.join(folder, "in.txt"), os.path.join(folder, "out.jsonl")
        with open(source, "w") as file:
            file.write("".join(p + "\n" for p in prompts))
        env = dict(os.environ, OPENAI_API_KEY="sk-bench-batch")
        try:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.perf_counter()
            args = [sys.executable, os.path.join(ROOT, "streamlite.py"), "batch", source, "-o", out, "--base-url", server.url,
                    "--proxy", "", "-m", "m", "-j", str(concurrency), "--quiet"] + (["--rpm", str(rpm)] if rpm else [])
            code = subprocess.run(args, env=env).returncode
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            stats = server.stats()
        finally:
            server.close()
        rows = [json.loads(line) for line in open(out)]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    failed = sum(1 for row in rows if row["error"] is not None) + (code != 0)
    return wall, cpu, stats, check(prompts, [row["custom_id"] for row in rows], stats), failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 requests per scenario")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--only", help="comma-separated scenario names")
    options = parser.parse_args()
    n = 200 if options.quick else 1000
    limit = 100  # per second: 6,000 rpm
    scenarios = [
        # name, runner, kind, server limit, delay, concurrency, rpm, ideal
        ("rpm-bound sync", "python", "sync", limit, 0.05, 16, limit * 60, n / limit),
        ("rpm-bound async", "python", "async", limit, 0.05, 16, limit * 60, n / limit),
        ("concurrency-bound sync", "python", "sync", 1000, 0.05, 8, None, n * 0.05 / 8),
        ("concurrency-bound async", "python", "async", 1000, 0.05, 8, None, n * 0.05 / 8),
        # a sliding window lets the first `limit` through at once: ideal = (requests - limit) / limit + delay
        ("no-rpm sync", "python", "sync", limit, 0.02, 16, None, (n - limit) / limit + 0.02),
        ("no-rpm async", "python", "async", limit, 0.02, 16, None, (n - limit) / limit + 0.02),
        ("cli rpm-bound", "cli", None, limit, 0.05, 16, limit * 60, n / limit),
    ]
    if options.only:
        wanted = options.only.split(",")
        scenarios = [s for s in scenarios if any(w in s[0] for w in wanted)]
    print("streamlite %s, Python %s, %d requests per scenario, server limit in requests per second"
          % (streamlite.__version__, sys.version.split()[0], n))
    print("%-24s %6s %6s %4s %5s %8s %7s %7s %6s %s" % ("scenario", "limit", "delay", "-j", "rpm", "wall s", "ideal s",
                                                       "ratio", "429s", "CPU/request, check"))
    figures = []
    for name, runner, kind, server_limit, delay, concurrency, rpm, ideal in scenarios:
        if runner == "cli":
            wall, cpu, stats, verdict, failed = run_cli(n, server_limit, delay, concurrency, rpm)
        else:
            wall, cpu, stats, verdict, failed = run_python(kind, n, server_limit, delay, concurrency, rpm)
        figure = dict(scenario=name, limit=server_limit, delay=delay, concurrency=concurrency, rpm=rpm, wall=wall,
                      ideal=ideal, ratio=wall / ideal, throttled=stats["throttled"], cpu_per_request=cpu / n,
                      failed=failed, **verdict)
        figures.append(figure)
        print("%-24s %6d %6.3f %4d %5s %8.2f %7.2f %7.2f %6d %.2f ms, %s" % (
            name, server_limit, delay, concurrency, rpm or "-", wall, ideal, wall / ideal, stats["throttled"],
            cpu / n * 1000, "exactly once, nothing lost" if verdict["ok"] and not failed else "PROBLEM %r failed=%d" % (verdict, failed)))
        sys.stdout.flush()
    if options.json:
        with open(options.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
