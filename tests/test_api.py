"""cosched.compile() and cosched.load() on three tiny zoo tenants (roofline, few trials)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cosched
import cosched.ir
from cosched import zoo
from cosched.compiled import CompiledPlan, max_abs_diff
from cosched.errors import ConfigError, DeviceError, InputError, RuntimeFailure
from cosched.options import CompileOptions
from cosched.search import SearchConfig

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


def test_report_times_each_stage_of_the_pipeline(compiled: CompiledPlan) -> None:
    stages = compiled.report()["stages_s"]
    assert list(stages) == ["import", "analysis", "cost_model", "calibration", "search", "lowering"]
    assert all(s >= 0 for s in stages.values())
    assert sum(stages.values()) == pytest.approx(compiled.report()["compile_s"])


def test_plan_outputs_equal_sequential(compiled: CompiledPlan) -> None:
    inputs = compiled.inputs(seed=2)
    got, expected = compiled.run(inputs), compiled.baseline.run(inputs)
    assert {t: sorted(o) for t, o in got.items()} == {t: sorted(o) for t, o in expected.items()}
    assert max_abs_diff(got, expected) <= 1e-5


def test_sequential_is_a_deprecated_name_of_the_baseline(compiled: CompiledPlan) -> None:
    with pytest.warns(DeprecationWarning, match=r"\.baseline"):
        assert compiled.sequential is compiled.baseline


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
        assert max_abs_diff(plan.run(feed), plan.baseline.run(feed)) <= 1e-5
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


# ------------------------------------------------------------ bad arguments
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inline MLP tenant 'r' (x[1, 4] -> y[1, 3]) saved as a file."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "ir"))
    import onnx
    from onnx_models import mlp

    path = tmp_path_factory.mktemp("tiny") / "r.onnx"
    onnx.save(mlp("r", batch=1), path)
    return path


@pytest.fixture(scope="module")
def tiny_plan(tiny: Path) -> CompiledPlan:
    plan = cosched.compile([tiny], cost_model="roofline", trials=0)
    yield plan
    plan.close()


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"slo_ms": {"r": "fast"}}, r"slo_ms\['r'\].*'fast'"),
        ({"slo_ms": {"r": float("inf")}}, r"slo_ms\['r'\].*inf"),
        ({"slo_ms": ["r"]}, "slo_ms must map"),
        ({"time_budget_s": 0}, "time_budget_s"),
        ({"time_budget_s": -1.0}, "time_budget_s"),
        ({"trials": "many"}, "trials must be an integer"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"profile_budget_s": -1}, "profile_budget_s"),
        ({"device": None}, "device must be"),
        ({"cost_model": None}, "cost_model must be"),
        ({"batch": 10**23}, "2\\*\\*63 - 1"),
        ({"input_shapes": {"r": None}}, "input_shapes\\['r'\\]"),
        ({"study": "not a url"}, "not a database URL"),
    ],
)
def test_bad_compile_arguments_are_config_errors_naming_the_argument(
    tiny: Path, kwargs: dict, culprit: str
) -> None:
    with pytest.raises(ConfigError, match=culprit):
        cosched.compile([tiny], cost_model=kwargs.pop("cost_model", "roofline"), trials=kwargs.pop("trials", 0),
                        **kwargs)


def test_compile_of_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="models must be"):
        cosched.compile(None)  # type: ignore[arg-type]


class _Stop(Exception):
    pass


def _search_config(monkeypatch: pytest.MonkeyPatch, models: list[Path], *args: Any, **kwargs: Any) -> SearchConfig:
    """The SearchConfig that ``cosched.compile(models, *args, **kwargs)`` hands the search."""
    seen = []

    def optimize(table: Any, config: SearchConfig, timer: Any) -> Any:
        seen.append(config)
        raise _Stop

    monkeypatch.setattr("cosched.api.optimize", optimize)
    with pytest.raises(_Stop):
        cosched.compile(models, *args, **kwargs)
    return seen[0]


def test_compile_with_options_or_keywords_searches_alike(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keywords = {"cost_model": "roofline", "in_situ": False, "trials": 3, "seed": 4, "slo_ms": {"r": 50.0},
                "max_streams": 2, "best_effort": True}
    by_keywords = _search_config(monkeypatch, [tiny], **keywords)
    by_options = _search_config(monkeypatch, [tiny], CompileOptions(**keywords))
    overridden = _search_config(monkeypatch, [tiny], CompileOptions(**keywords | {"seed": 9}), seed=4)
    assert by_keywords == by_options == overridden == CompileOptions(**keywords).search_config()
    assert by_keywords.seed == 4 and dict(by_keywords.slo_ms) == {"r": 50.0}


def test_compile_refuses_an_unknown_keyword_and_a_wrong_options_value(tiny: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown compile option\(s\) \['trails'\]; the options are \['names'"):
        cosched.compile([tiny], trails=3)
    with pytest.raises(ConfigError, match=r"options must be a cosched\.CompileOptions, got dict"):
        cosched.compile([tiny], {"trials": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize("where", [None, 5])
def test_load_of_no_path_is_a_config_error(where: object) -> None:
    with pytest.raises(ConfigError, match="plan directory path"):
        cosched.load(where)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inputs", "culprit"),
    [
        ({"r": None}, "tenant 'r': inputs must map"),
        ({"r": {"x": None}}, "tenant 'r': input 'x' must be an array"),
        ({"r": {"x": [[1, 2], [3]]}}, "tenant 'r': input 'x' must be an array"),
        (5, "inputs must map tenant"),
    ],
)
def test_run_with_inputs_of_the_wrong_kind_is_an_input_error(tiny_plan: CompiledPlan, inputs: object, culprit: str) -> None:
    with pytest.raises(InputError, match=culprit):
        tiny_plan.run(inputs)  # type: ignore[arg-type]


def test_run_warns_about_nan_and_strict_refuses(tiny_plan: CompiledPlan, caplog: pytest.LogCaptureFixture) -> None:
    feed = {"r": {"x": np.array([[np.nan, 0, 1, 2]], np.float32)}}
    with caplog.at_level(logging.WARNING, logger="cosched"):  # an earlier `cosched -q` may have raised it
        out = tiny_plan.run(feed)
    assert np.isnan(out["r"]["y"]).any()
    assert "tenant 'r': input 'x' holds 1 NaN of 4 values" in caplog.text
    assert tiny_plan.last_warnings == ["tenant 'r': input 'x' holds 1 NaN of 4 values"]
    with pytest.raises(InputError, match="tenant 'r': input 'x' holds 1 NaN"):
        tiny_plan.run(feed, strict=True)
    huge = {"r": {"x": np.full((1, 4), 3e38, np.float32)}}
    with pytest.raises(RuntimeFailure, match=r"tenant 'r': output 'y' holds .* inputs are finite"):
        tiny_plan.run(huge, strict=True)
    tiny_plan.run(tiny_plan.inputs())
    assert tiny_plan.last_warnings == []


def test_benchmark_reports_nan_outputs_as_a_mismatch(tiny_plan: CompiledPlan) -> None:
    result = tiny_plan.benchmark({"r": {"x": np.full((1, 4), np.nan, np.float32)}}, iters=1, warmup=0)
    assert result["max_abs_diff"] == float("inf")
    assert "tenant 'r': output 'y'" in result["mismatches"][0]


def test_load_refuses_a_cuda_plan_without_cuda(
    tiny_plan: CompiledPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    tiny_plan.save(tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    data = json.loads(path.read_text())
    data["device"]["kind"] = "cuda"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"compiled for cuda:0.*no CUDA device"):
        cosched.load(tmp_path / "plan")


def test_load_refuses_a_plan_too_big_for_this_machine(
    tiny_plan: CompiledPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_plan.save(tmp_path / "plan")
    monkeypatch.setattr("cosched.api.device_memory", lambda kind, index=0: 16)
    with pytest.raises(ConfigError, match=r"need at least .* of memory.*has 16 B"):
        cosched.load(tmp_path / "plan")
