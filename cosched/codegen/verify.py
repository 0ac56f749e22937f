"""Proof that a plan orders every dependency: simulate its streams with vector clocks.

Each stream carries a clock: for every stream, the index of the latest task of that stream
known to have finished. Running a task sets the stream's own entry; recording an event
snapshots the clock; waiting merges the snapshot in. A task may run only if each of its
dependencies is covered by the clock of its stream, and a buffer may be freed only after
every reader is covered. Nothing here trusts the ``waiters`` the lowering wrote down: only
the instruction lists count.

Across devices (a multi-device plan) a ``send`` snapshots its stream's clock for the
Transfer task it names, and that task runs only once the send is posted, merging the
snapshot (the send does not wait for the receiver); the ranks of a collective group run only
once every rank has reached its group, each merging the clocks of all of them. A dependency
may cross devices only into a communication task, and a buffer is freed only after the
readers on its own device (one sent to another device lives to the end).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from cosched.codegen.planformat import CommTask, Plan
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
    if plan.devices or plan.comms:
        _check_crossings(plan, deps, labels)
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


def _check_crossings(plan: Plan, deps: Mapping[int, set[int]], labels: Mapping[int, str]) -> None:
    device = plan.device_of_task()
    comms = {c.task: c for c in plan.comms}
    for v, us in deps.items():
        for u in sorted(us):
            if device[u] == device[v]:
                continue
            c = comms.get(v)
            if c is None:
                raise PlanError(f"{labels[v]} on device {device[v]} depends on {labels[u]} on device {device[u]}, "
                                "but only a communication task may read across devices")
            if c.op == "transfer" and c.peers[0] != device[u]:
                raise PlanError(f"transfer {labels[v]} reads {labels[u]} on device {device[u]}, but says its "
                                f"source is device {c.peers[0]}")


class _Meeting:
    """Sends posted and collective ranks arrived, for the simulation."""

    def __init__(self, plan: Plan) -> None:
        self.comms: dict[int, CommTask] = {c.task: c for c in plan.comms}
        self.sizes: dict[str, int] = {}
        for c in plan.comms:
            if c.op != "transfer":
                self.sizes[c.group] = self.sizes.get(c.group, 0) + 1
        self.sent: dict[int, list[int]] = {}
        self.arrived: dict[str, dict[int, list[int]]] = {}

    def send(self, task: int, clock: list[int], stream: int) -> None:
        if task in self.sent:
            raise PlanError(f"the input of transfer task {task} is sent twice (again on stream {stream})")
        self.sent[task] = list(clock)

    def meet(self, task: int, clock: list[int]) -> list[int] | None:
        """The clock ``task`` runs with, merged with its peers'; None while it must wait."""
        c = self.comms.get(task)
        if c is None or (c.op == "transfer" and c.peers[0] == c.peers[1]):
            return clock
        if c.op == "transfer":
            got = self.sent.get(task)
            return None if got is None else [max(a, b) for a, b in zip(clock, got, strict=True)]
        here = self.arrived.setdefault(c.group, {})
        here.setdefault(task, list(clock))
        if len(here) < self.sizes[c.group]:
            return None
        merged = list(clock)
        for other in here.values():
            merged = [max(a, b) for a, b in zip(merged, other, strict=True)]
        return merged

    def blocked(self, task: int | None) -> str:
        c = self.comms.get(task) if task is not None else None
        if c is not None and c.op == "transfer":
            return f"for the send of transfer task {task} from device {c.peers[0]}"
        if c is not None:
            return (f"in collective group {c.group!r} (devices {list(c.peers)}) for ranks that "
                    f"never arrive")
        return "for a task"


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
    meeting = _Meeting(plan)
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
                elif ins.op == "send":
                    meeting.send(ins.task, c, s.id)  # type: ignore[arg-type]
                else:
                    met = meeting.meet(ins.task, c)  # type: ignore[arg-type]
                    if met is None:
                        break
                    c = clock[s.id] = met
                    _check_ready(ins.task, s.id, c, where, deps, labels)  # type: ignore[arg-type]
                    c[s.id] = ran[s.id]
                    ran[s.id] += 1
                    completion[ins.task] = list(c)  # type: ignore[index]
                pc[s.id] += 1
                progressed = True
    stuck = [s for s in plan.streams if pc[s.id] < len(s.instructions)]
    if stuck:
        def why(s: Any) -> str:
            ins = s.instructions[pc[s.id]]
            if ins.op == "wait":
                return f"stream {s.id} waits for event {ins.event}, which no runnable stream records"
            return f"stream {s.id} waits {meeting.blocked(ins.task)} before task {ins.task}"
        raise PlanError(f"plan deadlocks: {'; '.join(why(s) for s in stuck)}")
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
    device = plan.device_of_task()
    comms = {c.task: c for c in plan.comms}
    for b in plan.buffers:
        if b.free_after is None:
            continue
        home = device[b.def_task]
        if device[b.free_after] != home:
            raise PlanError(f"buffer {b.tensor!r} of device {home} is freed after {labels[b.free_after]} "
                            f"on device {device[b.free_after]}")
        done = completion[b.free_after]
        for u in (*b.use_tasks, b.def_task):
            if device[u] != home:
                c = comms.get(u)
                if c is not None and c.op == "transfer":
                    raise PlanError(f"buffer {b.tensor!r} is sent to device {device[u]} by {labels[u]}, so it "
                                    "must live to the end of the run (free_after null), but it is freed after "
                                    f"{labels[b.free_after]}")
                continue
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
    _check_collective_order(plan, issued)
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


def _check_collective_order(plan: Plan, issued: Mapping[int, int]) -> None:
    """Two collective groups that share devices are issued in one order on all of them."""
    device = plan.device_of_task()
    groups: dict[str, dict[int, int]] = {}
    for c in plan.comms:
        if c.op != "transfer":
            groups.setdefault(c.group, {})[device[c.task]] = issued[c.task]
    names = sorted(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(groups[a].keys() & groups[b].keys())
            first = {d: groups[a][d] < groups[b][d] for d in shared}
            if len(set(first.values())) > 1:
                d0 = next(d for d in shared if first[d])
                d1 = next(d for d in shared if not first[d])
                raise PlanError(f"issue_order meets collective groups {a!r} and {b!r} in one order on device {d0} "
                                f"and in the other on device {d1}; every device must meet them in one order")
