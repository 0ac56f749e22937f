"""cosched.compile() and cosched.load() on three tiny zoo tenants (roofline, few trials)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import cosched
import cosched.ir
from cosched import zoo
from cosched.compiled import CompiledPlan, max_abs_diff
from cosched.errors import ConfigError

TENANTS = ("squeezenet1_1", "bert", "dlrm")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    return [zoo.export(name, folder / f"{name}.onnx") for name in TENANTS]


@pytest.fixture(scope="module")
def compiled(models: list[Path]) -> CompiledPlan:
    plan = cosched.compile(models, cost_model="roofline", trials=5, seed=1)
    yield plan
    plan.close()


def test_report_holds_predictions_and_sizes(compiled: CompiledPlan) -> None:
    report = compiled.report()
    assert report["tenants"] == list(TENANTS)
    assert {"plan", "sequential", "stream_per_tenant", "greedy"} <= set(report["predicted_ms"])
    assert report["tasks"] == len(compiled.graph.tasks) > len(TENANTS)
    assert report["streams"] == len(compiled.plan.streams) >= 1
    assert report["cost_model"] == compiled.cost_model and report["compile_s"] > 0
    assert report["trials"] >= 5


def test_plan_outputs_equal_sequential(compiled: CompiledPlan) -> None:
    inputs = compiled.inputs(seed=2)
    got, expected = compiled.run(inputs), compiled.sequential.run(inputs)
    assert {t: sorted(o) for t, o in got.items()} == {t: sorted(o) for t, o in expected.items()}
    assert max_abs_diff(got, expected) <= 1e-5


def test_benchmark_reports_both_medians(compiled: CompiledPlan) -> None:
    result = compiled.benchmark(iters=2, warmup=0)
    assert set(result["median_ms"]) == {"plan", "sequential"}
    assert result["speedup_vs_sequential"] == pytest.approx(
        result["median_ms"]["sequential"] / result["median_ms"]["plan"])
    assert result["max_abs_diff"] <= 1e-5
    assert compiled.report()["measured"] == result


def test_save_load_round_trip_runs_the_same(compiled: CompiledPlan, tmp_path: Path) -> None:
    compiled.save(tmp_path / "plan")
    loaded = cosched.load(tmp_path / "plan")
    try:
        assert loaded.plan.tasks == compiled.plan.tasks and loaded.plan.streams == compiled.plan.streams
        inputs = compiled.inputs(seed=3)
        assert max_abs_diff(loaded.run(inputs), compiled.run(inputs)) <= 1e-6
    finally:
        loaded.close()
    saved = json.loads((tmp_path / "plan" / "report.json").read_text())
    assert saved["predicted_ms"] == pytest.approx(dict(compiled.plan.predicted_ms))


def test_timeline_covers_every_task(compiled: CompiledPlan) -> None:
    rows = compiled.timeline()
    assert sorted(r["task"] for r in rows) == [t.id for t in compiled.graph.tasks]
    stream_of = compiled.plan.stream_of_task()
    for row in rows:
        assert row["stream"] == stream_of[row["task"]]
        assert 0 <= row["start_ms"] <= row["end_ms"] <= compiled.plan.predicted_ms["plan"] * (1 + 1e-9)
        assert row["tenant"] == compiled.graph.tasks[row["task"]].tenant


def test_trace_is_chrome_json(compiled: CompiledPlan, tmp_path: Path) -> None:
    path = compiled.trace(tmp_path / "trace.json")
    events = json.loads(Path(path).read_text())["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X"]
    assert spans and all(e["dur"] >= 0 for e in spans)
    assert {e["name"] for e in spans} & {t.name for t in compiled.graph.tasks}


def test_unknown_slo_tenant_fails_before_profiling(models: list[Path]) -> None:
    with pytest.raises(ConfigError, match="'gpt'"):
        cosched.compile(models, cost_model="auto", profile_budget_s=60, slo_ms={"gpt": 5.0})


def test_inputs_are_seeded(compiled: CompiledPlan) -> None:
    a, b = compiled.inputs(seed=4), compiled.inputs(seed=4)
    for tenant in TENANTS:
        for name, value in a[tenant].items():
            np.testing.assert_array_equal(value, b[tenant][name])


def test_measure_keeps_the_fastest_measured_finalist(models: list[Path]) -> None:
    plan = cosched.compile(models, cost_model="roofline", trials=5, seed=1, measure=True)
    try:
        report = plan.report()
        # the finalists and the sequential baseline were all run; the plan runs correctly
        assert len(report["finalists_measured_ms"]) >= 2
        assert all(ms > 0 for ms in report["finalists_measured_ms"])
        feed = plan.inputs()
        assert max_abs_diff(plan.run(feed), plan.sequential.run(feed)) <= 1e-5
    finally:
        plan.close()


def test_study_resumes_only_for_the_same_graph_and_cost_model(models: list[Path], tmp_path: Path) -> None:
    from dataclasses import replace

    from cosched.costmodel import DeviceSpec, RooflineModel

    study = f"sqlite:///{tmp_path / 'study.db'}"

    def trials(sources: list[Path], cost_model: object = "roofline") -> tuple[int, str]:
        plan = cosched.compile(sources, cost_model=cost_model, trials=3, seed=1, study=study)
        plan.close()
        return plan.report()["trials"], plan.report()["study"]

    first, name = trials(models)
    assert first == 3
    assert trials(models) == (6, name)                        # same inputs: resumed
    assert trials(models[:2])[0] == 3                         # another graph: a study of its own
    spec = DeviceSpec.detect("cpu")
    faster = RooflineModel(replace(spec, peak_flops=spec.peak_flops * 4))
    assert trials(models, faster)[0] == 3                     # another cost model: likewise
    assert trials(models) == (9, name)


def test_auto_cost_model_profiles_only_what_the_cache_lacks(
        models: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import re

    from cosched.costmodel import DeviceSpec, ProfileStore
    from cosched.costmodel.select import STORE_FILE, model_cache_dir

    monkeypatch.setenv("COSCHED_CACHE_DIR", str(tmp_path / "cache"))
    pattern = re.compile(r"cost model: (\d+) of (\d+) task signatures of this graph measured, (\d+) extrapolated")

    def coverage(sources: list[Path], budget: float) -> tuple[int, int, int]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cosched.costmodel.select"):
            plan = cosched.compile(sources, cost_model="auto", profile_budget_s=budget, trials=2)
            plan.close()
        assert plan.cost_model == "xgboost"
        found = [pattern.search(r.getMessage()) for r in caplog.records]
        (n, m, k), = [tuple(int(x) for x in f.groups()) for f in found if f]
        assert n + k == m
        return n, m, k

    def store_size() -> tuple[int, int]:
        with ProfileStore(model_cache_dir(DeviceSpec.detect("cpu")) / STORE_FILE) as store:
            data = store.load(store.fingerprints()[0])
        return len(data.standalone), len(data.groups)

    measured, total, _ = coverage(models[2:], 4.0)            # dlrm alone, from an empty cache
    assert measured >= 2
    before = store_size()
    _, mix_total, extrapolated = coverage(models, 0.0)        # all three: nothing profiled
    assert mix_total > total and extrapolated >= mix_total - total
    assert store_size() == before
