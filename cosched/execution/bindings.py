"""Turning user inputs into graph tensors and graph tensors into user outputs.

Inputs and outputs are keyed by tenant, then by the model's own tensor names (not the
graph-wide ``tenant/name``). Validation is strict: a missing, extra, mis-shaped or
mis-typed input is an :class:`InputError` naming the tenant and the tensor.

Values are checked where they enter and leave: :func:`check_finite` reports NaN and inf in
inputs, and in outputs that came out non-finite from finite inputs (a warning, or with
``strict`` an error); :func:`check_index_inputs` refuses index inputs (token ids) outside the
table they index, before any kernel runs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, Literal

import numpy as np
import torch

from cosched.errors import InputError, RuntimeFailure
from cosched.ir.graph import Graph

__all__ = [
    "bind_inputs",
    "check_finite",
    "check_index_inputs",
    "collect_outputs",
    "random_inputs",
    "to_numpy",
    "torch_dtype",
    "validate_inputs",
]

log = logging.getLogger(__name__)

Values = Mapping[str, Mapping[str, Any]]

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


def validate_inputs(graph: Graph, inputs: Values) -> dict[str, dict[str, np.ndarray]]:
    """``inputs`` checked against the graph: tenant -> the model's input name -> C-ordered array."""
    if not isinstance(inputs, Mapping):
        raise InputError(
            f"inputs must map tenant -> {{input name: array}}, got {type(inputs).__name__}; "
            f"tenants are {list(graph.tenant_names)}"
        )
    extra_tenants = sorted(set(inputs) - set(graph.tenant_names), key=str)
    if extra_tenants:
        raise InputError(
            f"inputs given for unknown tenant(s) {extra_tenants}; tenants are {list(graph.tenant_names)}"
        )
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for tenant in graph.tenants:
        given = inputs.get(tenant.name, {})
        expected = dict(tenant.inputs)
        if not isinstance(given, Mapping):
            raise InputError(
                f"tenant {tenant.name!r}: inputs must map input name -> array, got "
                f"{type(given).__name__}; expected {list(expected)}"
            )
        missing = [own for own in expected if own not in given]
        if missing:
            raise InputError(f"tenant {tenant.name!r}: missing input(s) {missing}; expected {list(expected)}")
        extra = [own for own in given if own not in expected]
        if extra:
            raise InputError(f"tenant {tenant.name!r}: unknown input(s) {extra}; expected {list(expected)}")
        arrays[tenant.name] = {
            own: _check(tenant.name, own, given[own], graph.tensor(name)) for own, name in tenant.inputs
        }
    return arrays


def bind_inputs(
    graph: Graph, inputs: Values, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Validate ``inputs`` against the graph and return them keyed by graph-wide name."""
    arrays = validate_inputs(graph, inputs)
    return {
        name: torch.from_numpy(arrays[tenant.name][own]).to(device)
        for tenant in graph.tenants
        for own, name in tenant.inputs
    }


def _check(tenant: str, own: str, value: Any, info: Any) -> np.ndarray:
    try:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (TypeError, ValueError):
        array = np.empty(0, dtype=object)
    if array.dtype == object:
        raise InputError(
            f"tenant {tenant!r}: input {own!r} must be an array of dtype {info.dtype} and shape "
            f"{list(info.shape)}, got {type(value).__name__}"
        )
    if tuple(array.shape) != tuple(info.shape):
        raise InputError(
            f"tenant {tenant!r}: input {own!r} must have shape {list(info.shape)}, got {list(array.shape)}"
        )
    if array.dtype != np.dtype(info.dtype):
        raise InputError(f"tenant {tenant!r}: input {own!r} must have dtype {info.dtype}, got {array.dtype}")
    return np.asarray(array, order="C")


def check_finite(
    values: Values, kind: Literal["input", "output"], *, strict: bool = False, skip: Collection[str] = ()
) -> dict[str, list[str]]:
    """NaN and inf in ``values`` (tenant -> name -> array), one message per tensor, by tenant.

    Each message is logged as a WARNING; with ``strict`` the first one is raised instead
    (:class:`InputError` for inputs, :class:`RuntimeFailure` for outputs). Tenants in ``skip``
    are not checked: pass those whose inputs were not finite when checking outputs, whose
    NaN then follows from the inputs, not from the plan.
    """
    found: dict[str, list[str]] = {}
    for tenant, arrays in values.items():
        if tenant in skip:
            continue
        for name, value in arrays.items():
            message = _nonfinite(tenant, kind, name, value)
            if message is None:
                continue
            if strict:
                error = InputError if kind == "input" else RuntimeFailure
                raise error(f"{message}; strict mode refuses non-finite values")
            log.warning("%s", message)
            found.setdefault(tenant, []).append(message)
    return found


def _nonfinite(tenant: str, kind: str, name: str, value: Any) -> str | None:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind not in "fc" or not array.size:
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    nan = int(np.isnan(array).sum())
    inf = int(array.size - finite.sum()) - nan
    counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    why = "" if kind == "input" else " although the tenant's inputs are finite"
    return f"tenant {tenant!r}: {kind} {name!r} holds {counts} of {array.size} values{why}"


#: Op types whose second input indexes the first along ``axis``: ids outside the table fail
#: inside the kernel (deep in a traced task), so they are refused before the run.
_INDEXING = {"Gather": 0, "GatherElements": 0}


def check_index_inputs(graph: Graph, arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Refuse index inputs (token ids, categories) outside the range of the table they index.

    Checks every ``Gather`` / ``GatherElements`` whose indices are a tenant's input;
    :class:`InputError` names the tenant, the input, the op and the valid range.
    """
    own_name = {name: (t.name, own) for t in graph.tenants for own, name in t.inputs}
    for op in graph.ops:
        if op.op_type not in _INDEXING or len(op.inputs) < 2 or op.inputs[1] not in own_name:
            continue
        tenant, own = own_name[op.inputs[1]]
        values = arrays.get(tenant, {}).get(own)
        if values is None or not np.size(values) or np.asarray(values).dtype.kind not in "iu":
            continue
        shape = graph.tensor(op.inputs[0]).shape
        axis = int(op.attr("axis", _INDEXING[op.op_type]))
        if not -len(shape) <= axis < len(shape):
            continue
        size = shape[axis]
        low, high = int(np.min(values)), int(np.max(values))
        if low < -size or high >= size:
            bad = high if high >= size else low
            raise InputError(
                f"tenant {tenant!r}: input {own!r} holds index {bad}, but op {op.name!r} ({op.op_type}) "
                f"indexes {op.inputs[0]!r} of size {size} along axis {axis}: indices must lie in "
                f"[{-size}, {size - 1}]"
            )


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
