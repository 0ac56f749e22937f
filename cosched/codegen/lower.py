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

Steps 2 and 3 are :func:`cosched.codegen.sync.plan_sync`. A schedule over several devices
runs them per device and adds communication, device entries and memory checks
(:mod:`cosched.codegen.devices`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from cosched.codegen.devices import (
    check_fits,
    communication,
    device_entries,
    device_sync,
    device_weights,
    peak_activation_bytes,
    sends_after,
)
from cosched.codegen.plan import (
    PROVIDERS,
    Binding,
    Buffer,
    DeviceEntry,
    Event,
    ImportOptions,
    Instruction,
    ModelRef,
    Plan,
    StreamPlan,
    TaskSpec,
    sha256_of,
)
from cosched.codegen.sync import SyncPlan, plan_sync
from cosched.codegen.verify import verify_plan
from cosched.errors import PlanError
from cosched.ir.graph import Graph, Task
from cosched.search.schedule import Schedule

__all__ = ["SyncPlan", "buffer_lifetimes", "issue_order", "lower", "plan_sync"]

def lower(
    graph: Graph,
    schedule: Schedule | Sequence[Sequence[int]],
    *,
    device: Mapping[str, Any] | Any,
    devices: Sequence[Mapping[str, Any]] | None = None,
    splits: Sequence[Any] = (),
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

    A schedule over several devices, or a graph split by ``splits`` (the
    :class:`cosched.ir.sharding.SplitSpec` values applied to it, or their JSON), gives a
    schema version 2 plan (:mod:`cosched.codegen.devices`): ``devices`` describes each
    schedule device (``kind``, ``index``, ``name``, ``memory_bytes``, ``cap_bytes``; by
    default ``device``'s kind with indexes 0, 1, ...). A device whose weights and peak
    activations exceed its cap is refused, on one device too.
    """
    if provider not in PROVIDERS:
        raise PlanError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    sched = schedule if isinstance(schedule, Schedule) else Schedule.single(schedule, "given")
    sched.validate(graph)
    flat = [(d, tuple(tasks)) for d, streams in enumerate(sched.devices) for tasks in streams]
    streams = [tasks for _, tasks in flat]
    multi = len(sched.devices) > 1 or bool(splits)
    dag = graph.to_networkx("task")
    device_of = {t: d for d, tasks in flat for t in tasks}
    comms = communication(graph, dag, device_of) if multi else ()
    sync = device_sync(dag, flat) if multi else plan_sync(dag, streams)
    events = _events(sync, streams)
    event_of = {e.after_task: e.id for e in events}
    critical = set(latency_critical)
    unknown = critical - set(graph.tenant_names)
    if unknown:
        raise PlanError(f"latency-critical tenant(s) {sorted(unknown)} are not in the graph {list(graph.tenant_names)}")
    stream_plans = _stream_plans(graph, flat, sync, event_of, *sends_after(graph, comms), critical)
    times = _timeline(timeline, graph)
    crossing = {v: {u for u in dag.predecessors(v) if device_of[u] != device_of[v]} for v in device_of} if multi else None
    groups: dict[str, list[int]] = {}
    for c in comms:
        if c.op != "transfer":
            groups.setdefault(c.group, []).append(c.task)
    order = issue_order(streams, sync, times, crossing, groups)
    buffers = buffer_lifetimes(graph, sync, device_of if multi else None)
    entries = _device_entries(graph, device_of, buffers, order, devices, len(sched.devices), _device_dict(device),
                              multi)
    plan = Plan(
        device=_device_dict(device),
        models=_model_refs(graph),
        import_options=import_options or _default_import_options(graph),
        tasks=tuple(TaskSpec(t.id, t.tenant, t.name, t.ops, _provider_of(graph, t, provider)) for t in graph.tasks),
        streams=tuple(stream_plans),
        events=events,
        buffers=buffers,
        inputs=_bindings(graph, "inputs"),
        outputs=_bindings(graph, "outputs"),
        issue_order=order,
        timeline=times,
        predicted_ms=dict(predicted_ms or {}),
        schedule_method=sched.method,
        devices=tuple(entries) if multi else (),
        comms=comms,
        splits=tuple(s.to_json() if hasattr(s, "to_json") else dict(s) for s in splits),
    )
    return verify_plan(plan) if multi else plan  # a collective met in another order deadlocks


def _stream_plans(graph: Graph, flat: Sequence[tuple[int, Sequence[int]]], sync: SyncPlan,
                  event_of: Mapping[int, int], sends: Mapping[int, Sequence[Instruction]],
                  input_sends: Mapping[int, Sequence[Instruction]], critical: set[str]) -> list[StreamPlan]:
    """Each stream's instructions: per task its waits, its run, its event's record and the
    sends of what it produced to other devices; a device's first stream starts with the
    sends of its graph inputs."""
    out = []
    started: set[int] = set()
    for sid, (dev, tasks) in enumerate(flat):
        instructions: list[Instruction] = [] if dev in started else list(input_sends.get(dev, ()))
        started.add(dev)
        for t in tasks:
            instructions += [Instruction("wait", event=event_of[u]) for u in sync.waits[t]]
            instructions.append(Instruction("run", task=t))
            if t in event_of:
                instructions.append(Instruction("record", event=event_of[t]))
            instructions += sends.get(t, ())
        urgent = any(graph.task(t).tenant in critical for t in tasks)
        out.append(StreamPlan(sid, dev, tuple(instructions), -1 if urgent else 0))
    return out


def _provider_of(graph: Graph, task: Task, provider: str) -> str:
    """``provider``, except for a communication task: torch.distributed runs those (the
    registry's kernels in one process), never an onnxruntime session."""
    return "torch" if any(graph.op(name).is_comm for name in task.ops) else provider


def _device_entries(graph: Graph, device_of: Mapping[int, int], buffers: Sequence[Buffer],
                    order: Sequence[int], devices: Sequence[Mapping[str, Any]] | None, count: int,
                    device: Mapping[str, Any], multi: bool) -> list[DeviceEntry]:
    """Each device's entry: its weights and peak activations, refused over its cap (none for
    a one-device plan given no device to check)."""
    if devices is None and not multi:
        return []
    out = []
    for given in device_entries(devices, count, device):
        d = given["rank"]
        tasks = [t for t in order if device_of[t] == d]
        weights = device_weights(graph, tasks)
        local = [b for b in buffers if device_of[b.def_task] == d]
        entry = DeviceEntry(**given, weight_bytes=sum(w.nbytes for w in weights),
                            peak_activation_bytes=peak_activation_bytes(local, tasks), weights=weights)
        check_fits(entry, sorted({graph.task(t).tenant for t in tasks}))
        out.append(entry)
    return out


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


def buffer_lifetimes(graph: Graph, sync: SyncPlan, device_of: Mapping[int, int] | None = None) -> tuple[Buffer, ...]:
    """Every activation tensor with its producing task, reading tasks and safe free point.

    With ``device_of`` (task -> device, a multi-device plan) the free point is a task of the
    producer's device after every reader there; readers on other devices are collective ranks
    (their group meets the local rank) or Transfers, whose send may still read the tensor:
    such a tensor lives to the end of the run.
    """
    outputs = {name for t in graph.tenants for _, name in t.outputs}
    buffers = []
    for op in graph.ops:
        for name in op.outputs:
            if not name:
                continue
            info = graph.tensor(name)
            producer = graph.task_of(op.name).id
            users = tuple(sorted({graph.task_of(c.name).id for c in graph.consumers(name)}))
            local, sent = users, False
            if device_of is not None:
                local = tuple(u for u in users if device_of[u] == device_of[producer])
                sent = any(c.op_type == "Transfer" and device_of[graph.task_of(c.name).id] != device_of[producer]
                           for c in graph.consumers(name))
            free_after = None if name in outputs or sent else _free_point(sync, producer, local)
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
    streams: Sequence[Sequence[int]], sync: SyncPlan, times: Mapping[int, tuple[float, float]],
    crossing: Mapping[int, Iterable[int]] | None = None, together: Mapping[str, Sequence[int]] | None = None,
) -> tuple[int, ...]:
    """A topological order of tasks (dependencies and stream order) by predicted start time.

    Without a timeline, the key is the position within the stream, so streams interleave
    round-robin (breadth first) instead of one stream after another. ``crossing`` adds, per
    task, the tasks of other devices it reads from (a multi-device plan's sync orders only
    tasks within a device). Each group of ``together`` (collective name -> its ranks' tasks) is
    issued back to back, once all of its tasks are ready, so every device meets its
    collectives in one order (NCCL requires it); :class:`PlanError` if that is impossible.
    """
    node = {t: t for t in sync.waits}
    names = list(together or {})
    for g, name in enumerate(names):
        node.update({t: -1 - g for t in (together or {})[name]})
    members_of: dict[int, list[int]] = {}
    for t, n in node.items():
        members_of.setdefault(n, []).append(t)
    preds: dict[int, set[int]] = {n: set() for n in members_of}
    for t in sync.waits:
        before = set(sync.waits[t]) | set((crossing or {}).get(t, ()))
        preds[node[t]] |= {node[u] for u in before}
    for tasks in streams:
        for a, b in pairwise(tasks):
            preds[node[b]].add(node[a])
    for n, us in preds.items():
        us.discard(n)
    succs: dict[int, list[int]] = {n: [] for n in preds}
    for v, us in preds.items():
        for u in us:
            succs[u].append(v)

    def key(t: int) -> tuple[float, int, int]:
        s, i = sync.position[t]
        return (times[t][0] if t in times else float(i), i, s)

    remaining = {n: len(us) for n, us in preds.items()}
    ready = [(min(key(t) for t in members_of[n]), n) for n, k in remaining.items() if k == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order += sorted(members_of[n], key=key)
        for v in succs[n]:
            remaining[v] -= 1
            if remaining[v] == 0:
                heapq.heappush(ready, (min(key(t) for t in members_of[v]), v))
    if len(order) != len(node):
        stuck = sorted(names[-1 - n] for n, k in remaining.items() if k > 0 and n < 0)
        raise PlanError(f"collective groups {', '.join(map(repr, stuck[:5]))} wait on one another: no order "
                        "meets each collective on all its devices at once; order them alike on every device")
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
