"""The plan cache a server runs: a runner per set of tenants (full, compiled or composed),
each computing what its tenants' models compute, all sharing what they load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import cosched
import cosched.execution.ort as ort_module
import cosched.execution.traced as traced_module
from cosched import zoo
from cosched.errors import ConfigError, InputError
from cosched.execution.compare import compare_outputs
from cosched.execution.ort import available as ort_available
from cosched.ir.cut import tenant_graph
from cosched.runtime import SequentialExecutor
from cosched.runtime.executor import Executor, default_threads
from cosched.runtime.plancache import PlanCache, default_lanes, share_threads

NAMES = ["resnet50", "mobilenet_v2", "dlrm"]
SETS = [frozenset(c) for k in (1, 2, 3) for c in itertools.combinations(NAMES, k)]


def _compile(provider: str) -> cosched.CompiledPlan:
    return cosched.compile([zoo.export(n, size="tiny") for n in NAMES], names=NAMES, cost_model="roofline",
                           trials=4, max_streams=2, serve=True, provider=provider, slo_ms={"dlrm": 40.0},
                           in_situ=False)


@pytest.fixture(scope="module")
def served() -> cosched.CompiledPlan:
    return _compile("torch")


def _feed(compiled: cosched.CompiledPlan, key: frozenset[str], seed: int) -> dict:
    return {t: v for t, v in compiled.inputs(seed).items() if t in key}


def test_every_set_runs_its_own_plan_and_computes_its_models(served: cosched.CompiledPlan) -> None:
    subsets = dict(served.subsets)
    missing = subsets.pop(frozenset({"resnet50", "dlrm"}))  # a set with no plan: composed at run time
    assert missing is not None
    cache = PlanCache(served.plan, served.graph, subsets, slo_ms={"dlrm": 40.0})
    try:
        for seed, key in enumerate(SETS):
            runner = cache.runner(key)
            want = "full" if len(key) == 3 else "composed" if key == {"resnet50", "dlrm"} else "compiled"
            assert runner.source == want and runner.tenants == key
            assert (cache.predicted_ms(key) is None) == (want == "composed")
            feed = _feed(served, key, seed)
            got = runner.run(feed)
            assert set(got) == key
            assert compare_outputs(got, SequentialExecutor(tenant_graph(served.graph, key)).run(feed)).agrees(1e-4)
        assert cache.runner(frozenset(NAMES)) is cache.runner(set(NAMES))  # built once
        assert cache.sources()[frozenset({"resnet50", "dlrm"})] == "composed"
    finally:
        cache.close()


def test_runners_share_weights_and_traces(served: cosched.CompiledPlan, monkeypatch: pytest.MonkeyPatch) -> None:
    traced = []
    real = traced_module.trace_task
    monkeypatch.setattr(traced_module, "trace_task", lambda *a, **k: traced.append(1) or real(*a, **k))
    cache = PlanCache(served.plan, served.graph, served.subsets)
    try:
        full = cache.runner(frozenset(NAMES)).executor
        after_full = len(traced)
        for key in SETS:
            cut = cache.runner(key).executor
            for name, value in cut.constants.items():
                assert value is full.constants[name]  # one copy of every weight
            programs = cut.backend.tasks
            assert all(programs[t].traced is full.backend.tasks[t].traced for t in programs)
        assert len(traced) == after_full  # no task was traced again for a set
    finally:
        cache.close()


@pytest.mark.skipif(not ort_available(), reason="onnxruntime does not import here")
def test_runners_share_onnxruntime_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = _compile("ort")
    built = []
    real = ort_module.build_segment
    monkeypatch.setattr(ort_module, "build_segment", lambda g, tasks, threads, c: built.append(
        (tuple(tasks), threads)) or real(g, tasks, threads, c))
    first = PlanCache(compiled.plan, compiled.graph, compiled.subsets)
    second = PlanCache(compiled.plan, compiled.graph, compiled.subsets)
    try:
        for key in SETS:
            assert compare_outputs(first.runner(key).run(_feed(compiled, key, 1)),
                                   SequentialExecutor(tenant_graph(compiled.graph, key)).run(_feed(compiled, key, 1))
                                   ).agrees(1e-4)
        assert len(built) == len(set(built))  # a segment cut alike in two plans is one session
        count = len(built)
        for key in SETS:
            second.runner(key)
        assert len(built) == count  # another cache of the same graph builds none
    finally:
        first.close()
        second.close()


def test_requests_are_checked_naming_tenant_and_tensor(served: cosched.CompiledPlan) -> None:
    cache = PlanCache(served.plan, served.graph, served.subsets)
    feed = served.inputs(0)
    assert set(cache.check_request("resnet50", feed["resnet50"])) == set(feed["resnet50"])
    with pytest.raises(InputError, match=r"unknown tenant 'gpt'; the plan serves \['resnet50', 'mobilenet_v2', "
                                         r"'dlrm'\]"):
        cache.check_request("gpt", {})
    name = next(iter(feed["resnet50"]))
    with pytest.raises(InputError, match=f"resnet50.*{name}"):
        cache.check_request("resnet50", {name: np.zeros((1, 2), np.float32)})
    nan = {k: np.full_like(v, np.nan) for k, v in feed["resnet50"].items()}
    with pytest.raises(InputError, match="resnet50"):
        cache.check_request("resnet50", nan)
    with pytest.raises(ConfigError, match=r"unknown tenant\(s\) \['gpt'\]"):
        cache.runner(frozenset({"gpt"}))
    with pytest.raises(ConfigError, match=r"unknown tenant\(s\) \['gpt'\]"):
        PlanCache(served.plan, served.graph, slo_ms={"gpt": 3.0})


def test_runners_share_weights_without_traces_too(served: cosched.CompiledPlan) -> None:
    """On CUDA tasks are not traced; a set's executor must still not load its weights again."""
    cache = PlanCache(served.plan, served.graph, served.subsets,
                      executor=lambda plan, graph, threads: Executor(plan, graph, trace_tasks=False))
    try:
        full = cache.runner(frozenset(NAMES)).executor
        for key in SETS[:-1]:
            cut = cache.runner(key).executor
            assert cut.constants and all(v is full.constants[n] for n, v in cut.constants.items())
    finally:
        cache.close()


def test_a_runner_beside_others_takes_its_share_of_the_cores(served: cosched.CompiledPlan) -> None:
    assert share_threads(1, 1) is None and share_threads(2, 1) is None
    assert share_threads(1, 2) == (default_threads(2) if default_threads(2) < default_threads(1) else None)
    cache = PlanCache(served.plan, served.graph, served.subsets)
    try:
        key = frozenset({"dlrm"})
        alone, beside = cache.runner(key), cache.runner(key, share=2)
        streams = len(alone.plan.streams)
        assert alone.executor.backend.threads_per_stream == default_threads(streams)
        assert beside.executor.backend.threads_per_stream == default_threads(2 * streams)
        assert (beside is alone) == (default_threads(2 * streams) == default_threads(streams))
        assert cache.runner(key, share=2) is beside
        feed = _feed(served, key, 4)
        assert compare_outputs(beside.run(feed), alone.run(feed)).agrees(1e-5)
    finally:
        cache.close()


def test_two_lanes_by_default_on_a_multi_core_cpu_only(served: cosched.CompiledPlan) -> None:
    cores = default_threads(1)
    assert default_lanes(served.plan) == (2 if cores >= 2 else 1)
    assert default_lanes(served.plan.replace(device={**served.plan.device, "kind": "cuda"})) == 1
    alone = served.plan.replace(models=served.plan.models[:1])
    assert default_lanes(alone) == 1
