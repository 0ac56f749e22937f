"""Plans for some of a plan's tenants: composed from its schedule, verified, and computing
what those tenants' models compute."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import cosched
from cosched import zoo
from cosched.codegen.subset import subset_plan, tenant_graph
from cosched.codegen.verify import verify_plan
from cosched.errors import ConfigError
from cosched.execution.compare import compare_outputs
from cosched.runtime import SequentialExecutor
from cosched.runtime.executor import Executor

NAMES = ["resnet50", "bert", "dlrm"]


@pytest.fixture(scope="module")
def compiled() -> cosched.CompiledPlan:
    plan = cosched.compile([zoo.export(n, size="tiny") for n in NAMES], names=NAMES, cost_model="roofline",
                           trials=6, max_streams=3, slo_ms={"bert": 50.0}, best_effort=True, in_situ=False)
    assert len(plan.plan.streams) >= 2
    return plan


@pytest.mark.parametrize("tenants", [c for k in (1, 2, 3) for c in itertools.combinations(NAMES, k)])
def test_every_subset_keeps_its_tasks_in_order_and_computes_its_outputs(compiled: cosched.CompiledPlan,
                                                                        tenants: tuple[str, ...]) -> None:
    plan, graph = subset_plan(compiled.plan, compiled.graph, tenants)
    assert plan.tenants == tuple(n for n in NAMES if n in tenants) == graph.tenant_names
    full = [list(s.tasks) for s in compiled.plan.streams]
    kept = {t.id for t in compiled.plan.tasks if t.tenant in tenants}
    assert [list(s.tasks) for s in plan.streams] == [o for s in full if (o := [t for t in s if t in kept])]
    assert {t.id: t.provider for t in plan.tasks} == {t.id: t.provider for t in compiled.plan.tasks if t.id in kept}
    verify_plan(plan, graph)
    feed = {t: v for t, v in compiled.inputs(seed=3).items() if t in tenants}
    with Executor(plan, graph) as executor:
        got = executor.run(feed)
    assert compare_outputs(got, SequentialExecutor(graph).run(feed)).agrees(1e-4)


def test_a_latency_critical_tenant_keeps_its_priority(compiled: cosched.CompiledPlan) -> None:
    plan, _ = subset_plan(compiled.plan, compiled.graph, ["bert", "dlrm"])
    bert = {t.id for t in plan.tasks if t.tenant == "bert"}
    assert all(s.priority < 0 for s in plan.streams if bert & set(s.tasks))


def test_bad_subsets_are_named(compiled: cosched.CompiledPlan, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown tenant\(s\) \['gpt'\]: the plan has \['resnet50', 'bert', 'dlrm'\]"):
        subset_plan(compiled.plan, compiled.graph, ["bert", "gpt"])
    with pytest.raises(ConfigError, match="give at least one tenant"):
        subset_plan(compiled.plan, compiled.graph, [])
    with pytest.raises(ConfigError, match="unknown tenant"):
        tenant_graph(compiled.graph, ["gpt"])
    two = compiled.plan.replace(devices=(object(),))  # a stand-in for a multi-device plan
    with pytest.raises(ConfigError, match="one-device plans only"):
        subset_plan(two, compiled.graph, ["bert"])
