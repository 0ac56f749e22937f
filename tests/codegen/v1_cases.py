"""One-device plans over fixed tiny graphs, written as the code of schema version 1 wrote them.

``tests/codegen/data/v1/<case>/`` holds the plan.json and plan_module.py that the code before
multi-device plans (schema version 2) wrote for each case; test_v1_golden.py checks that
today's code writes them byte for byte. Regenerate them only for a deliberate change of the
one-device format, with::

    python tests/codegen/v1_cases.py tests/codegen/data/v1
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from plan_graphs import per_tenant_streams, random_dag, random_streams, tenant_mix

from cosched.codegen import emit_python, lower, save_plan
from cosched.codegen.plan import Plan

CPU = {"schema_version": 1, "kind": "cpu", "name": "golden-cpu", "cores": 2, "peak_flops": 1.0e11}
CUDA = {"kind": "cuda", "name": "golden-gpu", "index": 1, "memory_bytes": 16 << 30}


def _mix_per_tenant(root: Path) -> Plan:
    g = tenant_mix(root)
    return lower(g, per_tenant_streams(g), device=CPU, latency_critical=("b",),
                 timeline={t.id: (t.id * 0.25, t.id * 0.25 + 0.2) for t in g.tasks},
                 predicted_ms={"plan": 3.5, "sequential": 9.0}, provider="ort")


def _mix_random(root: Path) -> Plan:
    g = tenant_mix(root, ("p", "q"))
    return lower(g, random_streams(g, 3, seed=4), device=CUDA)


def _dag(root: Path) -> Plan:
    g = random_dag(root, 24, seed=7)
    return lower(g, random_streams(g, 4, seed=1), device=CPU,
                 timeline={t.id: (float(t.id), t.id + 0.75) for t in g.tasks})


CASES: dict[str, Callable[[Path], Plan]] = {
    "mix_per_tenant": _mix_per_tenant, "mix_random": _mix_random, "dag": _dag,
}


def write_case(name: str, root: Path) -> Path:
    """Lower case ``name`` over graphs built under ``root`` and save it as ``root/plan``."""
    plan = CASES[name](root)
    out = root / "plan"
    save_plan(plan, out, module_source=emit_python(plan))
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out = write_case(case, Path(tmp))
            (target / case).mkdir(parents=True, exist_ok=True)
            for file in ("plan.json", "plan_module.py"):
                shutil.copyfile(out / file, target / case / file)
