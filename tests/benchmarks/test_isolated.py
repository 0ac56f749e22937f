"""The process-isolated benchmark protocol runs end to end (tiny mix; results, not timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import isolated


@pytest.mark.slow
def test_each_runner_in_its_own_process_with_outputs_checked(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    code = isolated.main(["--mix", "tiny", "--repeats", "2", "--iters", "2", "--warmup", "1", "--trials", "3",
                          "--cost-model", "roofline", "--runners", "plan,sequential,ort-sequential-1t",
                          "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["runners"]) == {"plan", "sequential", "ort-sequential-1t"}
    for name, runner in result["runners"].items():
        assert len(runner["repeat_medians_ms"]) == 2 and runner["median_ms"] > 0, name
        assert result["outputs"][name]["agrees"], name
        assert [len(r) for r in result["times_ms"][name]] == [2, 2]
    assert "| plan | " in isolated.format_result(result)


def test_unknown_runners_are_refused() -> None:
    with pytest.raises(SystemExit):
        isolated.main(["--runners", "plan,sequential,nonsense"])
