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
    ({"devices": ["cpu:0", "cpu:1"], "memory_cap": "100KB"}, r"tenant '\w+' needs .* caps cpu:0"),
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
