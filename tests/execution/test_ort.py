"""onnxruntime as a task provider: segments, their outputs, plans that use them, their costs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from plan_graphs import per_tenant_streams, random_dag, random_streams, tenant_mix

import cosched
from cosched import zoo
from cosched.calibration import ort_in_situ
from cosched.codegen import lower
from cosched.codegen.emit import emit_python, load_module
from cosched.codegen.plan import Plan, plan_from_json, plan_to_json
from cosched.codegen.steps import segments
from cosched.errors import ConfigError, PlanError, UnsupportedOpError
from cosched.execution.bindings import bind_inputs
from cosched.execution.kernels import load_constants
from cosched.execution.ort import _task_of, build_segment, segment_task_times
from cosched.ir import fuse, load_models
from cosched.ir.graph import Graph
from cosched.runtime import SequentialExecutor, random_inputs
from cosched.runtime.executor import Executor

CPU = {"kind": "cpu", "name": "test"}


def _close(got: dict, want: dict) -> None:  # type: ignore[type-arg]
    """Equal within 1e-4 of each output's scale (the issue's bound), and never NaN."""
    assert got.keys() == want.keys()
    for tenant in want:
        assert got[tenant].keys() == want[tenant].keys()
        for name, ref in want[tenant].items():
            out = got[tenant][name]
            assert out.shape == ref.shape and out.dtype == ref.dtype, (tenant, name)
            assert np.isfinite(out).all(), (tenant, name)
            scale = max(float(np.abs(ref).max()), 1e-6)
            assert float(np.abs(out - ref).max()) <= 1e-4 * scale, (tenant, name)


def _zoo_graph(names: tuple[str, ...] = ("resnet50", "bert", "mobilenet_v2", "dlrm")) -> Graph:
    return fuse(load_models([zoo.export(n, size="tiny") for n in names], names=list(names)))


def _zoo_inputs(names: tuple[str, ...] = ("resnet50", "bert", "mobilenet_v2", "dlrm")) -> dict:  # type: ignore[type-arg]
    return {n: zoo.example_inputs(n, "tiny", 1) for n in names}


# ---------------------------------------------------------------- segments of a plan
def _plan(g: Graph, streams: list[list[int]], provider: str = "ort") -> Plan:
    return lower(g, streams, device=CPU, provider=provider)


def test_segments_cover_the_ort_tasks_and_cut_at_events_and_tenants(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    for streams in (per_tenant_streams(g), random_streams(g, 3, 11), [[t.id for t in g.tasks]]):
        plan = _plan(g, streams)
        runs = segments(plan)
        assert sorted(t for seg in runs for t in seg) == [t.id for t in g.tasks]
        stream_of = plan.stream_of_task()
        recorded = {e.after_task for e in plan.events}
        waits = {t for e in plan.events for t in e.waiters}
        for seg in runs:
            assert len({g.task(t).tenant for t in seg}) == 1
            assert len({stream_of[t] for t in seg}) == 1
            assert not recorded & set(seg[:-1]), "another stream waits inside the segment"
            assert not waits & set(seg[1:]), "the segment waits inside itself"
    # a stream per tenant and no cross-tenant edges: one segment per tenant
    assert len(segments(_plan(g, per_tenant_streams(g)))) == len(g.tenants)
    assert segments(_plan(g, per_tenant_streams(g), provider="torch")) == ()


def test_lower_refuses_an_unknown_provider(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    with pytest.raises(PlanError, match="provider must be one of torch, ort"):
        _plan(g, per_tenant_streams(g), provider="tvm")


def test_provider_survives_the_plan_round_trip(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = _plan(g, random_streams(g, 2, 3))
    again = plan_from_json(plan_to_json(plan))
    assert {t.provider for t in again.tasks} == {"ort"}
    assert segments(again) == segments(plan)


# ---------------------------------------------------------------- executing segments
@pytest.mark.parametrize("layout", ["tenant", "random", "single"])
def test_ort_plans_equal_op_by_op_execution(tmp_path: Path, layout: str) -> None:
    g = tenant_mix(tmp_path)
    streams = {"tenant": per_tenant_streams(g), "random": random_streams(g, 3, 7),
               "single": [[t.id for t in g.tasks]]}[layout]
    with Executor(_plan(g, streams), g) as ex:
        assert set(ex.providers.values()) == {"ort"}
        for seed in range(2):
            inputs = random_inputs(g, seed=seed)
            _close(ex.run(inputs), SequentialExecutor(g).run(inputs))


def test_random_dags_on_ort_equal_op_by_op(tmp_path: Path) -> None:
    for seed in range(3):
        g = random_dag(tmp_path / str(seed), 24, seed)
        with Executor(_plan(g, random_streams(g, 3, seed)), g) as ex:
            inputs = random_inputs(g)
            _close(ex.run(inputs), SequentialExecutor(g).run(inputs))


def test_zoo_tenants_on_ort_equal_op_by_op() -> None:
    g, inputs = _zoo_graph(), _zoo_inputs()
    want = SequentialExecutor(g).run(inputs)
    _close(SequentialExecutor(g, provider="ort", threads=1).run(inputs), want)
    with Executor(_plan(g, random_streams(g, 2, 1)), g) as ex:
        _close(ex.run(inputs), want)
        ex.run(inputs, profile=True)
        assert sorted(t.task for t in ex.last_timings) == [t.id for t in g.tasks]


def test_providers_torch_runs_an_ort_plan_on_torch(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    with Executor(_plan(g, per_tenant_streams(g)), g, providers="torch") as ex:
        assert set(ex.providers.values()) == {"torch"} and ex.segments == ()
        inputs = random_inputs(g)
        _close(ex.run(inputs), SequentialExecutor(g).run(inputs))
    with pytest.raises(ConfigError, match="providers must be None"):
        Executor(_plan(g, per_tenant_streams(g)), g, providers="ort")


def test_an_ort_plan_refuses_cuda(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    with pytest.raises(ConfigError, match="onnxruntime, which cosched uses on CPU only"):
        Executor(_plan(g, per_tenant_streams(g)), g, backend="cuda")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_segment_onnxruntime_cannot_load_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cosched.execution.ort as ort_module

    def refuse(graph: Graph, tasks: object, threads: int, constants: object) -> None:
        raise UnsupportedOpError("onnxruntime cannot load task 0 of tenant 'a': no kernel")

    monkeypatch.setattr(ort_module, "build_segment", refuse)
    records = _Records()
    logger = logging.getLogger("cosched.runtime.program")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.WARNING)  # a CLI test may have quietened "cosched"
    g = tenant_mix(tmp_path)
    try:
        with Executor(_plan(g, per_tenant_streams(g)), g) as ex:
            assert set(ex.providers.values()) == {"torch"}
            inputs = random_inputs(g)
            _close(ex.run(inputs), SequentialExecutor(g).run(inputs))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert any("these tasks run on torch kernels" in m for m in records.messages)


def test_a_segment_refuses_two_tenants_and_subgraphs(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    constants = load_constants(g)
    first = {t.tenant: t.id for t in reversed(g.tasks)}
    with pytest.raises(cosched.CoschedError, match="one tenant's tasks"):
        build_segment(g, sorted(first.values()), 1, constants)
    op = g.task_ops(g.tasks[0])[0]
    bad = g.replace(ops=tuple(o.replace(attrs={"body": __import__("onnx").GraphProto()}) if o is op else o
                              for o in g.ops))
    with pytest.raises(UnsupportedOpError, match="subgraph attribute 'body'"):
        build_segment(bad, [g.tasks[0].id], 1, constants)


def test_generated_module_names_the_provider_and_runs(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = _plan(g, random_streams(g, 2, 4))
    source = emit_python(plan)
    longest = max(segments(plan), key=len)
    assert len(longest) > 1, "the test plan should hold a segment of several tasks"
    assert f"onnxruntime session of tasks {', '.join(map(str, longest))}, run here" in source
    assert f"ran in the onnxruntime session of task {longest[0]}: nothing left to do" in source
    assert "segments=(" in source
    module = load_module(source)
    assert module.PROGRAM.segments == segments(plan)
    inputs = random_inputs(g)
    _close(module.run(g, inputs), SequentialExecutor(g).run(inputs))
    assert "torch kernels" in emit_python(_plan(g, random_streams(g, 2, 4), provider="torch"))


# ---------------------------------------------------------------- what segments cost
def test_segment_task_times_split_the_run_among_its_tasks() -> None:
    g = _zoo_graph(("resnet50",))
    constants = load_constants(g)
    tasks = [t.id for t in g.tasks]
    segment = build_segment(g, tasks, 1, constants)
    env = dict(constants)
    env.update(bind_inputs(g, _zoo_inputs(("resnet50",)), torch.device("cpu")))
    times = segment_task_times(segment, env, 1, runs=3, warmup=1)
    assert sorted(times) == tasks
    assert all(ms > 0 and np.isfinite(ms) for ms in times.values())
    convs = [t.id for t in g.tasks if any(op.op_type == "Conv" for op in g.task_ops(t))]
    assert sum(times[t] for t in convs) > 0.5 * sum(times.values())  # convolutions dominate a CNN


def test_node_names_map_back_to_tasks() -> None:
    ops = {"r/relu": 3, "r/relu_1": 4, "r/conv": 2}
    assert _task_of("r/relu_nchwc", ops) == 3
    assert _task_of("r/relu_1_nchwc", ops) == 4
    assert _task_of("r/relu_1", ops) == 4
    assert _task_of("ReorderOutput", ops) is None


def test_ort_in_situ_gives_latencies_and_boundaries() -> None:
    names = ("resnet50", "dlrm")
    g = _zoo_graph(names)
    latencies, boundaries = ort_in_situ(g, _zoo_inputs(names), [1], runs=2, warmup=1)
    assert len(latencies[1]) == len(g.tasks) and all(ms > 0 for ms in latencies[1])
    assert set(boundaries[1]) == set(names) and all(ms >= 0 for ms in boundaries[1].values())


def test_compile_runs_tasks_on_onnxruntime_by_default_on_cpu() -> None:
    names = ("resnet50", "mobilenet_v2")
    compiled = cosched.compile([zoo.export(n, size="tiny") for n in names], names=list(names),
                               cost_model="roofline", trials=4, profile_budget_s=0)
    assert {t.provider for t in compiled.plan.tasks} == {"ort"}
    inputs = _zoo_inputs(names)
    _close(compiled.run(inputs), compiled.reference.run(inputs))
    torch_plan = cosched.compile([zoo.export(n, size="tiny") for n in names], names=list(names),
                                 cost_model="roofline", trials=4, profile_budget_s=0, provider="torch",
                                 in_situ=False)
    assert {t.provider for t in torch_plan.plan.tasks} == {"torch"}
    with pytest.raises(ConfigError, match="provider must be 'auto'"):
        cosched.compile([zoo.export("dlrm", size="tiny")], provider="tvm")
