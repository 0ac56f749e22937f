"""The plan's JSON form, derived from its dataclasses: layout, defaults, errors, schema."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from cosched.codegen.planformat import (
    Binding,
    Buffer,
    Event,
    ImportOptions,
    Instruction,
    ModelRef,
    Plan,
    StreamPlan,
    TaskSpec,
    plan_from_json,
    plan_schema,
    plan_to_json,
    schema_text,
)
from cosched.errors import PlanError

SHA = "0123456789abcdef" * 4


def tiny() -> Plan:
    """Two tasks of one tenant on two streams, one event between them: every part once."""
    return Plan(
        device={"schema_version": 1, "kind": "cpu", "name": "test-cpu", "cores": 2},
        models=(ModelRef("a", "models/a.onnx", SHA),),
        import_options=ImportOptions(batch=2, input_shapes={"a": {"x": [2, 8]}}),
        tasks=(TaskSpec(0, "a", "relu", ("a/relu",)), TaskSpec(1, "a", "neg", ("a/neg",), "ort")),
        streams=(
            StreamPlan(0, 0, (Instruction("run", task=0), Instruction("record", event=0)), -1),
            StreamPlan(1, 0, (Instruction("wait", event=0), Instruction("run", task=1))),
        ),
        events=(Event(0, 0, 0, (1,)),),
        buffers=(Buffer("a/relu_out", "a", (2, 8), "float32", 64, 0, (1,), 1),),
        inputs=(Binding("a", "x", "a/x", (2, 8), "float32"),),
        outputs=(Binding("a", "y", "a/neg_out", (2, 8), "float32"),),
        issue_order=(0, 1),
        timeline={1: (1.0, 2.5), 0: (0.0, 1.0)},
        predicted_ms={"plan": 2.5},
        schedule_method="given",
    )


TINY_JSON: dict[str, Any] = {
    "schema_version": 1,
    "device": {"schema_version": 1, "kind": "cpu", "name": "test-cpu", "cores": 2},
    "models": [{"tenant": "a", "path": "models/a.onnx", "sha256": SHA}],
    "import_options": {"batch": 2, "input_shapes": {"a": {"x": [2, 8]}}},
    "tasks": [
        {"id": 0, "tenant": "a", "name": "relu", "ops": ["a/relu"], "provider": "torch"},
        {"id": 1, "tenant": "a", "name": "neg", "ops": ["a/neg"], "provider": "ort"},
    ],
    "streams": [
        {"id": 0, "device": 0, "priority": -1,
         "instructions": [{"op": "run", "task": 0}, {"op": "record", "event": 0}]},
        {"id": 1, "device": 0, "priority": 0,
         "instructions": [{"op": "wait", "event": 0}, {"op": "run", "task": 1}]},
    ],
    "events": [{"id": 0, "stream": 0, "after_task": 0, "waiters": [1]}],
    "buffers": [{"tensor": "a/relu_out", "tenant": "a", "shape": [2, 8], "dtype": "float32", "nbytes": 64,
                 "def_task": 0, "use_tasks": [1], "free_after": 1}],
    "inputs": [{"tenant": "a", "name": "x", "tensor": "a/x", "shape": [2, 8], "dtype": "float32"}],
    "outputs": [{"tenant": "a", "name": "y", "tensor": "a/neg_out", "shape": [2, 8], "dtype": "float32"}],
    "issue_order": [0, 1],
    "timeline": [{"task": 0, "start_ms": 0.0, "end_ms": 1.0}, {"task": 1, "start_ms": 1.0, "end_ms": 2.5}],
    "predicted_ms": {"plan": 2.5},
    "schedule_method": "given",
}
"""The document plan.json has held since schema_version 1, keys in the order written."""


def test_json_form_keeps_its_layout_and_key_order() -> None:
    assert json.dumps(plan_to_json(tiny())) == json.dumps(TINY_JSON)
    tupled = tiny().replace(import_options=ImportOptions(batch=2, input_shapes={"a": {"x": (2, 8)}}))
    assert plan_to_json(tupled) == TINY_JSON


def test_round_trip_and_base_dir() -> None:
    assert plan_from_json(TINY_JSON) == tiny()
    assert plan_from_json(TINY_JSON, base_dir="/plans/p").base_dir == "/plans/p"
    assert "base_dir" not in plan_to_json(tiny().replace(base_dir="/plans/p"))


def test_a_plan_written_before_the_optional_fields_loads_with_their_defaults() -> None:
    old = copy.deepcopy(TINY_JSON)
    for key in ("timeline", "predicted_ms", "schedule_method"):
        del old[key]
    old["import_options"] = {}
    for task in old["tasks"]:
        del task["provider"], task["name"]
    for stream in old["streams"]:
        del stream["priority"]
    del old["events"][0]["waiters"]
    plan = plan_from_json(old)
    assert {t.provider for t in plan.tasks} == {"torch"} and {t.name for t in plan.tasks} == {""}
    assert [s.priority for s in plan.streams] == [0, 0] and plan.events[0].waiters == ()
    assert plan.import_options == ImportOptions() and plan.timeline == {} and plan.predicted_ms == {}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["streams"][1]["instructions"].__setitem__(0, {"op": "jump", "task": 1}),
         r"streams/1/instructions/0: .*'jump'"),
        (lambda d: d["streams"][0]["instructions"][0].update(task=-1),
         r"streams/0/instructions/0/task: .*greater than or equal to 0 \(got -1\)"),
        (lambda d: d["streams"][1]["instructions"][0].update(task=1), r"streams/1/instructions/0/task: Extra inputs"),
        (lambda d: d["tasks"][0].update(colour="red"), r"tasks/0/colour: Extra inputs are not permitted"),
        (lambda d: d.update(base_dir="/elsewhere"), r"base_dir: Extra inputs are not permitted"),
        (lambda d: d["buffers"][0].update(nbytes="64"), r"buffers/0/nbytes: .*valid integer \(got '64'\)"),
        (lambda d: d["streams"][0].update(priority=True), r"streams/0/priority: .*valid integer"),
        (lambda d: d["buffers"][0].pop("free_after"), r"buffers/0/free_after: Field required$"),
        (lambda d: d["timeline"][1].update(end_ms=-1), r"timeline/1/end_ms: .*greater than or equal to 0"),
        (lambda d: d["device"].update(kind="tpu"), r"device/kind: .*'cpu' or 'cuda'"),
        (lambda d: d["models"][0].update(sha256="abc"), r"models/0/sha256: .*pattern"),
        (lambda d: d["tasks"][1].update(provider="tvm"), r"tasks/1/provider: .*'torch' or 'ort'"),
        (lambda d: d["tasks"][0].update(ops=[]), r"tasks/0/ops: .*at least 1 item"),
        (lambda d: d["import_options"].update(batch=0), r"import_options/batch: .*greater than or equal to 1"),
        (lambda d: d.update(models=[]), r"models: .*at least 1 item"),
    ],
)
def test_a_document_off_the_schema_is_refused_naming_the_field(change, where: str) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(TINY_JSON)
    change(data)
    with pytest.raises(PlanError, match=rf"^p/plan.json: plan does not match plan.schema.json at {where}"):
        plan_from_json(data, "p/plan.json")
    assert not jsonschema.Draft202012Validator(plan_schema()).is_valid(data), "the schema should refuse it too"


def test_another_schema_version_is_refused_before_the_schema() -> None:
    with pytest.raises(PlanError, match=r"^p: schema_version is 3, this cosched reads versions 1, 2; recompile"):
        plan_from_json({**TINY_JSON, "schema_version": 3, "tasks": "no longer a list"}, "p")
    with pytest.raises(PlanError, match=r"schema_version is None"):
        plan_from_json([TINY_JSON], "p")


def test_schema_accepts_what_loads() -> None:
    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(TINY_JSON)
    assert list(schema["properties"]) == [*TINY_JSON, "devices", "comms", "splits"]


def test_shipped_schema_is_the_generated_one() -> None:
    shipped = resources.files("cosched.codegen").joinpath("plan.schema.json").read_text("utf-8")
    assert shipped == schema_text(), (
        "cosched/codegen/plan.schema.json is not what the plan dataclasses generate (a field changed, "
        "or another pydantic version words it differently): regenerate it with the command in "
        "cosched.codegen.planformat's docstring"
    )
