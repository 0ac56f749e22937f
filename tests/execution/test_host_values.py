"""Kernels read shape, axes and size inputs as host values and create tensors on the run's
device: what keeps a CUDA run free of host synchronisations and capturable.

On CPU, :class:`SyncWatch` stands in for ``torch.cuda.set_sync_debug_mode("error")``: it sees
every torch call a kernel makes and flags reading a tensor back into Python (``item``,
``tolist``, ``bool``, ``int``, ...) unless the tensor is a host value bound at preparation,
and every tensor factory called without a ``device``. The ``gpu``-marked test does the real
thing on a GPU, eagerly and under CUDA-graph capture.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from plan_graphs import random_streams

import cosched.ir
from cosched import zoo
from cosched.codegen import lower
from cosched.errors import DeviceError
from cosched.execution.bindings import bind_inputs
from cosched.execution.kernels import HOST_INPUTS, device_only, host_values, load_constants
from cosched.ops.registry import OpContext, lookup
from cosched.runtime import SequentialExecutor
from cosched.runtime.executor import Executor

READS_BACK = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"}
FACTORIES = {"tensor", "arange", "zeros", "ones", "full", "empty", "eye", "linspace", "rand", "randn"}
EXPORTERS = [pytest.param(False, id="dynamo"), pytest.param(True, id="legacy")]


class SyncWatch(TorchFunctionMode):
    """Flags reads back to Python of non-host tensors and factories without a device."""

    def __init__(self, host: set[int]) -> None:
        super().__init__()
        self.host = host
        self.flagged: list[str] = []
        self.op = ""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in READS_BACK and args and isinstance(args[0], torch.Tensor):
            if args[0].untyped_storage().data_ptr() not in self.host:
                self.flagged.append(f"{self.op}: {name}() of a {tuple(args[0].shape)} tensor")
        elif name in FACTORIES and "device" not in kwargs and getattr(func, "__module__", "") == "torch":
            self.flagged.append(f"{self.op}: torch.{name}() without a device")
        return func(*args, **kwargs)


def _watch_kernels(graph: cosched.ir.Graph, feeds: dict[str, dict[str, np.ndarray]]) -> list[str]:
    seq = SequentialExecutor(graph)
    env: dict[str, torch.Tensor] = {**seq.constants, **bind_inputs(graph, feeds, "cpu")}
    host = {t.untyped_storage().data_ptr() for k in seq.kernels for _, t in k.host}
    watch = SyncWatch(host)
    with torch.inference_mode(), watch:
        for kernel in seq.kernels:
            watch.op = f"{kernel.op.op_type} {kernel.op.name!r}"
            kernel(env)
    return watch.flagged


@pytest.mark.parametrize("legacy", EXPORTERS)
@pytest.mark.parametrize("name", zoo.names())
def test_tiny_zoo_kernels_never_read_device_tensors_back(name: str, legacy: bool) -> None:
    path = zoo.export(name, size="tiny", dynamic_batch=True, legacy=legacy)
    graph = cosched.ir.load_models([path], names=[name], batch=2)
    assert _watch_kernels(graph, {name: zoo.example_inputs(name, "tiny", 2)}) == []


def test_the_watch_flags_a_read_back_and_a_factory_without_device() -> None:
    watch = SyncWatch(host=set())
    with watch:
        torch.ones(2, device="cpu").sum().item()
        torch.arange(3)
    assert len(watch.flagged) == 2


@pytest.mark.parametrize("op_type, inputs, attrs", [
    ("Shape", [torch.zeros(2, 3)], {}),
    ("Size", [torch.zeros(2, 3)], {}),
    ("Constant", [], {"value_ints": [1, 2]}),
    ("Constant", [], {"value": np.ones((2,), np.float32)}),
    ("ConstantOfShape", [torch.tensor([2, 2])], {}),
    ("Range", [torch.tensor(0), torch.tensor(5), torch.tensor(2)], {}),
])
def test_tensors_made_from_nothing_go_to_the_context_device(op_type: str, inputs: list[torch.Tensor],
                                                             attrs: dict[str, Any]) -> None:
    ctx = OpContext(op_type, 18, attrs, 1, "n", torch.device("meta"))
    out = lookup(op_type, 18)(ctx, *inputs)
    assert out.device.type == "meta"


def test_shape_constants_are_bound_on_the_host_and_kept_off_the_device() -> None:
    path = zoo.export("bert", size="tiny", dynamic_batch=True, legacy=True)
    graph = cosched.ir.load_models([path], names=["bert"], batch=2)
    constants = load_constants(graph)
    host = host_values(graph.ops, constants)
    assert host and all(t.device.type == "cpu" for t in host.values())
    kept = device_only(graph.ops, constants)
    dropped = set(constants) - set(kept)
    assert dropped and dropped <= set(host)
    for op in graph.ops:  # nothing dropped is read at a device position
        for i, n in enumerate(op.inputs):
            if n in dropped:
                assert i in HOST_INPUTS[op.op_type], (op.name, n)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_plan_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    from plan_graphs import tenant_mix

    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 2, 1), device={"kind": "cuda", "name": "gpu", "index": 0})
    with pytest.raises(DeviceError, match="targets CUDA, but torch sees no CUDA device"):
        Executor(plan, g)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("name", zoo.names())
def test_tiny_zoo_runs_on_cuda_without_host_synchronisation(name: str, cuda_graph: bool) -> None:
    path = zoo.export(name, size="tiny", dynamic_batch=True, legacy=True)
    graph = cosched.ir.fuse(cosched.ir.load_models([path], names=[name], batch=2))
    plan = lower(graph, random_streams(graph, 2, 3), device={"kind": "cuda", "name": "gpu", "index": 0})
    feeds = {name: zoo.example_inputs(name, "tiny", 2)}
    with Executor(plan, graph, cuda_graph=cuda_graph) as ex:
        if cuda_graph:
            ex.run(feeds)  # warm-up and capture: a host sync would fail the capture itself
        env = {**ex.constants, **bind_inputs(graph, feeds, ex.device)}
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            ex.backend.execute(env)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        got = {k: env[n].cpu().numpy() for k, n in graph.tenants[0].outputs}
    expected = SequentialExecutor(graph).run(feeds)[name]
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-3, atol=1e-3)
