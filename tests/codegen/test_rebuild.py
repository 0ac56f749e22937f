"""A loaded plan against its re-imported models: bindings, buffers and tasks must agree."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest

import cosched
from cosched.codegen import graph_for_plan, load_plan
from cosched.errors import PlanError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
from onnx_models import mlp


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rebuild")
    paths = []
    for name in ("p", "q"):
        paths.append(folder / f"{name}.onnx")
        onnx.save(mlp(name, batch=1), paths[-1])
    compiled = cosched.compile(paths, cost_model="roofline", trials=0)
    compiled.save(folder / "plan")
    return folder / "plan"


def _edited(saved: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    for source in saved.rglob("*"):
        if source.is_file():
            dest = target / source.relative_to(saved)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
    data = json.loads((target / "plan.json").read_text())
    change(data)
    (target / "plan.json").write_text(json.dumps(data))
    return target


def _buffer(d: dict[str, Any], tensor: str) -> dict[str, Any]:
    return next(b for b in d["buffers"] if b["tensor"] == tensor)


def test_an_unedited_plan_agrees_with_its_models(saved: Path) -> None:
    graph = graph_for_plan(load_plan(saved))
    assert graph.tenant_names == ("p", "q")


@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        (lambda d: d["inputs"][0].update(shape=[2, 4]), r"inputs\[0\] \(p:x\): shape is \[2, 4\] in the plan, \[1, 4\] in the model"),
        (lambda d: d["inputs"][0].update(dtype="float64"), r"inputs\[0\] \(p:x\): dtype is 'float64' in the plan, 'float32'"),
        (lambda d: d["outputs"].pop(), r"outputs: the plan binds \['p:y'\].*missing \['q:y'\]"),
        (lambda d: d["outputs"][1].update(tensor="q/h"), r"outputs\[1\] \(q:y\): tensor is 'q/h' in the plan"),
        (lambda d: _buffer(d, "p/h").update(shape=[3, 1]), r"buffers\[\d\] \('p/h'\): shape is \[3, 1\] in the plan, \[1, 3\]"),
        (lambda d: _buffer(d, "p/h").update(use_tasks=[]), r"buffers\[\d\] \('p/h'\): use_tasks is \[\] in the plan"),
        (lambda d: d["buffers"].pop(0), r"buffers: missing \['p/h'\]"),
    ],
)
def test_fields_that_disagree_with_the_models_are_refused_by_name(
    saved: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], culprit: str
) -> None:
    edited = _edited(saved, tmp_path / "plan", change)
    plan = load_plan(edited)  # consistent in itself ...
    with pytest.raises(PlanError, match=culprit) as caught:
        graph_for_plan(plan)  # ... but not with its models
    assert str(edited / "plan.json") in str(caught.value)
    with pytest.raises(PlanError, match=culprit):
        cosched.load(edited)
