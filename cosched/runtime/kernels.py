"""Ops resolved against the op registry once, ready to run on an environment of tensors.

Every executor (sequential, CPU threads, CUDA streams, the profiler) prepares a graph's ops
as :class:`Kernel` values up front, so the registry is consulted once per op and an
unsupported op is reported before anything runs, together with every other one.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cosched.errors import CoschedError, RuntimeFailure, UnsupportedOpError
from cosched.ir.graph import Graph, Op
from cosched.ops.registry import OpContext, OpImpl, is_supported, lookup

__all__ = ["Kernel", "check_supported", "load_constants", "prepare_kernels"]


@dataclass(frozen=True)
class Kernel:
    """One op bound to its implementation: reads ``inputs`` from the env, writes ``outputs``."""

    op: Op
    fn: OpImpl
    ctx: OpContext

    def __call__(self, env: MutableMapping[str, torch.Tensor]) -> None:
        args = [env[name] if name else None for name in self.op.inputs]
        try:
            result = self.fn(self.ctx, *args)
        except CoschedError:
            raise
        except Exception as exc:
            raise RuntimeFailure(
                f"op {self.op.name!r} ({self.op.op_type}, tenant {self.op.tenant!r}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        outs = result if isinstance(result, tuple) else (result,)
        for name, value in zip(self.op.outputs, outs, strict=False):
            if name and value is not None:  # an optional output the op did not produce
                env[name] = value


def check_supported(ops: Iterable[Op]) -> None:
    """Raise one :class:`UnsupportedOpError` listing every op the registry cannot run."""
    missing: dict[tuple[str, str, int], list[str]] = {}
    for op in ops:
        if not is_supported(op.op_type, op.opset, op.domain):
            missing.setdefault((op.domain, op.op_type, op.opset), []).append(op.name)
    if missing:
        parts = []
        for (domain, op_type, opset), names in sorted(missing.items()):
            shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            qualified = f"{domain}.{op_type}" if domain else op_type
            parts.append(f"{qualified} (opset {opset}): {shown}")
        raise UnsupportedOpError(
            f"{sum(len(v) for v in missing.values())} op(s) are not supported by cosched.ops: "
            + "; ".join(parts)
        )


def prepare_kernels(ops: Sequence[Op]) -> list[Kernel]:
    check_supported(ops)
    return [
        Kernel(op, lookup(op.op_type, op.opset, op.domain),
               OpContext(op.op_type, op.opset, op.attrs, len(op.outputs), op.name))
        for op in ops
    ]


def load_constants(graph: Graph, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Every weight (read once from its tenant's model) and folded constant, as tensors."""
    values: dict[str, torch.Tensor] = {}
    for tenant in graph.tenants:
        if not any(ref.tenant == tenant.name for ref in graph.weights.values()):
            continue  # nothing to read (e.g. a graph built in memory without weights)
        from cosched.ir import read_weights

        for name, array in read_weights(graph, tenant.name).items():
            values[name] = _tensor(array, device)
    for name, array in graph.constants.items():
        values[name] = _tensor(array, device)
    return values


def _tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True)).to(device)
