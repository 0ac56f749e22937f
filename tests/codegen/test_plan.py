"""Plan JSON: round trip, schema, model hashes, device kind, task partition re-application."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from plan_graphs import per_tenant_streams, random_streams, tenant_mix

from cosched.codegen import emit_python, load_plan, lower, plan_schema, save_plan
from cosched.codegen.plan import Plan, plan_to_json
from cosched.codegen.rebuild import apply_tasks
from cosched.errors import ConfigError, DeviceError, GraphError, PlanError

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
    jsonschema.Draft202012Validator(schema).validate(plan_to_json(plan))


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


# ----------------------------------------------------- fields agree on load
@pytest.fixture
def evented(tmp_path: Path) -> Path:
    """A saved plan whose streams mix tenants, so it records and waits for events."""
    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 2, seed=3), device=CPU)
    assert plan.events
    out = tmp_path / "plan"
    save_plan(plan, out)
    return out


def _first_record(d: dict) -> tuple[int, int]:
    """(stream index, instruction index) of the first record instruction."""
    for s, stream in enumerate(d["streams"]):
        for i, ins in enumerate(stream["instructions"]):
            if ins["op"] == "record":
                return s, i
    raise AssertionError("no record")


@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        (lambda d: d["streams"][1]["instructions"].append({"op": "run", "task": d["streams"][0]["instructions"][0]["task"]}),
         r"task \d+ runs twice"),
        (lambda d: d["streams"][0]["instructions"].append({"op": "run", "task": 999}), r"unknown tasks \[999\]"),
        (lambda d: d["events"].pop(0), r"events: event\(s\) \[0\] missing"),
        (lambda d: d["events"][0].update(stream=1 - d["events"][0]["stream"]), r"events\[0\]: says event 0 is recorded on stream"),
        (lambda d: d["events"][0].update(after_task=999), r"events\[0\]: .*after task 999"),
        (lambda d: d["events"][0].update(waiters=[]), r"events\[0\]: lists waiters \[\]"),
        (lambda d: d["streams"][_first_record(d)[0]]["instructions"][_first_record(d)[1]].update(event=77),
         r"streams\[\d\]\.instructions\[\d+\]: records event 77"),
        (lambda d: d["tasks"][1].update(id=0), r"tasks\[1\]: task id 0 is used twice"),
        (lambda d: d["tasks"][0].update(tenant="zzz"), r"tasks\[0\] \(task 0\): tenant 'zzz'"),
        (lambda d: d["tasks"][1].update(ops=d["tasks"][0]["ops"]), r"tasks\[1\] \(task 1\): op 'a/relu' is already run"),
        (lambda d: d["buffers"][0].update(nbytes=1), r"buffers\[0\] \('a/relu_out'\): nbytes is 1"),
        (lambda d: d["buffers"][0].update(def_task=999), r"buffers\[0\] .*task\(s\) \[999\]"),
        (lambda d: d["buffers"][0].update(dtype="float99"), r"buffers\[0\] .*'float99' is not a numpy dtype"),
        (lambda d: d["inputs"][0].update(tenant="zzz"), r"inputs\[0\] \('x'\): tenant 'zzz'"),
        (lambda d: d["outputs"].append(d["outputs"][0]), r"outputs\[\d+\]: tenant 'a' binds 'y' twice"),
        (lambda d: d.update(timeline=[{"task": 999, "start_ms": 0, "end_ms": 1}]), r"timeline: task 999"),
        (lambda d: d["device"].update(index="x"), r"device.index must be an integer"),
        (lambda d: d["import_options"].update(input_shapes={"a": {"x": [0, 8]}}), r"input_shapes.a.x"),
    ],
)
def test_load_refuses_plans_whose_fields_disagree(evented: Path, change, culprit: str) -> None:  # type: ignore[no-untyped-def]
    _edit(evented, change)
    with pytest.raises(PlanError, match=culprit) as caught:
        load_plan(evented)
    assert str(evented / "plan.json") in str(caught.value)


def test_saving_replaces_the_directory_whole(saved: tuple[Plan, Path]) -> None:
    plan, out = saved
    (out / "models" / "stale.onnx").write_bytes(b"old")
    (out / "notes.txt").write_text("old")
    save_plan(plan.replace(models=plan.models[:1]), out, extra_files={"report.json": "{}"})
    assert sorted(p.name for p in out.iterdir()) == ["models", "plan.json", "report.json"]
    assert [p.name for p in (out / "models").iterdir()] == ["a.onnx"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_saving_a_loaded_plan_into_its_own_directory(saved: tuple[Plan, Path]) -> None:
    _, out = saved
    loaded = load_plan(out)
    save_plan(loaded, out)
    assert load_plan(out).replace(models=loaded.models) == loaded


def test_saving_over_a_foreign_directory_or_file_is_refused(saved: tuple[Plan, Path], tmp_path: Path) -> None:
    plan, _ = saved
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    with pytest.raises(ConfigError, match=r"holds files but no plan.json"):
        save_plan(plan, foreign)
    assert (foreign / "thesis.tex").read_text() == "keep"
    with pytest.raises(ConfigError, match=r"is not a directory"):
        save_plan(plan, foreign / "thesis.tex" / "plan")


def test_a_full_disk_keeps_the_old_plan_and_leaves_no_temporary(
    saved: tuple[Plan, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, out = saved
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "x")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(PlanError, match=r"No space left on device.*nothing was changed"):
        save_plan(plan, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(PlanError, match="No space left"):
        save_plan(plan, out.parent / "fresh")
    assert not (out.parent / "fresh").exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
