"""Traced tasks: kept only when safe to replay, bit-identical to op-by-op execution.

Covers :func:`trace_task`'s three rejections (value-dependent conversions, failing kernels,
mismatching outputs), its acceptance of shape-only conversions, and that executors running
traced tasks (the plan's CPU executor, the traced sequential baseline, the profiler's task
runner) give the same bits as op-by-op execution on every tiny zoo model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import cosched.ir
from cosched import zoo
from cosched.codegen import lower
from cosched.costmodel.runner import TaskRunner
from cosched.errors import ConfigError
from cosched.execution.kernels import Kernel
from cosched.execution.traced import TracedTask, example_inputs, shared_constants, trace_task
from cosched.ir.graph import Op
from cosched.ops.registry import OpContext
from cosched.runtime import SequentialExecutor
from cosched.runtime.executor import Executor


def _kernel(fn: Callable[..., torch.Tensor], inputs: tuple[str, ...], output: str) -> Kernel:
    op = Op(f"t/{output}", "Custom", "t", inputs, (output,))
    return Kernel(op, lambda ctx, *args: fn(*args), OpContext("Custom", 1))


def _draws(shape: tuple[int, ...] = (3, 4)) -> list[dict[str, torch.Tensor]]:
    return [{"x": torch.randn(shape, generator=torch.Generator().manual_seed(s))} for s in (0, 1)]


def test_a_plain_task_is_traced_and_replays_the_kernels() -> None:
    kernels = [_kernel(lambda x: torch.relu(x) * 2, ("x",), "a"), _kernel(lambda a: a + 1, ("a",), "y")]
    traced, why = trace_task(kernels, ["x"], ["y"], _draws())
    assert isinstance(traced, TracedTask), why
    x = torch.randn(3, 4)
    env = {"x": x}
    traced(env)
    torch.testing.assert_close(env["y"], torch.relu(x) * 2 + 1, rtol=0, atol=0)
    assert "a" not in env  # an intermediate of the task is not written back


def test_a_value_dependent_task_is_left_op_by_op() -> None:
    """x * float(x.sum()) would replay the example's sum forever: the two draws disagree."""
    kernels = [_kernel(lambda x: x * float(x.sum()), ("x",), "y")]
    traced, why = trace_task(kernels, ["x"], ["y"], _draws())
    assert traced is None
    assert why.startswith("value-dependent"), why


def test_a_shape_dependent_conversion_is_traced() -> None:
    """Shapes are static in a cosched graph: a size turned into a Python float is safe."""
    kernels = [_kernel(lambda x: x * float(x.shape[1]), ("x",), "y")]
    traced, why = trace_task(kernels, ["x"], ["y"], _draws())
    assert traced is not None, why
    env = {"x": torch.ones(3, 4)}
    traced(env)
    assert torch.equal(env["y"], torch.full((3, 4), 4.0))


def test_fixed_values_may_be_read_as_python_values() -> None:
    """Weights and constants never change between runs, so a kernel may read them."""
    kernels = [_kernel(lambda x, s: x.reshape([int(v) for v in s.tolist()]), ("x", "shape"), "y")]
    fixed = {"shape": torch.tensor([4, 3])}
    traced, why = trace_task(kernels, ["x"], ["y"], _draws(), fixed)
    assert traced is not None, why
    env = {"x": torch.arange(12.0).reshape(3, 4)}
    traced(env)
    assert env["y"].shape == (4, 3)


def test_failing_kernels_and_non_tensor_outputs_are_left_op_by_op() -> None:
    def boom(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("no")

    traced, why = trace_task([_kernel(boom, ("x",), "y")], ["x"], ["y"], _draws())
    assert traced is None and "ValueError: no" in why
    traced, why = trace_task([_kernel(lambda x: x, ("x",), "y")], ["x"], ["missing"], _draws())
    assert traced is None


def test_one_draw_is_refused() -> None:
    with pytest.raises(ValueError, match="two draws"):
        trace_task([], [], [], _draws()[:1])


def test_example_inputs_differ_between_draws_in_every_dtype() -> None:
    b = cosched.ir.load_models([zoo.export("bert", size="tiny")], names=["bert"])
    names = [n for n, info in b.tensors.items() if info.kind == "input"]
    first, second = (example_inputs(b, names, {}, torch.device("cpu"), s) for s in (0, 1))
    for name in names:
        assert first[name].shape == tuple(b.tensor(name).shape)
        assert not torch.equal(first[name], second[name]), name


def _fused(name: str, legacy: bool = False) -> cosched.ir.Graph:
    path = zoo.export(name, size="tiny", dynamic_batch=True, legacy=legacy)
    return cosched.ir.fuse(cosched.ir.load_models([path], names=[name], batch=2))


@pytest.mark.parametrize("legacy", [pytest.param(False, id="dynamo"), pytest.param(True, id="legacy")])
@pytest.mark.parametrize("name", zoo.names())
def test_every_tiny_zoo_task_traces_and_equals_op_by_op(name: str, legacy: bool) -> None:
    graph = _fused(name, legacy)
    feeds = {name: zoo.example_inputs(name, "tiny", 2)}
    reference = SequentialExecutor(graph).run(feeds)[name]
    traced = SequentialExecutor(graph, trace_tasks=True)
    assert traced.tracer is not None
    assert traced.tracer.eager == 0, traced.tracer.reasons
    assert traced.tracer.traced == len(graph.tasks)
    got = traced.run(feeds)[name]
    assert sorted(got) == sorted(reference)
    for output, value in reference.items():
        np.testing.assert_array_equal(got[output], value, err_msg=f"{name}: output {output!r}")


def test_plan_executor_traces_on_cpu_and_equals_op_by_op() -> None:
    paths = [zoo.export(n, size="tiny") for n in ("resnet50", "bert")]
    graph = cosched.ir.analyse(cosched.ir.fuse(cosched.ir.load_models(paths, names=["resnet50", "bert"])))
    streams = [[t.id for t in graph.tasks if t.tenant == name] for name in ("resnet50", "bert")]
    plan = lower(graph, streams, device={"kind": "cpu", "name": "test-cpu"})
    feeds = {n: zoo.example_inputs(n, "tiny", 1) for n in ("resnet50", "bert")}
    # one intra-op thread everywhere: convolutions sum in another order on another thread
    # count, which changes last bits whether traced or not
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = SequentialExecutor(graph).run(feeds)
    finally:
        torch.set_num_threads(before)
    with Executor(plan, graph, threads_per_stream=1) as traced, \
            Executor(plan, graph, trace_tasks=False, threads_per_stream=1) as eager:
        assert traced.tracer is not None and traced.tracer.traced == len(graph.tasks)
        assert eager.tracer is None
        for executor in (traced, eager):
            got = executor.run(feeds)
            for tenant, outputs in reference.items():
                for output, value in outputs.items():
                    np.testing.assert_array_equal(got[tenant][output], value, err_msg=f"{tenant}/{output}")


def test_traces_hold_the_weights_themselves_not_copies() -> None:
    """A tensor a trace bakes in is a shared constant (or a view of one), before and after the
    executor optimises the trace on early runs; the few others are values derived from
    constants alone (bert's position embeddings of its 16 positions), far smaller."""
    graph = _fused("bert")
    feeds = {"bert": zoo.example_inputs("bert", "tiny", 2)}
    executor = SequentialExecutor(graph, trace_tasks=True)
    executor.run(feeds)
    executor.run(feeds)  # the profiling executor's optimised plan exists from the second run
    weights = shared_constants(graph, torch.device("cpu")).values()
    storages = {t.untyped_storage().data_ptr() for t in weights}
    shared = derived = 0
    for step in executor._steps or ():
        assert isinstance(step, TracedTask)
        graphs = [step.fn.graph, *(p.graph for p in step.fn.get_debug_state().execution_plans.values())]
        for node in (n for g in graphs for n in g.nodes() if n.kind() == "prim::Constant"):
            if node.output().type().kind() == "TensorType":
                storage = node.t("value").untyped_storage()
                if storage.data_ptr() in storages:
                    shared += 1
                else:
                    derived += storage.nbytes()
    assert shared > 0
    assert derived < 0.02 * sum(t.numel() * t.element_size() for t in weights)


def test_traced_sequential_needs_tasks() -> None:
    graph = cosched.ir.load_models([zoo.export("dlrm", size="tiny")], names=["dlrm"])
    with pytest.raises(ConfigError, match="fused into tasks"):
        SequentialExecutor(graph.replace(tasks=()), trace_tasks=True)


def test_profiler_runner_runs_the_traced_task() -> None:
    graph = cosched.ir.analyse(_fused("mobilenet_v2"))
    weights: dict[str, Any] = cosched.ir.read_weights(graph, "mobilenet_v2")
    task = max(graph.tasks, key=lambda t: len(t.ops))
    traced = TaskRunner(graph, task, torch.device("cpu"), weights)
    eager = TaskRunner(graph, task, torch.device("cpu"), weights, trace=False)
    assert traced.traced and not eager.traced
    traced()
    eager()
