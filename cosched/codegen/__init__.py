"""Lowering schedules to plans, the plan format, and the Python emitter; plans for some of a
plan's tenants composed from its schedule (:mod:`.subset`).

Layering: imports :mod:`cosched.search` (schedules and their timelines) and :mod:`cosched.ir`;
never the runtime, which stands on it (it runs the plans and the emitted modules)."""

from __future__ import annotations

from cosched.codegen.emit import emit_python, load_module
from cosched.codegen.lower import lower, plan_sync
from cosched.codegen.plan import (
    ImportOptions,
    Plan,
    check_plan_dir,
    load_device_weights,
    load_plan,
    plan_schema,
    save_plan,
)
from cosched.codegen.rebuild import graph_for_plan
from cosched.codegen.verify import verify_plan

__all__ = [
    "ImportOptions",
    "Plan",
    "check_plan_dir",
    "emit_python",
    "graph_for_plan",
    "load_device_weights",
    "load_module",
    "load_plan",
    "lower",
    "plan_schema",
    "plan_sync",
    "save_plan",
    "verify_plan",
]
