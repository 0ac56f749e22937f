"""The GPU run kit's CPU dry run: every step of scripts/gpu/check.sh passes at toy sizes, and
its output fits what the device tool brings back (at most 8 files, each under 16 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["export", "tests", "profile", "compile", "bench-b1", "bench-b2", "trace", "two-rank"]


@pytest.mark.slow
def test_cpu_quick_dry_run_passes_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu/check.sh"), str(out), "--device", "cpu", "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else done.stdout[-3000:]
    assert done.returncode == 0, summary
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert 0 < len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
    assert {p.name for p in files} >= {"summary.md", "results.json", "profile.tar.gz", "trace.json.gz",
                                       "logs.tar.gz", "bench-b1.json", "bench-b2.json"}
    results = json.loads((out / "results.json").read_text())
    assert [s["step"] for s in results["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in results["steps"]), summary
    for name in ("bench-b1", "bench-b2"):
        bench = results["benchmarks"][name]
        assert bench["outputs_agree"] and {"plan", "sequential", "stream-per-tenant"} <= set(bench["runners"])
    assert results["benchmarks"]["bench-b2"]["batch"] == 2
    assert "| tiny b1 | plan |" in summary and "## trace: ok" in summary
    two = results["two_rank"]  # two CPU ranks on gloo: the path a two-GPU machine runs on NCCL
    assert two["ranks"] == 2 and two["kind"] == "cpu" and two["agrees"] and two["round_ms"] > 0, summary
    assert "## Two ranks" in summary and "agrees within 0.0001" in summary
