"""Writing task timings measured in real plan runs back into the profile store.

A profiled plan run (``Executor.run(inputs, profile=True)``) gives every task's start and
end. Those intervals become profile records the cost model can be refit on:

- a task that no other task overlapped ran **alone**: a :class:`StandaloneRecord`;
- two tasks that overlapped each other for most of both their lifetimes (at least
  ``MUTUAL_OVERLAP`` of each one's duration), with no third task overlapping either that
  much, ran as a **co-run pair**: a :class:`CorunGroup` of two;
- every other task overlapped a changing set of tasks, which no record describes
  faithfully, and is left out (counted in the summary).

Across several runs, each record is the median over the runs that classified it the same
way. The plan's worker threads per stream are recorded as each member's threads.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import task_features, task_signature
from cosched.costmodel.store import CorunGroup, ProfileStore, StandaloneRecord
from cosched.errors import ProfileError
from cosched.ir.graph import Graph

__all__ = ["MUTUAL_OVERLAP", "Interval", "WriteBack", "records_from_runs", "write_back"]

#: Share of a task's duration another task must overlap to count as its co-runner.
MUTUAL_OVERLAP = 0.5


class Interval(Protocol):
    """One task's measured interval in a run (the runtime's ``TaskTiming`` fits)."""

    task: int
    stream: int
    start_us: float
    end_us: float

    @property
    def duration_ms(self) -> float: ...


@dataclass(frozen=True)
class WriteBack:
    """What a write-back produced: the records, and how many task samples were left out."""

    standalone: tuple[StandaloneRecord, ...]
    groups: tuple[CorunGroup, ...]
    skipped: int


def _overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a.end_us, b.end_us) - max(a.start_us, b.start_us))


def _classify(run: Sequence[Interval]) -> tuple[list[Interval], list[tuple[Interval, Interval]], int]:
    """Split one run's timings into lone tasks, mutual pairs, and the number left out."""
    partners: dict[int, list[Interval]] = {}
    for t in run:
        span = max(t.end_us - t.start_us, 1e-9)
        partners[t.task] = [
            o for o in run if o is not t and _overlap(t, o) >= MUTUAL_OVERLAP * span
        ]
    touched = {t.task: any(_overlap(t, o) > 0 for o in run if o is not t) for t in run}
    alone = [t for t in run if not touched[t.task]]
    pairs: list[tuple[Interval, Interval]] = []
    seen: set[int] = set()
    for t in run:
        mine = partners[t.task]
        if len(mine) == 1 and t.task not in seen:
            other = mine[0]
            if [p.task for p in partners[other.task]] == [t.task]:
                pairs.append((t, other))
                seen.update((t.task, other.task))
    return alone, pairs, len(run) - len(alone) - 2 * len(pairs)


def records_from_runs(
    graph: Graph, runs: Sequence[Sequence[Interval]], threads: Mapping[int, int]
) -> WriteBack:
    """Records from profiled runs (each a sequence of ``TaskTiming``); ``threads`` maps a
    stream id to its worker's intra-op threads. ``graph`` must carry analysed op costs."""
    lone: dict[int, list[float]] = defaultdict(list)
    paired: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    stream_of: dict[int, int] = {}
    skipped = 0
    for run in runs:
        alone, pairs, left_out = _classify(run)
        skipped += left_out
        for t in alone:
            lone[t.task].append(t.duration_ms)
        for a, b in pairs:
            first, second = sorted((a, b), key=lambda x: x.task)
            paired[(first.task, second.task)].append((first.duration_ms, second.duration_ms))
        stream_of.update({t.task: t.stream for t in run})
    standalone = []
    for task_id, samples in sorted(lone.items()):
        task = graph.task(task_id)
        standalone.append(StandaloneRecord(
            task_signature(graph, task), task_features(graph, task), statistics.median(samples),
            repeats=len(samples), label=f"plan-run:{task.name or task_id}",
        ))
    groups = []
    for (ta, tb), pair_samples in sorted(paired.items()):
        la = statistics.median(s[0] for s in pair_samples)
        lb = statistics.median(s[1] for s in pair_samples)
        groups.append(CorunGroup(
            (task_signature(graph, graph.task(ta)), task_signature(graph, graph.task(tb))),
            (la, lb), max(la, lb), (threads.get(stream_of[ta], 1), threads.get(stream_of[tb], 1)),
        ))
    return WriteBack(tuple(standalone), tuple(groups), skipped)


def write_back(
    store: ProfileStore, device: DeviceSpec, graph: Graph, runs: Sequence[Sequence[Interval]],
    threads: Mapping[int, int],
) -> WriteBack:
    """Append the records of ``runs`` to ``store`` under ``device``; returns what was written."""
    if not runs or not any(runs):
        raise ProfileError("no profiled run to write back: run the plan with profile=True first")
    result = records_from_runs(graph, runs, threads)
    store.add_device(device)
    store.add_standalone(device, list(result.standalone))
    store.add_groups(device, list(result.groups))
    return result
