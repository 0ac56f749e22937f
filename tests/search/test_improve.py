from __future__ import annotations

import pytest
from search_helpers import make_table

from cosched.errors import ConfigError
from cosched.search.baselines import greedy
from cosched.search.costtable import CostTable
from cosched.search.exact import optimum
from cosched.search.improve import improve
from cosched.search.optimizer import SearchConfig, optimize
from cosched.search.schedule import Schedule
from cosched.search.simulator import SimResult, simulate
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


def score(sim: SimResult) -> tuple[float, float]:
    return (sim.excess(1.10), sim.makespan)


def lookahead_table() -> CostTable:
    # Tenant a: L (4 ms) -> M (3 ms); tenant b: c (1 ms) -> D (4 ms). Only L and c interfere
    # (x1.5, above the 1.10 guard). Greedy starts L first (bottom level 7 > 5): c waits for L,
    # D ends at 9. Running c first (L's stream idles 1 ms), then L beside D, then M: 8 ms.
    return make_table(
        [("a", []), ("a", [0]), ("b", []), ("b", [2])], [4.0, 3.0, 1.0, 4.0], {(0, 2): 1.5}
    )


def test_jump_runs_the_short_chain_before_the_long_task():
    table = lookahead_table()
    start, sim = greedy(table)
    assert sim.makespan == pytest.approx(9.0)
    found = improve(table, start, score, evaluations=500, max_streams=2)
    found.schedule.validate(table.graph)
    assert found.sim.makespan == pytest.approx(8.0)
    assert found.sim.makespan == pytest.approx(optimum(table, 2, threshold=1.10).makespan)
    assert simulate(found.schedule, table).violations(1.10) == ()
    assert found.sim.start[2] == 0.0 and found.sim.start[0] == pytest.approx(1.0)
    assert found.moves >= 1 and found.evaluations <= 500


def test_optimizer_reaches_the_lookahead_optimum():
    table = lookahead_table()
    assert optimize(table, SearchConfig(trials=0, improve_budget=0)).sim.makespan == pytest.approx(9.0)
    result = optimize(table, SearchConfig(trials=0, max_streams=2))
    assert result.sim.makespan == pytest.approx(8.0)
    assert result.violations == ()
    assert result.schedule.method.endswith("+improve")


@pytest.fixture(scope="module")
def table():
    return CostTable(random_task_graph(40, n_tenants=3, seed=11), SyntheticCostModel())


def test_never_worse_and_within_budget(table):
    start, sim = greedy(table)
    found = improve(table, start, score, evaluations=150, max_streams=3, seed=1)
    found.schedule.validate(table.graph)
    assert found.evaluations <= 150
    assert score(found.sim) <= score(sim)
    assert simulate(found.schedule, table, record_pairs=False).makespan == found.sim.makespan


def test_same_seed_same_result(table):
    start, _ = greedy(table)
    a = improve(table, start, score, evaluations=120, max_streams=3, seed=5)
    b = improve(table, start, score, evaluations=120, max_streams=3, seed=5)
    assert a.schedule == b.schedule and a.sim.makespan == b.sim.makespan
    assert a.evaluations == b.evaluations


def test_zero_budget_returns_the_schedule(table):
    start, sim = greedy(table)
    found = improve(table, start, score, evaluations=0, max_streams=3)
    assert found.schedule.streams == start.streams
    assert found.moves == 0 and found.sim.makespan == sim.makespan


def test_a_local_optimum_is_left_alone():
    # One task: nothing to move.
    table = make_table([("a", [])], [1.0])
    found = improve(table, Schedule.single([[0]]), score, evaluations=50, max_streams=2)
    assert found.moves == 0 and found.schedule.streams == ((0,),)


def test_errors_name_the_bad_value(table):
    start, _ = greedy(table)
    with pytest.raises(ConfigError, match=r"evaluations >= 0.*evaluations=-1"):
        improve(table, start, score, evaluations=-1, max_streams=3)
    with pytest.raises(ConfigError, match="has 3 streams, more than max_streams=2"):
        improve(table, start, score, evaluations=10, max_streams=2)
    with pytest.raises(ConfigError, match="improve_budget=-5"):
        SearchConfig(improve_budget=-5)
