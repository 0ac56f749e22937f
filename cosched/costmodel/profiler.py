"""The profiler: standalone latency of every distinct task signature, then co-run groups.

Standalone: each signature is measured once (identical layers share one), in a seeded shuffled
order so that a run cut short by its budget still covers every model and size.

Co-run groups of k = 2..4 tasks are *stratified*: signatures are put in strata by bound
(compute-bound or memory-bound by their roofline shares) and size (latency tertile); the
sizes take turns (so each k gets as many groups, although there are 21 multisets of strata
for k = 2 and 126 for k = 4), and each k cycles through every multiset of strata before
starting again, so that compute x memory mixes and small x large pairings are all covered;
a member is drawn at random inside its stratum. On CPU each member runs on its own thread with
``device.threads_per_member(k)`` threads; on CUDA on its own stream.

Standalone and co-run latencies follow the definitions of :mod:`cosched.costmodel.runner`:
median per-execution latency on a worker thread of its own. A standalone signature is
measured with :func:`standalone_threads` threads, the count each member of the smallest
co-run group (and each stream of a two-stream plan) gets, so that a member's co-run latency
over its standalone latency is interference (plus, for larger groups, fewer threads), never
a change of thread count or timing method between the two measurements.

Machine load drifts (a shared CPU's other users come and go, and latencies of a few
microseconds double with it), so during the co-run phase one signature is measured alone
again after every ``restandalone_every`` groups, round robin, and the store combines a
signature's measurements by their median: standalone and co-run samples then span the same
period of load (0 turns this off).

Windows: a co-run group is measured over ``corun_window_s``, or ``oversubscribed_window_s``
when its members' threads outnumber the cores. Then the OS scheduler decides which member
shares a core with which, and that changes within a window: a 3-group of 2-core members
varied up to 2x from one 0.15 s window to the next (mean deviation from the median 0.18),
and 0.05-0.12 over 0.6 s windows.

Budgets: ``budget_s`` of wall time in all (``standalone_share`` of it at most for standalone),
and optional caps on the number of signatures and of groups.

Top-up: ``Profiler.profile(..., top_up=True)`` extends a store that already covers most of a
graph. Every co-run group then holds one of the signatures measured alone in this run (taken
in turn), and its other members' strata cycle through every mix as above, so the budget goes
to the interference of what is new rather than to groups the store has seen.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import task_demand_from_features, task_features, task_signature
from cosched.costmodel.runner import TaskRunner, corun_cpu, corun_cuda, time_standalone
from cosched.costmodel.store import CorunGroup, ProfileData, ProfileStore, StandaloneRecord
from cosched.errors import ProfileError, UnsupportedOpError
from cosched.ir.graph import Graph, Task

__all__ = ["ProfileConfig", "Profiler", "plan_groups", "standalone_threads", "strata"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ProfileConfig:
    """Budgets and measurement settings of one profiling run."""

    budget_s: float = 300.0
    standalone_share: float = 0.4
    max_signatures: int | None = None
    max_groups: int | None = None
    group_sizes: tuple[int, ...] = (2, 3, 4)
    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 50
    target_repeat_s: float = 0.1
    corun_min_iters: int = 3
    corun_window_s: float = 0.15
    oversubscribed_window_s: float = 0.5
    restandalone_every: int = 4
    seed: int = 0
    quiet: bool = False
    provider: str = "auto"


def standalone_threads(device: DeviceSpec, sizes: Sequence[int] = (2,)) -> int:
    """CPU threads of a standalone measurement: those of a member of the smallest group."""
    return device.threads_per_member(min(sizes, default=2))


def strata(records: Mapping[str, StandaloneRecord], device: DeviceSpec) -> dict[tuple[str, int], list[str]]:
    """Signatures by (``"compute"`` | ``"memory"``, latency tertile 0..2)."""
    sigs = sorted(records)
    if not sigs:
        return {}
    cuts = np.quantile([records[s].median_ms for s in sigs], [1 / 3, 2 / 3])
    out: dict[tuple[str, int], list[str]] = {}
    for s in sigs:
        d = task_demand_from_features(records[s].features, device)
        bound = "compute" if d.compute_share >= d.memory_share else "memory"
        size = int(np.searchsorted(cuts, records[s].median_ms, side="right"))
        out.setdefault((bound, size), []).append(s)
    return out


def plan_groups(records: Mapping[str, StandaloneRecord], device: DeviceSpec,
                sizes: Sequence[int], seed: int = 0,
                anchors: Collection[str] | None = None) -> Iterator[tuple[str, ...]]:
    """An endless stream of co-run groups (tuples of signatures) covering every strata mix.

    With ``anchors``, each group starts with one of them that ``records`` holds (in turn),
    and the strata of its k - 1 other members cycle through every mix; none if no anchor is
    in ``records``.
    """
    rng = random.Random(seed)
    by_stratum = strata(records, device)
    keys = sorted(by_stratum)
    sizes = [k for k in sizes if k <= len(records)]
    pinned = None if anchors is None else sorted(s for s in set(anchors) if s in records)
    if not keys or not sizes or pinned == []:
        return
    # an anchor takes the first seat; without anchors every member's stratum is drawn
    seats = {k: k - 1 if pinned else k for k in sizes}
    cycles = {k: _shuffled_cycle(list(itertools.combinations_with_replacement(keys, seats[k])), rng)
              for k in sizes}
    firsts = _shuffled_cycle(pinned, rng) if pinned else None
    while True:
        for k in sizes:  # one group of each size in turn: every size gets as many groups
            start = (next(firsts),) if firsts else ()
            yield _draw(next(cycles[k]), by_stratum, rng, start)


def _shuffled_cycle(items: list[T], rng: random.Random) -> Iterator[T]:
    """``items`` over and over, reshuffled on every pass."""
    while True:
        rng.shuffle(items)
        yield from items


def _draw(combo: Sequence[tuple[str, int]], by_stratum: Mapping[tuple[str, int], list[str]],
          rng: random.Random, start: tuple[str, ...] = ()) -> tuple[str, ...]:
    chosen: list[str] = list(start)
    for key in combo:
        pool = [s for s in by_stratum[key] if s not in chosen] or by_stratum[key]
        chosen.append(rng.choice(pool))
    return tuple(chosen)


class Profiler:
    """Measures graphs' tasks on one device and appends what it measured to a store."""

    def __init__(self, device: DeviceSpec, config: ProfileConfig | None = None) -> None:
        self.device = device
        self.config = config or ProfileConfig()
        self._torch_device = torch.device(device.kind, device.index) if device.kind == "cuda" else torch.device("cpu")
        if device.kind == "cpu":  # tasks measured as the executor runs them: memory reused, no page faults
            from cosched.execution.malloc import keep_freed_memory

            keep_freed_memory()
        from cosched.execution.ort import available

        # tasks run as the executor runs them by default: onnxruntime on CPU where it imports
        self.provider = ("ort" if device.kind == "cpu" and available() else "torch") if (
            self.config.provider == "auto") else self.config.provider
        self._runners: OrderedDict[str, TaskRunner] = OrderedDict()
        self._tasks: dict[str, tuple[Graph, Task]] = {}
        self._weights: dict[tuple[int, str], Mapping[str, np.ndarray]] = {}

    def profile(self, graphs: Sequence[Graph], store: ProfileStore, top_up: bool = False) -> ProfileData:
        """Measure, append to ``store``, and return everything the store holds for this device.

        Signatures the store holds are not measured alone again. With ``top_up``, every
        co-run group holds a signature measured alone in this run (see the module doc), and
        none is measured when there is no such signature.
        """
        cfg = self.config
        start = time.monotonic()
        deadline = start + cfg.budget_s
        threads = torch.get_num_threads()
        try:
            features = self._collect(graphs)
            store.add_device(self.device)
            known = store.signatures(self.device.fingerprint)
            todo = [s for s in features if s not in known]
            random.Random(cfg.seed).shuffle(todo)
            if cfg.max_signatures is not None:
                todo = todo[: cfg.max_signatures]
            self._standalone(todo, features, store, start + cfg.budget_s * cfg.standalone_share)
            records = store.load(self.device.fingerprint).standalone
            ours = {s: r for s, r in records.items() if s in features}
            anchors = [s for s in todo if s in records] if top_up else None
            self._groups(ours, store, deadline, anchors)
        finally:
            torch.set_num_threads(threads)
        return store.load(self.device.fingerprint)

    # ------------------------------------------------------------- helpers
    def _collect(self, graphs: Sequence[Graph]) -> dict[str, dict[str, float]]:
        features: dict[str, dict[str, float]] = {}
        for graph in graphs:
            if not graph.tasks:
                raise ProfileError(
                    f"graph of tenants {list(graph.tenant_names)} has no tasks; run cosched.ir.fusion.fuse first"
                )
            for task in graph.tasks:
                sig = task_signature(graph, task)
                if sig not in features:
                    features[sig] = task_features(graph, task)
                    self._tasks[sig] = (graph, task)
        if not features:
            raise ProfileError("nothing to profile: the graphs have no tasks")
        return features

    def _runner(self, sig: str) -> TaskRunner:
        if sig in self._runners:
            self._runners.move_to_end(sig)
            return self._runners[sig]
        graph, task = self._tasks[sig]
        runner = TaskRunner(graph, task, self._torch_device, self._weights_of(graph, task), self.config.seed,
                            provider=self.provider)
        self._runners[sig] = runner
        if len(self._runners) > 256:
            self._runners.popitem(last=False)
        return runner

    def _weights_of(self, graph: Graph, task: Task) -> Mapping[str, np.ndarray]:
        needed = [n for n in graph.task_inputs(task) if graph.tensor(n).kind == "weight"]
        if not needed:
            return {}
        key = (id(graph), task.tenant)
        if key not in self._weights:
            from cosched.ir import read_weights

            self._weights[key] = read_weights(graph, task.tenant)
        return self._weights[key]

    def _label(self, sig: str) -> str:
        _graph, task = self._tasks[sig]
        return f"{task.tenant}/{task.name or task.id}"

    def _standalone(self, todo: Sequence[str], features: Mapping[str, dict[str, float]],
                    store: ProfileStore, until: float) -> None:
        cfg = self.config
        batch: list[StandaloneRecord] = []
        skipped: list[str] = []
        bar = tqdm(todo, desc="profile: standalone", unit="task", disable=cfg.quiet)
        for sig in bar:
            if time.monotonic() > until:
                log.warning("standalone budget spent: measured %d of %d new signatures",
                            len(batch) + len(skipped), len(todo))
                break
            try:
                batch.append(self._measure_alone(sig, features[sig]))
            except (UnsupportedOpError, ProfileError) as exc:
                skipped.append(sig)
                log.warning("skipping %s: %s", self._label(sig), exc)
                continue
            if len(batch) >= 32:
                store.add_standalone(self.device, batch)
                batch = []
        bar.close()
        store.add_standalone(self.device, batch)

    def _groups(self, records: Mapping[str, StandaloneRecord], store: ProfileStore, deadline: float,
                anchors: Sequence[str] | None = None) -> None:
        cfg = self.config
        if len(records) < 2:
            log.warning("co-run groups need at least 2 measured signatures, found %d", len(records))
            return
        if anchors is not None and not anchors:
            log.info("co-run groups: no new signature was measured alone, so none to group")
            return
        done: list[CorunGroup] = []
        again: list[StandaloneRecord] = []
        order = sorted(records)
        random.Random(cfg.seed + 1).shuffle(order)
        plan = plan_groups(records, self.device, cfg.group_sizes, cfg.seed, anchors)
        bar = tqdm(total=cfg.max_groups, desc="profile: co-run", unit="group", disable=cfg.quiet)
        for count, sigs in enumerate(plan):
            if time.monotonic() > deadline or (cfg.max_groups is not None and count >= cfg.max_groups):
                break
            group = self._measure_group(sigs, records)
            done.append(group)
            bar.update()
            if cfg.restandalone_every > 0 and (count + 1) % cfg.restandalone_every == 0:
                sig = order[(count // cfg.restandalone_every) % len(order)]
                again.append(self._measure_alone(sig, records[sig].features))
            if len(done) >= 32:
                store.add_groups(self.device, done)
                store.add_standalone(self.device, again)
                done, again = [], []
        bar.close()
        store.add_groups(self.device, done)
        store.add_standalone(self.device, again)

    def _measure_alone(self, sig: str, features: Mapping[str, float]) -> StandaloneRecord:
        cfg = self.config
        latency, spread, repeats = time_standalone(
            self._runner(sig), self._torch_device, cfg.warmup, cfg.min_repeats,
            cfg.max_repeats, cfg.target_repeat_s, standalone_threads(self.device, cfg.group_sizes))
        return StandaloneRecord(sig, features, latency, spread, repeats, self._label(sig))

    def _measure_group(self, sigs: Sequence[str], records: Mapping[str, StandaloneRecord]) -> CorunGroup:
        runners = [self._runner(s) for s in sigs]
        if self.device.kind == "cuda":
            measure = corun_cuda(runners, [records[s].median_ms for s in sigs], self._torch_device,
                                 self.config.corun_window_s * 1e3)
            threads = (0,) * len(sigs)
        else:
            t = self.device.threads_per_member(len(sigs))
            window = (self.config.oversubscribed_window_s if t * len(sigs) > self.device.cores
                      else self.config.corun_window_s)
            measure = corun_cpu(runners, t, self.config.corun_min_iters, window)
            threads = (t,) * len(sigs)
        return CorunGroup(tuple(sigs), measure.latencies_ms, measure.makespan_ms, threads)
