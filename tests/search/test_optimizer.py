from __future__ import annotations

import logging
import math

import optuna
import pytest
from search_helpers import make_table

from cosched.errors import ConfigError, SLOError
from cosched.search.costtable import CostTable
from cosched.search.optimizer import SearchConfig, optimize
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


@pytest.fixture(scope="module")
def table():
    return CostTable(random_task_graph(14, n_tenants=3, seed=4), SyntheticCostModel())


def test_same_seed_same_schedule(table):
    a = optimize(table, SearchConfig(trials=15, seed=3))
    b = optimize(table, SearchConfig(trials=15, seed=3))
    assert a.schedule == b.schedule
    assert a.sim.makespan == b.sim.makespan
    assert a.trials == 15


def test_never_worse_than_feasible_baselines(table):
    result = optimize(table, SearchConfig(trials=10, seed=0))
    feasible = [b for b in result.baselines if not b.sim.violations(1.10)]
    assert {b.name for b in result.baselines} == {"sequential", "stream-per-tenant", "greedy"}
    assert result.sim.makespan <= min(b.sim.makespan for b in feasible) + 1e-12
    assert result.violations == ()
    assert not result.interference_unavoidable
    result.schedule.validate(table.graph)


def test_zero_trials_still_returns_the_best_baseline(table):
    result = optimize(table, SearchConfig(trials=0, improve_budget=0))
    assert result.schedule.method in {"sequential", "greedy", "stream-per-tenant"}
    assert result.trials == 0  # the queued baseline trials never ran, so none is counted


def test_interference_constraint_keeps_bad_pairs_apart():
    # Tasks 0 (2 ms) and 1 (3 ms) of two tenants slow each other 1.5x. Unconstrained, running
    # them together (4 ms) beats serial (5 ms); under the default 1.10 threshold they must not overlap.
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    free = optimize(table, SearchConfig(trials=5, threshold=math.inf))
    assert free.sim.makespan == pytest.approx(4.0)
    assert free.violations == ()  # nothing violates an infinite threshold
    guarded = optimize(table, SearchConfig(trials=5))
    assert guarded.sim.makespan == pytest.approx(5.0)
    assert guarded.sim.pairs == () and guarded.violations == ()


def test_slo_met_reports_each_tenant(table):
    seq = table.total_work
    result = optimize(table, SearchConfig(trials=5, slo_ms={"m0": seq, "m2": seq}))
    assert result.slo_met
    assert set(result.slo_report) == {"m0", "m2"}
    for tenant, (slo, achieved) in result.slo_report.items():
        assert slo == seq and achieved <= slo
        assert achieved == result.sim.tenant_completion[tenant]


def test_unmeetable_slo_names_tenant_slo_and_best(table):
    with pytest.raises(SLOError, match=r"tenant 'm1': SLO 0.001 ms, best achieved [0-9.]+ ms"):
        optimize(table, SearchConfig(trials=5, slo_ms={"m1": 0.001}))


def test_best_effort_returns_flagged_result(table):
    result = optimize(table, SearchConfig(trials=5, slo_ms={"m1": 0.001}, best_effort=True))
    assert not result.slo_met
    assert result.slo_report["m1"][0] == 0.001
    assert result.slo_report["m1"][1] > 0.001


def test_slo_for_unknown_tenant_is_a_config_error(table):
    with pytest.raises(ConfigError, match=r"unknown tenants \['nope'\]"):
        optimize(table, SearchConfig(trials=1, slo_ms={"nope": 1.0}))


def test_multi_objective_returns_a_pareto_set(table):
    slo = {"m0": table.total_work / 2, "m1": table.total_work / 2}
    result = optimize(table, SearchConfig(trials=20, multi_objective=True, slo_ms=slo, best_effort=True))
    assert result.pareto
    points = [
        (c.sim.makespan, *(c.sim.tenant_completion[t] / s for t, s in sorted(slo.items())))
        for c in result.pareto
    ]
    for p in points:
        dominated = any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points)
        assert not dominated
    assert all(c.excess == 0 for c in result.pareto)


def test_measure_hook_picks_the_fastest_measured(table):
    seen = []

    def measure(schedules):
        seen.extend(schedules)
        return [10.0 - i for i in range(len(schedules))]  # the last one measures fastest

    result = optimize(table, SearchConfig(trials=10, top_k=3), timer=measure)
    assert 1 <= len(seen) <= 4  # top_k finalists plus the sequential baseline
    assert result.schedule == seen[-1]
    assert result.measured_ms == tuple(10.0 - i for i in range(len(seen)))


def test_measure_never_ships_a_plan_slower_than_sequential(table):
    def measure(schedules):
        # sequential (one stream) measures fastest, whatever the simulator predicted
        return [1.0 if len(s.streams) == 1 else 5.0 for s in schedules]

    result = optimize(table, SearchConfig(trials=10, top_k=2), timer=measure)
    assert len(result.schedule.streams) == 1
    assert min(result.measured_ms) == 1.0


def test_study_resumes_from_storage(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optimize(table, SearchConfig(trials=4, storage=url))
    second = optimize(table, SearchConfig(trials=3, storage=url))
    assert first.trials == 4
    assert second.trials == 7
    assert second.sim.makespan <= first.sim.makespan


def test_study_of_another_graph_model_or_objective_is_not_resumed(table, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    other_graph = CostTable(random_task_graph(14, n_tenants=3, seed=5), SyntheticCostModel())
    other_model = CostTable(table.graph, SyntheticCostModel(strength=0.3))
    first = optimize(table, SearchConfig(trials=4, storage=url))
    with caplog.at_level(logging.INFO, logger="cosched.search.study"):
        caplog.clear()
        graph_run = optimize(other_graph, SearchConfig(trials=3, storage=url))
        assert "new study" in caplog.text and "(another graph)" in caplog.text
        caplog.clear()
        model_run = optimize(other_model, SearchConfig(trials=3, storage=url))
        assert "(another cost model)" in caplog.text and "(another graph and cost model)" in caplog.text
        caplog.clear()
        objective_run = optimize(table, SearchConfig(trials=3, threshold=1.5, storage=url))
        assert caplog.text.count("(another objective)") == 1
        caplog.clear()
        again = optimize(table, SearchConfig(trials=3, storage=url))
        assert "resuming study" in caplog.text and "4 trials so far" in caplog.text
    assert (graph_run.trials, model_run.trials, objective_run.trials) == (3, 3, 3)
    assert again.trials == 7 and again.study_name == first.study_name
    names = {first.study_name, graph_run.study_name, model_run.study_name, objective_run.study_name}
    assert len(names) == 4 and all(n.startswith("cosched-search-") for n in names)
    assert set(optuna.get_all_study_names(url)) == names


def test_named_study_made_for_another_graph_is_refused(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optimize(table, SearchConfig(trials=2, storage=url, study_name="mine"))
    other = CostTable(random_task_graph(10, n_tenants=2, seed=1), SyntheticCostModel())
    with pytest.raises(ConfigError, match=r"study 'mine' .* is not this compilation's: it has another graph;"):
        optimize(other, SearchConfig(trials=2, storage=url, study_name="mine"))
    assert optimize(table, SearchConfig(trials=2, storage=url, study_name="mine")).trials == 4


def test_unkeyed_study_of_an_older_cosched_is_left_alone(table, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    old = optuna.create_study(storage=url, study_name="cosched-search")
    old.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    with caplog.at_level(logging.INFO, logger="cosched.search.study"):
        result = optimize(table, SearchConfig(trials=3, storage=url))
    assert result.trials == 3 and result.study_name != "cosched-search"
    assert "not resuming 'cosched-search' (no cosched key: an older cosched" in caplog.text
    with pytest.raises(ConfigError, match="no cosched key"):
        optimize(table, SearchConfig(trials=1, storage=url, study_name="cosched-search"))


def test_unusable_storage_is_a_config_error(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'folder' / 'study.db'}"
    with pytest.raises(ConfigError, match=r"study storage 'sqlite:///.*missing"):
        optimize(table, SearchConfig(trials=1, storage=url))
