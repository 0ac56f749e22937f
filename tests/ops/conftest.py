"""Tallies of the ONNX node conformance run (tests/ops/test_conformance.py), printed at the end."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import pytest

_CONFORMANCE = "test_conformance.py::TestOnnxNodeConformance::"
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _CONFORMANCE not in report.nodeid:
        return
    case = report.nodeid.split("::")[-1].removesuffix("_cpu")
    if report.when == "call" or report.outcome != "passed":
        previous = _outcomes.get(case)
        if previous in (None, "passed"):
            _outcomes[case] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    module = sys.modules.get("tests.ops.test_conformance") or next(
        (m for name, m in sys.modules.items() if name.endswith("test_conformance")), None
    )
    if not _outcomes or module is None:
        return
    reasons: dict[str, str | None] = module.CASE_REASONS
    case_ops: dict[str, tuple[str, ...]] = module.CASE_OPS
    ran = Counter(_outcomes.values())
    excluded = Counter(r.split(":")[0] for r in reasons.values() if r)
    write = terminalreporter.write_line
    write("")
    write(
        f"ONNX node conformance: {len(reasons)} node cases, {len(module.INCLUDED)} claimed; "
        f"ran {len(_outcomes)}: passed {ran['passed']}, failed {ran['failed']}, "
        f"skipped {ran['skipped']}"
    )
    write("  not claimed: " + ", ".join(f"{k} {v}" for k, v in sorted(excluded.items())))
    per_op: dict[str, Counter[str]] = {}
    for case, outcome in _outcomes.items():
        for op in case_ops.get(case, ()):
            per_op.setdefault(op, Counter())[outcome] += 1
    cells = [f"{op} {c['passed']}/{sum(c.values())}" for op, c in sorted(per_op.items())]
    for i in range(0, len(cells), 8):
        write("  " + "  ".join(cells[i : i + 8]))
