"""Re-importing a plan's graph from its models and applying the stored task partition.

A plan keeps no weights and no IR: the runtime imports the referenced ONNX files again with
the recorded import options, then re-applies the plan's task partition (task id -> op
names) instead of re-running fusion, so the tasks are exactly those the plan was made for.
"""

from __future__ import annotations

from cosched.codegen.plan import Plan
from cosched.errors import PlanError
from cosched.ir.graph import Graph, Task

__all__ = ["graph_for_plan"]


def graph_for_plan(plan: Plan) -> Graph:
    """The plan's graph, re-imported from its model files, with the plan's tasks."""
    from cosched.ir import load_models

    options = plan.import_options
    kwargs = {}
    if options.batch is not None:
        kwargs["batch"] = options.batch
    if options.input_shapes is not None:
        kwargs["input_shapes"] = options.input_shapes
    paths = [str(plan.model_path(m)) for m in plan.models]
    graph = load_models(paths, names=list(plan.tenants), **kwargs)
    if graph.tenant_names != plan.tenants:
        raise PlanError(
            f"re-importing the plan's models gave tenants {list(graph.tenant_names)}, "
            f"the plan expects {list(plan.tenants)}"
        )
    return apply_tasks(graph, plan)


def apply_tasks(graph: Graph, plan: Plan) -> Graph:
    """``graph`` with the plan's task partition; :class:`PlanError` if an op is missing."""
    known = {op.name for op in graph.ops}
    planned = {name for t in plan.tasks for name in t.ops}
    missing = sorted(planned - known)
    if missing:
        raise PlanError(
            f"the re-imported graph lacks ops the plan schedules: {missing[:5]}; the models or "
            "the importer changed since the plan was compiled; recompile the plan"
        )
    unplanned = sorted(known - planned)
    if unplanned:
        raise PlanError(f"the re-imported graph has ops no plan task runs: {unplanned[:5]}; recompile the plan")
    tasks = tuple(Task(t.id, t.tenant, t.ops, t.name) for t in plan.tasks)
    return graph.replace(tasks=tasks).verify()
