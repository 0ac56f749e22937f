"""Load-time consistency of a plan: its fields agree with one another.

:func:`check_plan` is what :func:`cosched.codegen.plan.load_plan` runs after the JSON
Schema: every id names something the plan has, events are recorded where they say, buffer
sizes match their shapes, and :func:`~cosched.codegen.verify.verify_plan` proves the streams
race-free. A multi-device plan (schema version 2) also has its devices numbered by rank with
weights and memory within their caps, its events recorded and waited on one device, every
send matched to a Transfer between two devices, and every collective group complete over
distinct devices. Kept apart from the plan value and its (de)serialisation in ``planformat.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from cosched.codegen.planformat import CommTask, Plan
from cosched.codegen.verify import verify_plan
from cosched.errors import PlanError

__all__ = ["check_plan"]


def check_plan(plan: Plan, where: str | Path = "plan") -> Plan:
    """Raise :class:`PlanError` unless the plan's fields agree with one another; returns it.

    Every id names something the plan has (tenants, tasks, events); events are numbered
    0..n-1, each recorded once, on the stream and after the task it says, and waited on by
    the tasks it lists; buffer sizes match their shapes; then
    :func:`~cosched.codegen.verify.verify_plan` proves that the streams order every
    dependency the buffers imply and cannot deadlock. ``where`` (the plan file) starts
    every message.
    """
    try:
        _check_tenants(plan)
        _check_tasks(plan)
        _check_events(plan)
        _check_buffers(plan)
        if plan.schema_version > 1:
            _check_devices(plan)
            _check_comms(plan)
        verify_plan(plan)
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None
    return plan


def _check_tenants(plan: Plan) -> None:
    tenants = plan.tenants
    if len(set(tenants)) != len(tenants):
        raise PlanError(f"models: tenants {list(tenants)} are not unique")
    index = plan.device.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise PlanError(f"device.index must be an integer >= 0, got {index!r}")
    for field_name, bindings in (("inputs", plan.inputs), ("outputs", plan.outputs)):
        seen: set[tuple[str, str]] = set()
        for i, b in enumerate(bindings):
            if b.tenant not in tenants:
                raise PlanError(f"{field_name}[{i}] ({b.name!r}): tenant {b.tenant!r} is none of the plan's "
                                f"tenants {list(tenants)}")
            if (b.tenant, b.name) in seen:
                raise PlanError(f"{field_name}[{i}]: tenant {b.tenant!r} binds {b.name!r} twice")
            seen.add((b.tenant, b.name))
            _check_dtype(b.dtype, f"{field_name}[{i}] ({b.tenant}:{b.name})")
    shapes = plan.import_options.input_shapes or {}
    for tenant, per_input in shapes.items():
        if tenant not in tenants or not isinstance(per_input, Mapping):
            raise PlanError(f"import_options.input_shapes: {tenant!r} is none of the plan's tenants "
                            f"{list(tenants)}, or its value is not an object of input shapes")
        for name, dims in per_input.items():
            if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                     and d >= 1 for d in dims):
                raise PlanError(f"import_options.input_shapes.{tenant}.{name}: expected a list of dims "
                                f">= 1, got {dims!r}")


def _check_tasks(plan: Plan) -> None:
    seen: dict[int, int] = {}
    owner: dict[str, int] = {}
    for i, task in enumerate(plan.tasks):
        if task.id in seen:
            raise PlanError(f"tasks[{i}]: task id {task.id} is used twice (also by tasks[{seen[task.id]}])")
        seen[task.id] = i
        if task.tenant not in plan.tenants:
            raise PlanError(f"tasks[{i}] (task {task.id}): tenant {task.tenant!r} is none of the plan's "
                            f"tenants {list(plan.tenants)}")
        for op in task.ops:
            if op in owner:
                raise PlanError(f"tasks[{i}] (task {task.id}): op {op!r} is already run by task {owner[op]}")
            owner[op] = task.id
    for task_id, (start, end) in plan.timeline.items():
        if task_id not in seen:
            raise PlanError(f"timeline: task {task_id} is none of the plan's tasks")
        if not (math.isfinite(start) and math.isfinite(end) and start <= end):
            raise PlanError(f"timeline: task {task_id} runs from {start} to {end} ms; expected finite "
                            "times, start <= end")


def _check_events(plan: Plan) -> None:
    """Events against the instructions: the runtime indexes events by id and trusts them."""
    ids = [e.id for e in plan.events]
    if ids != list(range(len(ids))):
        missing = sorted(set(range(max(ids, default=-1) + 1)) - set(ids))
        lack = f"event(s) {missing[:5]} missing; " if missing else ""
        raise PlanError(f"events: {lack}ids must be 0..{len(ids) - 1} in order, got {ids[:10]}")
    recorded: dict[int, tuple[int, int | None]] = {}
    waiters: dict[int, set[int]] = {}
    for s in plan.streams:
        last: int | None = None
        pending: list[int] = []
        for k, ins in enumerate(s.instructions):
            if ins.op == "run":
                last = ins.task
                for e in pending:
                    waiters.setdefault(e, set()).add(ins.task)  # type: ignore[arg-type]
                pending = []
                continue
            if ins.op == "send":  # checked against the transfers by _check_comms
                continue
            if ins.event is None or not 0 <= ins.event < len(ids):
                raise PlanError(f"streams[{s.id}].instructions[{k}]: {ins.op}s event {ins.event}, but "
                                f"events lists {len(ids)} event(s)")
            if ins.op == "wait":
                pending.append(ins.event)
            elif ins.event in recorded:
                raise PlanError(f"event {ins.event} is recorded twice (on streams {recorded[ins.event][0]} "
                                f"and {s.id})")
            else:
                recorded[ins.event] = (s.id, last)
    for i, e in enumerate(plan.events):
        if e.id not in recorded:
            raise PlanError(f"events[{i}]: no stream records event {e.id}")
        stream, after = recorded[e.id]
        if (stream, after) != (e.stream, e.after_task):
            raise PlanError(
                f"events[{i}]: says event {e.id} is recorded on stream {e.stream} after task "
                f"{e.after_task}, but the instructions record it on stream {stream} after "
                f"{'no task' if after is None else f'task {after}'}"
            )
        if set(e.waiters) != waiters.get(e.id, set()):
            raise PlanError(
                f"events[{i}]: lists waiters {sorted(e.waiters)} for event {e.id}, but the tasks that "
                f"wait on it are {sorted(waiters.get(e.id, set()))}"
            )


def _check_buffers(plan: Plan) -> None:
    tasks = {t.id for t in plan.tasks}
    for i, b in enumerate(plan.buffers):
        label = f"buffers[{i}] ({b.tensor!r})"
        if b.tenant not in plan.tenants:
            raise PlanError(f"{label}: tenant {b.tenant!r} is none of the plan's tenants {list(plan.tenants)}")
        named = [b.def_task, *b.use_tasks] + ([] if b.free_after is None else [b.free_after])
        unknown = sorted({t for t in named if t not in tasks})
        if unknown:
            raise PlanError(f"{label}: names task(s) {unknown}, none of the plan's tasks")
        itemsize = _check_dtype(b.dtype, label)
        expected = math.prod(b.shape) * itemsize
        if b.nbytes != expected:
            raise PlanError(f"{label}: nbytes is {b.nbytes}, but shape {list(b.shape)} of {b.dtype} "
                            f"holds {expected} bytes")


def _check_dtype(dtype: str, label: str) -> int:
    import numpy as np

    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        raise PlanError(f"{label}: dtype {dtype!r} is not a numpy dtype name") from None


def _check_devices(plan: Plan) -> None:
    ranks = [d.rank for d in plan.devices]
    if ranks != list(range(len(ranks))):
        raise PlanError(f"devices: ranks must be 0..{len(ranks) - 1} in order, got {ranks}")
    labels = [d.label for d in plan.devices]
    if len(set(labels)) != len(labels):
        raise PlanError(f"devices: {labels} name a device twice; each rank needs a device of its own")
    for s in plan.streams:
        if s.device >= len(ranks):
            raise PlanError(f"streams[{s.id}]: runs on device {s.device}, but devices lists ranks {ranks}")
    for d in plan.devices:
        label = f"devices[{d.rank}] ({d.label})"
        if d.kind != plan.device_kind:
            raise PlanError(f"{label}: kind {d.kind!r}, but the plan is compiled for {plan.device_kind!r} devices")
        for w in d.weights:
            expected = math.prod(w.shape) * _check_dtype(w.dtype, f"{label} weight {w.tensor!r}")
            if w.nbytes != expected:
                raise PlanError(f"{label}: weight {w.tensor!r} has nbytes {w.nbytes}, but shape "
                                f"{list(w.shape)} of {w.dtype} holds {expected} bytes")
        total = sum(w.nbytes for w in d.weights)
        if d.weight_bytes != total:
            raise PlanError(f"{label}: weight_bytes is {d.weight_bytes}, but its weights hold {total} bytes")
        limit = d.limit_bytes
        if limit is not None and d.needed_bytes > limit:
            raise PlanError(f"{label}: needs {d.needed_bytes} bytes ({d.weight_bytes} of weights + "
                            f"{d.peak_activation_bytes} of activations), over its limit of {limit} bytes")
        if (d.weights_file is None) != (d.weights_sha256 is None):
            raise PlanError(f"{label}: weights_file and weights_sha256 must be given together")
        if d.weights_file is not None and (PurePosixPath(d.weights_file).is_absolute()
                                           or ".." in PurePosixPath(d.weights_file).parts):
            raise PlanError(f"{label}: weights_file {d.weights_file!r} must be a path inside the plan directory")
    device_of_stream = {s.id: s.device for s in plan.streams}
    device_of_task = plan.device_of_task()
    for e in plan.events:
        for waiter in e.waiters:
            if device_of_task.get(waiter) != device_of_stream.get(e.stream):
                raise PlanError(f"events[{e.id}]: recorded on stream {e.stream} of device "
                                f"{device_of_stream.get(e.stream)}, but waited on by task {waiter} of device "
                                f"{device_of_task.get(waiter)}; events order tasks of one device only")


def _check_comms(plan: Plan) -> None:
    device = plan.device_of_task()
    comms = {}
    groups: dict[str, list[CommTask]] = {}
    for i, c in enumerate(plan.comms):
        label = f"comms[{i}] (task {c.task})"
        if c.task in comms:
            raise PlanError(f"{label}: task {c.task} is listed twice")
        if c.task not in device:
            raise PlanError(f"{label}: names none of the plan's tasks")
        if any(p >= len(plan.devices) for p in c.peers):
            raise PlanError(f"{label}: peers {list(c.peers)} name devices the plan does not list")
        comms[c.task] = c
        if c.op == "transfer":
            if len(c.peers) != 2 or c.peers[1] != device[c.task]:
                raise PlanError(f"{label}: a transfer's peers are (source, destination) and it runs on its "
                                f"destination, device {device[c.task]}; got peers {list(c.peers)}")
        else:
            groups.setdefault(c.group, []).append(c)
    sent: dict[int, int] = {}
    for s in plan.streams:
        for k, ins in enumerate(s.instructions):
            if ins.op != "send":
                continue
            where = f"streams[{s.id}].instructions[{k}]"
            transfer = comms.get(ins.task)  # type: ignore[arg-type]
            if transfer is None or transfer.op != "transfer":
                raise PlanError(f"{where}: sends for task {ins.task}, which is no transfer of the plan")
            if (s.device, ins.peer) != transfer.peers or transfer.peers[0] == transfer.peers[1]:
                raise PlanError(f"{where}: sends task {ins.task}'s input from device {s.device} to {ins.peer}, "
                                f"but the transfer's peers are {list(transfer.peers)}")
            if ins.task in sent:
                raise PlanError(f"{where}: task {ins.task}'s input is already sent on stream {sent[ins.task]}")
            sent[ins.task] = s.id  # type: ignore[index]
    for c in comms.values():
        if c.op == "transfer" and c.peers[0] != c.peers[1] and c.task not in sent:
            raise PlanError(f"transfer task {c.task} moves a tensor from device {c.peers[0]} to {c.peers[1]}, "
                            "but no stream sends it")
    for name, members in groups.items():
        world = len(members[0].peers)
        ranks = sorted(m.rank for m in members if m.rank is not None)
        if ranks != list(range(world)) or len(members) != world:
            raise PlanError(f"collective group {name!r} of world {world} has ranks {ranks}; it needs each "
                            f"of 0..{world - 1} once")
        if len(set(members[0].peers)) != world:
            raise PlanError(f"collective group {name!r} runs on devices {list(members[0].peers)}; its ranks "
                            "need distinct devices")
        for m in members:
            if (m.op, m.peers) != (members[0].op, members[0].peers) or device[m.task] != m.peers[m.rank]:  # type: ignore[index]
                raise PlanError(f"collective group {name!r}: task {m.task} ({m.op}, rank {m.rank}, peers "
                                f"{list(m.peers)}) runs on device {device[m.task]} and disagrees with its "
                                f"group ({members[0].op}, peers {list(members[0].peers)})")
