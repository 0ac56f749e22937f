"""Proof that a plan orders every dependency: simulate its streams with vector clocks.

Each stream carries a clock: for every stream, the index of the latest task of that stream
known to have finished. Running a task sets the stream's own entry; recording an event
snapshots the clock; waiting merges the snapshot in. A task may run only if each of its
dependencies is covered by the clock of its stream, and a buffer may be freed only after
every reader is covered. Nothing here trusts the ``waiters`` the lowering wrote down: only
the instruction lists count.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from cosched.codegen.planformat import Plan
from cosched.errors import PlanError
from cosched.ir.graph import Graph

__all__ = ["verify_plan"]


def verify_plan(plan: Plan, graph: Graph | None = None) -> Plan:
    """Raise :class:`PlanError` unless every dependency is ordered; returns the plan.

    Dependencies come from ``graph``'s task DAG when given (and the plan's task partition
    must match the graph's), else from the plan's buffers (producer -> readers). Also checks
    that every task runs exactly once, every event is recorded exactly once, the streams
    cannot deadlock, buffers are freed only after all their readers, and the issue order
    issues each event's record before any wait on it.
    """
    where = _positions(plan)
    deps = _dependencies(plan, graph)
    labels = {t.id: f"task {t.id} ({t.tenant}:{t.name or t.ops[0]})" for t in plan.tasks}
    completion = _simulate(plan, where, deps, labels)
    _check_frees(plan, where, completion, labels)
    _check_issue_order(plan, where, labels)
    return plan


def _positions(plan: Plan) -> dict[int, tuple[int, int]]:
    where: dict[int, tuple[int, int]] = {}
    for s in plan.streams:
        for i, t in enumerate(s.tasks):
            if t in where:
                raise PlanError(f"task {t} runs twice: on stream {where[t][0]} and stream {s.id}")
            where[t] = (s.id, i)
    known = {t.id for t in plan.tasks}
    if set(where) != known:
        extra, missing = sorted(set(where) - known), sorted(known - set(where))
        raise PlanError(f"plan streams run unknown tasks {extra[:5]} and miss tasks {missing[:5]}")
    if [s.id for s in plan.streams] != list(range(len(plan.streams))):
        raise PlanError(f"stream ids must be 0..{len(plan.streams) - 1} in order")
    return where


def _dependencies(plan: Plan, graph: Graph | None) -> dict[int, set[int]]:
    deps: dict[int, set[int]] = {t.id: set() for t in plan.tasks}
    if graph is None:
        for b in plan.buffers:
            for u in b.use_tasks:
                if u != b.def_task:
                    deps[u].add(b.def_task)
        return deps
    ours = {t.id: t.ops for t in plan.tasks}
    theirs = {t.id: t.ops for t in graph.tasks}
    if ours != theirs:
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise PlanError(f"plan tasks differ from the graph's tasks (first ids differing: {differ[:5]})")
    dag: nx.DiGraph = graph.to_networkx("task")
    for u, v in dag.edges():
        deps[v].add(u)
    return deps


def _simulate(
    plan: Plan, where: Mapping[int, tuple[int, int]], deps: Mapping[int, set[int]],
    labels: Mapping[int, str],
) -> dict[int, list[int]]:
    n = len(plan.streams)
    clock = [[-1] * n for _ in range(n)]
    pc = [0] * n
    ran = [0] * n
    snapshots: dict[int, list[int]] = {}
    completion: dict[int, list[int]] = {}
    progressed = True
    while progressed:
        progressed = False
        for s in plan.streams:
            while pc[s.id] < len(s.instructions):
                ins = s.instructions[pc[s.id]]
                c = clock[s.id]
                if ins.op == "wait":
                    if ins.event not in snapshots:
                        break
                    clock[s.id] = [max(a, b) for a, b in zip(c, snapshots[ins.event], strict=True)]
                elif ins.op == "record":
                    if ins.event in snapshots:
                        raise PlanError(f"event {ins.event} is recorded twice (again on stream {s.id})")
                    snapshots[ins.event] = list(c)
                else:
                    _check_ready(ins.task, s.id, c, where, deps, labels)  # type: ignore[arg-type]
                    c[s.id] = ran[s.id]
                    ran[s.id] += 1
                    completion[ins.task] = list(c)  # type: ignore[index]
                pc[s.id] += 1
                progressed = True
    stuck = [s for s in plan.streams if pc[s.id] < len(s.instructions)]
    if stuck:
        waits = ", ".join(f"stream {s.id} waits for event {s.instructions[pc[s.id]].event}" for s in stuck)
        raise PlanError(f"plan deadlocks: {waits}, which no runnable stream records")
    return completion


def _check_ready(
    task: int, stream: int, clock: list[int], where: Mapping[int, tuple[int, int]],
    deps: Mapping[int, set[int]], labels: Mapping[int, str],
) -> None:
    for u in sorted(deps[task]):
        su, iu = where[u]
        if clock[su] < iu:
            how = "later on the same stream" if su == stream else f"on stream {su}"
            raise PlanError(
                f"{labels[task]} on stream {stream} depends on {labels[u]} {how}, but neither "
                "stream order nor an event chain orders them: the plan has a race"
            )


def _check_frees(
    plan: Plan, where: Mapping[int, tuple[int, int]], completion: Mapping[int, list[int]],
    labels: Mapping[int, str],
) -> None:
    for b in plan.buffers:
        if b.free_after is None:
            continue
        done = completion[b.free_after]
        for u in (*b.use_tasks, b.def_task):
            su, iu = where[u]
            if done[su] < iu:
                raise PlanError(
                    f"buffer {b.tensor!r} is freed after {labels[b.free_after]}, but {labels[u]} "
                    "that touches it is not ordered before that point"
                )


def _check_issue_order(plan: Plan, where: Mapping[int, tuple[int, int]], labels: Mapping[int, str]) -> None:
    if sorted(plan.issue_order) != sorted(where):
        raise PlanError("issue_order must list every task of the plan exactly once")
    issued = {t: i for i, t in enumerate(plan.issue_order)}
    recorder: dict[int, int] = {}
    for s in plan.streams:
        last = None
        for ins in s.instructions:
            if ins.op == "run":
                last = ins.task
            elif ins.op == "record" and last is not None:
                recorder[ins.event] = last  # type: ignore[index]
    for s in plan.streams:
        tasks = s.tasks
        if [issued[t] for t in tasks] != sorted(issued[t] for t in tasks):
            raise PlanError(f"issue_order issues the tasks of stream {s.id} out of stream order")
        pending: list[int] = []
        for ins in s.instructions:
            if ins.op == "wait":
                pending.append(ins.event)  # type: ignore[arg-type]
            elif ins.op == "run":
                for e in pending:
                    if e in recorder and issued[recorder[e]] > issued[ins.task]:  # type: ignore[index]
                        raise PlanError(
                            f"issue_order issues {labels[ins.task]} (waits for event {e}) before "  # type: ignore[index]
                            f"{labels[recorder[e]]} records it; a single issuing thread would skip the wait"
                        )
                pending = []
