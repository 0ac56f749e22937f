"""Everything the search asks of a (graph, cost model) pair, computed once and cached.

A :class:`CostTable` holds the task DAG as index arrays, the standalone latency of every
task (one batched ``predict_tasks`` call), arithmetic intensities, bottom levels, and a
cache of slowdown predictions keyed by ``(task, frozenset(co-runners))``. The simulator,
the decoder, the baselines and the exact search all read it; the optimizer shares one
table across all its trials, so each distinct co-run set is predicted once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from types import MappingProxyType

import networkx as nx

from cosched.costmodel.base import CostModel
from cosched.costmodel.overheads import RuntimeCosts
from cosched.errors import CostModelError, ScheduleError
from cosched.ir.dag import transitive_reduction
from cosched.ir.graph import Graph

__all__ = ["CostTable", "Key"]

#: A slowdown query: a task id and the ids of the tasks running beside it.
Key = tuple[int, frozenset[int]]


class CostTable:
    """Cached costs of ``graph``'s tasks under ``model``.

    ``launch_overhead_ms`` is added to every task's standalone latency (the host's cost of
    issuing the task's kernels), so that many tiny tasks are not free. ``runtime`` says what
    the runtime pays besides (:class:`~cosched.costmodel.overheads.RuntimeCosts`): its
    dispatch cost is added to every task too, :meth:`latency_at` gives a task's latency at
    the intra-op threads a plan of k streams leaves it, and ``wait_ms`` is what a stream
    that waited for another's event pays when it comes. Without it nothing is charged.
    ``in_situ`` maps intra-op thread counts to every task's latency measured in context
    (:func:`cosched.calibration.task_latencies_in_situ`); :meth:`latency_at` uses them
    where they cover the thread count, instead of the model's standalone prediction.
    ``boundaries`` maps thread counts to what each tenant pays where its tasks are cut into
    one more onnxruntime session (:func:`cosched.calibration.ort_in_situ`);
    :meth:`boundary_at` gives it per task, charged to a task that starts a segment anywhere
    but at its tenant's start (see :meth:`cosched.search.simulator.Timeline.launch`).
    """

    def __init__(self, graph: Graph, model: CostModel, launch_overhead_ms: float = 0.0,
                 runtime: RuntimeCosts | None = None,
                 in_situ: Mapping[int, Sequence[float]] | None = None,
                 boundaries: Mapping[int, Mapping[str, float]] | None = None) -> None:
        if not graph.tasks:
            raise ScheduleError("the graph has no tasks to schedule; run fusion before search")
        ids = [t.id for t in graph.tasks]
        if ids != list(range(len(ids))):
            raise ScheduleError(
                f"graph tasks must have ids 0..{len(ids) - 1} in order; found {ids[:8]}..."
            )
        if launch_overhead_ms < 0:
            raise ScheduleError(f"launch_overhead_ms must be >= 0, got {launch_overhead_ms}")
        self.graph = graph
        self.model = model
        self.runtime = runtime if runtime is not None else RuntimeCosts.free()
        self.launch_overhead_ms = float(launch_overhead_ms) + self.runtime.dispatch_ms
        self.wait_ms = self.runtime.wait_ms
        self.n = len(ids)
        self.dag: nx.DiGraph = graph.to_networkx("task")
        self.preds: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(self.dag.predecessors(t))) for t in range(self.n)
        )
        self.succs: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(self.dag.successors(t))) for t in range(self.n)
        )
        for t, ps in enumerate(self.preds):
            if ps and ps[-1] >= t:
                raise ScheduleError(
                    f"task {t} depends on task {ps[-1]}: task ids must be in topological order"
                )
        self.tenants: tuple[str, ...] = graph.tenant_names or tuple(
            dict.fromkeys(t.tenant for t in graph.tasks)
        )
        index = {name: i for i, name in enumerate(self.tenants)}
        self.tenant_of: tuple[int, ...] = tuple(index[t.tenant] for t in graph.tasks)
        self._predicted = self._predicted_latencies()
        #: standalone latency of every task at the cost model's thread count, dispatch included
        self.latency: tuple[float, ...] = tuple(ms + self.launch_overhead_ms for ms in self._predicted)
        self._at_streams: dict[int, tuple[float, ...]] = {}
        self.in_situ = {int(k): tuple(float(x) for x in v) for k, v in (in_situ or {}).items()}
        for threads, values in self.in_situ.items():
            if len(values) != self.n or not all(x > 0 for x in values):
                raise CostModelError(f"in-situ latencies at {threads} thread(s) must be {self.n} positive "
                                     f"values, one per task; got {len(values)}")
        self._slowdown: dict[Key, float] = {}
        self._together: dict[frozenset[int], Mapping[int, float]] = {}
        self.boundaries = {int(k): {str(t): float(ms) for t, ms in v.items()} for k, v in (boundaries or {}).items()}
        for threads, per_tenant in self.boundaries.items():
            if set(per_tenant) != set(self.tenants) or not all(ms >= 0 for ms in per_tenant.values()):
                raise CostModelError(f"segment boundary costs at {threads} thread(s) must be >= 0 ms for every "
                                     f"tenant {list(self.tenants)}; got {per_tenant}")
        self._boundary_at: dict[int, tuple[float, ...]] = {}

    def boundary_at(self, streams: int) -> tuple[float, ...]:
        """Per task, what starting a new segment there costs in a plan of ``streams`` streams
        (zeros without ``boundaries``, or where they miss that thread count)."""
        cached = self._boundary_at.get(streams)
        if cached is None:
            per_tenant = self.boundaries.get(self.runtime.threads(streams), {})
            cached = tuple(per_tenant.get(self.tenants[i], 0.0) for i in self.tenant_of)
            self._boundary_at[streams] = cached
        return cached

    def latency_at(self, streams: int) -> tuple[float, ...]:
        """Every task's latency in a plan of ``streams`` streams: at the intra-op threads that
        leaves each stream, dispatch included (cached per stream count)."""
        cached = self._at_streams.get(streams)
        if cached is None:
            measured = self.in_situ.get(self.runtime.threads(streams))
            if measured is not None:
                cached = tuple(ms + self.runtime.dispatch_ms for ms in measured)
            else:
                at = self.runtime.latency_at
                cached = tuple(at(ms, streams) + self.launch_overhead_ms for ms in self._predicted)
            self._at_streams[streams] = cached
        return cached

    def _predicted_latencies(self) -> tuple[float, ...]:
        raw = self.model.predict_tasks(self.graph, self.graph.tasks)
        if len(raw) != self.n:
            raise CostModelError(
                f"cost model {self.model.name!r} returned {len(raw)} latencies for {self.n} tasks"
            )
        out = []
        for task, ms in zip(self.graph.tasks, raw, strict=True):
            if not ms > 0:
                raise CostModelError(
                    f"cost model {self.model.name!r} predicts latency {ms} ms for task {task.id} "
                    f"({task.name or task.ops[0]}); latencies must be > 0"
                )
            out.append(float(ms))
        return tuple(out)

    # ------------------------------------------------------------ derived
    @cached_property
    def intensity(self) -> tuple[float, ...]:
        """Arithmetic intensity (FLOPs per byte) of every task."""
        return tuple(self.graph.task_cost(t).intensity for t in self.graph.tasks)

    @cached_property
    def bottom_level(self) -> tuple[float, ...]:
        """Longest standalone-latency path from each task to a sink, the task included."""
        bl = [0.0] * self.n
        for t in range(self.n - 1, -1, -1):
            bl[t] = self.latency[t] + max((bl[s] for s in self.succs[t]), default=0.0)
        return tuple(bl)

    @cached_property
    def chain_next(self) -> tuple[int | None, ...]:
        """For each task, the next task of its chain (None at a chain's end): a minimum path
        cover of the DAG's transitive reduction, from a maximum matching of its edges
        (Nimble's stream assignment). Tasks of one chain can share a stream with no event
        between them."""
        # Integer nodes (task t's out side is t, its in side n + t): the matching found
        # depends on the order sets of nodes iterate in, which for str-holding tuples changes
        # with PYTHONHASHSEED, so the same compile gave other plans in other processes.
        n = self.n
        reduction = transitive_reduction(self.dag)
        bipartite = nx.Graph()
        bipartite.add_nodes_from(range(n), bipartite=0)
        bipartite.add_nodes_from(range(n, 2 * n), bipartite=1)
        bipartite.add_edges_from((u, n + v) for u, v in sorted(reduction.edges()))
        matching = nx.bipartite.hopcroft_karp_matching(bipartite, top_nodes=range(n))
        nxt: list[int | None] = [None] * n
        for u, v in matching.items():
            if u < n:
                nxt[u] = v - n
        return tuple(nxt)

    @cached_property
    def total_work(self) -> float:
        return sum(self.latency)

    @cached_property
    def critical_path(self) -> float:
        return max(self.bottom_level)

    def tasks_of_tenant(self, tenant: int) -> tuple[int, ...]:
        return tuple(t for t in range(self.n) if self.tenant_of[t] == tenant)

    # ----------------------------------------------------------- slowdown
    def slowdown(self, task: int, co_runners: frozenset[int]) -> float:
        """Predicted slowdown factor of ``task`` while ``co_runners`` run beside it (cached)."""
        if not co_runners:
            return 1.0
        key = (task, co_runners)
        value = self._slowdown.get(key)
        if value is None:
            value = self._predict([key])[0]
        return value

    def slowdowns_together(self, tasks: frozenset[int]) -> Mapping[int, float]:
        """Each of ``tasks``' slowdown while all of them run together (cached per set).

        The decoder's guard and the simulator ask this of the same few running sets again
        and again (every trial replays similar timelines); one lookup of the set replaces
        building and looking up each member's key.
        """
        value = self._together.get(tasks)
        if value is None:
            keys = [(t, tasks - {t}) for t in tasks]
            self.prefetch(keys)
            value = self._together[tasks] = MappingProxyType({t: self.slowdown(t, co) for t, co in keys})
        return value

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Predict every uncached query in ``keys`` in one batched cost-model call."""
        missing = list(dict.fromkeys(k for k in keys if k[1] and k not in self._slowdown))
        if missing:
            self._predict(missing)

    def _predict(self, keys: Sequence[Key]) -> list[float]:
        tasks = self.graph.tasks
        queries = [(tasks[t], [tasks[c] for c in sorted(co)]) for t, co in keys]
        values = self.model.predict_slowdowns(self.graph, queries)
        out = []
        for (t, co), v in zip(keys, values, strict=True):
            if not v >= 1.0:
                raise CostModelError(
                    f"cost model {self.model.name!r} predicts slowdown {v} for task {t} beside "
                    f"tasks {sorted(co)}; slowdowns must be >= 1.0"
                )
            self._slowdown[(t, co)] = float(v)
            out.append(float(v))
        return out

    @property
    def cached_slowdowns(self) -> int:
        return len(self._slowdown)
