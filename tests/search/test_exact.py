from __future__ import annotations

import itertools
import math

import pytest
from search_helpers import make_table

from cosched.errors import ConfigError, ScheduleError
from cosched.search.exact import optimum
from cosched.search.schedule import Schedule
from cosched.search.simulator import simulate


def test_two_independent_tasks_run_together_when_it_pays():
    # Together (slowdown 1.5): 4.0 ms (see test_simulator); one after the other: 5.0 ms.
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    result = optimum(table, streams=2)
    assert result.proven
    assert result.makespan == pytest.approx(4.0)
    assert len(result.schedule.streams) == 2


def test_two_independent_tasks_serialise_when_interference_is_high():
    # Slowdown 3: together A ends at 6 > 5 = sequential, so one stream wins.
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 3.0})
    result = optimum(table, streams=2)
    assert result.makespan == pytest.approx(5.0)


def test_threshold_forbids_the_overlap():
    table = make_table([("a", []), ("b", [])], [2.0, 3.0], {(0, 1): 1.5})
    result = optimum(table, streams=2, threshold=1.1)
    assert result.makespan == pytest.approx(5.0)
    assert result.sim.pairs == ()


def test_fork_uses_both_streams():
    # R (1 ms) forks into X and Y (2 ms each), no interference: 1 + 2 = 3 ms on two streams.
    table = make_table([("a", []), ("a", [0]), ("a", [0])], [1.0, 2.0, 2.0])
    assert optimum(table, streams=2).makespan == pytest.approx(3.0)
    assert optimum(table, streams=1).makespan == pytest.approx(5.0)


def test_idling_a_stream_can_be_optimal():
    # A (4 ms, tenant a) and B (1 ms, tenant b) interfere badly (x3), B -> C (4 ms) does not
    # interfere with A. Best: B alone first (1), then A and C together (4): 5 ms.
    table = make_table([("a", []), ("b", []), ("b", [1])], [4.0, 1.0, 4.0], {(0, 1): 3.0})
    result = optimum(table, streams=2)
    assert result.makespan == pytest.approx(5.0)
    assert result.sim.start[0] == pytest.approx(1.0)


def _brute_force(table, streams: int) -> float:
    best = math.inf
    for order in itertools.permutations(range(table.n)):
        for where in itertools.product(range(streams), repeat=table.n):
            lists = [[t for t in order if where[t] == s] for s in range(streams)]
            try:
                best = min(best, simulate(Schedule.single(lists), table, record_pairs=False).makespan)
            except ScheduleError:
                continue
    return best


def test_matches_brute_force_on_a_small_graph():
    rows = [("a", []), ("a", [0]), ("b", []), ("b", [2]), ("a", [0])]
    pairs = {(0, 2): 1.6, (1, 3): 1.3, (1, 2): 1.05, (3, 4): 1.8, (0, 3): 1.2}
    table = make_table(rows, [2.0, 1.5, 1.0, 3.0, 0.5], pairs, pair_default=1.1)
    result = optimum(table, streams=2)
    result.schedule.validate(table.graph)
    assert result.makespan == pytest.approx(_brute_force(table, 2))


def test_too_large_a_graph_is_refused():
    table = make_table([("a", [])] * 17, [1.0] * 17)
    with pytest.raises(ConfigError, match="at most 16 tasks"):
        optimum(table, streams=2)
