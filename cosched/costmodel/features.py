"""Task signatures and the documented feature vectors of the learned cost model.

**Signature.** :func:`task_signature` hashes what determines a task's latency and nothing
else: per op its type, domain, opset and attributes, and for every input and output its
shape, dtype, kind (input/weight/constant/activation) and, for inputs made inside the task,
which earlier op output it is. Names are left out, so repeated layers (and the same layer in
two tenants) share one signature and are profiled once.

**Task features** (:data:`TASK_FEATURES`, device independent, stored with each profile):

- ``n_ops``: ops in the task;
- ``count_<T>``: ops of type ``T`` for each ``T`` in :data:`OP_VOCAB` (``count_other`` the rest);
- ``anchor_<T>``: one-hot type of the anchor op, the op with the most FLOPs (ties: first);
- ``flops``, ``bytes_read``, ``bytes_written``, ``param_bytes``, ``intensity`` (FLOPs per byte)
  and ``log_<x>`` = ln(1 + x) of each;
- ``out_rank``, ``out_d0``..``out_d3`` (the anchor's first output, last four dims, left-padded
  with 0), ``log_out_numel``; ``batch``: the tenant's batch size (1 when unknown).

**Device features** (:data:`STANDALONE_FEATURES` adds them): ``roof_log_ms`` (ln of the
roofline latency in ms), ``roof_compute_share``, ``roof_memory_share`` (see
:mod:`cosched.costmodel.roofline`).

**Co-run features** (:data:`CORUN_FEATURES` adds, over the co-runners): ``co_count``,
``threads`` (threads per member on CPU, 0 on CUDA), ``co_log_sum_flops``,
``co_log_max_flops``, ``co_log_sum_bytes``, ``co_sum_intensity``, ``co_sum_compute_share``,
``co_sum_memory_share``, ``co_log_sum_roof_ms``, ``co_log_max_roof_ms``,
``co_log_roof_ratio`` (ln of the longest co-runner's roofline time over the task's),
``roof_slowdown`` and ``log_roof_slowdown`` (the roofline model's prediction);
``co_sum_n_ops`` and ``co_log_sum_overhead_us`` (ops the co-runners dispatch and their summed
launch overhead in microseconds: tasks of a few microseconds on CPU are bound by Python dispatch and the
GIL, which every co-runner's ops contend for), ``dispatch_share`` (the task's ops over all
ops of the group), ``total_threads`` (threads of the whole group) and ``oversubscription``
(total threads over the device's cores; 0 on CUDA); from standalone latencies (measured ones
in training, the standalone model's predictions when predicting): ``log_alone_ms``,
``co_log_min_alone_ms``, ``co_log_max_alone_ms``, ``co_log_alone_ratio`` (ln of the shortest
co-runner's latency over the task's) and ``co_calls_per_ms`` (executions per ms the
co-runners start when they loop: on CPU each start and end takes the GIL, and a co-runner
of a few microseconds taking it thousands of times a ms slowed a 0.3 ms neighbour 2x).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.roofline import Demand, corun_slowdown, demand, require_costs
from cosched.ir.graph import Graph, Op, Task

__all__ = [
    "CORUN_FEATURES",
    "OP_VOCAB",
    "STANDALONE_FEATURES",
    "TASK_FEATURES",
    "corun_vector",
    "standalone_vector",
    "task_demand_from_features",
    "task_features",
    "task_signature",
]

OP_VOCAB = (
    "Conv", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "Gelu", "Sigmoid", "Tanh",
    "Erf", "Pow", "Sqrt", "Softmax", "LayerNormalization", "BatchNormalization", "MaxPool",
    "AveragePool", "GlobalAveragePool", "ReduceMean", "Reshape", "Transpose", "Concat", "Gather",
    "Slice", "Split", "Flatten", "Where", "Cast",
)
_COST_FIELDS = ("flops", "bytes_read", "bytes_written", "param_bytes", "intensity")

TASK_FEATURES: tuple[str, ...] = (
    "n_ops",
    *(f"count_{t}" for t in (*OP_VOCAB, "other")),
    *(f"anchor_{t}" for t in (*OP_VOCAB, "other")),
    *_COST_FIELDS,
    *(f"log_{f}" for f in _COST_FIELDS),
    "out_rank", "out_d0", "out_d1", "out_d2", "out_d3", "log_out_numel", "batch",
)
STANDALONE_FEATURES: tuple[str, ...] = (
    *TASK_FEATURES, "roof_log_ms", "roof_compute_share", "roof_memory_share",
)
CORUN_FEATURES: tuple[str, ...] = (
    *STANDALONE_FEATURES, "co_count", "threads", "co_log_sum_flops", "co_log_max_flops",
    "co_log_sum_bytes", "co_sum_intensity", "co_sum_compute_share", "co_sum_memory_share",
    "co_log_sum_roof_ms", "co_log_max_roof_ms", "co_log_roof_ratio", "roof_slowdown",
    "log_roof_slowdown", "co_sum_n_ops", "co_log_sum_overhead_us", "dispatch_share",
    "total_threads", "oversubscription", "log_alone_ms", "co_log_min_alone_ms",
    "co_log_max_alone_ms", "co_log_alone_ratio", "co_calls_per_ms",
)


# ------------------------------------------------------------------ signature
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _describe_op(graph: Graph, op: Op, local: Mapping[str, str]) -> dict[str, Any]:
    inputs = []
    for name in op.inputs:
        if not name:
            inputs.append(None)
            continue
        info = graph.tensor(name)
        inputs.append([local.get(name, info.kind), list(info.shape), info.dtype])
    outputs = [[list(graph.tensor(n).shape), graph.tensor(n).dtype] if n else None for n in op.outputs]
    attrs = {k: _jsonable(op.attrs[k]) for k in sorted(op.attrs)}
    return {"type": op.op_type, "domain": op.domain, "opset": op.opset, "attrs": attrs,
            "in": inputs, "out": outputs}


def task_signature(graph: Graph, task: Task) -> str:
    """A stable hash (24 hex digits) of the task's op types, shapes, dtypes and attributes."""
    local: dict[str, str] = {}
    described = []
    for i, op in enumerate(graph.task_ops(task)):
        described.append(_describe_op(graph, op, local))
        for j, out in enumerate(op.outputs):
            if out:
                local[out] = f"op{i}.{j}"
    blob = json.dumps(described, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# --------------------------------------------------------------- task features
def _log(x: float) -> float:
    return math.log1p(max(0.0, float(x)))


def task_features(graph: Graph, task: Task) -> dict[str, float]:
    """The :data:`TASK_FEATURES` of ``task`` (its ops must carry analysed costs)."""
    ops = require_costs(graph, task)
    feats = dict.fromkeys(TASK_FEATURES, 0.0)
    feats["n_ops"] = float(len(ops))
    for op in ops:
        key = op.op_type if op.op_type in OP_VOCAB else "other"
        feats[f"count_{key}"] += 1.0
    anchor = max(ops, key=lambda o: (o.cost.flops, -ops.index(o)))  # type: ignore[union-attr]
    feats[f"anchor_{anchor.op_type if anchor.op_type in OP_VOCAB else 'other'}"] = 1.0
    cost = graph.task_cost(task)
    values = {"flops": cost.flops, "bytes_read": cost.bytes_read, "bytes_written": cost.bytes_written,
              "param_bytes": cost.param_bytes, "intensity": cost.intensity}
    for name, value in values.items():
        feats[name] = float(value)
        feats[f"log_{name}"] = _log(value)
    out = next((graph.tensor(n) for n in anchor.outputs if n), None)
    if out is not None:
        dims = list(out.shape[-4:])
        dims = [0] * (4 - len(dims)) + dims
        feats["out_rank"] = float(len(out.shape))
        for i, d in enumerate(dims):
            feats[f"out_d{i}"] = float(d)
        feats["log_out_numel"] = _log(out.numel)
    batch = graph.tenant(task.tenant).batch
    feats["batch"] = float(batch if batch else 1)
    return feats


def task_demand_from_features(feats: Mapping[str, float], device: DeviceSpec) -> Demand:
    return demand(feats["flops"], feats["bytes_read"] + feats["bytes_written"], int(feats["n_ops"]), device)


# ------------------------------------------------------------------- vectors
def standalone_vector(feats: Mapping[str, float], device: DeviceSpec) -> list[float]:
    """Values of :data:`STANDALONE_FEATURES` in order."""
    d = task_demand_from_features(feats, device)
    return [float(feats[n]) for n in TASK_FEATURES] + [
        math.log(d.time_s * 1e3), d.compute_share, d.memory_share,
    ]


def corun_vector(
    feats: Mapping[str, float], co_feats: Sequence[Mapping[str, float]], device: DeviceSpec,
    threads: int, alone_ms: float, co_alone_ms: Sequence[float],
) -> list[float]:
    """Values of :data:`CORUN_FEATURES` in order for ``feats`` running beside ``co_feats``;
    ``alone_ms`` and ``co_alone_ms`` are their standalone latencies."""
    own = task_demand_from_features(feats, device)
    others = [task_demand_from_features(f, device) for f in co_feats]
    flops = [f["flops"] for f in co_feats] or [0.0]
    roof_ms = [o.time_s * 1e3 for o in others] or [0.0]
    slowdown = corun_slowdown(own, others)
    return [
        *standalone_vector(feats, device),
        float(len(co_feats)), float(threads), _log(sum(flops)), _log(max(flops)),
        _log(sum(f["bytes_read"] + f["bytes_written"] for f in co_feats)),
        sum(f["intensity"] for f in co_feats),
        sum(o.compute_share for o in others), sum(o.memory_share for o in others),
        _log(sum(roof_ms)), _log(max(roof_ms)),
        math.log(max(roof_ms) / (own.time_s * 1e3)) if others else 0.0,
        slowdown, math.log(slowdown),
        *_dispatch_features(feats, co_feats, device, threads),
        *_latency_features(alone_ms, co_alone_ms),
    ]


def _latency_features(alone_ms: float, co_alone_ms: Sequence[float]) -> list[float]:
    own = max(alone_ms, 1e-6)
    co = [max(ms, 1e-6) for ms in co_alone_ms]
    if not co:
        return [math.log(own), 0.0, 0.0, 0.0, 0.0]
    return [math.log(own), math.log(min(co)), math.log(max(co)), math.log(min(co) / own),
            sum(1.0 / ms for ms in co)]


def _dispatch_features(feats: Mapping[str, float], co_feats: Sequence[Mapping[str, float]],
                       device: DeviceSpec, threads: int) -> list[float]:
    co_ops = sum(f["n_ops"] for f in co_feats)
    total_threads = threads * (1 + len(co_feats))
    return [
        co_ops, _log(co_ops * device.launch_overhead_s * 1e6),
        feats["n_ops"] / max(1.0, feats["n_ops"] + co_ops), float(total_threads),
        total_threads / device.cores if device.kind == "cpu" and device.cores else 0.0,
    ]
