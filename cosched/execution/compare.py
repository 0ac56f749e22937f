"""Comparing two runs' outputs: the one comparison that tests, ``cosched run --compare``, the
demo and the benchmarks use.

Outputs are keyed by tenant, then output name. Values agree where they are equal (the same
infinity too); a difference that is not finite anywhere (NaN on either side, infinities that
differ) is a mismatch, never a difference of zero: outputs holding NaN never agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Comparison", "compare_outputs", "max_abs_diff", "nonfinite_differences"]

Outputs = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Comparison:
    """``got`` against ``want``: the largest absolute difference, the largest relative error
    (per output, the difference over the largest finite ``|want|``), and what does not
    compare at all: outputs ``got`` lacks or has in another shape (``missing``) and outputs
    whose difference is not finite somewhere (``nonfinite``). Either makes both maxima inf."""

    max_abs_diff: float
    max_rel_err: float
    missing: tuple[str, ...] = ()
    nonfinite: tuple[str, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        return self.missing + self.nonfinite

    def agrees(self, rel_tol: float) -> bool:
        """No problem and every relative error within ``rel_tol``."""
        return not self.problems and self.max_rel_err <= rel_tol


def compare_outputs(got: Outputs, want: Outputs, names: tuple[str, str] = ("plan", "reference")) -> Comparison:
    """Every output of ``want`` against the same output of ``got`` (``names`` of the two
    sides, for the messages)."""
    worst_abs = worst_rel = 0.0
    missing: list[str] = []
    nonfinite: list[str] = []
    for tenant, outputs in want.items():
        for name, expected in outputs.items():
            have = got.get(tenant, {}).get(name)
            if have is None or np.shape(have) != np.shape(expected):
                missing.append(f"tenant {tenant!r}: output {name!r}: {names[1]} has shape {np.shape(expected)}, "
                               f"{names[0]} has {'nothing' if have is None else np.shape(have)}")
                worst_abs = worst_rel = math.inf
                continue
            x, y = np.asarray(have).astype(np.float64), np.asarray(expected).astype(np.float64)
            diff = _difference(x, y)
            bad = int(np.isinf(diff).sum())
            if bad:
                nonfinite.append(
                    f"tenant {tenant!r}: output {name!r} differs by a non-finite amount in {bad} of "
                    f"{diff.size} elements ({names[0]}: {_count_nonfinite(x)}; {names[1]}: {_count_nonfinite(y)})"
                )
            if not diff.size:
                continue
            largest = float(diff.max())
            scale = float(np.max(np.abs(y[np.isfinite(y)]), initial=0.0))
            worst_abs = max(worst_abs, largest)
            worst_rel = max(worst_rel, largest / scale if scale else largest)
    return Comparison(worst_abs, worst_rel, tuple(missing), tuple(nonfinite))


def max_abs_diff(a: Outputs, b: Outputs) -> float:
    """Largest absolute elementwise difference over every output of every tenant (``inf``
    where a difference is not finite: :func:`nonfinite_differences` says where)."""
    return compare_outputs(a, b).max_abs_diff


def nonfinite_differences(a: Outputs, b: Outputs, names: tuple[str, str] = ("plan", "reference")) -> list[str]:
    """One message per output whose difference is not finite somewhere, naming the tenant,
    the output and how many elements are NaN or inf on each side (``names`` of ``a``, ``b``)."""
    return list(compare_outputs(a, b, names).nonfinite)


def _difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y|, 0 where both are equal (the same infinity too), inf where it is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(x - y)
    diff[x == y] = 0.0
    diff[~np.isfinite(diff)] = math.inf
    return diff


def _count_nonfinite(x: np.ndarray) -> str:
    nan = int(np.isnan(x).sum())
    inf = int(np.isinf(x).sum())
    return f"{nan} NaN, {inf} inf"

