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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

from cosched.errors import ConfigError
from cosched.ir.graph import frozen_mapping
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
    table: CostTable, knobs: DecoderKnobs, method: str = "decoder", record_pairs: bool = True,
    device_of: Sequence[int] | None = None, devices: int = 1, comm_ms: Mapping[int, float] | None = None,
) -> tuple[Schedule, SimResult]:
    """Decode ``knobs`` into a schedule and its simulated timeline.

    By default the schedule is for one device. With ``device_of`` (each task's device, of
    ``devices``) it spans several: every device gets ``knobs.streams`` compute streams, its
    tasks only go to its own streams, and tasks interfere only with tasks of their device;
    the communication tasks (``comm_ms``: their latencies) go to one communication stream
    per device that runs them.
    """
    return _Decoder(table, knobs, record_pairs, device_of, devices, comm_ms or {}).run(method)


class _Decoder:
    def __init__(self, table: CostTable, knobs: DecoderKnobs, record_pairs: bool,
                 device_of: Sequence[int] | None, devices: int, comm_ms: Mapping[int, float]) -> None:
        self.table = table
        self.knobs = knobs
        self.k = min(knobs.streams, table.n)
        self.devices = devices
        self.device_of = tuple(device_of) if device_of is not None else (0,) * table.n
        self.comm = comm_ms
        self.priority = _priorities(table, knobs)
        cut = median(table.intensity)
        self.compute = [i > cut for i in table.intensity]
        self.heaps: list[tuple[list[tuple[float, int]], list[tuple[float, int]]]] = [([], []) for _ in range(devices)]
        self.comm_heaps: list[list[tuple[float, int]]] = [[] for _ in range(devices)]
        self.assigned = [False] * table.n
        self.pending = [len(p) for p in table.preds]
        self.timeline = Timeline(table, record_pairs, self.k, device_of, comm_ms)
        # compute streams d * k .. d * k + k - 1 of each device d, then one communication stream per device
        n_streams = self.k * devices + (devices if comm_ms else 0)
        self.stream_device = [s // self.k if s < self.k * devices else s - self.k * devices for s in range(n_streams)]
        self.queues: list[list[int]] = [[] for _ in range(n_streams)]
        self.on_stream: list[int | None] = [None] * n_streams
        self.free_at = [0.0] * n_streams
        self.stream_of = [0] * table.n
        # Collectives: every device must meet them in one order (NCCL's rule, and what
        # lowering checks), so a group another device has started comes first on this device's
        # communication stream; groups enter ``started`` in the order their first rank starts.
        self.group_of: dict[int, str] = {}
        self.rank_on: dict[tuple[str, int], int] = {}  # (group, device) -> that device's rank task
        if comm_ms:
            graph = table.graph
            for task in graph.tasks:
                group = graph.op(task.ops[0]).attr("group") if task.id in comm_ms else None
                if group is not None:
                    self.group_of[task.id] = str(group)
                    self.rank_on[(str(group), self.device_of[task.id])] = task.id
        self.started: list[str] = []
        self.met = [0] * devices  # per device: how many of ``started`` it has met

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
        if self.devices == 1 and not self.comm:
            schedule = Schedule.single(self.queues, method, knobs=self.knobs.to_dict())
        else:
            per_device = [[q for s, q in enumerate(self.queues) if self.stream_device[s] == d and q]
                          for d in range(self.devices)]
            schedule = Schedule(tuple(tuple(tuple(q) for q in streams) for streams in per_device), method,
                                frozen_mapping({"knobs": self.knobs.to_dict()}))
        return schedule, timeline.result(method)

    def _push(self, t: int) -> None:
        if t in self.comm:
            heapq.heappush(self.comm_heaps[self.device_of[t]], (-self.priority[t], t))
        else:
            heapq.heappush(self.heaps[self.device_of[t]][self.compute[t]], (-self.priority[t], t))

    def _lane(self, s: int) -> tuple[int, bool]:
        """Stream ``s``'s device and whether it is a communication stream."""
        return self.stream_device[s], s >= self.k * self.devices

    def _takes(self, s: int, t: int) -> bool:
        device, comm = self._lane(s)
        return self.device_of[t] == device and (t in self.comm) == comm

    def _place(self, newly: list[int]) -> None:
        now = self.timeline.now
        free = [s for s in range(len(self.queues)) if self.on_stream[s] is None]
        stale = [s for s in free if self.free_at[s] < now]
        fresh = [s for s in free if self.free_at[s] >= now]
        exhausted: set[tuple[int, bool]] = set()  # lanes with nothing (more) to start now
        if stale and newly:
            # A stream idle since earlier may only take a task that became ready just now;
            # otherwise the simulator would start that task earlier than decided here.
            candidates = sorted(newly, key=lambda t: (-self.priority[t], t))
            for s in stale:
                if self._lane(s) in exhausted:
                    continue
                owed = self._owed_collective(self.stream_device[s]) if self._lane(s)[1] else None
                t = owed if owed is not None and owed in candidates else None if owed is not None else next(
                    (c for c in candidates if not self.assigned[c] and self._takes(s, c) and self._fits(c)), None)
                if t is None:
                    exhausted.add(self._lane(s))
                    continue
                self._start(t, s)
        exhausted.clear()
        for s in fresh:
            if self._lane(s) in exhausted:
                continue
            t = self._continuation(s)
            if t is None:
                t = self._pick(s)
            if t is None:
                exhausted.add(self._lane(s))
                continue
            self._start(t, s)

    def _continuation(self, s: int) -> int | None:
        """The next task of the chain stream ``s`` ran last, if it is ready, fits the guard and,
        with the ``w_chain`` bonus, is worth at least the best other ready task."""
        if self.knobs.w_chain <= 0.0 or not self.queues[s]:
            return None
        t = self.table.chain_next[self.queues[s][-1]]
        if t is None or self.assigned[t] or self.pending[t] or not self._takes(s, t) or not self._fits(t):
            return None
        best = max((-heap[0][0] for heap in self.heaps[self.stream_device[s]] if heap), default=-math.inf)
        return t if self.priority[t] + self.knobs.w_chain >= best else None

    def _owed_collective(self, device: int) -> int | None:
        """This device's rank of the earliest started collective group it has not met yet."""
        while self.met[device] < len(self.started):
            group = self.started[self.met[device]]
            rank = self.rank_on.get((group, device))
            if rank is not None and not self.assigned[rank]:
                return rank
            self.met[device] += 1
        return None

    def _start(self, t: int, s: int) -> None:
        group = self.group_of.get(t)
        if group is not None and group not in self.started:
            self.started.append(group)
        self.assigned[t] = True
        self.on_stream[s] = t
        self.stream_of[t] = s
        previous = self.queues[s][-1] if self.queues[s] else None
        self.queues[s].append(t)
        self.timeline.launch((t,), waited=self.free_at[s] < self.timeline.now,
                             cut=starts_segment(self.table, t, previous, self.stream_of, self.assigned))

    def _pick(self, s: int) -> int | None:
        """The best unassigned ready task of stream ``s``'s lane that passes the guard,
        scanning a bounded prefix (communication: the most urgent ready transfer or collective)."""
        device, comm = self._lane(s)
        if comm:
            owed = self._owed_collective(device)
            if owed is not None:
                return owed if not self.pending[owed] else None  # wait for it: no other may pass it
            heap = self.comm_heaps[device]
            while heap and self.assigned[heap[0][1]]:
                heapq.heappop(heap)
            return heapq.heappop(heap)[1] if heap else None
        heaps = self.heaps[device]
        rejected: list[tuple[int, tuple[float, int]]] = []
        chosen = None
        bonus_class = self._bonus_class(device)
        while len(rejected) < SCAN_LIMIT:
            best = None
            for cls, heap in enumerate(heaps):
                while heap and self.assigned[heap[0][1]]:
                    heapq.heappop(heap)
                if heap:
                    score = -heap[0][0] + (self.knobs.w_alternate if cls == bonus_class else 0.0)
                    if best is None or (score, -heap[0][1]) > best[0]:
                        best = ((score, -heap[0][1]), cls)
            if best is None:
                break
            entry = heapq.heappop(heaps[best[1]])
            if self._fits(entry[1]):
                chosen = entry[1]
                break
            rejected.append((best[1], entry))
        for cls, entry in rejected:
            heapq.heappush(heaps[cls], entry)
        return chosen

    def _running(self, device: int) -> list[int]:
        """Compute tasks running on ``device``."""
        running = self.timeline.remaining
        if self.devices == 1 and not self.comm:
            return list(running)
        return [t for t in running if self.device_of[t] == device and t not in self.comm]

    def _bonus_class(self, device: int) -> int | None:
        running = self._running(device)
        if not running or self.knobs.w_alternate == 0.0:
            return None
        n_compute = sum(self.compute[t] for t in running)
        n_memory = len(running) - n_compute
        if n_compute == n_memory:
            return None
        return 0 if n_compute > n_memory else 1

    def _fits(self, t: int) -> bool:
        guard = self.knobs.guard
        if t in self.comm or math.isinf(guard):
            return True
        running = self._running(self.device_of[t])
        if not running:
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
