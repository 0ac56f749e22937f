"""Event-driven simulation of a schedule under a cost model.

Each stream runs its tasks in order. A task starts when the task before it on its stream and
all its dependencies have finished. A running task progresses at rate
``1 / (standalone latency x slowdown)``, where the slowdown is predicted for the set of tasks
running beside it; rates are recomputed whenever that set changes. All tenants' queries
arrive at time 0, so a tenant's completion time is the end of its last task.

What the runtime pays is charged too (:class:`~cosched.search.costtable.CostTable`'s
runtime costs): a task's standalone latency is the one at the intra-op threads a plan of
that many streams leaves each stream, dispatch included; and a stream that sat idle waiting
for another stream's task pays ``wait_ms`` (a thread wake-up on CPU, an event on CUDA)
before its next task, as extra work ahead of that task.

:class:`Timeline` is the shared engine: the simulator drives it from fixed stream orders,
the decoder drives it from a priority policy, so both see exactly the same timing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cosched.errors import ScheduleError
from cosched.ir.graph import frozen_mapping
from cosched.search.costtable import CostTable
from cosched.search.schedule import Schedule

__all__ = ["Interference", "SimResult", "Timeline", "simulate"]


@dataclass(frozen=True)
class Interference:
    """Two tasks that overlapped and the worst slowdown each suffered during the overlap."""

    a: int
    b: int
    slowdown_a: float
    slowdown_b: float

    @property
    def worst(self) -> float:
        return max(self.slowdown_a, self.slowdown_b)


@dataclass(frozen=True)
class SimResult:
    """Predicted timeline of a schedule: times in ms from the moment all queries arrive."""

    makespan: float
    tenant_completion: Mapping[str, float]
    start: tuple[float, ...]
    end: tuple[float, ...]
    pairs: tuple[Interference, ...]
    worst_slowdown: tuple[float, ...]
    method: str = ""

    def excess(self, threshold: float) -> float:
        """Sum over tasks of how far their worst slowdown exceeds ``threshold`` (0: none)."""
        return sum(max(0.0, w - threshold) for w in self.worst_slowdown)

    def violations(self, threshold: float) -> tuple[Interference, ...]:
        """Overlapping pairs where either member's slowdown exceeds ``threshold``.

        Empty when the simulation ran without ``record_pairs``; use :meth:`excess` then.
        """
        return tuple(p for p in self.pairs if p.worst > threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "makespan_ms": self.makespan,
            "tenant_completion_ms": dict(self.tenant_completion),
            "start_ms": list(self.start),
            "end_ms": list(self.end),
            "pairs": [[p.a, p.b, p.slowdown_a, p.slowdown_b] for p in self.pairs],
            "worst_slowdown": list(self.worst_slowdown),
        }


class Timeline:
    """Running tasks, their remaining work and rates; advances from one finish to the next."""

    def __init__(self, table: CostTable, record_pairs: bool = True, streams: int | Sequence[int] = 1,
                 device_of: Sequence[int] | None = None, comm_ms: Mapping[int, float] | None = None) -> None:
        """``streams``: compute streams of the device, or of each device (a task's latency is
        the one at the threads its device's stream count leaves it). ``device_of``: each task's
        device (default: all on one); tasks on different devices never slow each other down.
        ``comm_ms``: latencies of the communication tasks, which run on their devices'
        communication streams at exactly that latency and neither suffer nor inflict
        interference."""
        self.table = table
        self.record_pairs = record_pairs
        self.device_of = tuple(device_of) if device_of is not None else None
        self.comm_ms = dict(comm_ms or {})
        if isinstance(streams, int):
            latency = table.latency_at(streams)
            self.boundary = table.boundary_at(streams)
        else:
            devices = self.device_of or (0,) * table.n
            per = {k: (table.latency_at(k), table.boundary_at(k)) for k in set(streams)}
            latency = tuple(per[streams[devices[t]]][0][t] for t in range(table.n))
            self.boundary = tuple(per[streams[devices[t]]][1][t] for t in range(table.n))
        if self.comm_ms:
            latency = tuple(self.comm_ms.get(t, ms) for t, ms in enumerate(latency))
        self.latency = latency
        self.worst = [1.0] * table.n
        self.now = 0.0
        self.remaining: dict[int, float] = {}
        self.factor: Mapping[int, float] = {}
        self.start = [math.nan] * table.n
        self.end = [math.nan] * table.n
        self._pairs: dict[tuple[int, int], tuple[float, float]] = {}
        self._dirty = False

    def launch(self, tasks: Iterable[int], waited: bool = False, cut: bool = False) -> None:
        """Start ``tasks`` now; ``waited``: their stream sat idle waiting for another stream,
        so each pays the table's ``wait_ms`` first; ``cut``: each starts a new segment of
        its stream and, unless it is where its tenant starts (no predecessor), pays its
        tenant's boundary cost (:meth:`CostTable.boundary_at`): a tenant cut in two pays once."""
        latency = self.latency
        extra = self.table.wait_ms if waited else 0.0
        preds = self.table.preds
        for t in tasks:
            if t in self.comm_ms:  # a communication task costs what the communication model says
                self.remaining[t] = latency[t]
            else:
                self.remaining[t] = latency[t] + extra + (self.boundary[t] if cut and preds[t] else 0.0)
            self.start[t] = self.now
            self._dirty = True

    def refresh(self) -> None:
        """Recompute every running task's slowdown for the current running set."""
        if not self._dirty:
            return
        self._dirty = False
        running = frozenset(self.remaining)
        table = self.table
        if len(running) == 1:
            (t,) = running
            self.factor = {t: 1.0}
            return
        if self.device_of is None and not self.comm_ms:
            self.factor = table.slowdowns_together(running)
        else:  # interference only within a device; communication tasks take no part
            groups: dict[int, set[int]] = {}
            for t in running:
                if t not in self.comm_ms:
                    groups.setdefault(self.device_of[t] if self.device_of is not None else 0, set()).add(t)
            factor = {t: 1.0 for t in running if t in self.comm_ms}
            for group in groups.values():
                factor.update(table.slowdowns_together(frozenset(group)) if len(group) > 1 else dict.fromkeys(group, 1.0))
            self.factor = factor
        worst = self.worst
        for t, f in self.factor.items():
            if f > worst[t]:
                worst[t] = f
        if not self.record_pairs:
            return
        ordered = sorted(running)
        pairs = self._pairs
        for i, a in enumerate(ordered):
            fa = self.factor[a]
            for b in self.co_runners(a, ordered[i + 1 :]) if self.device_of or self.comm_ms else ordered[i + 1 :]:
                fb = self.factor[b]
                old = pairs.get((a, b))
                pairs[(a, b)] = (fa, fb) if old is None else (max(old[0], fa), max(old[1], fb))

    def co_runners(self, t: int, running: Iterable[int]) -> list[int]:
        """The tasks of ``running`` that can slow ``t`` down: compute tasks of its device."""
        if t in self.comm_ms:
            return []
        device = self.device_of[t] if self.device_of is not None else 0
        return [u for u in running if u != t and u not in self.comm_ms
                and (self.device_of is None or self.device_of[u] == device)]

    def advance(self) -> list[int]:
        """Move time to the next finish; return the tasks that finished, in id order."""
        self.refresh()
        factor = self.factor
        remaining = self.remaining
        dt = min(remaining[t] * factor[t] for t in remaining)
        tol = 1e-9 * (self.now + dt) + 1e-12
        self.now += dt
        done = []
        for t in list(remaining):
            f = factor[t]
            left = remaining[t] * f - dt
            if left <= tol:
                done.append(t)
                del remaining[t]
                self.end[t] = self.now
            else:
                remaining[t] = left / f
        self._dirty = True
        done.sort()
        return done

    def result(self, method: str = "") -> SimResult:
        table = self.table
        completion = [0.0] * len(table.tenants)
        for t, e in enumerate(self.end):
            i = table.tenant_of[t]
            completion[i] = max(completion[i], e)
        pairs = tuple(Interference(a, b, fa, fb) for (a, b), (fa, fb) in sorted(self._pairs.items()))
        return SimResult(
            makespan=max(self.end),
            tenant_completion=frozen_mapping(zip(table.tenants, completion, strict=True)),
            start=tuple(self.start),
            end=tuple(self.end),
            pairs=pairs,
            worst_slowdown=tuple(self.worst),
            method=method,
        )


def simulate(schedule: Schedule, table: CostTable, record_pairs: bool = True,
             comm_ms: Mapping[int, float] | None = None) -> SimResult:
    """Simulate ``schedule`` over ``table``'s cost model.

    ``record_pairs=False`` skips the per-pair interference record (quadratic in the number
    of concurrent tasks) and keeps only each task's worst slowdown, for search inner loops.
    A multi-device schedule runs its devices side by side: tasks interfere only with tasks of
    their own device, and the communication tasks (``comm_ms``: their latencies) take no
    part in interference (see :class:`Timeline`).

    Raises :class:`ScheduleError` if the schedule does not run every task exactly once or if
    its streams deadlock (call :meth:`Schedule.validate` for a full diagnosis).
    """
    comm = dict(comm_ms or {})
    placed = [(d, s) for d, device in enumerate(schedule.devices) for s in device if s]
    streams = [s for _, s in placed]
    _check_covers(schedule, streams, table.n)
    device_of: list[int] | None = None
    per_device: int | tuple[int, ...] = len(streams)
    if len(schedule.devices) > 1 or comm:
        device_of = [0] * table.n
        for d, tasks in placed:
            for t in tasks:
                device_of[t] = d
        per_device = tuple(max(1, sum(1 for d2, s in placed if d2 == d and any(t not in comm for t in s)))
                           for d in range(len(schedule.devices)))  # each device's compute streams
    pending = [len(p) for p in table.preds]
    head = [0] * len(streams)
    busy: list[int | None] = [None] * len(streams)
    free_at = [0.0] * len(streams)
    stream_of = [0] * table.n
    for s, tasks in enumerate(streams):
        for t in tasks:
            stream_of[t] = s
    timeline = Timeline(table, record_pairs, per_device, device_of, comm)
    finished = 0

    def launch_startable() -> None:
        for s, tasks in enumerate(streams):
            if busy[s] is None and head[s] < len(tasks) and pending[tasks[head[s]]] == 0:
                t = busy[s] = tasks[head[s]]
                timeline.launch((t,), waited=free_at[s] < timeline.now,
                                cut=starts_segment(table, t, tasks[head[s] - 1] if head[s] else None, stream_of))

    launch_startable()
    while finished < table.n:
        if not timeline.remaining:
            stuck = [tasks[head[s]] for s, tasks in enumerate(streams) if head[s] < len(tasks)]
            raise ScheduleError(
                f"schedule {schedule.method!r} deadlocks at {timeline.now:.3f} ms: stream heads "
                f"{stuck} all wait on tasks that never run"
            )
        for t in timeline.advance():
            s = stream_of[t]
            busy[s] = None
            free_at[s] = timeline.now
            head[s] += 1
            finished += 1
            for succ in table.succs[t]:
                pending[succ] -= 1
        launch_startable()
    return timeline.result(schedule.method)


def starts_segment(table: CostTable, task: int, previous: int | None, stream_of: Sequence[int],
                   placed: Sequence[bool] | None = None) -> bool:
    """Whether ``task``, run after ``previous`` on its stream, starts a new segment (see
    :func:`cosched.codegen.steps.segments`): first on its stream, another tenant's than the
    task before it, or ordered by an event (a dependency across streams, either side).
    ``placed`` (default: all) says which tasks ``stream_of`` already places; others do not cut."""
    if previous is None or table.tenant_of[previous] != table.tenant_of[task]:
        return True
    s = stream_of[task]
    return (any(stream_of[p] != s for p in table.preds[task] if placed is None or placed[p])
            or any(stream_of[q] != s for q in table.succs[previous] if placed is None or placed[q]))


def _check_covers(schedule: Schedule, streams: list[tuple[int, ...]], n: int) -> None:
    flat = [t for s in streams for t in s]
    if len(flat) != n or set(flat) != set(range(n)):
        raise ScheduleError(
            f"schedule {schedule.method!r} lists {len(flat)} task entries ({len(set(flat))} "
            f"distinct) for a graph of {n} tasks; validate it with Schedule.validate(graph)"
        )
