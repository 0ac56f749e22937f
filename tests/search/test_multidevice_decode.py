"""The decoder and the simulator over several devices: each device's tasks on its own streams,
interference only within a device, communication tasks on a communication stream."""

from __future__ import annotations

import pytest

from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.schedule import Schedule
from cosched.search.simulator import simulate
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


@pytest.fixture(scope="module")
def table() -> CostTable:
    return CostTable(random_task_graph(120, n_tenants=4, seed=3), SyntheticCostModel(strength=0.3))


def _by_tenant(table: CostTable, devices: int) -> list[int]:
    return [table.tenant_of[t] % devices for t in range(table.n)]


@pytest.mark.parametrize("streams", [1, 2])
def test_each_device_runs_only_its_tasks_and_the_timeline_is_the_simulated_one(table: CostTable, streams: int) -> None:
    device_of = _by_tenant(table, 2)
    schedule, sim = decode(table, DecoderKnobs(streams=streams), device_of=device_of, devices=2)
    assert len(schedule.devices) == 2
    for d, device in enumerate(schedule.devices):
        assert len(device) <= streams
        assert all(device_of[t] == d for s in device for t in s)
    schedule.validate(table.graph, table.dag)
    again = simulate(schedule, table)
    assert again.start == pytest.approx(sim.start) and again.end == pytest.approx(sim.end)


def test_tasks_on_other_devices_do_not_slow_each_other(table: CostTable) -> None:
    device_of = _by_tenant(table, 2)
    _, apart = decode(table, DecoderKnobs(streams=1), device_of=device_of, devices=2)
    assert max(apart.worst_slowdown) == 1.0  # one stream per device: nothing shares a device
    one_device = Schedule.single([[t for t in range(table.n) if device_of[t] == d] for d in range(2)])
    together = simulate(one_device, table)
    assert max(together.worst_slowdown) > 1.0  # the same two streams on one device interfere
    assert apart.makespan < together.makespan


def test_communication_tasks_run_on_their_own_stream_with_their_latency(table: CostTable) -> None:
    device_of = _by_tenant(table, 2)
    comm = {t: 0.5 for t in range(table.n) if table.tenant_of[t] == 1 and not table.preds[t]}
    schedule, sim = decode(table, DecoderKnobs(streams=1), device_of=device_of, devices=2, comm_ms=comm)
    for t, ms in comm.items():
        assert sim.end[t] - sim.start[t] == pytest.approx(ms)
        assert sim.worst_slowdown[t] == 1.0
    device = schedule.devices[device_of[next(iter(comm))]]
    assert any(set(s) == set(comm) for s in device)  # one stream holds exactly the communication tasks
    again = simulate(schedule, table, comm_ms=comm)
    assert again.end == pytest.approx(sim.end)
