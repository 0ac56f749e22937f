"""The plan validator: a plan missing one event, or otherwise unordered, is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_graphs import per_tenant_streams, random_dag, random_streams, tenant_mix

from cosched.codegen import lower, verify_plan
from cosched.codegen.plan import Buffer, Instruction, Plan, StreamPlan
from cosched.errors import PlanError

CPU = {"kind": "cpu", "name": "test-cpu"}


@pytest.fixture
def plan_and_graph(tmp_path: Path):  # type: ignore[no-untyped-def]
    g = random_dag(tmp_path, 24, seed=3)
    plan = lower(g, random_streams(g, 3, 3), device=CPU)
    assert plan.events, "the fixture must need events"
    return verify_plan(plan, g), g


def _without(plan: Plan, drop) -> Plan:  # type: ignore[no-untyped-def]
    return plan.replace(streams=tuple(
        StreamPlan(s.id, s.device, tuple(i for i in s.instructions if not drop(i)), s.priority)
        for s in plan.streams
    ))


def test_valid_plan_passes_with_and_without_graph(plan_and_graph) -> None:  # type: ignore[no-untyped-def]
    plan, g = plan_and_graph
    assert verify_plan(plan, g) is plan
    assert verify_plan(plan) is plan  # dependencies from the buffers alone


def test_plan_with_one_event_deleted_is_rejected(plan_and_graph) -> None:  # type: ignore[no-untyped-def]
    plan, g = plan_and_graph
    for event in plan.events:
        broken = _without(plan, lambda i, e=event.id: i.op in ("record", "wait") and i.event == e)
        with pytest.raises(PlanError, match=r"task \d+ \(r:.*depends on task .* the plan has a race"):
            verify_plan(broken, g)
        with pytest.raises(PlanError, match=r"race"):
            verify_plan(broken)


def test_record_deleted_deadlocks(plan_and_graph) -> None:  # type: ignore[no-untyped-def]
    plan, g = plan_and_graph
    broken = _without(plan, lambda i: i.op == "record" and i.event == 0)
    with pytest.raises(PlanError, match=r"deadlocks: stream .* waits for event 0"):
        verify_plan(broken, g)


def test_double_record_and_duplicate_task(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    plan = lower(g, [[0, 1], [2, 3, 4]], device=CPU)
    s0 = plan.streams[0]
    twice = StreamPlan(0, 0, (*s0.instructions, Instruction("record", event=0)))
    with pytest.raises(PlanError, match=r"recorded twice"):
        verify_plan(plan.replace(streams=(twice, plan.streams[1])), g)
    dup = StreamPlan(0, 0, (*s0.instructions, Instruction("run", task=3)))
    with pytest.raises(PlanError, match=r"task 3 runs twice"):
        verify_plan(plan.replace(streams=(dup, plan.streams[1])), g)


def test_early_free_is_rejected(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    plan = lower(g, [[0, 1, 3, 4], [2]], device=CPU)
    relu = next(b for b in plan.buffers if b.tensor == "a/relu_out")
    assert relu.use_tasks == (1, 2)
    early = Buffer(**{**relu.__dict__, "free_after": 1})
    buffers = tuple(early if b.tensor == relu.tensor else b for b in plan.buffers)
    with pytest.raises(PlanError, match=r"'a/relu_out' is freed after task 1.*task 2"):
        verify_plan(plan.replace(buffers=buffers), g)


def test_issue_order_must_issue_records_before_waits(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    plan = lower(g, [[0, 1, 3, 4], [2]], device=CPU)
    order = list(plan.issue_order)
    order.remove(0)
    order.insert(order.index(2) + 1, 0)  # task 2 waits for task 0's event but is issued first
    with pytest.raises(PlanError, match=r"issue_order"):
        verify_plan(plan.replace(issue_order=tuple(order)), g)


def test_tasks_must_match_the_graph(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a", "b"))
    plan = lower(g, per_tenant_streams(g), device=CPU)
    other = tenant_mix(tmp_path / "o", tenants=("b", "a"))
    with pytest.raises(PlanError, match=r"differ from the graph's tasks"):
        verify_plan(plan, other)
