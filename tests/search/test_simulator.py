from __future__ import annotations

import pytest
from search_helpers import make_table

from cosched.errors import CostModelError, ScheduleError
from cosched.search.costtable import CostTable
from cosched.search.schedule import Schedule
from cosched.search.simulator import simulate
from cosched.search.synthetic import task_graph


def test_two_tasks_slowed_together():
    # A = 2 ms (tenant a), B = 3 ms (tenant b), slowdown 1.5 while together.
    # Both run at rate 1/1.5: A finishes its 2 ms of work at t = 3.0; by then B has done
    # 2 ms of its 3, and finishes the last 1 ms alone at t = 4.0.
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    sim = simulate(Schedule.single([[0], [1]]), table)
    assert sim.start == (0.0, 0.0)
    assert sim.end == pytest.approx((3.0, 4.0))
    assert sim.makespan == pytest.approx(4.0)
    assert dict(sim.tenant_completion) == pytest.approx({"a": 3.0, "b": 4.0})
    (pair,) = sim.pairs
    assert (pair.a, pair.b) == (0, 1)
    assert (pair.slowdown_a, pair.slowdown_b) == pytest.approx((1.5, 1.5))


def test_sequential_stream_sums_latencies():
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    sim = simulate(Schedule.single([[0, 1]]), table)
    assert sim.end == pytest.approx((2.0, 5.0))
    assert sim.pairs == ()


def test_dependency_across_streams_and_rate_change():
    # Tenant a: A (2 ms) -> C (1 ms) on stream 0; tenant b: B (3 ms) on stream 1; every pair
    # slows 1.5x. A and B share [0, 3]: A ends at 3, B has 1 ms of work left. C starts at 3
    # beside B, both at rate 1/1.5, each with 1 ms of work: both end at 4.5.
    table = make_table([("a", []), ("b", []), ("a", [0])], [2.0, 3.0, 1.0], pair_default=1.5)
    sim = simulate(Schedule.single([[0, 2], [1]]), table)
    assert sim.start == pytest.approx((0.0, 0.0, 3.0))
    assert sim.end == pytest.approx((3.0, 4.5, 4.5))
    assert [(p.a, p.b) for p in sim.pairs] == [(0, 1), (1, 2)]


def test_waiting_for_a_dependency_on_another_stream():
    # Stream 1 runs 1 (tenant a, needs 0) then 2 (tenant b): 1 waits for 0 to end at t = 2.
    table = make_table([("a", []), ("a", [0]), ("b", [])], [2.0, 1.0, 1.0])
    sim = simulate(Schedule.single([[0], [1, 2]]), table)
    assert sim.start == pytest.approx((0.0, 2.0, 3.0))
    assert sim.makespan == pytest.approx(4.0)


def test_three_way_overlap_uses_the_set_slowdown():
    # Three 1 ms tasks, each pair 1.2x, so each runs at 1/1.44 beside two others: all end at 1.44.
    table = make_table([("a", []), ("b", []), ("c", [])], [1.0, 1.0, 1.0], pair_default=1.2)
    sim = simulate(Schedule.single([[0], [1], [2]]), table)
    assert sim.end == pytest.approx((1.44, 1.44, 1.44))
    assert all(p.worst == pytest.approx(1.44) for p in sim.pairs)
    assert sim.violations(1.10) == sim.pairs
    assert sim.violations(1.5) == ()
    assert sim.excess(1.44) == pytest.approx(0.0)


def test_launch_overhead_is_added_per_task():
    graph = make_table([("a", []), ("a", [0])], [1.0, 1.0]).graph
    table = CostTable(graph, make_table([("a", []), ("a", [0])], [1.0, 1.0]).model, 0.25)
    assert simulate(Schedule.single([[0, 1]]), table).makespan == pytest.approx(2.5)


def test_deadlocked_schedule_is_an_error():
    table = make_table([("a", []), ("a", [0]), ("b", []), ("b", [2])], [1.0] * 4)
    with pytest.raises(ScheduleError, match="deadlocks"):
        simulate(Schedule.single([[1, 2], [3, 0]]), table)


def test_incomplete_schedule_is_an_error():
    table = make_table([("a", []), ("b", [])], [1.0, 1.0])
    with pytest.raises(ScheduleError, match="1 task entries"):
        simulate(Schedule.single([[0]]), table)


def test_cost_model_returning_bad_slowdown_is_named():
    table = make_table([("a", []), ("b", [])], [1.0, 1.0], {(0, 1): 0.5})
    with pytest.raises(CostModelError, match=r"slowdown 0.5 for task \d beside"):
        simulate(Schedule.single([[0], [1]]), table)


def test_task_ids_out_of_topological_order_are_rejected():
    graph = make_table([("a", []), ("a", [0])], [1.0, 1.0]).graph
    tasks = tuple(t.__class__(1 - t.id, t.tenant, t.ops, t.name) for t in graph.tasks)
    bad = graph.replace(tasks=tasks)
    with pytest.raises(ScheduleError, match=r"ids 0\.\.1 in order"):
        CostTable(bad, make_table([("a", []), ("a", [0])], [1.0, 1.0]).model)


def test_slowdowns_are_cached_across_simulations():
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    simulate(Schedule.single([[0], [1]]), table)
    cached = table.cached_slowdowns
    simulate(Schedule.single([[1], [0]]), table)
    assert table.cached_slowdowns == cached == 2


def test_slowdowns_together_are_each_members_and_asked_once_per_set():
    calls = []
    table = make_table([("a", []), ("b", []), ("c", [])], [1.0, 1.0, 1.0], {(0, 1): 1.5, (1, 2): 1.2})
    predict = table.model.predict_slowdowns
    table.model.predict_slowdowns = lambda graph, queries: calls.append(len(queries)) or predict(graph, queries)  # type: ignore[method-assign]
    together = table.slowdowns_together(frozenset({0, 1, 2}))
    assert dict(together) == {0: 1.5, 1: pytest.approx(1.8), 2: 1.2}
    assert together == {t: table.slowdown(t, frozenset({0, 1, 2}) - {t}) for t in range(3)}
    assert table.slowdowns_together(frozenset({2, 1, 0})) is together
    assert calls == [3]


def test_task_graph_rejects_cross_tenant_predecessor():
    from cosched.errors import GraphError
    from cosched.ir.graph import OpCost

    with pytest.raises(GraphError, match="task 1 of tenant 'b' lists predecessor 0"):
        task_graph([("a", [], OpCost()), ("b", [0], OpCost())])


def _with_boundaries(table: CostTable, per_tenant: dict[str, float]) -> CostTable:
    return CostTable(table.graph, table.model, boundaries={1: per_tenant})


def test_segment_boundaries_are_charged_where_a_stream_changes_tenant_or_waits():
    # a0 -> a1 (tenant a), b0 -> b1 (tenant b), 1 ms each; a new segment costs a 0.5, b 0.25.
    base = make_table([("a", []), ("a", [0]), ("b", []), ("b", [2])], [1.0] * 4)
    table = _with_boundaries(base, {"a": 0.5, "b": 0.25})
    assert table.boundary_at(1) == (0.5, 0.5, 0.25, 0.25)
    grouped = simulate(Schedule.single([[0, 1, 2, 3]]), table)
    assert grouped.makespan == pytest.approx(4.0)  # one segment per tenant: nothing is cut
    interleaved = simulate(Schedule.single([[0, 2, 1, 3]]), table)
    assert interleaved.makespan == pytest.approx(4.0 + 0.5 + 0.25)  # each tenant cut once
    # a1 on another stream than a0: both sides of the event start segments
    split = simulate(Schedule.single([[0, 2, 3], [1]]), table)
    assert split.end[1] - split.start[1] == pytest.approx(1.0 + 0.5 + table.wait_ms)
    assert simulate(Schedule.single([[0, 1, 2, 3]]), base).makespan == pytest.approx(4.0)


def test_boundaries_must_cover_every_tenant():
    base = make_table([("a", []), ("b", [])], [1.0, 1.0])
    with pytest.raises(CostModelError, match="segment boundary costs at 1 thread"):
        _with_boundaries(base, {"a": 0.5})
    with pytest.raises(CostModelError, match="segment boundary costs"):
        _with_boundaries(base, {"a": 0.5, "b": -1.0})
