"""The simulator and decoder charge what the runtime pays: thread counts, waits, chains."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from search_helpers import TableModel

from cosched.calibration import measure_runtime_costs
from cosched.costmodel.overheads import RuntimeCosts
from cosched.errors import CostModelError
from cosched.ir.graph import OpCost
from cosched.search import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.schedule import Schedule
from cosched.search.simulator import simulate
from cosched.search.synthetic import task_graph

CPU2 = RuntimeCosts("cpu", cores=2, dispatch_ms=0.0, wait_ms=0.5, parallel_half_ms=1.0, base_threads=1)


def chains(tenants: int, length: int, ms: float, runtime: RuntimeCosts | None = None) -> CostTable:
    """``tenants`` independent chains of ``length`` tasks of ``ms`` each, no interference."""
    rows = [(f"t{i}", [i * length + j - 1] if j else []) for i in range(tenants) for j in range(length)]
    graph = task_graph([(tenant, preds, OpCost(flops=1, bytes_read=1)) for tenant, preds in rows]).verify()
    return CostTable(graph, TableModel(dict.fromkeys(range(len(rows)), ms)), runtime=runtime)


def test_speedup_grows_with_task_size_and_threads() -> None:
    assert CPU2.speedup(5.0, 1) == 1.0
    small, large = CPU2.speedup(0.01, 2), CPU2.speedup(100.0, 2)
    assert 1.0 < small < 1.02 and 1.9 < large < 2.0
    assert CPU2.threads(1) == 2 and CPU2.threads(2) == 1 and CPU2.threads(4) == 1
    assert CPU2.latency_at(4.0, 2) == 4.0  # measured at one thread, run at one thread
    assert CPU2.latency_at(4.0, 1) == pytest.approx(4.0 / (1 + 4.0 / 5.0))
    assert RuntimeCosts("cuda", 132, 0.0, 0.005, math.inf).latency_at(4.0, 1) == 4.0


def test_one_stream_gets_every_core_and_two_streams_one_each() -> None:
    table = chains(2, 3, 2.0, CPU2)
    one = simulate(Schedule.single([list(range(6))]), table)
    assert one.makespan == pytest.approx(6 * 2.0 / CPU2.speedup(2.0, 2))
    two = simulate(Schedule.single([[0, 1, 2], [3, 4, 5]]), table)
    assert two.makespan == pytest.approx(3 * 2.0)  # no interference in const_model, one thread each


def test_a_stream_that_waits_for_another_pays_the_wake_up() -> None:
    table = chains(1, 4, 1.0, CPU2)
    ping_pong = simulate(Schedule.single([[0, 2], [1, 3]]), table)
    assert ping_pong.makespan == pytest.approx(4 * 1.0 + 3 * CPU2.wait_ms)  # 3 hand-offs, 1 thread each
    free = chains(1, 4, 1.0)
    assert simulate(Schedule.single([[0, 2], [1, 3]]), free).makespan == pytest.approx(4.0)


def test_chains_cover_each_tenant_chain_once() -> None:
    table = chains(3, 5, 1.0)
    starts = [t for t in range(table.n) if not any(table.chain_next[u] == t for u in range(table.n))]
    assert len(starts) == 3  # one chain per tenant: the fewest that cover the DAG
    for t, nxt in enumerate(table.chain_next):
        assert nxt is None or nxt in table.succs[t]


def test_chain_bonus_keeps_a_tenant_on_its_stream() -> None:
    table = chains(2, 6, 1.0, CPU2)
    mixed, _ = decode(table, DecoderKnobs(streams=2, noise=0.5, noise_seed=3))
    assert any(len({table.tenant_of[t] for t in stream}) > 1 for stream in mixed.streams)
    kept, _ = decode(table, DecoderKnobs(streams=2, noise=0.5, noise_seed=3, w_chain=10.0))
    assert len(kept.streams) == 2
    for stream in kept.streams:
        assert len({table.tenant_of[t] for t in stream}) == 1


def test_runtime_costs_are_measured_once_and_cached(tmp_path: Path) -> None:
    from cosched.costmodel.device import DeviceSpec

    spec = DeviceSpec.detect("cpu")
    first = measure_runtime_costs(spec, cache_dir=tmp_path)
    assert first.dispatch_ms > 0 and first.wait_ms >= 0 and first.parallel_half_ms > 0
    assert (tmp_path / "runtime-costs").is_dir()
    assert measure_runtime_costs(spec, cache_dir=tmp_path) == first
    other = measure_runtime_costs(spec, base_threads=spec.cores + 1, cache_dir=tmp_path)  # its own file
    assert other.base_threads == spec.cores + 1 and len(list((tmp_path / "runtime-costs").iterdir())) == 2
    assert measure_runtime_costs(spec, cache_dir=tmp_path) == first  # not re-measured, not overwritten


def test_in_situ_latencies_replace_predictions_at_their_thread_count() -> None:
    base = chains(1, 3, 1.0, CPU2)
    measured = {1: (2.0, 3.0, 4.0), 2: (1.5, 2.0, 2.5)}
    table = CostTable(base.graph, base.model, runtime=CPU2, in_situ=measured)
    assert table.latency_at(2) == (2.0, 3.0, 4.0)  # two streams: one thread each
    assert table.latency_at(1) == (1.5, 2.0, 2.5)  # one stream: both cores
    assert simulate(Schedule.single([[0, 1, 2]]), table).makespan == pytest.approx(6.0)
    with pytest.raises(CostModelError, match="one per task"):
        CostTable(base.graph, base.model, runtime=CPU2, in_situ={1: (1.0,)})


def test_chains_are_the_same_in_every_process() -> None:
    """The chain cover must not depend on PYTHONHASHSEED (it once did: set order of str nodes)."""
    code = ("from cosched.search import CostTable\n"
            "from cosched.search.synthetic import SyntheticCostModel, random_task_graph\n"
            "print(CostTable(random_task_graph(150, 3, seed=4, max_preds=3), SyntheticCostModel()).chain_next)")
    found = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                            capture_output=True, text=True, check=True).stdout for seed in (1, 2, 3, 4)}
    assert len(found) == 1
