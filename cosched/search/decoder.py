"""A parameterised priority list scheduler: knobs in, schedule out.

The decoder replays time with the simulator's own :class:`~cosched.search.simulator.Timeline`
and fills free streams with ready tasks by priority. It only starts a task at a moment the
simulator would start it too (on a stream that has just become free, or the moment the task
becomes ready), so the timeline it builds is exactly the simulated one, and its interference
guard is honoured by the final schedule.

Knobs (searched by the optimizer):

- ``streams``: how many streams, i.e. how many tasks may run at once;
- ``w_bottom``: weight of a task's bottom level (its longest path to the end, normalised);
- ``w_work``: weight of the task's own latency (longest first when positive);
- ``tenant_weight``: a priority bonus per tenant (by tenant index);
- ``w_alternate``: bonus for a task whose class (compute- or memory-bound, by arithmetic
  intensity against the graph's median) differs from the majority of running tasks;
- ``noise`` and ``noise_seed``: a seeded random perturbation of every priority, of size up
  to ``noise``, so the search can reach orders that no weighting expresses;
- ``guard``: the largest slowdown any running task may suffer when a task starts beside it;
  candidates that would break it wait (they run later, on the stream that frees up);
- ``w_chain``: bonus for the task that continues, on this stream, the chain of the task the
  stream ran last. Chains are a chain cover of the task DAG's transitive reduction (Nimble's
  stream assignment: the fewest chains, so the fewest synchronisations, for full
  concurrency; :attr:`CostTable.chain_next`). A tenant's chain then stays on one stream
  unless a task elsewhere is worth more than the bonus, and the simulator charges every
  wait the hop to another stream costs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

from cosched.errors import ConfigError
from cosched.search.costtable import CostTable
from cosched.search.schedule import Schedule
from cosched.search.simulator import SimResult, Timeline, starts_segment

__all__ = ["DecoderKnobs", "decode"]

#: How many candidates a free stream examines before it stays idle (keeps decoding linear).
SCAN_LIMIT = 12


@dataclass(frozen=True)
class DecoderKnobs:
    """The decoder's parameters; see the module docstring."""

    streams: int = 2
    w_bottom: float = 1.0
    w_work: float = 0.0
    w_alternate: float = 0.0
    w_chain: float = 0.0
    guard: float = math.inf
    tenant_weight: tuple[float, ...] = field(default=())
    noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ConfigError(f"decoder knob streams must be >= 1, got {self.streams}")
        if not self.guard >= 1.0:
            raise ConfigError(f"decoder knob guard must be >= 1.0 (a slowdown), got {self.guard}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tenant_weight"] = list(self.tenant_weight)
        data["guard"] = None if math.isinf(self.guard) else self.guard
        return data


def decode(
    table: CostTable, knobs: DecoderKnobs, method: str = "decoder", record_pairs: bool = True
) -> tuple[Schedule, SimResult]:
    """Decode ``knobs`` into a one-device schedule and its simulated timeline."""
    return _Decoder(table, knobs, record_pairs).run(method)


class _Decoder:
    def __init__(self, table: CostTable, knobs: DecoderKnobs, record_pairs: bool) -> None:
        self.table = table
        self.knobs = knobs
        self.k = min(knobs.streams, table.n)
        self.priority = _priorities(table, knobs)
        cut = median(table.intensity)
        self.compute = [i > cut for i in table.intensity]
        self.heaps: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])
        self.assigned = [False] * table.n
        self.pending = [len(p) for p in table.preds]
        self.timeline = Timeline(table, record_pairs, self.k)
        self.queues: list[list[int]] = [[] for _ in range(self.k)]
        self.on_stream: list[int | None] = [None] * self.k
        self.free_at = [0.0] * self.k
        self.stream_of = [0] * table.n

    def run(self, method: str) -> tuple[Schedule, SimResult]:
        table, timeline = self.table, self.timeline
        newly = [t for t in range(table.n) if self.pending[t] == 0]
        for t in newly:
            self._push(t)
        done = 0
        while True:
            self._place(newly)
            if done == table.n:
                break
            newly = []
            for t in timeline.advance():
                done += 1
                s = self.stream_of[t]
                self.on_stream[s] = None
                self.free_at[s] = timeline.now
                for succ in table.succs[t]:
                    self.pending[succ] -= 1
                    if self.pending[succ] == 0:
                        self._push(succ)
                        newly.append(succ)
        schedule = Schedule.single(self.queues, method, knobs=self.knobs.to_dict())
        return schedule, timeline.result(method)

    def _push(self, t: int) -> None:
        heapq.heappush(self.heaps[self.compute[t]], (-self.priority[t], t))

    def _place(self, newly: list[int]) -> None:
        now = self.timeline.now
        free = [s for s in range(self.k) if self.on_stream[s] is None]
        stale = [s for s in free if self.free_at[s] < now]
        fresh = [s for s in free if self.free_at[s] >= now]
        if stale and newly:
            # A stream idle since earlier may only take a task that became ready just now;
            # otherwise the simulator would start that task earlier than decided here.
            candidates = sorted(newly, key=lambda t: (-self.priority[t], t))
            for s in stale:
                t = next((c for c in candidates if not self.assigned[c] and self._fits(c)), None)
                if t is None:
                    break
                self._start(t, s)
        for s in fresh:
            t = self._continuation(s)
            if t is None:
                t = self._pick()
            if t is None:
                break
            self._start(t, s)

    def _continuation(self, s: int) -> int | None:
        """The next task of the chain stream ``s`` ran last, if it is ready, fits the guard and,
        with the ``w_chain`` bonus, is worth at least the best other ready task."""
        if self.knobs.w_chain <= 0.0 or not self.queues[s]:
            return None
        t = self.table.chain_next[self.queues[s][-1]]
        if t is None or self.assigned[t] or self.pending[t] or not self._fits(t):
            return None
        best = max((-heap[0][0] for heap in self.heaps if heap), default=-math.inf)
        return t if self.priority[t] + self.knobs.w_chain >= best else None

    def _start(self, t: int, s: int) -> None:
        self.assigned[t] = True
        self.on_stream[s] = t
        self.stream_of[t] = s
        previous = self.queues[s][-1] if self.queues[s] else None
        self.queues[s].append(t)
        self.timeline.launch((t,), waited=self.free_at[s] < self.timeline.now,
                             cut=starts_segment(self.table, t, previous, self.stream_of, self.assigned))

    def _pick(self) -> int | None:
        """The best unassigned ready task that passes the guard, scanning a bounded prefix."""
        rejected: list[tuple[int, tuple[float, int]]] = []
        chosen = None
        bonus_class = self._bonus_class()
        while len(rejected) < SCAN_LIMIT:
            best = None
            for cls, heap in enumerate(self.heaps):
                while heap and self.assigned[heap[0][1]]:
                    heapq.heappop(heap)
                if heap:
                    score = -heap[0][0] + (self.knobs.w_alternate if cls == bonus_class else 0.0)
                    if best is None or (score, -heap[0][1]) > best[0]:
                        best = ((score, -heap[0][1]), cls)
            if best is None:
                break
            entry = heapq.heappop(self.heaps[best[1]])
            if self._fits(entry[1]):
                chosen = entry[1]
                break
            rejected.append((best[1], entry))
        for cls, entry in rejected:
            heapq.heappush(self.heaps[cls], entry)
        return chosen

    def _bonus_class(self) -> int | None:
        running = self.timeline.remaining
        if not running or self.knobs.w_alternate == 0.0:
            return None
        n_compute = sum(self.compute[t] for t in running)
        n_memory = len(running) - n_compute
        if n_compute == n_memory:
            return None
        return 0 if n_compute > n_memory else 1

    def _fits(self, t: int) -> bool:
        guard = self.knobs.guard
        running = self.timeline.remaining
        if not running or math.isinf(guard):
            return True
        return max(self.table.slowdowns_together(frozenset(running) | {t}).values()) <= guard


def _priorities(table: CostTable, knobs: DecoderKnobs) -> list[float]:
    if knobs.tenant_weight and len(knobs.tenant_weight) != len(table.tenants):
        raise ConfigError(
            f"decoder knob tenant_weight has {len(knobs.tenant_weight)} entries for "
            f"{len(table.tenants)} tenants {table.tenants}"
        )
    cp = table.critical_path
    longest = max(table.latency)
    weights: Sequence[float] = knobs.tenant_weight or (0.0,) * len(table.tenants)
    jitter = [0.0] * table.n
    if knobs.noise:
        rng = random.Random(knobs.noise_seed)
        jitter = [knobs.noise * rng.random() for _ in range(table.n)]
    return [
        knobs.w_bottom * table.bottom_level[t] / cp
        + knobs.w_work * table.latency[t] / longest
        + weights[table.tenant_of[t]]
        + jitter[t]
        for t in range(table.n)
    ]
