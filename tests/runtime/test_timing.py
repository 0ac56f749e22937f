"""Interleaved timing: every runner sampled once a round, the first place rotating."""

from __future__ import annotations

import pytest

from cosched.errors import ConfigError
from cosched.runtime.timing import Timing, time_interleaved


def test_rounds_interleave_and_rotate_who_goes_first() -> None:
    calls: list[str] = []
    runners = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    timings = time_interleaved(runners, iters=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, in order
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(t.samples) for name, t in timings.items()} == {"a": 3, "b": 3, "c": 3}


def test_timing_statistics() -> None:
    t = Timing((1.0, 2.0, 3.0, 4.0, 100.0))
    assert t.median == 3.0
    assert t.spread > 0
    assert Timing((2.0,)).spread == 0.0


def test_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="iters"):
        time_interleaved({"a": lambda: None}, iters=0)
