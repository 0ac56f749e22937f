"""`cosched show` and `cosched demo`, through cosched.cli.main, on tiny zoo models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosched import zoo
from cosched.cli import main
from cosched.cli.demo import DEMO_TENANTS, ORT_RUNNERS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TENANTS = ("squeezenet1_1", "dlrm")


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("show")
    models = [str(zoo.export(name, folder / f"{name}.onnx")) for name in TENANTS]
    argv = ["-q", "compile", *models, "-o", str(folder / "plan"), "--cost-model", "roofline", "--trials", "4"]
    assert main(argv) == 0
    return folder / "plan"


def test_show_prints_a_summary_and_a_text_timeline(plan_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(plan_dir)]) == 0
    out = capsys.readouterr().out
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert f"{len(plan['tasks'])} on {len(plan['streams'])} streams, {len(plan['events'])} events" in out
    for word in (*TENANTS, "sequential", "greedy", "stream_per_tenant", "cost model roofline", "A=squeezenet1_1"):
        assert word in out, out
    lanes = [line for line in out.splitlines() if line.startswith("  stream ") and "|" in line]
    assert len(lanes) == len(plan["streams"])


def test_show_json_counts_tasks_per_stream(plan_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(plan_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert summary["tasks"] == len(plan["tasks"]) == sum(s["tasks"] for s in summary["per_stream"].values())
    assert sum(summary["tenants"].values()) == len(plan["tasks"]) and set(summary["tenants"]) == set(TENANTS)
    assert {"plan", "sequential"} <= set(summary["predicted_ms"])


def test_show_png_is_a_valid_png(plan_dir: Path, tmp_path: Path) -> None:
    assert main(["-q", "show", str(plan_dir), "--png", str(tmp_path / "g.png")]) == 0
    data = (tmp_path / "g.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_show_missing_plan_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cost-model", "roofline", "--trials", "3", "--iters", "1",
                 "--repeats", "1", "--size", "tiny"]) == 0
    text = capsys.readouterr().out
    for word in ("predicted", "measured", "plan vs sequential", "onnxruntime's best", "fresh process",
                 *DEMO_TENANTS):
        assert word in text, text
    result = json.loads((out / "demo.json").read_text())
    assert max(result["max_abs_diff"].values()) <= 1e-4 and result["tenants"] == list(DEMO_TENANTS)
    assert set(result["measured_ms"]) == {"plan", "sequential", *ORT_RUNNERS}
    assert result["speedup_vs_sequential"] == pytest.approx(
        result["measured_ms"]["sequential"] / result["measured_ms"]["plan"])
    for name in ("plan", "sequential"):  # a measured timeline of each, every tenant in it
        rows = json.loads((out / "measure" / f"timeline-{name}.json").read_text())
        assert {r["tenant"] for r in rows} == set(DEMO_TENANTS)
        assert all(0 <= r["start_ms"] <= r["end_ms"] for r in rows)
    assert (out / "schedule.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "plan" / "plan.json").is_file()
    assert main(["-q", "run", str(out / "plan"), "--iters", "0", "--compare", "sequential"]) == 0
