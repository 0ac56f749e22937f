"""Memory per unit and per device, placement policies, and the multi-device search."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
from tiny_graphs import GraphBuilder

from cosched import zoo
from cosched.costmodel import DeviceSpec, RooflineModel
from cosched.errors import ConfigError
from cosched.ir import analyse, fuse, load_models
from cosched.search import CostTable, SearchConfig
from cosched.search.multidevice import optimize_devices
from cosched.search.placement import (
    check_fits,
    device_bytes,
    footprints,
    largest_first,
    round_robin,
)

F = 4  # bytes of a float32


def _chain():  # type: ignore[no-untyped-def]
    """a: x[1,100] -> MatMul(W[100,50]) -> h[1,50] -> Relu -> y[1,50];  b: u[1,10] -> Relu -> v[1,10]."""
    g = GraphBuilder()
    x = g.input("a", "x", (1, 100))
    w = g.weight("a", "W", (100, 50))
    h = g.op("a", "MatMul", [x, w], (1, 50), name="mm")
    y = g.op("a", "Relu", [h], (1, 50), name="relu")
    u = g.input("b", "u", (1, 10))
    v = g.op("b", "Relu", [u], (1, 10), name="r")
    return analyse(fuse(g.build({"a": [y], "b": [v]})))


def test_footprints_by_hand() -> None:
    prints = footprints(_chain())
    a, b = prints[("a", None)], prints[("b", None)]
    assert a.weight_bytes == 100 * 50 * F
    # x alive from the start (400 B); mm adds h (200 B): 600; x dies; relu adds y (200 B): h + y = 400
    assert a.activation_bytes == (100 + 50) * F
    assert (b.weight_bytes, b.activation_bytes) == (0, 20 * F)  # u then v, u freed after


def test_device_bytes_share_weights_once_and_add_activations() -> None:
    graph = _chain()
    prints = footprints(graph)
    together = device_bytes(prints, {("a", None): 0, ("b", None): 0}, graph, 2)
    assert together == (100 * 50 * F + 150 * F + 20 * F, 0)
    apart = device_bytes(prints, {("a", None): 0, ("b", None): 1}, graph, 2)
    assert apart == (100 * 50 * F + 150 * F, 20 * F)


def test_a_unit_larger_than_every_cap_is_named_with_its_bytes_and_the_caps() -> None:
    graph = _chain()
    with pytest.raises(ConfigError, match=r"tenant 'a' needs 20\.12 KiB .*caps cpu:0 10\.00 KiB, cpu:1 10\.00 KiB"):
        check_fits(footprints(graph), [10 * 1024, 10 * 1024], ["cpu:0", "cpu:1"], graph)
    with pytest.raises(ConfigError, match="in all, more than the devices hold together"):
        check_fits(footprints(graph), [20600, 50], ["cpu:0", "cpu:1"], graph)


def test_policies() -> None:
    graph = _chain()
    prints = footprints(graph)
    assert round_robin(prints, 2) == {("a", None): 0, ("b", None): 1}
    assert largest_first(prints, [30000, 30000], graph) == {("a", None): 0, ("b", None): 1}
    assert largest_first(prints, [30000, 10], graph) == {("a", None): 0, ("b", None): 0}
    assert largest_first(prints, [20000, 30000], graph) == {("a", None): 1, ("b", None): 0}  # a fits only 1
    assert largest_first(prints, [100, 100], graph) is None


@pytest.fixture(scope="module")
def table() -> CostTable:
    names = ["resnet50", "bert", "mobilenet_v2", "dlrm", "squeezenet1_1", "googlenet"]
    graph = analyse(fuse(load_models([zoo.export(n, size="tiny") for n in names], names=names)))
    return CostTable(graph, RooflineModel(DeviceSpec.detect("cpu")))


def test_the_search_never_returns_a_plan_over_a_cap(table: CostTable) -> None:
    prints = footprints(table.graph)
    total = sum(fp.total_bytes for fp in prints.values())
    biggest = max(fp.total_bytes for fp in prints.values())
    tight = [max(biggest, total // 2 + 1)] * 2  # may not pack: then a clear error, never a plan over a cap
    for caps in ([total, total], [int(total * 0.75)] * 2, [biggest] * 6, [total, biggest, biggest], tight):
        names = [f"cpu:{i}" for i in range(len(caps))]
        try:
            result = optimize_devices(table, caps, names, SearchConfig(trials=12, seed=1, max_streams=2))
        except ConfigError as exc:
            assert caps is tight and "no placement found that fits" in str(exc)
            continue
        assert all(m <= c for m, c in zip(result.best.memory_bytes, caps, strict=True))
        assert {u: d for u, d in result.best.placement.items()}.keys() == prints.keys()
        feasible = [b for b in result.baselines if b.fits]
        assert feasible and result.best.sim.makespan <= min(b.sim.makespan for b in feasible) + 1e-9
        assert {b.name for b in result.baselines} >= {"round-robin"}
        report = result.report()
        assert report["plan"]["fits"] and len(report["plan"]["memory_bytes"]) == len(caps)


def test_the_search_is_reproducible_and_uses_the_devices(table: CostTable) -> None:
    caps = [10**9, 10**9]
    a = optimize_devices(table, caps, ["cpu:0", "cpu:1"], SearchConfig(trials=10, seed=3))
    b = optimize_devices(table, caps, ["cpu:0", "cpu:1"], SearchConfig(trials=10, seed=3))
    assert a.best.placement == b.best.placement and a.best.schedule.devices == b.best.schedule.devices
    one = next(x for x in a.baselines if x.name == "one-device")
    assert a.best.sim.makespan < one.sim.makespan  # two devices beat one
    assert a.best.throughput_rps > 0


def test_a_mix_that_cannot_fit_is_a_clear_error(table: CostTable) -> None:
    with pytest.raises(ConfigError, match=r"tenant '\w+' needs .* more than any device may hold"):
        optimize_devices(table, [1000, 1000], ["cpu:0", "cpu:1"], SearchConfig(trials=2))


def test_a_stored_multi_device_study_resumes(table: CostTable, tmp_path: Path) -> None:
    config = SearchConfig(trials=6, seed=2, storage=f"sqlite:///{tmp_path / 'search.db'}")
    first = optimize_devices(table, [10**9, 10**9], ["cpu:0", "cpu:1"], config)
    again = optimize_devices(table, [10**9, 10**9], ["cpu:0", "cpu:1"], config)
    assert first.study_name is not None and again.study_name == first.study_name
    assert again.trials == first.trials + 6  # the second run added its trials to the first run's
    other = optimize_devices(table, [10**9, 5 * 10**8], ["cpu:0", "cpu:1"], config)
    assert other.study_name != first.study_name  # other caps: a study of its own


def test_a_shard_does_not_hold_what_other_shards_produce() -> None:
    from cosched.ir.sharding import SplitSpec, apply_splits

    graph = load_models([zoo.export("bert", size="tiny")], names=["bert"])
    whole = footprints(graph)[("bert", None)]
    shards = footprints(apply_splits(graph, [SplitSpec("tensor", "bert", 2)]))
    # slot 1 runs only halves of the split ops: less than the whole tenant, though a collective
    # rank there lists every rank's input (the others' live on their own devices)
    assert shards[("bert", 1)].activation_bytes < whole.activation_bytes
    assert shards[("bert", 1)].weight_bytes < whole.weight_bytes


def test_what_is_ranked_is_what_is_reported(table: CostTable) -> None:
    from cosched.search.simulator import simulate

    result = optimize_devices(table, [10**9, 10**9], ["cpu:0", "cpu:1"], SearchConfig(trials=5, seed=4))
    for c in (result.best, *result.baselines):
        again = simulate(c.schedule, table, record_pairs=False)
        assert again.makespan == pytest.approx(c.sim.makespan)
