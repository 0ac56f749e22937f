"""The roofline latency model: the fallback for a device that was never profiled.

Standalone latency of a task of ``n`` ops with ``F`` FLOPs moving ``B`` bytes on a device of
peak ``P`` FLOP/s, bandwidth ``W`` bytes/s and launch overhead ``L`` seconds::

    T = max(F / P, B / W) + n * L

While it runs, the task demands a share of each shared resource: ``c = (F / P) / T`` of the
compute and ``m = (B / W) / T`` of the bandwidth. With co-runners ``j`` the resources are
shared in proportion to demand (processor sharing): when the summed demand on a resource
exceeds 1, every user of it is slowed by that sum. The task's co-run latency is::

    T' = max(F / P * max(1, c + sum c_j), B / W * max(1, m + sum m_j)) + n * L

and its slowdown ``T' / T`` (>= 1; exactly 1 with no co-runners). Two compute-bound tasks
that each saturate the device therefore take twice as long; a compute-bound and a
memory-bound task barely slow each other.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cosched.costmodel.base import CostModel
from cosched.costmodel.device import DeviceSpec
from cosched.errors import CostModelError, DeviceError
from cosched.ir.graph import Graph, Op, Task

__all__ = ["Demand", "RooflineModel", "corun_slowdown", "demand", "require_costs"]

SCHEMA_VERSION = 1
METADATA_FILE = "roofline.json"


@dataclass(frozen=True)
class Demand:
    """Seconds a task spends on compute, on memory traffic and on launch overhead alone."""

    compute_s: float
    memory_s: float
    overhead_s: float

    # Cached (the value is frozen): the search reads them millions of times.
    @cached_property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @cached_property
    def compute_share(self) -> float:
        return self.compute_s / self.time_s if self.time_s > 0 else 0.0

    @cached_property
    def memory_share(self) -> float:
        return self.memory_s / self.time_s if self.time_s > 0 else 0.0


def demand(flops: float, nbytes: float, n_ops: int, device: DeviceSpec) -> Demand:
    """A task's roofline demand on ``device``."""
    return Demand(flops / device.peak_flops, nbytes / device.bandwidth, n_ops * device.launch_overhead_s)


def corun_slowdown(task: Demand, co_runners: Sequence[Demand]) -> float:
    """The roofline slowdown factor of ``task`` under ``co_runners`` (see the module doc)."""
    if not co_runners or task.time_s <= 0:
        return 1.0
    compute = task.compute_share + sum(d.compute_share for d in co_runners)
    memory = task.memory_share + sum(d.memory_share for d in co_runners)
    shared = max(task.compute_s * max(1.0, compute), task.memory_s * max(1.0, memory))
    return max(1.0, (shared + task.overhead_s) / task.time_s)


def require_costs(graph: Graph, task: Task) -> tuple[Op, ...]:
    """The task's ops; :class:`CostModelError` if one has no analysed cost."""
    ops = graph.task_ops(task)
    missing = [op.name for op in ops if op.cost is None]
    if missing:
        raise CostModelError(
            f"task {task.id} ({task.name or task.tenant}): op {missing[0]!r} has no analysed cost; "
            "run cosched.ir.analysis.analyse(graph) before asking a cost model"
        )
    return ops


def task_demand(graph: Graph, task: Task, device: DeviceSpec) -> Demand:
    ops = require_costs(graph, task)
    cost = graph.task_cost(task)
    return demand(cost.flops, cost.bytes, len(ops), device)


class RooflineModel(CostModel):
    """Latency from the device's measured ceilings alone; needs no profile."""

    name = "roofline"

    def __init__(self, device: DeviceSpec) -> None:
        self.device = device
        # Each task's demand, per graph (graphs are immutable values): the search asks for
        # millions of slowdowns of a few thousand tasks, and summing a task's op costs again
        # for every one of them was most of a 50-tenant compile's search time.
        self._demands: weakref.WeakKeyDictionary[Graph, dict[int, tuple[Task, Demand]]] = (
            weakref.WeakKeyDictionary()
        )

    def _demand_of(self, graph: Graph) -> Callable[[Task], Demand]:
        """``task -> task_demand(graph, task, self.device)``, computed once per task of ``graph``."""
        cache = self._demands.get(graph)
        if cache is None:
            cache = self._demands[graph] = {}

        def demand_of(task: Task) -> Demand:
            hit = cache.get(id(task))  # by identity; the entry holds the task, so its id stays its own
            if hit is not None and hit[0] is task:
                return hit[1]
            value = task_demand(graph, task, self.device)
            cache[id(task)] = (task, value)
            return value

        return demand_of

    def fit(self, records: object = None) -> RooflineModel:
        """Nothing to learn: the roofline has no parameters beyond the device spec."""
        return self

    def predict_task(self, graph: Graph, task: Task) -> float:
        return self._demand_of(graph)(task).time_s * 1e3

    def predict_slowdown(self, graph: Graph, task: Task, co_runners: Sequence[Task]) -> float:
        return float(self.predict_slowdowns(graph, [(task, co_runners)])[0])

    def predict_slowdowns(self, graph: Graph, queries: Sequence[tuple[Task, Sequence[Task]]]) -> np.ndarray:
        demand_of = self._demand_of(graph)
        return np.array([
            corun_slowdown(demand_of(task), [demand_of(t) for t in co]) if co else 1.0 for task, co in queries
        ], dtype=np.float64)

    def predict_tasks(self, graph: Graph, tasks: Sequence[Task]) -> np.ndarray:
        demand_of = self._demand_of(graph)
        return np.array([demand_of(t).time_s * 1e3 for t in tasks], dtype=np.float64)

    def identity(self) -> dict[str, Any]:
        """The kind and the device spec: its ceilings are all the roofline's parameters."""
        return {"kind": self.name, "device": self.device.to_json()}

    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        meta = {"schema_version": SCHEMA_VERSION, "model": self.name, "device": self.device.to_json()}
        (root / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> RooflineModel:
        path = Path(directory) / METADATA_FILE
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CostModelError(f"cannot read roofline model {path}: {exc}") from exc
        if meta.get("schema_version") != SCHEMA_VERSION or meta.get("model") != cls.name:
            raise CostModelError(
                f"{path}: expected a roofline model of schema_version {SCHEMA_VERSION}, found "
                f"model={meta.get('model')!r} schema_version={meta.get('schema_version')!r}"
            )
        try:
            return cls(DeviceSpec.from_json(meta["device"], str(path)))
        except (KeyError, DeviceError) as exc:
            raise CostModelError(f"{path}: bad device spec: {exc}") from exc
