"""Whether a graph can fit a device's memory at all, checked before any work is spent on it.

``--batch 100000000000`` imports and compiles (shapes are only numbers), then fails with a
``MemoryError`` at run time. :func:`check_fits` refuses such sizes up front, with the memory
the graph would need against what the device has. The estimate is a lower bound (weights,
constants, every tenant's inputs and outputs, and the largest other tensor alive at once
with them), so a graph it refuses can never run, and a graph that fits may still be large.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cosched.errors import ConfigError
from cosched.ir.graph import Graph, TensorInfo

__all__ = ["check_fits", "device_memory", "required_bytes"]


def _nbytes(info: TensorInfo) -> int:
    """Bytes of ``info`` in Python integers (numpy's int64 product overflows silently)."""
    return math.prod(info.shape) * np.dtype(info.dtype).itemsize


def required_bytes(graph: Graph) -> tuple[int, TensorInfo | None]:
    """A lower bound of the bytes running ``graph`` needs, and its largest tensor."""
    bound = {name for t in graph.tenants for _, name in (*t.inputs, *t.outputs)}
    total, largest_other, largest = 0, 0, None
    for name, info in graph.tensors.items():
        size = _nbytes(info)
        if largest is None or size > _nbytes(largest):
            largest = info
        if info.kind in ("weight", "constant", "input") or name in bound:
            total += size
        else:
            largest_other = max(largest_other, size)
    return total + largest_other, largest


def check_fits(graph: Graph, capacity: int, device: str) -> None:
    """Raise :class:`ConfigError` when ``graph`` needs more than ``capacity`` bytes of ``device``
    (a capacity of 0 means unknown: nothing is checked)."""
    if capacity <= 0:
        return
    need, largest = required_bytes(graph)
    if need <= capacity:
        return
    biggest = ""
    if largest is not None:
        shape = "x".join(map(str, largest.shape))
        biggest = f"; the largest tensor, {largest.name!r} [{shape}] {largest.dtype}, alone is {_human(_nbytes(largest))}"
    raise ConfigError(
        f"tenants {list(graph.tenant_names)} at these sizes need at least {_human(need)} of memory{biggest}; "
        f"{device} has {_human(capacity)}: lower the batch or the input shapes"
    )


def device_memory(kind: str, index: int = 0) -> int:
    """Bytes of memory of this machine's ``kind`` device (0 when unknown)."""
    if kind == "cuda":
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return int(torch.cuda.get_device_properties(index).total_memory)
        return 0
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if value < 1000 or unit == "EB":
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} EB"
