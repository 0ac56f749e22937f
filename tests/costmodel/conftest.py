"""Tiny inline graphs with analysed costs, and a device spec that needs no measuring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import task_features, task_signature
from cosched.costmodel.store import CorunGroup, ProfileData, StandaloneRecord
from cosched.ir.graph import Graph, Op, OpCost, Task, TenantInfo, TensorInfo, frozen_mapping

FLOAT = 4


def fake_device(**changes: object) -> DeviceSpec:
    values: dict[str, object] = {
        "kind": "cpu", "name": "test cpu", "fingerprint": "0123456789abcdef", "cores": 2,
        "memory_bytes": 8 << 30, "peak_flops": 1e11, "bandwidth": 1e10, "launch_overhead_s": 1e-5,
    }
    values.update(changes)
    return DeviceSpec(**values)  # type: ignore[arg-type]


def mlp_graph(widths: tuple[int, ...] = (16, 32, 32), batch: int = 1, tenant: str = "a") -> Graph:
    """x -> [MatMul(W_i) -> Relu] per layer; one task per layer; weights held as constants."""
    def q(name: str) -> str:
        return f"{tenant}/{name}"

    tensors = {q("x"): TensorInfo(q("x"), (batch, widths[0]), "float32", tenant, "input")}
    constants, ops, tasks = {}, [], []
    prev = q("x")
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w, mm, out = q(f"w{i}"), q(f"mm{i}"), q(f"y{i}")
        tensors[w] = TensorInfo(w, (n_in, n_out), "float32", tenant, "constant")
        tensors[mm] = TensorInfo(mm, (batch, n_out), "float32", tenant)
        tensors[out] = TensorInfo(out, (batch, n_out), "float32", tenant)
        constants[w] = np.random.default_rng(i).standard_normal((n_in, n_out)).astype(np.float32)
        mm_cost = OpCost(2 * batch * n_in * n_out, FLOAT * (batch * n_in + n_in * n_out),
                         FLOAT * batch * n_out, FLOAT * n_in * n_out)
        relu_cost = OpCost(batch * n_out, FLOAT * batch * n_out, FLOAT * batch * n_out, 0)
        ops.append(Op(q(f"matmul{i}"), "MatMul", tenant, (prev, w), (mm,), opset=17, cost=mm_cost))
        ops.append(Op(q(f"relu{i}"), "Relu", tenant, (mm,), (out,), opset=17, cost=relu_cost))
        tasks.append(Task(i, tenant, (q(f"matmul{i}"), q(f"relu{i}")), f"layer{i}"))
        prev = out
    info = TenantInfo(tenant, None, "0" * 64, frozen_mapping({"": 17}), (("x", q("x")),),
                      (("y", prev),), batch)
    return Graph((info,), tuple(ops), frozen_mapping(tensors), constants=frozen_mapping(constants),
                 tasks=tuple(tasks)).verify()


@pytest.fixture
def device() -> DeviceSpec:
    return fake_device()


@pytest.fixture(scope="session")
def make_mlp():  # type: ignore[no-untyped-def]
    return mlp_graph


@pytest.fixture(scope="session")
def make_device():  # type: ignore[no-untyped-def]
    return fake_device


def synthetic_profiles(device: DeviceSpec, n: int = 24, seed: int = 0) -> ProfileData:
    """Profiles of MLP layers of many widths with a known latency law and a known slowdown:
    latency grows with FLOPs; co-running slows each member by 1 + 0.3 per co-runner."""
    rng = np.random.default_rng(seed)
    standalone = {}
    for i in range(n):
        graph = mlp_graph((8 * (i + 1), 16 + 8 * i), batch=1 + i % 3)
        task = graph.tasks[0]
        feats = task_features(graph, task)
        ms = 0.01 + feats["flops"] / 2e6 * (1 + 0.02 * rng.standard_normal())
        standalone[task_signature(graph, task)] = StandaloneRecord(
            task_signature(graph, task), feats, ms, 0.0, 5, f"w{i}")
    sigs = sorted(standalone)
    groups = []
    for g in range(60):
        k = 2 + g % 3
        members = tuple(sigs[j] for j in rng.choice(len(sigs), size=k, replace=False))
        lat = tuple(standalone[s].median_ms * (1 + 0.3 * (k - 1)) for s in members)
        groups.append(CorunGroup(members, lat, max(lat), (1,) * k, f"g{g}"))
    return ProfileData(device, standalone, tuple(groups))


@pytest.fixture(scope="session")
def make_profiles():  # type: ignore[no-untyped-def]
    return synthetic_profiles
