"""Local search on decoded schedules, evaluated in the simulator.

The priority decoder builds a schedule forward in time and cannot look ahead: it starts the
task with the highest priority now even when running a short chain first would let both
finish sooner. This pass repairs such decisions on a finished schedule. It edits the stream
lists directly and keeps an edit only when the simulated score (interference excess, SLO
excess, makespan; lower is better, compared in that order) strictly improves.

Moves, tried in a seeded order that starts with the tasks that waited longest after they
became ready (where the decoder lost time):

- *relocate*: move a run of one to :data:`MAX_SEGMENT` consecutive tasks of a stream to
  another position on the same stream, on another stream, or on a new stream (up to
  ``max_streams``); positions are taken within :data:`WINDOW` of the position that matches
  the run's start time, so the neighbourhood stays linear in the graph size;
- *exchange*: swap two tasks on different streams that started close together.

At a local optimum, each task that waited after becoming ready *jumps*: it is put before
the task that was running on a stream when it became ready (the short chain runs before the
long task). A jump alone usually makes things worse until later tasks follow, so it only
seeds a new climb, kept if that climb ends better than the local optimum (iterated local
search).

A move that breaks dependency order inside a stream is skipped before simulating; one that
deadlocks across streams is rejected by the simulator. Every simulation costs one
evaluation; the search stops at a local optimum or when ``evaluations`` run out. The result
is deterministic for a seed.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cosched.errors import ConfigError, ScheduleError
from cosched.search.costtable import CostTable
from cosched.search.schedule import Schedule
from cosched.search.simulator import SimResult, simulate

__all__ = ["MAX_SEGMENT", "WINDOW", "Improved", "improve"]

#: Longest run of consecutive stream tasks moved as one (a short chain moves together).
MAX_SEGMENT = 3
#: How many positions either side of the time-matched position a run may be inserted at.
WINDOW = 6

Score = Callable[[SimResult], tuple[float, ...]]
Lists = list[list[int]]


@dataclass(frozen=True)
class Improved:
    """The improved schedule, its simulation, and how many simulations the search spent."""

    schedule: Schedule
    sim: SimResult
    evaluations: int
    moves: int


def improve(
    table: CostTable,
    schedule: Schedule,
    score: Score,
    evaluations: int,
    max_streams: int,
    seed: int = 0,
) -> Improved:
    """Hill-climb from ``schedule`` under ``score``; see the module docstring.

    ``schedule`` must be a valid one-device schedule of ``table``'s graph with at most
    ``max_streams`` streams. Returns it unchanged (re-simulated) when no move improves.
    """
    if evaluations < 0 or max_streams < 1:
        raise ConfigError(
            f"improve needs evaluations >= 0 and max_streams >= 1; got evaluations="
            f"{evaluations}, max_streams={max_streams}"
        )
    if len(schedule.streams) > max_streams:
        raise ConfigError(
            f"schedule {schedule.method!r} has {len(schedule.streams)} streams, more than "
            f"max_streams={max_streams}"
        )
    search = _Search(table, score, max_streams, random.Random(seed))
    lists = [list(s) for s in schedule.streams]
    sim = simulate(schedule, table, record_pairs=False)
    lists, sim, moves = search.run(lists, sim, evaluations)
    meta = {"improve_moves": moves, "improve_evaluations": search.spent}
    result = Schedule.single(lists, schedule.method, **{**schedule.meta, **meta})
    return Improved(result, sim, search.spent, moves)


class _Search:
    def __init__(self, table: CostTable, score: Score, max_streams: int, rng: random.Random):
        self.table = table
        self.score = score
        self.k = max_streams
        self.rng = rng
        self.spent = 0

    def run(self, lists: Lists, sim: SimResult, budget: int) -> tuple[Lists, SimResult, int]:
        """Climb to a local optimum, then kick it with jump moves and climb again while it pays."""
        lists, sim, moves = self._climb(lists, sim, budget)
        lists, sim, kicks = self._descend(
            lists, sim, budget, self._jumps, lambda candidate, trial: self._climb(candidate, trial, budget)
        )
        return lists, sim, moves + kicks

    def _climb(self, lists: Lists, sim: SimResult, budget: int) -> tuple[Lists, SimResult, int]:
        """First-improvement hill climbing until no neighbour is better or the budget is spent."""
        return self._descend(lists, sim, budget, self._neighbours, lambda candidate, trial: (candidate, trial, 0))

    def _descend(
        self,
        lists: Lists,
        sim: SimResult,
        budget: int,
        candidates: Callable[[Lists, SimResult], Iterator[Lists]],
        settle: Callable[[Lists, SimResult], tuple[Lists, SimResult, int]],
    ) -> tuple[Lists, SimResult, int]:
        """Take the first of ``candidates`` that, simulated and then ``settle``d (a climb from
        it, or nothing), scores strictly better; repeat from there until none does or the
        budget is spent. Returns the lists, their simulation and the moves made (each taken
        candidate is one, plus the moves ``settle`` reports)."""
        best = self.score(sim)
        moves = 0
        improved = True
        while improved and self.spent < budget:
            improved = False
            for candidate in candidates(lists, sim):
                if self.spent >= budget:
                    break
                self.spent += 1
                trial = self._simulate(candidate)
                if trial is None:
                    continue
                after, trial, more = settle(candidate, trial)
                value = self.score(trial)
                if _better(value, best):
                    lists, sim, best = after, trial, value
                    moves += more + 1
                    improved = True
                    break
        return lists, sim, moves

    def _simulate(self, lists: Lists) -> SimResult | None:
        try:
            return simulate(Schedule.single(lists), self.table, record_pairs=False)
        except ScheduleError:
            return None  # the streams wait on each other in a cycle: not a schedule

    # ------------------------------------------------------------ moves
    def _neighbours(self, lists: Lists, sim: SimResult) -> Iterator[Lists]:
        """Candidate stream lists, the most delayed tasks' moves first."""
        where = {t: (s, i) for s, tasks in enumerate(lists) for i, t in enumerate(tasks)}
        delay = _delays(self.table, sim)
        jitter = {t: self.rng.random() for t in range(self.table.n)}
        order = sorted(range(self.table.n), key=lambda t: (-delay[t], jitter[t]))
        for t in order:
            s, i = where[t]
            for length in range(1, MAX_SEGMENT + 1):
                if i + length > len(lists[s]):
                    break
                yield from self._relocations(lists, sim, s, i, length)
            yield from self._exchanges(lists, sim, where, t)

    def _jumps(self, lists: Lists, sim: SimResult) -> Iterator[Lists]:
        """Each waiting task moved to run before whatever ran when it became ready.

        The look-ahead the decoder lacks: a task that waited (for a stream, or because it
        would interfere with a running task) is placed, on every stream, before the task
        that started last at or before its ready time. Such a jump usually makes the
        schedule worse until later tasks follow it, so it is only a starting point for
        :meth:`_climb`, never accepted on its own.
        """
        where = {t: (s, i) for s, tasks in enumerate(lists) for i, t in enumerate(tasks)}
        delay = _delays(self.table, sim)
        waiting = sorted((t for t in range(self.table.n) if delay[t] > 0), key=lambda t: (-delay[t], t))
        for t in waiting:
            s, i = where[t]
            ready = sim.start[t] - delay[t]
            rest = lists[s][:i] + lists[s][i + 1 :]
            for d in range(len(lists)):
                base = rest if d == s else lists[d]
                p = max(0, bisect_right([sim.start[u] for u in base], ready) - 1)
                low, high = self._legal_range(base, [t])
                if not low <= p <= high or (d == s and p == i):
                    continue
                out = [list(x) for x in lists]
                out[s] = rest
                out[d] = [*base[:p], t, *base[p:]]
                yield [x for x in out if x]

    def _relocations(self, lists: Lists, sim: SimResult, s: int, i: int, length: int) -> Iterator[Lists]:
        segment = lists[s][i : i + length]
        rest = lists[s][:i] + lists[s][i + length :]
        targets = list(range(len(lists))) + ([len(lists)] if len(lists) < self.k else [])
        for d in targets:
            base = rest if d == s else (lists[d] if d < len(lists) else [])
            here = _matched_position(base, sim, sim.start[segment[0]])
            low, high = self._legal_range(base, segment)
            for p in range(max(low, here - WINDOW), min(high, here + WINDOW) + 1):
                if d == s and p == i:
                    continue
                out = [list(x) for x in lists]
                if d == len(lists):
                    out.append([])
                out[s] = rest if d != s else rest[:p] + segment + rest[p:]
                if d != s:
                    out[d] = base[:p] + segment + base[p:]
                yield [x for x in out if x]

    def _exchanges(self, lists: Lists, sim: SimResult, where: dict, t: int) -> Iterator[Lists]:
        s, i = where[t]
        for d, tasks in enumerate(lists):
            if d == s or not tasks:
                continue
            j = _matched_position(tasks, sim, sim.start[t])
            for q in range(max(0, j - 1), min(len(tasks), j + 2)):
                u = tasks[q]
                out = [list(x) for x in lists]
                out[s][i], out[d][q] = u, t
                if self._stream_ok(out[s]) and self._stream_ok(out[d]):
                    yield out

    def _legal_range(self, base: list[int], segment: list[int]) -> tuple[int, int]:
        """Insert positions in ``base`` that keep every dependency inside it in order."""
        table = self.table
        inside = set(segment)
        low, high = 0, len(base)
        for p, u in enumerate(base):
            if any(u in table.preds[t] for t in segment):
                low = max(low, p + 1)
            if any(t in table.preds[u] for t in inside):
                high = min(high, p)
        return low, high

    def _stream_ok(self, tasks: list[int]) -> bool:
        later = set(tasks)
        for t in tasks:
            later.discard(t)
            if any(p in later for p in self.table.preds[t]):
                return False
        return True


def _delays(table: CostTable, sim: SimResult) -> list[float]:
    """How long each task waited after its last dependency finished."""
    return [
        sim.start[t] - max((sim.end[p] for p in table.preds[t]), default=0.0)
        for t in range(table.n)
    ]


def _matched_position(tasks: list[int], sim: SimResult, time: float) -> int:
    """The position in ``tasks`` (ordered by start) of the first task starting at or after ``time``."""
    starts = [sim.start[u] for u in tasks]
    return bisect_left(starts, time)


def _better(value: tuple[float, ...], best: tuple[float, ...]) -> bool:
    """Strictly better by more than rounding, compared lexicographically."""
    for a, b in zip(value, best, strict=True):
        tol = 1e-9 * max(abs(a), abs(b), 1e-12)
        if a < b - tol:
            return True
        if a > b + tol:
            return False
    return False
