"""Plan JSON: round trip, schema, model hashes, device kind, task partition re-application."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
from plan_graphs import per_tenant_streams, tenant_mix

from cosched.codegen import emit_python, load_plan, lower, plan_schema, save_plan
from cosched.codegen.plan import Plan
from cosched.codegen.rebuild import apply_tasks
from cosched.errors import DeviceError, GraphError, PlanError

CPU = {"kind": "cpu", "name": "test-cpu", "cores": 2}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Plan, Path]:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU, timeline={t.id: (t.id * 1.0, t.id + 0.5) for t in g.tasks},
                 predicted_ms={"plan": 4.0, "sequential": 12.0})
    out = tmp_path / "plan"
    save_plan(plan, out, module_source=emit_python(plan))
    return plan, out


def test_round_trip(saved: tuple[Plan, Path]) -> None:
    plan, out = saved
    assert sorted(p.name for p in out.iterdir()) == ["models", "plan.json", "plan_module.py"]
    loaded = load_plan(out)
    assert loaded.models[0].path == "models/a.onnx"
    assert loaded.replace(models=plan.models) == plan
    assert loaded.model_path(loaded.models[1]) == out.resolve() / "models" / "b.onnx"
    assert loaded.timeline == plan.timeline and loaded.predicted_ms == {"plan": 4.0, "sequential": 12.0}


def test_schema_is_draft_2020_12_and_accepts_plans(saved: tuple[Plan, Path]) -> None:
    plan, _ = saved
    schema = plan_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(plan.to_dict())


def test_save_without_copy_keeps_absolute_paths(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CPU)
    save_plan(plan, tmp_path / "p", copy_models=False)
    loaded = load_plan(tmp_path / "p")
    assert loaded.models[0].path == str((tmp_path / "a.onnx").resolve())
    assert not (tmp_path / "p" / "models").exists()


def _edit(out: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = out / "plan.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_schema_violation_names_the_place(saved: tuple[Plan, Path]) -> None:
    _, out = saved
    _edit(out, lambda d: d["streams"][1]["instructions"].__setitem__(0, {"op": "jump", "task": 1}))
    with pytest.raises(PlanError, match=r"plan.json.*streams/1/instructions/0"):
        load_plan(out)


def test_schema_version_mismatch(saved: tuple[Plan, Path]) -> None:
    _, out = saved
    _edit(out, lambda d: d.__setitem__("schema_version", 99))
    with pytest.raises(PlanError, match=r"schema_version is 99"):
        load_plan(out)


def test_changed_model_is_refused_with_both_hashes(saved: tuple[Plan, Path]) -> None:
    _, out = saved
    model = out / "models" / "b.onnx"
    model.write_bytes(b"retrained")
    with pytest.raises(PlanError) as err:
        load_plan(out)
    message = str(err.value)
    assert str(model.resolve()) in message and "'b'" in message
    recorded = json.loads((out / "plan.json").read_text())["models"][1]["sha256"]
    assert recorded in message

    assert hashlib.sha256(b"retrained").hexdigest() in message


def test_missing_model_and_missing_plan(saved: tuple[Plan, Path], tmp_path: Path) -> None:
    _, out = saved
    (out / "models" / "c.onnx").unlink()
    with pytest.raises(PlanError, match=r"tenant 'c'.*not found"):
        load_plan(out)
    with pytest.raises(PlanError, match=r"no plan file"):
        load_plan(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "plan.json").write_text("{not json")
    with pytest.raises(PlanError, match=r"not a readable JSON plan"):
        load_plan(tmp_path / "bad")


def test_plan_for_another_device_kind_is_refused(saved: tuple[Plan, Path]) -> None:
    _, out = saved
    assert load_plan(out, device_kind="cpu").device_kind == "cpu"
    with pytest.raises(DeviceError, match=r"compiled for a 'cpu' device.*targets 'cuda'"):
        load_plan(out, device_kind="cuda")


def test_apply_tasks_checks_the_reimported_ops(saved: tuple[Plan, Path], tmp_path: Path) -> None:
    plan, _ = saved
    g = tenant_mix(tmp_path / "g")
    assert [t.ops for t in apply_tasks(g.replace(tasks=()), plan).tasks] == [t.ops for t in g.tasks]
    fewer = tenant_mix(tmp_path / "h", tenants=("a", "b"))
    with pytest.raises(PlanError, match=r"lacks ops the plan schedules.*c/"):
        apply_tasks(fewer, plan)
    renamed = plan.replace(tasks=plan.tasks[:-1])
    with pytest.raises(PlanError, match=r"ops no plan task runs.*c/square"):
        apply_tasks(g, renamed)
    broken = plan.replace(tasks=(plan.tasks[1].__class__(0, "a", ("a/join",), "x"), *plan.tasks[1:]))
    with pytest.raises((PlanError, GraphError)):
        apply_tasks(g, broken)
