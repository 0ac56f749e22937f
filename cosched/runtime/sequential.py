"""Sequential execution: every op of every tenant, one after another, in graph order.

This is the reference every concurrent plan is checked against, and the "sequential"
baseline that plans are measured against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cosched.ir.graph import Graph
from cosched.runtime.bindings import bind_inputs, collect_outputs
from cosched.runtime.kernels import load_constants, prepare_kernels

__all__ = ["SequentialExecutor"]


class SequentialExecutor:
    """Runs a merged graph op by op. Weights are loaded once, at construction.

    ``run`` takes inputs keyed by tenant, then by the model's own input names, and returns
    outputs keyed the same way. Intermediate tensors are freed after their last use.
    """

    def __init__(self, graph: Graph, device: str = "cpu") -> None:
        self.graph = graph
        self.device = torch.device(device)
        self.kernels = prepare_kernels(graph.ops)
        self.constants = load_constants(graph, self.device)
        self._last_use = _last_uses(graph)

    def run(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(bind_inputs(self.graph, inputs, self.device))
        keep = set(self.constants) | {n for t in self.graph.tenants for _, n in t.outputs}
        with torch.inference_mode():
            for index, kernel in enumerate(self.kernels):
                kernel(env)
                for name in self._last_use.get(index, ()):
                    if name not in keep:
                        env.pop(name, None)
        return collect_outputs(self.graph, env)


def _last_uses(graph: Graph) -> dict[int, list[str]]:
    """For each op index, the tensors whose last reader is that op."""
    last: dict[str, int] = {}
    for index, op in enumerate(graph.ops):
        for name in op.inputs:
            if name:
                last[name] = index
    by_index: dict[int, list[str]] = {}
    for name, index in last.items():
        by_index.setdefault(index, []).append(name)
    return by_index
