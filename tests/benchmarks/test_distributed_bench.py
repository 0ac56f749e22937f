"""benchmarks.distributed runs end to end at toy size (tiny models, one repeat; results, not timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import distributed


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A communication model of a link never measured (no profiling in the test)."""
    from cosched.costmodel.comm import CommModel

    path = tmp_path_factory.mktemp("comm") / "comm.json"
    CommModel.from_link("gloo", "test-link", latency_s=50e-6, bandwidth=1e9).save(path)
    return path


@pytest.mark.slow
def test_ranks_one_process_and_sequential_each_alone_with_the_rank_report(
        link: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    code = distributed.main(["--size", "tiny", "--repeats", "1", "--iters", "2", "--warmup", "1", "--trials", "2",
                             "--cost-model", "roofline", "--comm-model", str(link), "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"command", "machine", "date"} <= set(result) and set(result["cases"]) == {"mix", "split"}
    for name, case in result["cases"].items():
        assert set(case["runners"]) == {"ranks", "one-process", "sequential"}, name
        for runner, summary in case["runners"].items():
            assert summary["median_ms"] > 0 and len(case["times_ms"][runner]) == 1, (name, runner)
            assert case["outputs"][runner]["agrees"], (name, runner)
        assert case["ratios"]["ranks_over_one_process"] > 0 and case["ratios"]["ranks_over_sequential"] > 0
        assert 0 <= case["comm_share"] <= 1
        assert case["fidelity"]["ranks"]["predicted_ms"] > 0
        assert [r["rank"] for r in case["ranks"]] == [0, 1]
        for rank in case["ranks"]:
            assert rank["needed_bytes"] > 0 and rank["comm_ms"] >= 0
            assert 0 < rank["rss_base_bytes"] <= rank["rss_held_bytes"] <= rank["rss_peak_bytes"]
    mix, split = result["cases"]["mix"], result["cases"]["split"]
    assert mix["splits"] == [] and all(len(devices) == 1 for devices in mix["placement"].values())
    assert {d for devices in mix["placement"].values() for d in devices} == {0, 1}
    assert [(s["kind"], s["tenant"], s["world"]) for s in split["splits"]] == [("tensor", "bert", 2)]
    assert split["placement"] == {"bert": [0, 1]} and all(r["comm_tasks"] > 0 for r in split["ranks"])
    printed = capsys.readouterr().out
    assert "| mix: " in printed and "| split: " in printed and "| split | 1 (cpu:1) |" in printed


def test_unknown_cases_are_refused() -> None:
    with pytest.raises(SystemExit):
        distributed.main(["--cases", "mix,nonsense"])
