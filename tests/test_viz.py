"""Gantt charts: PNGs from inline timeline rows, and errors that name the bad row."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cosched.cli.show import text_gantt
from cosched.errors import ConfigError
from cosched.viz import gantt, gantt_compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ROWS = [
    {"task": 0, "tenant": "a", "stream": 0, "start_ms": 0.0, "end_ms": 2.0},
    {"task": 1, "tenant": "b", "stream": 1, "start_ms": 0.0, "end_ms": 1.0},
    {"task": 2, "tenant": "a", "stream": 0, "start_ms": 2.0, "end_ms": 4.0},
    {"task": 3, "tenant": "b", "stream": 1, "start_ms": 1.0, "end_ms": 4.0},
]


def test_gantt_writes_a_png(tmp_path: Path) -> None:
    path = gantt(ROWS, tmp_path / "sub" / "g.png", title="two tenants")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_compare_draws_one_panel_per_timeline(tmp_path: Path) -> None:
    sequential = [dict(r, stream=0, start_ms=float(i), end_ms=float(i + 1)) for i, r in enumerate(ROWS)]
    one = gantt(ROWS, tmp_path / "one.png")
    two = gantt_compare({"sequential": sequential, "plan": ROWS}, tmp_path / "two.png")
    assert two.read_bytes().startswith(PNG_MAGIC)
    assert _png_height(two) > _png_height(one)


def _png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")


def test_rows_without_times_are_rejected_naming_the_task(tmp_path: Path) -> None:
    bad = [*ROWS[:3], dict(ROWS[3], start_ms=math.nan)]
    with pytest.raises(ConfigError, match="task 3"):
        gantt(bad, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="no timeline rows"):
        gantt([], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="lacks"):
        gantt([{"task": 0, "tenant": "a"}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_text_gantt_marks_each_stream_by_tenant() -> None:
    text = text_gantt(ROWS, ("a", "b"), width=8)
    lanes = [line for line in text.splitlines() if line.strip().startswith("stream")]
    assert lanes == ["  stream 0  |AAAAAAAA|", "  stream 1  |BBBBBBBB|"]
    gap = text_gantt([ROWS[0], dict(ROWS[2], start_ms=3.0)], ("a",), width=4)
    assert gap.splitlines()[1] == "  stream 0  |AA.A|"
