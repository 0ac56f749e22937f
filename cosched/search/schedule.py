"""The schedule value: per device, streams that are ordered lists of task ids.

A :class:`Schedule` is plain data. It says which stream runs each task and in what order;
cross-stream dependencies are implied by the task graph (codegen turns them into events).
A task starts when the task before it on its stream has finished and all its dependencies
have finished. :meth:`Schedule.validate` proves that every task runs exactly once and that
this rule can never deadlock.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from cosched.errors import ScheduleError
from cosched.ir.graph import Graph, frozen_mapping

__all__ = ["SCHEDULE_VERSION", "Schedule"]

SCHEDULE_VERSION = 1

Streams = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Schedule:
    """``devices[d][s]`` is the ordered tuple of task ids that stream ``s`` of device ``d`` runs.

    ``method`` names what produced the schedule ("sequential", "optuna-tpe", ...); ``meta``
    holds small JSON-serialisable facts about how (decoder knobs, trial number).
    """

    devices: tuple[Streams, ...]
    method: str = ""
    meta: Mapping[str, Any] = field(default_factory=frozen_mapping, compare=False)

    @staticmethod
    def single(streams: Sequence[Sequence[int]], method: str = "", **meta: Any) -> Schedule:
        """A one-device schedule from a list of streams; empty streams are dropped."""
        kept = tuple(tuple(int(t) for t in s) for s in streams if len(s))
        return Schedule((kept,), method, frozen_mapping(meta))

    @property
    def streams(self) -> Streams:
        """The streams of a one-device schedule."""
        if len(self.devices) != 1:
            raise ScheduleError(
                f"schedule {self.method!r} spans {len(self.devices)} devices; "
                "use .devices to read a multi-device schedule"
            )
        return self.devices[0]

    @property
    def num_tasks(self) -> int:
        return sum(len(s) for streams in self.devices for s in streams)

    def stream_of(self) -> dict[int, tuple[int, int]]:
        """Map each task id to its ``(device, stream)``."""
        return {
            t: (d, s)
            for d, streams in enumerate(self.devices)
            for s, tasks in enumerate(streams)
            for t in tasks
        }

    def with_method(self, method: str, **meta: Any) -> Schedule:
        return Schedule(self.devices, method, frozen_mapping({**self.meta, **meta}))

    # ------------------------------------------------------------ validate
    def validate(self, graph: Graph, dag: nx.DiGraph | None = None) -> Schedule:
        """Check the schedule against ``graph``'s tasks; raise :class:`ScheduleError` naming tasks.

        Checks that every task appears exactly once, that no stream lists a task before one
        of its ancestors, and that the dependency edges plus the stream-order edges form an
        acyclic graph (otherwise streams wait on each other forever). ``dag`` may pass a
        precomputed ``graph.to_networkx("task")``. Returns the schedule, so it chains.
        """
        dag = graph.to_networkx("task") if dag is None else dag
        self._check_coverage(graph)
        combined = nx.DiGraph(dag.edges())
        combined.add_nodes_from(dag.nodes())
        for d, streams in enumerate(self.devices):
            for s, tasks in enumerate(streams):
                self._check_stream_order(dag, d, s, tasks)
                combined.add_edges_from(itertools.pairwise(tasks))
        try:
            cycle = nx.find_cycle(combined)
        except nx.NetworkXNoCycle:
            return self
        tasks = [u for u, _ in cycle]
        where = self.stream_of()
        named = ", ".join(f"task {t} ({_task_label(graph, t)}) on stream {where[t]}" for t in tasks)
        raise ScheduleError(
            f"schedule {self.method!r} deadlocks: streams wait on each other in a cycle through "
            f"{named}; reorder the streams so that every cross-stream dependency can finish first"
        )

    def _check_coverage(self, graph: Graph) -> None:
        known = {t.id for t in graph.tasks}
        seen: dict[int, tuple[int, int]] = {}
        for d, streams in enumerate(self.devices):
            for s, tasks in enumerate(streams):
                for t in tasks:
                    if t not in known:
                        raise ScheduleError(
                            f"schedule {self.method!r}: stream {(d, s)} lists task {t}, "
                            f"which is not a task of the graph (ids 0..{len(known) - 1})"
                        )
                    if t in seen:
                        raise ScheduleError(
                            f"schedule {self.method!r}: task {t} ({_task_label(graph, t)}) is "
                            f"listed twice, on stream {seen[t]} and on stream {(d, s)}; "
                            "each task must run exactly once"
                        )
                    seen[t] = (d, s)
        missing = sorted(known - seen.keys())
        if missing:
            shown = ", ".join(f"{t} ({_task_label(graph, t)})" for t in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ScheduleError(
                f"schedule {self.method!r} does not run tasks {shown}{more}; "
                "every task must be on exactly one stream"
            )

    def _check_stream_order(self, dag: nx.DiGraph, d: int, s: int, tasks: Sequence[int]) -> None:
        position = {t: i for i, t in enumerate(tasks)}
        for i, t in enumerate(tasks):
            for p in dag.predecessors(t):
                j = position.get(p)
                if j is not None and j > i:
                    raise ScheduleError(
                        f"schedule {self.method!r}: stream {(d, s)} lists task {t} at position "
                        f"{i} before task {p} at position {j}, but task {t} depends on task {p}"
                    )

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule_version": SCHEDULE_VERSION,
            "method": self.method,
            "meta": dict(self.meta),
            "devices": [[list(s) for s in streams] for streams in self.devices],
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Schedule:
        version = data.get("schedule_version")
        if version != SCHEDULE_VERSION:
            raise ScheduleError(
                f"schedule data has schedule_version {version!r}; expected {SCHEDULE_VERSION}"
            )
        try:
            devices = tuple(
                tuple(tuple(int(t) for t in s) for s in streams) for streams in data["devices"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScheduleError(
                f"schedule data must hold 'devices': a list of lists of task-id lists ({exc})"
            ) from None
        return Schedule(devices, str(data.get("method", "")), frozen_mapping(data.get("meta", {})))


def _task_label(graph: Graph, task_id: int) -> str:
    task = graph.task(task_id)
    return task.name or f"{task.tenant}:{task.ops[0] if task.ops else '?'}"
