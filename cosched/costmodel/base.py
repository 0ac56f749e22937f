"""The cost-model interface every latency model implements (XGBoost, roofline, test doubles).

The search and the simulator see cost models only through this interface: the standalone
latency of a task in milliseconds, and the slowdown factor (>= 1.0) of a task while a given
set of co-runners runs beside it on other streams of the same device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosched.ir.graph import Graph, Task

__all__ = ["CostModel"]


class CostModel(ABC):
    """Predicts task latency alone and under co-running tasks.

    Implementations must be deterministic: the same graph and tasks give the same numbers,
    so that searches are reproducible for a seed.
    """

    #: Short name used in reports and metadata ("xgboost", "roofline", ...).
    name: str = "abstract"

    @abstractmethod
    def predict_task(self, graph: Graph, task: Task) -> float:
        """Standalone latency of ``task`` in milliseconds (> 0)."""

    @abstractmethod
    def predict_slowdown(self, graph: Graph, task: Task, co_runners: Sequence[Task]) -> float:
        """Factor (>= 1.0) by which ``task`` runs slower while ``co_runners`` run beside it.

        An empty ``co_runners`` gives exactly 1.0.
        """

    def predict_tasks(self, graph: Graph, tasks: Sequence[Task]) -> np.ndarray:
        """Standalone latencies of many tasks, in ms; models override this to batch."""
        return np.array([self.predict_task(graph, t) for t in tasks], dtype=np.float64)

    def predict_slowdowns(
        self, graph: Graph, queries: Sequence[tuple[Task, Sequence[Task]]]
    ) -> np.ndarray:
        """Slowdown factors of many ``(task, co_runners)`` queries; models override this to batch."""
        return np.array(
            [self.predict_slowdown(graph, t, co) for t, co in queries], dtype=np.float64
        )

    def identity(self) -> dict[str, Any]:
        """JSON data that tells this model's predictions apart from another model's.

        A search persisted to an Optuna study resumes only under the same identity (see
        :mod:`cosched.search.study`). The default names the kind and class; a model whose
        predictions depend on parameters or training overrides it to add them.
        """
        return {"kind": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def save(self, directory: str | Path) -> None:
        """Write the model as open formats (JSON) under ``directory``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def load(cls, directory: str | Path) -> CostModel:
        """Read a model written by :meth:`save`; :class:`CostModelError` naming the file if bad."""
        raise NotImplementedError(f"{cls.__name__} cannot be loaded")
