"""Ops resolved against the op registry once, ready to run on an environment of tensors.

Every executor (sequential, CPU threads, CUDA streams, the profiler) prepares a graph's ops
as :class:`Kernel` values up front, so the registry is consulted once per op and an
unsupported op is reported before anything runs, together with every other one.

**Host values.** Shape, axes, size and count inputs (a Reshape's shape, a Slice's starts,
a reduction's axes, ...; :data:`HOST_INPUTS`) are read by the op as Python numbers. On a
GPU, reading a device tensor back blocks the one issuing thread at every such op, and is
an error inside CUDA-graph capture. So a kernel binds such an input, when it is a constant,
to a CPU copy made once at preparation (:func:`host_values`), and never reads it from the
environment; :func:`device_only` tells which constants then need no device copy at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cosched.errors import CoschedError, RuntimeFailure, UnsupportedOpError
from cosched.ir.graph import Graph, Op
from cosched.ops.registry import OpContext, OpImpl, is_supported, lookup

__all__ = [
    "HOST_INPUTS",
    "Kernel",
    "check_supported",
    "device_only",
    "host_values",
    "load_constants",
    "prepare_kernels",
]

_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
               "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")

#: Input positions an op reads on the host (as Python numbers), by op type.
HOST_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Expand": (1,), "Tile": (1,),
    "Split": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Range": (0, 1, 2),
    "ConstantOfShape": (0,), "OneHot": (1,), "TopK": (1,), "Resize": (1, 2, 3),
    "Upsample": (1,), "CumSum": (1,), "Trilu": (1,),
    **dict.fromkeys(_REDUCTIONS, (1,)),
}


@dataclass(frozen=True)
class Kernel:
    """One op bound to its implementation: reads ``inputs`` from the env, writes ``outputs``."""

    op: Op
    fn: OpImpl
    ctx: OpContext
    #: (input position, CPU tensor) pairs bound at preparation (see the module docstring).
    host: tuple[tuple[int, torch.Tensor], ...] = field(default=(), compare=False)

    def __call__(self, env: MutableMapping[str, torch.Tensor]) -> None:
        args = [env[name] if name else None for name in self.op.inputs]
        for position, value in self.host:
            args[position] = value
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


def prepare_kernels(ops: Sequence[Op], *, host: Mapping[str, torch.Tensor] | None = None,
                    device: torch.device | str | None = None) -> list[Kernel]:
    """One :class:`Kernel` per op. ``host``: CPU values of constants, bound where an op reads
    them on the host (:func:`host_values` makes it); ``device``: where ops that create
    tensors from nothing put them."""
    check_supported(ops)
    where = torch.device(device) if device is not None else None
    host = host or {}
    return [
        Kernel(op, lookup(op.op_type, op.opset, op.domain),
               OpContext(op.op_type, op.opset, op.attrs, len(op.outputs), op.name, where),
               tuple((i, host[op.inputs[i]]) for i in _host_positions(op) if op.inputs[i] in host))
        for op in ops
    ]


def _host_positions(op: Op) -> tuple[int, ...]:
    if op.domain not in ("", "ai.onnx"):
        return ()
    return tuple(i for i in HOST_INPUTS.get(op.op_type, ()) if i < len(op.inputs) and op.inputs[i])


def host_values(ops: Iterable[Op], constants: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of the ``constants`` that ``ops`` read on the host (shapes, axes, sizes)."""
    names = {op.inputs[i] for op in ops for i in _host_positions(op)}
    return {n: constants[n].detach().cpu() for n in sorted(names) if n in constants}


def device_only(ops: Iterable[Op], constants: Mapping[str, torch.Tensor],
                keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """``constants`` without those that every reader reads on the host (and that are not in
    ``keep``, e.g. graph outputs): on a GPU these need no device copy."""
    ops = list(ops)
    on_host = {op.inputs[i] for op in ops for i in _host_positions(op)}
    on_device = {n for op in ops for i, n in enumerate(op.inputs)
                 if n and i not in _host_positions(op)}
    drop = on_host - on_device - set(keep)
    return {n: t for n, t in constants.items() if n not in drop}


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
