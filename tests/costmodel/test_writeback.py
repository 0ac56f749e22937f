"""Plan-run timings become profile records: alone -> standalone, mutual pairs -> co-run groups."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cosched.costmodel.features import task_signature
from cosched.costmodel.store import ProfileStore
from cosched.costmodel.writeback import records_from_runs, write_back
from cosched.errors import ProfileError
from cosched.search.synthetic import random_task_graph


@dataclass(frozen=True)
class Timing:
    task: int
    stream: int
    start_us: float
    end_us: float

    @property
    def duration_ms(self) -> float:
        return (self.end_us - self.start_us) / 1e3


@pytest.fixture(scope="module")
def graph():
    return random_task_graph(6, n_tenants=2, seed=1)


def test_lone_tasks_pairs_and_crowds_are_told_apart(graph) -> None:
    run = [
        Timing(0, 0, 0, 1000),        # alone
        Timing(1, 0, 2000, 3000),     # 1 and 2 overlap each other almost entirely
        Timing(2, 1, 2100, 3100),
        Timing(3, 0, 5000, 6000),     # 3, 4, 5 all overlap: a crowd, left out
        Timing(4, 1, 5100, 6100),
        Timing(5, 2, 5200, 6200),
    ]
    out = records_from_runs(graph, [run], {0: 1, 1: 1, 2: 1})
    assert [r.signature for r in out.standalone] == [task_signature(graph, graph.task(0))]
    assert out.standalone[0].median_ms == pytest.approx(1.0)
    assert len(out.groups) == 1
    group = out.groups[0]
    assert group.signatures == (task_signature(graph, graph.task(1)), task_signature(graph, graph.task(2)))
    assert group.latencies_ms == pytest.approx((1.0, 1.0)) and group.makespan_ms == pytest.approx(1.0)
    assert out.skipped == 3


def test_medians_over_runs_and_store_round_trip(graph, tmp_path, make_device) -> None:
    runs = [[Timing(0, 0, 0, ms * 1000)] for ms in (1.0, 3.0, 2.0)]
    device = make_device()
    with ProfileStore(tmp_path / "p.sqlite") as store:
        out = write_back(store, device, graph, runs, {0: 2})
        data = store.load(device.fingerprint)
    assert out.standalone[0].median_ms == pytest.approx(2.0) and out.standalone[0].repeats == 3
    assert task_signature(graph, graph.task(0)) in data.standalone


def test_nothing_profiled_is_an_error(graph, tmp_path, make_device) -> None:
    with ProfileStore(tmp_path / "p.sqlite") as store, pytest.raises(ProfileError, match="profile=True"):
        write_back(store, make_device(), graph, [], {})
