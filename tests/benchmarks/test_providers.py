"""benchmarks.providers: every way of running a task reproduces op-by-op outputs; fallbacks
and over-budget compiles are counted and reported (tiny zoo models; behaviour, not timings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import providers, task_variants
from benchmarks.providers_report import by_signature, format_markdown
from benchmarks.task_variants import (
    TOLERANCE,
    OverBudget,
    Prepared,
    build,
    prepare,
    rel_error,
    run_model,
)

FAST = ("eager", "traced", "frozen", "freeze-only", "ort-task", "ort-model")


@pytest.fixture(scope="module", params=["dlrm", "squeezenet1_1", "bert"])
def model(request: pytest.FixtureRequest) -> Prepared:
    return prepare(request.param, "tiny")


def _worst_error(p: Prepared, variant: str, **kwargs: float) -> tuple[float, task_variants.Built]:
    built = build(p, variant, **kwargs)
    outputs, total, steps = run_model(p, built)
    assert total > 0 and len(steps) == (0 if variant == "ort-model" else len(p.order))
    worst = max(rel_error(outputs[p.name][own], p.reference[name].numpy()) for own, name in p.graph.tenants[0].outputs)
    return worst, built


@pytest.mark.parametrize("variant", FAST)
def test_each_variant_agrees_with_op_by_op(model: Prepared, variant: str) -> None:
    worst, built = _worst_error(model, variant)
    assert worst <= TOLERANCE
    assert built.fallbacks == {}, built.fallbacks  # the tiny zoo builds every task every way


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["inductor", "inductor-freeze"])
def test_inductor_variants_agree_with_op_by_op(variant: str) -> None:
    worst, built = _worst_error(prepare("dlrm", "tiny"), variant)
    assert worst <= TOLERANCE and built.fallbacks == {}
    assert built.notes["graph_breaks"] == 0  # shape inputs reach Dynamo as Python ints
    assert sum(built.compile_s.values()) > 0


def test_a_task_that_fails_to_build_runs_traced_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    p = prepare("squeezenet1_1", "tiny")
    victim = p.order[1]
    real = task_variants._MAKERS["frozen"]

    def failing(p_: Prepared, task: task_variants.Task, options: object) -> object:
        if task.id == victim.id:
            raise RuntimeError("cannot freeze this one\nsecond line")
        return real(p_, task, options)
    monkeypatch.setitem(task_variants._MAKERS, "frozen", failing)
    worst, built = _worst_error(p, "frozen")
    assert worst <= TOLERANCE
    assert built.fallbacks == {built.steps[1].label: "RuntimeError: cannot freeze this one"}
    assert built.steps is not None and type(built.steps[1].run).__name__ == "TracedTask"
    assert type(built.steps[0].run).__name__ == "_Call"


def test_a_compile_over_budget_stops_with_an_extrapolation() -> None:
    p = prepare("dlrm", "tiny")
    with pytest.raises(OverBudget) as caught:
        build(p, "ort-task", budget_s=0.0)
    notes = caught.value.notes
    assert notes["compiled_tasks"] == 1 and notes["tasks"] == len(p.order)
    assert notes["extrapolated_compile_s"] == pytest.approx(notes["compile_s"] * len(p.order))


def test_a_task_becomes_a_standalone_onnx_model() -> None:
    p = prepare("bert", "tiny")
    task = next(t for t in p.order if p.signature(t).startswith("MatMul+Add"))
    model = task_variants.task_model(p, task)
    inputs, outputs, fixed = p.io(task)
    assert [i.name for i in model.graph.input] == list(inputs)
    assert [o.name for o in model.graph.output] == list(outputs)
    assert sorted(i.name for i in model.graph.initializer) == sorted(fixed)
    assert model.ir_version == 10


def test_rel_error_scales_by_the_reference_and_refuses_mismatches() -> None:
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros(2), np.zeros(3)) == float("inf")
    assert rel_error(np.array([np.nan]), np.array([1.0])) == float("inf")


def test_signatures_sum_over_models_and_drop_variants_some_model_lacks() -> None:
    models = {
        "a": {"signatures": {"Conv+Relu": {"tasks": 2, "ms": {"traced": 4.0, "frozen": 3.0, "inductor": 5.0}}}},
        "b": {"signatures": {"Conv+Relu": {"tasks": 1, "ms": {"traced": 2.0, "frozen": 2.0}},
                             "Gemm": {"tasks": 1, "ms": {"traced": 1.0}}}},
    }
    out = by_signature(models)
    assert list(out) == ["Conv+Relu", "Gemm"]
    assert out["Conv+Relu"] == {"tasks": 3, "models": 2, "ms": {"frozen": 5.0, "traced": 6.0}, "best": "frozen"}


@pytest.mark.slow
def test_cli_times_each_variant_in_its_own_process(tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    code = providers.main(["--models", "dlrm", "--size", "tiny", "--variants", "traced", "eager", "ort-model",
                           "--repeats", "2", "--iters", "2", "--warmup", "1", "--min-time", "0", "--no-probe",
                           "--json", str(out), "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    variants = result["models"]["dlrm"]["variants"]
    assert variants["traced"]["vs_traced"] == 1.0 and variants["ort-model"]["vs_ort-model"] == 1.0
    assert all(v["agrees"] and len(v["repeat_medians_ms"]) == 2 for v in variants.values())
    assert set(result["by_signature"]["Gather"]["ms"]) == {"eager", "traced"}
    assert "| dlrm |" in md.read_text() and md.read_text() == format_markdown(result) + "\n"
