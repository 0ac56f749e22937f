"""benchmarks.traced: one row per model, three positive ratios, printed as a markdown table."""

from __future__ import annotations

import pytest

from benchmarks.traced import compare, main


def test_compare_gives_the_three_ratios() -> None:
    row = compare("dlrm", "tiny", iters=2)
    assert sorted(row) == ["alone", "pair, op by op", "pair, traced"]
    assert all(value > 0 for value in row.values())


def test_main_prints_a_row_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "dlrm", "squeezenet1_1", "--iters", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model (tiny)")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["dlrm", "squeezenet1_1"]
