"""Lowering: fewest events, buffer lifetimes, issue order, priorities, bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_graphs import Builder, per_tenant_streams, random_dag, random_streams, tenant_mix

from cosched.codegen import lower, verify_plan
from cosched.codegen.plan import Instruction, Plan
from cosched.errors import PlanError, ScheduleError

CPU = {"kind": "cpu", "name": "test-cpu"}


def triangle(root: Path):
    """op0 -> op1; op2 reads both: tasks 0, 1, 2."""
    b = Builder(root)
    x = b.input("t", "x")
    a = b.op("t", "Relu", [x], "op0")
    c = b.op("t", "Tanh", [a], "op1")
    y = b.op("t", "Add", [a, c], "op2")
    b.output("t", y, "y")
    return b.build()


def waits_of(plan: Plan) -> dict[int, list[int]]:
    """Task -> tasks whose events it waits for."""
    after = {e.id: e.after_task for e in plan.events}
    out: dict[int, list[int]] = {}
    for s in plan.streams:
        pending: list[int] = []
        for ins in s.instructions:
            if ins.op == "wait":
                pending.append(after[ins.event])
            elif ins.op == "run":
                out[ins.task], pending = pending, []
    return out


def test_single_stream_needs_no_events(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, [[t.id for t in g.tasks]], device=CPU)
    assert plan.events == ()
    assert all(i.op == "run" for i in plan.streams[0].instructions)


def test_independent_tenants_on_own_streams_need_no_events(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU)
    assert plan.events == ()
    assert len(plan.streams) == 3


def test_wait_only_for_the_latest_task_of_a_stream(tmp_path: Path) -> None:
    plan = lower(triangle(tmp_path), [[0, 1], [2]], device=CPU)
    assert waits_of(plan) == {0: [], 1: [], 2: [1]}
    assert [(e.stream, e.after_task, e.waiters) for e in plan.events] == [(0, 1, (2,))]


def test_dependency_implied_through_another_stream_gets_no_event(tmp_path: Path) -> None:
    # 2 depends on 0 and 1, but 1 already waited for 0: one wait suffices.
    plan = lower(triangle(tmp_path), [[0], [1], [2]], device=CPU)
    assert waits_of(plan) == {0: [], 1: [0], 2: [1]}
    assert len(plan.events) == 2


def test_one_event_is_shared_by_all_waiters(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    x = b.input("t", "x")
    a = b.op("t", "Relu", [x], "root")
    b.output("t", b.op("t", "Tanh", [a], "left"), "l")
    b.output("t", b.op("t", "Sigmoid", [a], "right"), "r")
    plan = lower(b.build(), [[0], [1], [2]], device=CPU)
    assert len(plan.events) == 1
    assert plan.events[0].waiters == (1, 2)
    records = [i for s in plan.streams for i in s.instructions if i.op == "record"]
    assert records == [Instruction("record", event=0)]


@pytest.mark.parametrize("seed", range(8))
def test_random_plans_verify_and_every_wait_is_necessary(tmp_path: Path, seed: int) -> None:
    g = random_dag(tmp_path, 30, seed)
    plan = lower(g, random_streams(g, 2 + seed % 3, seed), device=CPU)
    verify_plan(plan, g)
    for s in plan.streams:
        for index, ins in enumerate(s.instructions):
            if ins.op != "wait":
                continue
            kept = s.instructions[:index] + s.instructions[index + 1:]
            broken = plan.replace(streams=tuple(
                x if x.id != s.id else type(s)(s.id, s.device, kept, s.priority) for x in plan.streams
            ))
            with pytest.raises(PlanError, match="race"):
                verify_plan(broken, g)


def test_buffer_freed_after_the_reader_ordered_last(tmp_path: Path) -> None:
    g = triangle(tmp_path)
    plan = lower(g, [[0], [1], [2]], device=CPU)
    by_name = {b.tensor: b for b in plan.buffers}
    op0 = by_name["t/op0_out"]
    assert (op0.def_task, op0.use_tasks, op0.free_after) == (0, (1, 2), 2)
    assert by_name["t/op2_out"].free_after is None  # a graph output is never freed


def test_buffer_without_single_last_reader_is_kept_to_the_end(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    a = b.op("t", "Relu", [b.input("t", "x")], "root")
    b.output("t", b.op("t", "Tanh", [a], "left"), "l")
    b.output("t", b.op("t", "Sigmoid", [a], "right"), "r")
    plan = lower(b.build(), [[0], [1], [2]], device=CPU)
    assert {b.tensor: b.free_after for b in plan.buffers}["t/root_out"] is None
    same_stream = lower(b.build(), [[0, 1, 2]], device=CPU)
    assert {b.tensor: b.free_after for b in same_stream.buffers}["t/root_out"] == 2


def test_issue_order_is_breadth_first_across_tenants(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU)
    tenants = [g.task(t).tenant for t in plan.issue_order]
    assert tenants[:6] == ["a", "b", "c", "a", "b", "c"]


def test_issue_order_follows_predicted_start(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a", "b"))
    streams = per_tenant_streams(g)
    # tenant b is predicted to start everything first
    timeline = {t.id: ((0.0 if t.tenant == "b" else 100.0) + t.id, 1000.0) for t in g.tasks}
    plan = lower(g, streams, device=CPU, timeline=timeline)
    assert [g.task(t).tenant for t in plan.issue_order] == ["b"] * 5 + ["a"] * 5
    assert plan.timeline == {t: (s, e) for t, (s, e) in timeline.items()}


def test_latency_critical_tenant_gets_priority(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU, latency_critical=["b"])
    assert [s.priority for s in plan.streams] == [0, -1, 0]
    with pytest.raises(PlanError, match="'zz'"):
        lower(g, per_tenant_streams(g), device=CPU, latency_critical=["zz"])


def test_bindings_and_task_partition(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU, predicted_ms={"plan": 1.5, "sequential": 3.0})
    assert [(b.tenant, b.name, b.tensor) for b in plan.inputs] == [(t, "x", f"{t}/x") for t in "abc"]
    assert {(b.tenant, b.name) for b in plan.outputs} == {(t, n) for t in "abc" for n in ("y", "hidden")}
    assert [t.ops for t in plan.tasks] == [t.ops for t in g.tasks]
    assert plan.predicted_ms["plan"] == 1.5
    # re-import options pin every tenant input to its resolved static shape
    assert plan.import_options.input_shapes == {
        t.name: {own: list(g.tensor(name).shape) for own, name in t.inputs} for t in g.tenants
    }


def test_invalid_schedule_is_rejected(tmp_path: Path) -> None:
    g = triangle(tmp_path)
    with pytest.raises(ScheduleError, match="task 2"):
        lower(g, [[2, 0, 1]], device=CPU)
    with pytest.raises(ScheduleError):
        lower(g, [[0, 1]], device=CPU)


def test_bad_device_and_timeline(tmp_path: Path) -> None:
    g = triangle(tmp_path)
    with pytest.raises(PlanError, match="kind"):
        lower(g, [[0, 1, 2]], device={"kind": "tpu"})
    with pytest.raises(PlanError, match="no times for tasks"):
        lower(g, [[0, 1, 2]], device=CPU, timeline={0: (0.0, 1.0)})
