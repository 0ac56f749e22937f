"""Exact minimum-makespan schedules for small graphs: the yardstick for the search.

Under the simulator's rule a task starts when its stream is free and its dependencies are
done, so every start happens at time 0 or at some task's finish. The search walks those
events. At each one it decides which ready tasks start now, under one constraint that keeps
the timeline identical to the simulated one: a task that became ready before now may only
start on a stream that has just become free (on a stream idle since earlier, the simulator
would have started it earlier). Streams are interchangeable, so a decision is a *set* of
tasks, not an assignment, which removes the symmetry between streams.

Branch and bound prunes with a lower bound (remaining critical path; remaining work spread
over all streams) and memoises, per state, the best finishing time proven from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

from cosched.errors import ConfigError
from cosched.search.costtable import CostTable
from cosched.search.schedule import Schedule
from cosched.search.simulator import SimResult, simulate

__all__ = ["MAX_EXACT_STREAMS", "MAX_EXACT_TASKS", "ExactResult", "optimum"]

MAX_EXACT_TASKS = 16
MAX_EXACT_STREAMS = 4


@dataclass(frozen=True)
class ExactResult:
    """The best schedule found; ``proven`` is False if the node budget ran out first."""

    schedule: Schedule
    sim: SimResult
    makespan: float
    proven: bool
    nodes: int


@dataclass
class _State:
    now: float
    remaining: dict[int, float]
    pending: list[int]
    old: frozenset[int]
    new: frozenset[int]
    fresh: tuple[int, ...]
    free: tuple[int, ...]
    queues: tuple[tuple[int, ...], ...]
    on: dict[int, int]
    done: frozenset[int]


def optimum(
    table: CostTable,
    streams: int = 2,
    threshold: float = math.inf,
    node_limit: int = 2_000_000,
) -> ExactResult:
    """The minimum-makespan schedule on up to ``streams`` streams.

    With a finite ``threshold`` only schedules in which no running task's slowdown exceeds it
    are allowed (the optimizer's interference constraint). Graphs are limited to
    :data:`MAX_EXACT_TASKS` tasks and :data:`MAX_EXACT_STREAMS` streams.
    """
    if table.n > MAX_EXACT_TASKS or not 1 <= streams <= MAX_EXACT_STREAMS:
        raise ConfigError(
            f"exact search handles at most {MAX_EXACT_TASKS} tasks on 1..{MAX_EXACT_STREAMS} "
            f"streams; got {table.n} tasks on {streams} streams"
        )
    search = _Search(table, min(streams, table.n), threshold, node_limit)
    best = search.run()
    schedule = Schedule.single(best, "exact", max_streams=streams)
    sim = simulate(schedule, table)
    return ExactResult(schedule, sim, sim.makespan, not search.exhausted, search.nodes)


class _Search:
    def __init__(self, table: CostTable, k: int, threshold: float, node_limit: int) -> None:
        self.table = table
        self.k = k
        self.threshold = threshold
        self.node_limit = node_limit
        self.nodes = 0
        self.exhausted = False
        self.best = math.inf
        self.best_queues: tuple[tuple[int, ...], ...] = ()
        self.memo: dict[tuple, float] = {}

    def run(self) -> tuple[tuple[int, ...], ...]:
        t = self.table
        roots = frozenset(i for i in range(t.n) if not t.preds[i])
        everyone = tuple(range(self.k))
        start = _State(
            0.0, {}, [len(p) for p in t.preds], frozenset(), roots, everyone, everyone,
            ((),) * self.k, {}, frozenset(),
        )
        self._decide(start)
        return self.best_queues

    def _bound(self, s: _State) -> float:
        t = self.table
        bl = t.bottom_level
        path = max((bl[i] for i in s.old | s.new), default=0.0)
        for i, rem in s.remaining.items():
            path = max(path, rem + max((bl[j] for j in t.succs[i]), default=0.0))
        unstarted = t.total_work - sum(t.latency[i] for i in s.done) - sum(
            t.latency[i] - rem for i, rem in s.remaining.items()
        )
        return s.now + max(path, unstarted / self.k)

    def _key(self, s: _State) -> tuple:
        running = tuple(sorted((i, round(r, 9)) for i, r in s.remaining.items()))
        return (s.done, running, s.old, s.new, len(s.fresh), len(s.free))

    def _decide(self, s: _State) -> None:
        self.nodes += 1
        if self.nodes > self.node_limit:
            self.exhausted = True
            return
        if self._bound(s) >= self.best * (1 - 1e-12):
            return
        key = self._key(s)
        known = self.memo.get(key)
        if known is not None and s.now + known >= self.best * (1 - 1e-12):
            return
        for chosen in self._choices(s):
            child = self._launch(s, chosen)
            if child is not None:
                self._advance(child)
        self.memo[key] = max(known or 0.0, self.best - s.now)

    def _choices(self, s: _State) -> list[tuple[int, ...]]:
        """Sets of ready tasks that may start now, most promising first."""
        ready = sorted(s.old | s.new, key=lambda i: (-self.table.bottom_level[i], i))
        out = []
        for size in range(min(len(s.free), len(ready)), -1, -1):
            if size == 0 and not s.remaining:
                break
            for combo in combinations(ready, size):
                if sum(1 for i in combo if i in s.old) <= len(s.fresh):
                    out.append(combo)
        return out

    def _launch(self, s: _State, chosen: tuple[int, ...]) -> _State | None:
        olds = [i for i in chosen if i in s.old]
        news = [i for i in chosen if i not in s.old]
        fresh = list(s.fresh)
        stale = [x for x in s.free if x not in s.fresh]
        slots = fresh[: len(olds)] + (fresh[len(olds) :] + stale)[: len(news)]
        queues = list(s.queues)
        on = dict(s.on)
        remaining = dict(s.remaining)
        for task, stream in zip(olds + news, slots, strict=True):
            queues[stream] = (*queues[stream], task)
            on[task] = stream
            remaining[task] = self.table.latency[task]
        if not self._within_threshold(remaining):
            return None
        used = set(slots)
        return _State(
            s.now, remaining, s.pending, s.old - set(chosen), s.new - set(chosen),
            (), tuple(x for x in s.free if x not in used), tuple(queues), on, s.done,
        )

    def _within_threshold(self, remaining: dict[int, float]) -> bool:
        if math.isinf(self.threshold) or len(remaining) < 2:
            return True
        together = frozenset(remaining)
        return all(self.table.slowdown(i, together - {i}) <= self.threshold for i in together)

    def _advance(self, s: _State) -> None:
        t = self.table
        together = frozenset(s.remaining)
        factor = {i: t.slowdown(i, together - {i}) for i in together}
        dt = min(s.remaining[i] * factor[i] for i in together)
        now = s.now + dt
        tol = 1e-9 * now + 1e-12
        remaining, finished = {}, []
        for i, rem in s.remaining.items():
            left = rem * factor[i] - dt
            if left <= tol:
                finished.append(i)
            else:
                remaining[i] = left / factor[i]
        pending = list(s.pending)
        newly = set()
        for i in finished:
            for j in t.succs[i]:
                pending[j] -= 1
                if pending[j] == 0:
                    newly.add(j)
        done = s.done | set(finished)
        if len(done) == t.n:
            if now < self.best:
                self.best, self.best_queues = now, s.queues
            return
        if not self._within_threshold(remaining):
            return
        fresh = tuple(sorted(s.on[i] for i in finished))
        child = _State(
            now, remaining, pending, s.old | s.new, frozenset(newly), fresh,
            tuple(sorted(s.free + fresh)), s.queues, s.on, done,
        )
        self._decide(child)
