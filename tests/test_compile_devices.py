"""compile() and `cosched compile` over several devices: placement under memory caps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cosched
from cosched import zoo
from cosched.cli import main
from cosched.errors import ConfigError

NAMES = ["resnet50", "bert", "mobilenet_v2", "dlrm"]


@pytest.fixture(scope="module")
def models() -> list[Path]:
    return [zoo.export(n, size="tiny") for n in NAMES]


def test_each_device_runs_its_tenants_within_its_cap(models: list[Path]) -> None:
    plan = cosched.compile(models, names=NAMES, cost_model="roofline", trials=8, devices=["cpu:0", "cpu:1"],
                           memory_cap="40MB")
    report = plan.report()["multi_device"]
    placement = report["plan"]["placement"]
    assert set(placement) == set(NAMES) and set(placement.values()) <= {0, 1}
    assert all(m <= 40 * 10**6 for m in report["plan"]["memory_bytes"])
    for stream in plan.plan.streams:
        assert {placement[plan.plan.task_spec(t).tenant] for t in stream.tasks} == {stream.device}
    assert {"round-robin", "largest-first"} <= set(report["baselines"])


@pytest.mark.parametrize(("options", "match"), [
    ({"memory_cap": "1GB"}, "memory_cap.*devices"),
    ({"devices": ["cpu:0", "cpu:1"], "memory_cap": "lots"}, "memory_cap"),
    ({"devices": "cpu:0,cpu:1"}, "devices"),
    ({"devices": ["cpu:0", "cpu:1"], "measure": True}, "measure"),
    ({"devices": ["cpu:0", "cpu:1"], "objective": "pareto", "slo_ms": {"bert": 5.0}}, "pareto.*one device"),
    ({"devices": ["cpu:0", "cpu:1"], "memory_cap": "100KB"}, r"tenant '\w+' needs .*caps cpu:0 97\.66 KiB.* no split over up to 2 devices fits"),
])
def test_bad_device_options_are_named(models: list[Path], options: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        cosched.compile(models, names=NAMES, cost_model="roofline", trials=2, **options)


def test_cli_devices_and_memory_cap(models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    names = [arg for n in NAMES for arg in ("--name", n)]
    code = main(["-q", "compile", *map(str, models), *names, "-o", str(out), "--cost-model", "roofline", "--trials", "4",
                 "--devices", "cpu:0,cpu:1", "--memory-cap", "cpu:0=40MB,cpu:1=30MB", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["multi_device"]["caps_bytes"] == [40 * 10**6, 30 * 10**6]
    assert {s["device"] for s in json.loads((out / "plan.json").read_text())["streams"]} <= {0, 1}


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A communication model of a link never measured (no profiling in the test)."""
    from cosched.costmodel.comm import CommModel

    path = tmp_path_factory.mktemp("comm") / "comm.json"
    CommModel.from_link("gloo", "test-link", latency_s=50e-6, bandwidth=1e9).save(path)
    return path


def test_a_tenant_larger_than_the_cap_is_split_and_computes_the_same(models: list[Path], link: Path,
                                                                      tmp_path: Path) -> None:
    from cosched.execution.compare import compare_outputs
    from cosched.ir import load_models
    from cosched.runtime import SequentialExecutor
    from cosched.search.placement import footprints

    models, names = models[1:], NAMES[1:]  # bert, mobilenet_v2, dlrm: bert fits no device whole
    prints = footprints(load_models(models, names=names))
    biggest = max(prints.values(), key=lambda f: f.total_bytes)
    cap = int(max(biggest.total_bytes * 0.8, 0.65 * sum(f.total_bytes for f in prints.values())))
    plan = cosched.compile(models, names=names, cost_model="roofline", trials=6, devices=["cpu:0", "cpu:1"],
                           memory_cap=cap, comm_model=str(link))
    report = plan.report()["multi_device"]
    assert [s["tenant"] for s in report["splits"]] == [biggest.unit[0]]
    assert all(m <= cap for m in report["plan"]["memory_bytes"])
    assert len(plan.plan.devices) == 2 and plan.plan.splits
    feeds = plan.inputs(seed=1)
    whole = SequentialExecutor(load_models(models, names=names)).run(feeds)
    assert compare_outputs(SequentialExecutor(plan.graph).run(feeds), whole).agrees(1e-5)
    plan.save(tmp_path / "plan")
    loaded = cosched.load(tmp_path / "plan")
    assert loaded.plan.splits == plan.plan.splits and len(loaded.graph.tasks) == len(plan.graph.tasks)


def test_every_device_meets_collectives_in_one_order() -> None:
    """Decoded with noisy priorities, a graph with many collective groups over two devices
    still lowers: lowering refuses devices that meet collectives in different orders."""
    from cosched.codegen import lower
    from cosched.costmodel import DeviceSpec, RooflineModel
    from cosched.ir import analyse, fuse, load_models
    from cosched.ir.sharding import SplitSpec, apply_splits
    from cosched.search import CostTable
    from cosched.search.decoder import DecoderKnobs, decode

    splits = [SplitSpec("tensor", "bert", 2), SplitSpec("embedding", "dlrm", 2, {"mode": "row"})]
    graph = analyse(fuse(apply_splits(load_models([zoo.export(n, size="tiny") for n in ("bert", "dlrm")],
                                                  names=["bert", "dlrm"]), splits)))
    spec = DeviceSpec.detect("cpu")
    table = CostTable(graph, RooflineModel(spec))
    comm = {t.id: 0.01 for t in graph.tasks if graph.op(t.ops[0]).is_comm}
    assert sum(graph.op(graph.task(t).ops[0]).op_type == "AllReduce" for t in comm) > 4
    devices = [{"kind": "cpu", "index": 0}, {"kind": "cpu", "index": 1}]
    for seed in range(8):
        schedule, _ = decode(table, DecoderKnobs(streams=2, noise=1.0, noise_seed=seed),
                             device_of=[t.shard or 0 for t in graph.tasks], devices=2, comm_ms=comm)
        lower(graph, schedule, device=spec, devices=devices, splits=splits)  # raises if the orders differ


def test_a_tenant_that_fits_is_split_when_asked(models: list[Path], link: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    plan = cosched.compile(models[1:3], names=NAMES[1:3], cost_model="roofline", trials=4,
                           devices=["cpu:0", "cpu:1"], splits={"bert": "tensor"}, comm_model=str(link))
    assert [(s["kind"], s["tenant"], s["world"]) for s in plan.plan.splits] == [("tensor", "bert", 2)]
    assert {c.op for c in plan.plan.comms} >= {"all_reduce"}
    names = [arg for n in NAMES[1:3] for arg in ("--name", n)]
    assert main(["-q", "compile", *map(str, models[1:3]), *names, "-o", str(tmp_path / "plan"), "--cost-model",
                 "roofline", "--trials", "2", "--devices", "cpu:0,cpu:1", "--split", "bert=pipeline",
                 "--comm-model", str(link), "--json"]) == 0
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["splits"][0]["kind"] == "pipeline"


@pytest.mark.parametrize(("splits", "match"), [
    ({"mobilenet_v2": "embedding-row"}, r"tenant 'mobilenet_v2' cannot be split 'embedding-row' over 2 devices; "
                                        r"it can be split pipeline"),
    ({"nope": "tensor"}, "unknown tenant 'nope'"),
    ({"bert": "sideways"}, r"splits\['bert'\] must be one of tensor, pipeline, embedding-row, embedding-table"),
])
def test_a_split_that_cannot_be_is_named(models: list[Path], splits: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cosched.compile(models[1:3], names=NAMES[1:3], cost_model="roofline", trials=2, devices=["cpu:0", "cpu:1"],
                        splits=splits)


def test_splits_need_devices(models: list[Path]) -> None:
    with pytest.raises(ConfigError, match="splits applies to the devices of a multi-device plan"):
        cosched.compile(models[1:2], names=NAMES[1:2], splits={"bert": "tensor"})
