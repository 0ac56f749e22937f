"""Lowering: a schedule (streams of task ids) over a graph becomes a :class:`Plan`.

Steps, in order:

1. validate the schedule (every task once, stream order respects dependencies, no deadlock);
2. build the combined DAG: task dependencies plus stream-order edges, and take its
   transitive reduction; the cross-stream edges left are the candidate synchronisations;
3. prune them with vector clocks: walking tasks in topological order, each stream knows the
   latest task of every other stream it is already ordered after; a candidate edge u -> v is
   kept only if neither v's stream clock nor another kept candidate's clock already covers u.
   One event is recorded after each task some waiter needs and is shared by all its waiters;
4. buffer lifetimes: the producing task, the reading tasks, and the one reader ordered after
   all the others (if any), after which the tensor is dead everywhere;
5. bindings, the predicted timeline and a global issue order that interleaves streams by
   predicted start (breadth first across tenants), for runtimes with one issuing thread.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import networkx as nx

from cosched.codegen.plan import (
    PROVIDERS,
    Binding,
    Buffer,
    Event,
    ImportOptions,
    Instruction,
    ModelRef,
    Plan,
    StreamPlan,
    TaskSpec,
    sha256_of,
)
from cosched.errors import PlanError
from cosched.ir.dag import transitive_reduction
from cosched.ir.graph import Graph
from cosched.search.schedule import Schedule

__all__ = ["SyncPlan", "lower", "plan_sync"]

Clock = list[int]


@dataclass(frozen=True)
class SyncPlan:
    """The synchronisation a set of streams needs.

    ``waits[v]`` lists the tasks (on other streams) whose completion event ``v`` waits for;
    ``clocks[v][s]`` is the index of the latest task of stream ``s`` ordered before the end of
    ``v`` (``-1``: none); ``position[v]`` is ``(stream, index)``.
    """

    waits: Mapping[int, tuple[int, ...]]
    clocks: Mapping[int, tuple[int, ...]]
    position: Mapping[int, tuple[int, int]]

    def happens_before(self, u: int, v: int) -> bool:
        """True when ``u`` is ordered before the end of ``v`` (or is ``v``)."""
        su, iu = self.position[u]
        return self.clocks[v][su] >= iu


def plan_sync(dag: nx.DiGraph, streams: Sequence[Sequence[int]]) -> SyncPlan:
    """The fewest cross-stream waits that order every dependency of ``dag`` (see module doc)."""
    position = {t: (s, i) for s, tasks in enumerate(streams) for i, t in enumerate(tasks)}
    combined = nx.DiGraph()
    combined.add_nodes_from(position)
    combined.add_edges_from(dag.edges())
    for tasks in streams:
        combined.add_edges_from(pairwise(tasks))
    reduced = transitive_reduction(combined)
    clocks: dict[int, Clock] = {}
    waits: dict[int, tuple[int, ...]] = {}
    empty = [-1] * len(streams)
    for v in nx.topological_sort(reduced):
        sv, iv = position[v]
        before = list(clocks[streams[sv][iv - 1]]) if iv else list(empty)
        latest: dict[int, int] = {}
        for u in reduced.predecessors(v):
            su, iu = position[u]
            if su != sv and (su not in latest or iu > position[latest[su]][1]):
                latest[su] = u
        candidates = [u for u in latest.values() if before[position[u][0]] < position[u][1]]
        needed = [
            u for u in candidates
            if not any(clocks[w][position[u][0]] >= position[u][1] for w in candidates if w != u)
        ]
        for u in needed:
            before = [max(a, b) for a, b in zip(before, clocks[u], strict=True)]
        before[sv] = iv
        clocks[v] = before
        waits[v] = tuple(sorted(needed, key=lambda u: position[u]))
    return SyncPlan(waits, {t: tuple(c) for t, c in clocks.items()}, position)


def lower(
    graph: Graph,
    schedule: Schedule | Sequence[Sequence[int]],
    *,
    device: Mapping[str, Any] | Any,
    timeline: Mapping[int, tuple[float, float]] | Any | None = None,
    import_options: ImportOptions | None = None,
    latency_critical: Iterable[str] = (),
    predicted_ms: Mapping[str, float] | None = None,
    provider: str = "torch",
) -> Plan:
    """Lower ``schedule`` over ``graph`` to a plan for ``device``.

    ``schedule`` is a :class:`~cosched.search.schedule.Schedule` or a list of streams of task
    ids (one device). ``device`` is a DeviceSpec or its dict (``kind`` is required).
    ``timeline`` is the predicted timeline: a mapping task id -> (start_ms, end_ms), or a
    simulator result with ``start``/``end`` sequences indexed by task id. Streams holding a
    task of a ``latency_critical`` tenant get a higher priority. ``predicted_ms`` carries the
    predicted makespans of the plan and of the baselines, for reports. ``provider`` (one of
    :data:`~cosched.codegen.plan.PROVIDERS`) runs every task; ``"ort"`` is for CPU plans.
    """
    if provider not in PROVIDERS:
        raise PlanError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    sched = schedule if isinstance(schedule, Schedule) else Schedule.single(schedule, "given")
    sched.validate(graph)
    flat = [(d, tuple(tasks)) for d, streams in enumerate(sched.devices) for tasks in streams]
    streams = [tasks for _, tasks in flat]
    sync = plan_sync(graph.to_networkx("task"), streams)
    events = _events(sync, streams)
    event_of = {e.after_task: e.id for e in events}
    critical = set(latency_critical)
    unknown = critical - set(graph.tenant_names)
    if unknown:
        raise PlanError(f"latency-critical tenant(s) {sorted(unknown)} are not in the graph {list(graph.tenant_names)}")
    stream_plans = []
    for sid, (dev, tasks) in enumerate(flat):
        instructions: list[Instruction] = []
        for t in tasks:
            instructions += [Instruction("wait", event=event_of[u]) for u in sync.waits[t]]
            instructions.append(Instruction("run", task=t))
            if t in event_of:
                instructions.append(Instruction("record", event=event_of[t]))
        urgent = any(graph.task(t).tenant in critical for t in tasks)
        stream_plans.append(StreamPlan(sid, dev, tuple(instructions), -1 if urgent else 0))
    times = _timeline(timeline, graph)
    return Plan(
        device=_device_dict(device),
        models=_model_refs(graph),
        import_options=import_options or _default_import_options(graph),
        tasks=tuple(TaskSpec(t.id, t.tenant, t.name, t.ops, provider) for t in graph.tasks),
        streams=tuple(stream_plans),
        events=events,
        buffers=buffer_lifetimes(graph, sync),
        inputs=_bindings(graph, "inputs"),
        outputs=_bindings(graph, "outputs"),
        issue_order=issue_order(streams, sync, times),
        timeline=times,
        predicted_ms=dict(predicted_ms or {}),
        schedule_method=sched.method,
    )


def _events(sync: SyncPlan, streams: Sequence[Sequence[int]]) -> tuple[Event, ...]:
    waiters: dict[int, list[int]] = {}
    for v, us in sync.waits.items():
        for u in us:
            waiters.setdefault(u, []).append(v)
    recorded = sorted(waiters, key=lambda u: sync.position[u])
    return tuple(
        Event(i, sync.position[u][0], u, tuple(sorted(waiters[u], key=lambda v: sync.position[v])))
        for i, u in enumerate(recorded)
    )


def buffer_lifetimes(graph: Graph, sync: SyncPlan) -> tuple[Buffer, ...]:
    """Every activation tensor with its producing task, reading tasks and safe free point."""
    outputs = {name for t in graph.tenants for _, name in t.outputs}
    buffers = []
    for op in graph.ops:
        for name in op.outputs:
            if not name:
                continue
            info = graph.tensor(name)
            producer = graph.task_of(op.name).id
            users = tuple(sorted({graph.task_of(c.name).id for c in graph.consumers(name)}))
            free_after = None if name in outputs else _free_point(sync, producer, users)
            buffers.append(Buffer(name, info.tenant, info.shape, info.dtype, info.nbytes,
                                  producer, users, free_after))
    return tuple(buffers)


def _free_point(sync: SyncPlan, producer: int, users: Sequence[int]) -> int | None:
    touching = set(users) | {producer}
    for f in touching:
        if all(sync.happens_before(u, f) for u in touching):
            return f
    return None


def issue_order(
    streams: Sequence[Sequence[int]], sync: SyncPlan, times: Mapping[int, tuple[float, float]]
) -> tuple[int, ...]:
    """A topological order of tasks (dependencies and stream order) by predicted start time.

    Without a timeline, the key is the position within the stream, so streams interleave
    round-robin (breadth first) instead of one stream after another.
    """
    preds: dict[int, set[int]] = {t: set(sync.waits[t]) for t in sync.waits}
    for tasks in streams:
        for a, b in pairwise(tasks):
            preds[b].add(a)
    succs: dict[int, list[int]] = {t: [] for t in preds}
    for v, us in preds.items():
        for u in us:
            succs[u].append(v)

    def key(t: int) -> tuple[float, int, int]:
        s, i = sync.position[t]
        return (times[t][0] if t in times else float(i), i, s)

    remaining = {t: len(us) for t, us in preds.items()}
    ready = [(key(t), t) for t, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, t = heapq.heappop(ready)
        order.append(t)
        for v in succs[t]:
            remaining[v] -= 1
            if remaining[v] == 0:
                heapq.heappush(ready, (key(v), v))
    return tuple(order)


def _timeline(timeline: Any, graph: Graph) -> dict[int, tuple[float, float]]:
    if timeline is None:
        return {}
    if isinstance(timeline, Mapping):
        items = {int(t): (float(s), float(e)) for t, (s, e) in timeline.items()}
    elif hasattr(timeline, "start") and hasattr(timeline, "end"):
        items = {i: (float(s), float(e)) for i, (s, e) in enumerate(zip(timeline.start, timeline.end, strict=True))}
    else:
        raise PlanError(
            f"timeline must map task id -> (start_ms, end_ms) or have start/end sequences; got {type(timeline).__name__}"
        )
    missing = sorted({t.id for t in graph.tasks} - items.keys())
    if missing:
        raise PlanError(f"the predicted timeline has no times for tasks {missing[:5]}")
    return items


def _device_dict(device: Any) -> dict[str, Any]:
    data = dict(device) if isinstance(device, Mapping) else device.to_json()
    if data.get("kind") not in ("cpu", "cuda"):
        raise PlanError(f"device spec must have kind 'cpu' or 'cuda'; got {data.get('kind')!r}")
    return data


def _model_refs(graph: Graph) -> tuple[ModelRef, ...]:
    refs = []
    for t in graph.tenants:
        if t.source is None or not Path(t.source).is_file():
            raise PlanError(
                f"tenant {t.name!r} has no model file (source {t.source!r}); a plan references "
                "its models by path and sha256, so load the models from ONNX files"
            )
        path = Path(t.source).resolve()
        refs.append(ModelRef(t.name, str(path), sha256_of(path)))
    return tuple(refs)


def _default_import_options(graph: Graph) -> ImportOptions:
    """Every tenant input's resolved static shape: re-importing with these reproduces the
    graph whatever mix of batch and shape options built it."""
    shapes = {
        t.name: {own: list(graph.tensor(name).shape) for own, name in t.inputs} for t in graph.tenants
    }
    return ImportOptions(input_shapes=shapes)


def _bindings(graph: Graph, which: str) -> tuple[Binding, ...]:
    out = []
    for t in graph.tenants:
        for own, name in getattr(t, which):
            info = graph.tensor(name)
            out.append(Binding(t.name, own, name, info.shape, info.dtype))
    return tuple(out)
