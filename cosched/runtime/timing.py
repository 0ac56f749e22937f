"""Timing runners in this process: interleaved side by side, or one alone.

:func:`time_interleaved` runs several runners in one process, in rotating order, on the same
inputs. Several executors in one process disturb each other (idle pools, OpenMP teams,
allocator state), so a speed claim is measured with each runner alone in a process of its
own (:mod:`cosched.isolated`); the interleaved protocol serves the search's finalist
timer and ``cosched run --compare`` (BENCHMARKS.md compares the two protocols).

Interleaving (A, B, C, B, C, A, ...) rather than batching (A x n, then B x n) exposes every
runner to the same machine state (clock boosts, other load), so their ratio is fair even on
a noisy machine. Times are wall-clock milliseconds; the caller synchronises devices inside
its runner.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cosched.errors import ConfigError

__all__ = ["Timing", "time_interleaved", "time_runs"]


@dataclass(frozen=True)
class Timing:
    """Samples of one runner, in ms."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0 with fewer than 4 samples)."""
        if len(self.samples) < 4:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median if self.median else 0.0


def time_interleaved(
    runners: Mapping[str, Callable[[], object]], iters: int = 20, warmup: int = 3
) -> dict[str, Timing]:
    """Run every runner ``warmup`` times, then ``iters`` rounds of one call each, in turn;
    each round starts one runner later than the last."""
    if iters < 1 or warmup < 0:
        raise ConfigError(f"iters must be >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for round_ in range(iters):
        # rotate who goes first: the runner after another pays for what that one left behind
        # (warm thread pools spinning, evicted caches), so no runner always follows the same one
        shift = round_ % len(order)
        for name, run in order[shift:] + order[:shift]:
            start = time.perf_counter_ns()
            run()
            samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def time_runs(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples
