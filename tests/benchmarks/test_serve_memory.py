"""benchmarks.serve_memory reports what a server's plan cache holds, on a saved plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cosched
from benchmarks import serve_memory
from cosched import zoo


def test_it_reports_the_sets_memory_and_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["mobilenet_v2", "dlrm"]
    compiled = cosched.compile([zoo.export(n, size="tiny") for n in names], names=names, cost_model="roofline",
                               trials=0, in_situ=False, serve=True, provider="ort")
    compiled.save(tmp_path / "plan")
    assert serve_memory.main([str(tmp_path / "plan"), "--lanes", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sets"] == 3 and result["sharing"] and result["lanes"] == 1
    assert result["sessions"] >= 2 and result["rss_built_mib"] > 0 and result["rss_loaded_mib"] > 0
