"""What lowering a schedule over several devices adds: communication, per-device sync, memory.

A multi-device schedule places every task on one stream of one device. Lowering it
(:func:`cosched.codegen.lower.lower`) relies on these rules, checked here:

- a dependency may cross devices only into a communication task (an op of domain
  ``"cosched"``, alone in its task): a ``Transfer`` reads a tensor of another device (the
  source posts a ``send`` right after the producing task, on its stream; a graph input is
  fed on the device of its tenant's shard slot ``src`` and sent at the start of that
  device's first stream), and rank ``r`` of a
  collective reads every rank's input, rank ``i``'s from the device running rank ``i``
  (the group meets on its distinct devices). Anything else is refused, naming the tasks;
- events order dependencies within a device only (:func:`device_sync`: the lowering's
  event pruning run per device, merged into one :class:`~cosched.codegen.sync.SyncPlan`
  over all streams);
- each device holds the weights its tasks read (:func:`device_weights`) and at most
  :func:`peak_activation_bytes` of activations; their sum must fit the device's cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from cosched.codegen.planformat import Buffer, CommTask, DeviceEntry, Instruction, WeightSpec
from cosched.codegen.planmulti import COMM_OPS
from cosched.codegen.sync import SyncPlan, plan_sync
from cosched.errors import PlanError
from cosched.ir.graph import Graph, Op, Task

__all__ = [
    "COMM_DOMAIN",
    "check_fits",
    "comm_op",
    "communication",
    "device_entries",
    "device_sync",
    "device_weights",
    "peak_activation_bytes",
    "sends_after",
]

COMM_DOMAIN = "cosched"
"""The ONNX domain of the IR's communication ops (``Transfer``, ``AllReduce``, ...)."""


def _label(graph: Graph, task_id: int) -> str:
    task = graph.task(task_id)
    return f"task {task_id} ({task.tenant}:{task.name or task.ops[0]})"


def comm_op(graph: Graph, task: Task) -> Op | None:
    """The communication op ``task`` runs, or None; :class:`PlanError` if one shares a task."""
    ops = graph.task_ops(task)
    comm = [op for op in ops if op.domain == COMM_DOMAIN and op.op_type in COMM_OPS]
    if comm and len(ops) != 1:
        raise PlanError(f"{_label(graph, task.id)} runs communication op {comm[0].name!r} with "
                        f"{len(ops) - 1} other op(s); a communication op must be alone in its task")
    return comm[0] if comm else None


def communication(graph: Graph, dag: nx.DiGraph, device_of: Mapping[int, int]) -> tuple[CommTask, ...]:
    """Every communication task with its peers (device ranks); refuses any other dependency
    that crosses devices, and collective groups that are incomplete or share a device."""
    comms: list[CommTask] = []
    groups: dict[str, dict[int, tuple[int, Op]]] = {}
    found = [(task.id, comm_op(graph, task)) for task in graph.tasks]
    slots = _slot_devices(graph, [(t, op) for t, op in found if op is not None], device_of)
    for task_id, op in found:
        if op is None:
            _check_local(graph, dag, device_of, task_id)
        elif op.op_type == "Transfer":
            comms.append(_transfer(graph, op, task_id, device_of, slots))
        else:
            rank = _int_attr(graph, task_id, op, "rank")
            members = groups.setdefault(str(op.attr("group")), {})
            if rank in members:
                raise PlanError(f"collective group {op.attr('group')!r}: rank {rank} is run by both "
                                f"{_label(graph, members[rank][0])} and {_label(graph, task_id)}")
            members[rank] = (task_id, op)
    for name, members in sorted(groups.items()):
        comms += _collective(graph, name, members, device_of)
    return tuple(sorted(comms, key=lambda c: c.task))


def _check_local(graph: Graph, dag: nx.DiGraph, device_of: Mapping[int, int], v: int) -> None:
    for u in sorted(dag.predecessors(v)):
        if device_of[u] != device_of[v]:
            tensors = ", ".join(repr(t) for t in dag.edges[u, v]["tensors"])
            raise PlanError(
                f"{_label(graph, v)} on device {device_of[v]} reads {tensors} of {_label(graph, u)} on "
                f"device {device_of[u]}, but only a Transfer or a collective task may read across "
                "devices; place both tasks on one device, or split the tenant so that a Transfer "
                "moves the tensor (cosched.ir.sharding)"
            )


def _int_attr(graph: Graph, task_id: int, op: Op, key: str) -> int:
    value = op.attr(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{_label(graph, task_id)}: {op.op_type} needs an integer attribute {key!r} >= 0, "
                        f"got {value!r}")
    return value


def _slot_devices(graph: Graph, comms: Sequence[tuple[int, Op]],
                  device_of: Mapping[int, int]) -> dict[tuple[str, int], set[int]]:
    """The devices each (tenant, shard slot) runs on, as its communication ops show them: a
    Transfer runs on slot ``dst`` and reads what slot ``src`` produced; rank ``r`` of a
    collective runs on slot ``r``."""
    slots: dict[tuple[str, int], set[int]] = {}
    for task_id, op in comms:
        if op.op_type == "Transfer":
            slots.setdefault((op.tenant, op.attr("dst")), set()).add(device_of[task_id])
            producer = graph.producer(op.inputs[0]) if op.inputs and op.inputs[0] else None
            if producer is not None:
                slots.setdefault((op.tenant, op.attr("src")), set()).add(device_of[graph.task_of(producer.name).id])
        else:
            slots.setdefault((op.tenant, op.attr("rank")), set()).add(device_of[task_id])
    return slots


def _transfer(graph: Graph, op: Op, task_id: int, device_of: Mapping[int, int],
              slots: Mapping[tuple[str, int], set[int]]) -> CommTask:
    """A Transfer runs on its destination; its source is the device of the task producing its
    input, or for a graph input (fed on shard slot ``src``) the device of that slot. A weight
    or constant has no producer and is held where it is read: its transfer is local."""
    x = op.inputs[0] if op.inputs else ""
    producer = graph.producer(x) if x else None
    dst = device_of[task_id]
    if producer is not None:
        src = device_of[graph.task_of(producer.name).id]
    elif x and graph.tensor(x).kind == "input":
        found = slots.get((op.tenant, op.attr("src")), set())
        if len(found) != 1:
            raise PlanError(
                f"{_label(graph, task_id)} moves input {x!r} of tenant {op.tenant!r} from shard slot "
                f"{op.attr('src')!r}, which runs on devices {sorted(found)} by the other communication "
                "tasks; a slot must run on exactly one device"
            )
        src = next(iter(found))
    else:
        src = dst
    return CommTask(task_id, "transfer", (src, dst), graph.tensor(x).nbytes if x else 0)


def _collective(graph: Graph, name: str, members: Mapping[int, tuple[int, Op]],
                device_of: Mapping[int, int]) -> list[CommTask]:
    first_task, first = next(iter(members.values()))
    world = _int_attr(graph, first_task, first, "world")
    if sorted(members) != list(range(world)):
        shown = ", ".join(f"rank {r}: {_label(graph, t)}" for r, (t, _) in sorted(members.items()))
        raise PlanError(f"collective group {name!r} of world {world} has ranks {sorted(members)} ({shown}); "
                        f"it needs exactly ranks 0..{world - 1}")
    peers = tuple(device_of[members[r][0]] for r in range(world))
    if len(set(peers)) != world:
        shown = ", ".join(f"rank {r} on device {d}" for r, d in enumerate(peers))
        raise PlanError(f"collective group {name!r} runs {shown}: its ranks must run on distinct devices")
    out = []
    for r, (task_id, op) in sorted(members.items()):
        if _int_attr(graph, task_id, op, "world") != world or op.op_type != first.op_type:
            raise PlanError(f"collective group {name!r}: {_label(graph, task_id)} is a {op.op_type} of world "
                            f"{op.attr('world')}, its rank 0 a {first.op_type} of world {world}")
        for i, x in enumerate(op.inputs):
            producer = graph.producer(x) if x else None
            if producer is None or i >= world:
                continue
            p = graph.task_of(producer.name).id
            if device_of[p] != peers[i]:
                raise PlanError(
                    f"collective group {name!r}: input {i} ({x!r}) of {_label(graph, task_id)} is produced by "
                    f"{_label(graph, p)} on device {device_of[p]}, but rank {i} runs on device {peers[i]}; "
                    "a collective's input i must be produced on the device of rank i"
                )
        nbytes = sum(graph.tensor(y).nbytes for y in op.outputs if y)
        out.append(CommTask(task_id, COMM_OPS[op.op_type], peers, nbytes, name, r))
    return out


def sends_after(graph: Graph, comms: Iterable[CommTask]
                ) -> tuple[dict[int, tuple[Instruction, ...]], dict[int, tuple[Instruction, ...]]]:
    """The ``send`` instructions: per producing task those its stream posts right after it,
    and per device those of graph inputs, posted first on its first stream."""
    after: dict[int, list[Instruction]] = {}
    first: dict[int, list[Instruction]] = {}
    for c in comms:
        if c.op != "transfer" or c.peers[0] == c.peers[1]:
            continue
        send = Instruction("send", task=c.task, peer=c.peers[1])
        producer = graph.producer(graph.task_ops(graph.task(c.task))[0].inputs[0])
        if producer is None:
            first.setdefault(c.peers[0], []).append(send)
        else:
            after.setdefault(graph.task_of(producer.name).id, []).append(send)
    return ({t: tuple(sorted(sends, key=lambda i: i.task or 0)) for t, sends in after.items()},
            {d: tuple(sorted(sends, key=lambda i: i.task or 0)) for d, sends in first.items()})


def device_sync(dag: nx.DiGraph, flat: Sequence[tuple[int, Sequence[int]]]) -> SyncPlan:
    """:func:`~cosched.codegen.sync.plan_sync` per device (each device's streams and the
    dependencies between its tasks), merged over all streams: ``flat`` lists ``(device,
    tasks)`` per global stream. A clock covers only its own device's streams."""
    n = len(flat)
    waits: dict[int, tuple[int, ...]] = {}
    clocks: dict[int, tuple[int, ...]] = {}
    position: dict[int, tuple[int, int]] = {}
    for d in sorted({dev for dev, _ in flat}):
        ids = [g for g, (dev, _) in enumerate(flat) if dev == d]
        streams = [flat[g][1] for g in ids]
        nodes = [t for tasks in streams for t in tasks]
        local = plan_sync(dag.subgraph(nodes), streams)
        waits.update(local.waits)
        for t, (k, i) in local.position.items():
            position[t] = (ids[k], i)
            clock = [-1] * n
            for kk, c in enumerate(local.clocks[t]):
                clock[ids[kk]] = c
            clocks[t] = tuple(clock)
    return SyncPlan(waits, clocks, position)


def device_weights(graph: Graph, tasks: Iterable[int]) -> tuple[WeightSpec, ...]:
    """The weights ``tasks`` read, sorted by name: what their device must hold."""
    names = {i for t in tasks for i in graph.task_inputs(graph.task(t)) if i in graph.weights}
    return tuple(WeightSpec(n, graph.tensor(n).shape, graph.tensor(n).dtype, graph.tensor(n).nbytes)
                 for n in sorted(names))


def peak_activation_bytes(buffers: Sequence[Buffer], order: Sequence[int]) -> int:
    """The most bytes of ``buffers`` alive at once when ``order`` (one device's tasks, in
    issue order) runs: a buffer lives from its producing task to its ``free_after`` task, or
    to the end when it has none."""
    made: dict[int, int] = {}
    freed: dict[int, int] = {}
    for b in buffers:
        made[b.def_task] = made.get(b.def_task, 0) + b.nbytes
        if b.free_after is not None:
            freed[b.free_after] = freed.get(b.free_after, 0) + b.nbytes
    live = peak = 0
    for t in order:
        live += made.get(t, 0)
        peak = max(peak, live)
        live -= freed.get(t, 0)
    return peak


def device_entries(devices: Sequence[Mapping[str, Any]] | None, count: int,
                   device: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The given device descriptions (kind, index, name, memory_bytes, cap_bytes), one per
    device of the schedule; by default ``device``'s kind and name with indexes 0..count-1."""
    if devices is None:
        devices = [{"kind": device["kind"], "index": d, "name": device.get("name", ""),
                    "memory_bytes": device.get("memory_bytes")} for d in range(count)]
    if len(devices) != count:
        raise PlanError(f"the schedule runs on {count} device(s), but {len(devices)} device(s) are given")
    out = []
    for rank, given in enumerate(devices):
        entry = {"rank": rank, "kind": given.get("kind"), "index": given.get("index", rank),
                 "name": given.get("name", "") or "", "memory_bytes": given.get("memory_bytes"),
                 "cap_bytes": given.get("cap_bytes")}
        if entry["kind"] != device["kind"]:
            raise PlanError(f"device {rank} is of kind {entry['kind']!r}, but the plan is compiled for "
                            f"{device['kind']!r} devices; every device of a plan is of one kind")
        out.append(entry)
    labels = [f"{e['kind']}:{e['index']}" for e in out]
    if len(set(labels)) != len(labels):
        raise PlanError(f"devices {labels} name a device twice; each rank needs a device of its own")
    return out


def check_fits(entry: DeviceEntry, tenants: Sequence[str]) -> None:
    """:class:`PlanError` if ``entry`` needs more than its cap (or capacity)."""
    limit = entry.limit_bytes
    if limit is not None and entry.needed_bytes > limit:
        what = "cap" if entry.cap_bytes is not None else "memory"
        raise PlanError(
            f"device {entry.label} (rank {entry.rank}) needs {entry.needed_bytes} bytes "
            f"({entry.weight_bytes} of weights + {entry.peak_activation_bytes} of activations at their "
            f"peak) for tenants {', '.join(tenants)}, over its {what} of {limit} bytes"
        )
