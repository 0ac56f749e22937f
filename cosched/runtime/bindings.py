"""Turning user inputs into graph tensors and graph tensors into user outputs.

Inputs and outputs are keyed by tenant, then by the model's own tensor names (not the
graph-wide ``tenant/name``). Validation is strict: a missing, extra, mis-shaped or
mis-typed input is an :class:`InputError` naming the tenant and the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cosched.errors import InputError
from cosched.ir.graph import Graph

__all__ = ["bind_inputs", "collect_outputs", "random_inputs", "to_numpy", "torch_dtype"]

_TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise InputError(f"dtype {name!r} is not supported (supported: {sorted(_TORCH_DTYPES)})") from None


def bind_inputs(
    graph: Graph, inputs: Mapping[str, Mapping[str, Any]], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Validate ``inputs`` against the graph and return them keyed by graph-wide name."""
    extra_tenants = sorted(set(inputs) - set(graph.tenant_names))
    if extra_tenants:
        raise InputError(
            f"inputs given for unknown tenant(s) {extra_tenants}; tenants are {list(graph.tenant_names)}"
        )
    bound: dict[str, torch.Tensor] = {}
    for tenant in graph.tenants:
        given = inputs.get(tenant.name, {})
        expected = dict(tenant.inputs)
        missing = [own for own in expected if own not in given]
        if missing:
            raise InputError(f"tenant {tenant.name!r}: missing input(s) {missing}; expected {list(expected)}")
        extra = [own for own in given if own not in expected]
        if extra:
            raise InputError(f"tenant {tenant.name!r}: unknown input(s) {extra}; expected {list(expected)}")
        for own, name in tenant.inputs:
            bound[name] = _check(tenant.name, own, given[own], graph.tensor(name), device)
    return bound


def _check(tenant: str, own: str, value: Any, info: Any, device: torch.device | str) -> torch.Tensor:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if tuple(array.shape) != tuple(info.shape):
        raise InputError(
            f"tenant {tenant!r}: input {own!r} must have shape {list(info.shape)}, got {list(array.shape)}"
        )
    if array.dtype != np.dtype(info.dtype):
        raise InputError(f"tenant {tenant!r}: input {own!r} must have dtype {info.dtype}, got {array.dtype}")
    return torch.from_numpy(np.asarray(array, order="C")).to(device)


def to_numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def collect_outputs(graph: Graph, env: Mapping[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    """The graph outputs in ``env``, as numpy, keyed by tenant then the model's own names."""
    return {
        tenant.name: {own: to_numpy(env[name]) for own, name in tenant.outputs}
        for tenant in graph.tenants
    }


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic random inputs for every tenant: floats ~ N(0, 1); integers in [0, 2)
    (safe as indices, token ids and masks); booleans random."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for tenant in graph.tenants:
        values: dict[str, np.ndarray] = {}
        for own, name in tenant.inputs:
            info = graph.tensor(name)
            dtype = np.dtype(info.dtype)
            if dtype.kind == "f":
                values[own] = rng.standard_normal(info.shape).astype(dtype)
            elif dtype.kind in "iu":
                values[own] = rng.integers(0, 2, size=info.shape).astype(dtype)
            else:
                values[own] = rng.integers(0, 2, size=info.shape).astype(bool)
        out[tenant.name] = values
    return out
