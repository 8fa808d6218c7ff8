"""The benchmark (tests/benchmarks/bench.py, run on purpose) still works: a tiny run of every
figure, each client's content checked against the server's by the harness itself."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_produces_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tests/benchmarks/bench.py", "--smoke", "--clients", "streamlite,streamlite+acc",
                             "--json", str(out)], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["imports_ms"]) >= {"baseline", "floor", "streamlite"}
    for framing in ("chunked", "close"):
        assert set(report["burst"][framing]) == {"floor", "streamlite", "streamlite+acc"}
        assert all(row["cpu_s"] > 0 and row["events_per_s"] > 0 for row in report["burst"][framing].values())
        assert all(row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] for row in report["latency"][framing].values())
    assert report["rss"]["streamlite"]["peak_mb"] > 0
    assert all(row["intact"] == 8 and row["error_count"] == 0 for row in report["threads"].values())
    assert "burst of 2000 events, chunked body" in result.stdout
