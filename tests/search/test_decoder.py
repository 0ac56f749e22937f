from __future__ import annotations

import pytest
from search_helpers import make_table

from cosched.errors import ConfigError
from cosched.search.baselines import all_baselines
from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.simulator import simulate
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


@pytest.fixture(scope="module")
def table():
    graph = random_task_graph(300, n_tenants=4, seed=7)
    graph.verify()
    return CostTable(graph, SyntheticCostModel())


@pytest.mark.parametrize(
    "knobs",
    [
        DecoderKnobs(streams=1),
        DecoderKnobs(streams=3, w_bottom=1.0),
        DecoderKnobs(streams=4, w_work=0.5, w_alternate=0.7, guard=1.1),
        DecoderKnobs(streams=2, w_bottom=0.2, guard=1.0, tenant_weight=(1.0, 0.0, 0.5, 0.2)),
    ],
)
def test_decoded_timeline_is_the_simulated_one(table, knobs):
    schedule, sim = decode(table, knobs)
    schedule.validate(table.graph, table.dag)
    again = simulate(schedule, table)
    assert again.start == pytest.approx(sim.start)
    assert again.end == pytest.approx(sim.end)
    assert len(schedule.streams) <= knobs.streams


def test_guard_is_honoured_by_the_schedule(table):
    _, free = decode(table, DecoderKnobs(streams=4))
    assert free.violations(1.1), "this graph interferes when unguarded"
    _, guarded = decode(table, DecoderKnobs(streams=4, guard=1.1))
    assert guarded.violations(1.1) == ()


def test_guard_one_means_no_overlap_at_slowdown(table):
    _, sim = decode(table, DecoderKnobs(streams=4, guard=1.0))
    assert all(p.worst == 1.0 for p in sim.pairs)


def test_priority_picks_the_longer_path_first():
    # Two ready chains of tenant a on one stream: 0 (1 ms) -> 1 (5 ms) and 2 (1 ms) alone.
    table = make_table([("a", []), ("a", [0]), ("a", [])], [1.0, 5.0, 1.0])
    schedule, _ = decode(table, DecoderKnobs(streams=1, w_bottom=1.0))
    assert schedule.streams == ((0, 1, 2),)
    schedule, _ = decode(table, DecoderKnobs(streams=1, w_bottom=-1.0))
    assert schedule.streams[0][0] == 2


def test_knob_errors_name_the_knob(table):
    with pytest.raises(ConfigError, match="streams must be >= 1"):
        DecoderKnobs(streams=0)
    with pytest.raises(ConfigError, match=r"guard must be >= 1\.0"):
        DecoderKnobs(guard=0.9)
    with pytest.raises(ConfigError, match="tenant_weight has 1 entries for 4 tenants"):
        decode(table, DecoderKnobs(tenant_weight=(1.0,)))


def test_baselines_are_valid_and_named(table):
    baselines = all_baselines(table)
    assert [b.name for b in baselines] == ["sequential", "stream-per-tenant", "greedy"]
    for b in baselines:
        b.schedule.validate(table.graph, table.dag)
        assert b.sim.makespan > 0
    seq = baselines[0]
    assert seq.sim.makespan == pytest.approx(table.total_work)
    assert len(baselines[1].schedule.streams) == 4
    assert baselines[2].sim.violations(1.1) == ()
