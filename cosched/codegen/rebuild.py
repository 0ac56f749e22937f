"""Re-importing a plan's graph from its models and applying the stored task partition.

A plan keeps no weights and no IR: the runtime imports the referenced ONNX files again with
the recorded import options, then re-applies the plan's task partition (task id -> op
names) instead of re-running fusion, so the tasks are exactly those the plan was made for.
The plan's other fields must then agree with the models (:func:`check_against_graph`):
input and output bindings, buffers, and the ordering of every dependency of the task DAG.

A plan whose tenants are split (schema version 2) records the split specs; they are applied
again to the re-imported graph (:func:`cosched.ir.sharding.apply_splits`) before the task
partition, and the plan's communication tasks and per-device weights must be the graph's.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from cosched.codegen.devices import communication, device_weights
from cosched.codegen.plan import PLAN_FILE, Binding, Plan
from cosched.codegen.verify import verify_plan
from cosched.errors import CoschedError, GraphError, PlanError
from cosched.ir.graph import Graph, Task

__all__ = ["apply_tasks", "check_against_graph", "graph_for_plan", "imported_graph"]


def imported_graph(plan: Plan) -> Graph:
    """The plan's models imported again with its import options: whole tenants, nothing split
    and no tasks (what single-device sequential execution runs)."""
    from cosched.ir import load_models

    options = plan.import_options
    kwargs = {}
    if options.batch is not None:
        kwargs["batch"] = options.batch
    if options.input_shapes is not None:
        kwargs["input_shapes"] = options.input_shapes
    paths = [str(plan.model_path(m)) for m in plan.models]
    return load_models(paths, names=list(plan.tenants), **kwargs)


def graph_for_plan(plan: Plan) -> Graph:
    """The plan's graph, re-imported from its model files, with the plan's tasks; the plan
    is checked against it (:func:`check_against_graph`)."""
    graph = imported_graph(plan)
    if graph.tenant_names != plan.tenants:
        raise PlanError(
            f"re-importing the plan's models gave tenants {list(graph.tenant_names)}, "
            f"the plan expects {list(plan.tenants)}"
        )
    if plan.splits:
        graph = _apply_splits(graph, plan)
    try:
        graph = apply_tasks(graph, plan)
    except GraphError as exc:
        raise PlanError(f"{_where(plan)}: tasks: {exc}") from None
    check_against_graph(plan, graph)
    return graph


def _apply_splits(graph: Graph, plan: Plan) -> Graph:
    """The plan's split specs applied to the re-imported ``graph``."""
    tenants = sorted({str(s.get("tenant")) for s in plan.splits})
    try:  # by name: the split passes are an IR module that a cosched may lack
        sharding = importlib.import_module("cosched.ir.sharding")
        apply_splits, spec_type = sharding.apply_splits, sharding.SplitSpec
    except (ImportError, AttributeError):
        raise PlanError(
            f"{_where(plan)}: the plan splits tenant(s) {tenants}, but this cosched has no "
            "cosched.ir.sharding.apply_splits to split them again; load it with the cosched that compiled it"
        ) from None
    try:
        return apply_splits(graph, [spec_type.from_json(s) for s in plan.splits])
    except CoschedError as exc:
        raise PlanError(f"{_where(plan)}: splitting tenant(s) {tenants} again as the plan says failed: {exc}; "
                        "recompile the plan") from None


def check_against_graph(plan: Plan, graph: Graph) -> None:
    """Raise :class:`PlanError` unless the plan's bindings and buffers are the graph's and
    its streams order every dependency of the graph's task DAG; messages name the field."""
    where = _where(plan)
    for field_name in ("inputs", "outputs"):
        _compare_bindings(getattr(plan, field_name), _bindings(graph, field_name), f"{where}: {field_name}")
    _compare_buffers(plan, graph, where)
    if plan.schema_version > 1:
        _compare_devices(plan, graph, where)
    try:
        verify_plan(plan, graph)
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None


def _where(plan: Plan) -> str:
    return str(Path(plan.base_dir) / PLAN_FILE) if plan.base_dir else "plan"


def _bindings(graph: Graph, which: str) -> list[Binding]:
    return [
        Binding(t.name, own, name, graph.tensor(name).shape, graph.tensor(name).dtype)
        for t in graph.tenants
        for own, name in getattr(t, which)
    ]


def _compare_bindings(ours: Sequence[Binding], theirs: Sequence[Binding], label: str) -> None:
    keys = [(b.tenant, b.name) for b in ours]
    expected = [(b.tenant, b.name) for b in theirs]
    if keys != expected:
        missing = [f"{t}:{n}" for t, n in expected if (t, n) not in keys]
        extra = [f"{t}:{n}" for t, n in keys if (t, n) not in expected]
        raise PlanError(
            f"{label}: the plan binds {[f'{t}:{n}' for t, n in keys]}, the models have "
            f"{[f'{t}:{n}' for t, n in expected]} (missing {missing}, extra {extra}, else another order)"
        )
    for i, (b, want) in enumerate(zip(ours, theirs, strict=True)):
        for attr in ("tensor", "shape", "dtype"):
            got, model = getattr(b, attr), getattr(want, attr)
            if tuple(got) != tuple(model) if attr == "shape" else got != model:
                raise PlanError(
                    f"{label}[{i}] ({b.tenant}:{b.name}): {attr} is {_show(got)} in the plan, "
                    f"{_show(model)} in the model; recompile the plan"
                )


def _compare_buffers(plan: Plan, graph: Graph, where: str) -> None:
    produced = {name: op for op in graph.ops for name in op.outputs if name}
    names = [b.tensor for b in plan.buffers]
    if sorted(names) != sorted(produced):
        missing, extra = sorted(set(produced) - set(names)), sorted(set(names) - set(produced))
        raise PlanError(f"{where}: buffers: missing {missing[:5]} and extra {extra[:5]} against the "
                        "tensors the models' ops produce; recompile the plan")
    for i, b in enumerate(plan.buffers):
        info = graph.tensor(b.tensor)
        users = tuple(sorted({graph.task_of(c.name).id for c in graph.consumers(b.tensor)}))
        expected = {"tenant": info.tenant, "shape": tuple(info.shape), "dtype": info.dtype,
                    "def_task": graph.task_of(produced[b.tensor].name).id, "use_tasks": users}
        for attr, model in expected.items():
            got = getattr(b, attr)
            if (tuple(got) if attr in ("shape", "use_tasks") else got) != model:
                raise PlanError(
                    f"{where}: buffers[{i}] ({b.tensor!r}): {attr} is {_show(got)} in the plan, "
                    f"{_show(model)} in the model; recompile the plan"
                )


def _compare_devices(plan: Plan, graph: Graph, where: str) -> None:
    """The communication tasks and each device's weights, as the graph and placement give them."""
    device_of = plan.device_of_task()
    try:
        comms = communication(graph, graph.to_networkx("task"), device_of)
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None
    if comms != plan.comms:
        differ = sorted({c.task for c in set(comms) ^ set(plan.comms)})
        raise PlanError(f"{where}: comms: the plan's communication tasks differ from the graph's at tasks "
                        f"{differ[:5]}; recompile the plan")
    for d in plan.devices:
        expected = device_weights(graph, [t for t, dev in device_of.items() if dev == d.rank])
        if expected != d.weights:
            names = sorted({w.tensor for w in set(expected) ^ set(d.weights)})
            raise PlanError(f"{where}: devices[{d.rank}] ({d.label}): its weights differ from those its tasks "
                            f"read at {names[:5]}; recompile the plan")


def _show(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


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
    ops = {op.name: op for op in graph.ops}
    tasks = tuple(Task(t.id, t.tenant, t.ops, t.name, ops[t.ops[0]].shard) for t in plan.tasks)
    return graph.replace(tasks=tasks).verify()
