"""Fuzz: broken models, plans, inputs and options through every verb end in exit 0, or in
exit 2 with one line on stderr; never in a traceback.

Seeded, so a failure reproduces; small, so it runs in about a minute on two cores. Each case
runs in process through ``cosched.cli.main``, which would let any exception the CLI did not
turn into an error escape to the test.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tiny_models import write_models

from cosched.cli import main

pytestmark = pytest.mark.slow

SEED = 20240611
FAST = ["--cost-model", "roofline", "--trials", "1"]
JUNK: tuple[Any, ...] = (None, -1, 0, 2**70, 1e308, "x", "", [], {}, True, [1, "a"], {"k": None}, float("nan"))


def _mlp_nodes(name: str) -> list[onnx.NodeProto]:
    return [helper.make_node("MatMul", ["x", "w"], ["h"], name=name), helper.make_node("Relu", ["h"], ["y"])]


def _model(nodes: list[onnx.NodeProto], w_shape: tuple[int, ...] = (4, 3), opset: int = 18,
           x: list[Any] | None = None, domain: str = "", y: list[Any] | None = None) -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.ones(w_shape, np.float32), "w")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x or [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y or [1, 3])], initializer=[w],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def broken_models(folder: Path, good: Path) -> list[Path]:
    """Files named .onnx that are not models, or models cosched cannot take."""
    raw = good.read_bytes()
    rng = random.Random(SEED)
    files: dict[str, bytes | onnx.ModelProto] = {
        "empty": b"",
        "noise": bytes(rng.randrange(256) for _ in range(300)),
        "truncated": raw[: len(raw) // 2],
        "json": b'{"graph": "not protobuf"}',
        "unknown_op": _model([helper.make_node("FrobnicateX", ["x"], ["y"])], y=[1, 4]),
        "undefined_input": _model([helper.make_node("Add", ["x", "nowhere"], ["y"])]),
        "bad_weight_shape": _model(_mlp_nodes("mm"), w_shape=(5, 3)),
        "future_opset": _model(_mlp_nodes("mm"), opset=99),
        "ancient_opset": _model(_mlp_nodes("mm"), opset=1),
        "custom_domain": _model([helper.make_node("Foo", ["x"], ["y"], domain="com.acme")], domain="com.acme"),
        "no_nodes": _model([]),
        "symbolic": _model(_mlp_nodes("mm"), x=["N", 4], y=["N", 3]),
        "cycle": _model([helper.make_node("Relu", ["y"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]),
        "bad_attr": _model([helper.make_node("Softmax", ["x"], ["y"], axis=7)], y=[1, 4]),
        "wrong_output_shape": _model(_mlp_nodes("mm"), y=[7, 7, 7]),
        "hostile_names": _model(_mlp_nodes("mm\n    import os  # \"\"\" '")),
        "float_ids": _model([helper.make_node("Gather", ["w", "x"], ["y"])]),
    }
    paths = []
    for name, content in files.items():
        path = folder / f"{name}.onnx"
        if isinstance(content, onnx.ModelProto):
            content = content.SerializeToString()
        path.write_bytes(content)
        paths.append(path)
    (folder / "folder.onnx").mkdir()
    paths.append(folder / "folder.onnx")
    return paths


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON tree, as key paths."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``data`` with one place deleted, replaced by junk, duplicated or its list reversed."""
    data = copy.deepcopy(data)
    path = rng.choice([p for p in _paths(data) if p])
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = rng.choice(["delete", "junk", "junk", "duplicate", "reverse"])
    if action == "delete":
        del parent[key]
    elif action == "junk":
        parent[key] = rng.choice(JUNK)
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif isinstance(parent[key], list):
        parent[key].reverse()
    else:
        parent[key] = rng.choice(JUNK)
    return data


def broken_plans(plan: Path, folder: Path, count: int) -> list[Path]:
    """Copies of ``plan`` with one thing broken: a mutated plan.json, a torn or missing file."""
    rng = random.Random(SEED)
    data = json.loads((plan / "plan.json").read_text())
    out = []
    for i in range(count):
        target = folder / f"plan{i}"
        shutil.copytree(plan, target)
        kind = i % 5
        if kind == 0:
            text = (plan / "plan.json").read_text()
            (target / "plan.json").write_text(text[: rng.randrange(len(text))])
        elif kind == 1 and i % 2:
            model = rng.choice(sorted((target / "models").iterdir()))
            model.write_bytes(model.read_bytes()[:100] if i % 3 else b"")
        elif kind == 1:
            (target / rng.choice(["plan.json", "models/a.onnx", "report.json"])).unlink()
        else:
            (target / "plan.json").write_text(json.dumps(_mutate(data, rng)))
        out.append(target)
    return out


def bad_inputs(folder: Path) -> list[Path]:
    rng = np.random.default_rng(SEED)
    files = {
        "nan": {"x": np.full((1, 4), np.nan, np.float32)},
        "shape": {"x": np.zeros((2, 2), np.float32)},
        "dtype": {"x": np.zeros((1, 4), np.int64)},
        "keys": {"z": np.zeros((1, 4), np.float32)},
        "ids": {"ids": np.array([[1, 2, 10**9, 3]], np.int64)},
    }
    paths = []
    for name, arrays in files.items():
        np.savez(folder / f"{name}.npz", **arrays)
        paths.append(folder / f"{name}.npz")
    (folder / "noise.npz").write_bytes(rng.bytes(200))
    paths.append(folder / "noise.npz")
    return paths


def option_cases(models: dict[str, Path], plan: Path, inputs: list[Path], tmp: Path) -> list[list[str]]:
    """Good models and plan with bad option values, drawn at random from a table per verb."""
    rng = random.Random(SEED)
    file = tmp / "a_file"
    file.write_text("x")
    bad: dict[str, list[list[str]]] = {
        "model": [["--batch", v] for v in ("0", "-3", "x", "a=0", "dyn=99999999999999999999", "zz=2")]
        + [["--shape", v] for v in ("dyn:x=0x4", "dyn:x=axb", "dyn=1x4", "zz:x=1x4", "dyn:nope=1x4", "dyn:x=1x4x5")]
        + [["--name", "a=b"], ["--name", "a", "--name", "b"], ["--inputs", "a"], ["--inputs", "zz=x.npz"]]
        + [["--inputs", f"{t}={p}"] for p in inputs for t in ("a", "emb")],
        "compile": [["--slo", v] for v in ("a=inf", "a=nan", "a=-1", "a", "zz=3", "a=fast")]
        + [["--trials", "-1"], ["--time-budget", "0"], ["--time-budget", "nan"], ["--max-streams", "0"],
           ["--interference-threshold", "0.5"], ["--profile-budget", "-1"], ["--device", "gpu"],
           ["--device", "cuda:99"], ["--cost-model", "nowhere"], ["--cost-model", str(file)],
           ["--study", "nonsense"], ["--study", f"sqlite:///{tmp}"], ["--objective", "pareto"],
           ["-o", str(file)], ["-o", str(file / "p")]],
        "run": [["--iters", "-1"], ["--warmup", "-2"], ["--trace", str(tmp)], ["--save-outputs", str(file)],
                ["--write-profile", str(tmp)], ["--write-profile", str(file)], ["--inputs", f"a={file}"],
                ["--strict", "--inputs", f"a={inputs[0]}"], ["--compare", "sequential", "--inputs", f"a={inputs[0]}"]]
        + [["--inputs", f"{t}={p}"] for p in inputs for t in ("a", "emb", "zz")],
        "show": [["--png", str(tmp)], ["--png", str(file / "x.png")]],
        "profile": [["--max-groups", "-1"], ["--max-groups", "0"], ["--budget-s", "0"], ["--batch", "0"],
                    ["--device", "tpu"], ["-o", str(file)]],
    }
    cases = []
    fixed = [str(models["a"]), str(models["emb"])]
    for _ in range(20):
        cases.append(["exec", *fixed, str(models["dyn"]), *rng.choice(bad["model"])])
        cases.append(["compile", *fixed, "-o", str(tmp / "out"), *FAST, *rng.choice(bad["model"] + bad["compile"])])
        cases.append(["run", str(plan), "--iters", "0", *rng.choice(bad["run"])])
    cases += [["show", str(plan), *args] for args in bad["show"]]
    cases += [["profile", "--models", str(models["a"]), "-o", str(tmp / "prof"), "--budget-s", "1", *args]
              for args in bad["profile"]]
    return cases


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(["-q", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_every_verb_ends_in_exit_0_or_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = write_models(tmp_path / "good")
    plan = tmp_path / "plan"
    assert main(["-q", "compile", str(models["a"]), str(models["emb"]), "-o", str(plan), *FAST]) == 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "plans").mkdir()
    (tmp_path / "inputs").mkdir()
    cases: list[list[str]] = []
    for model in broken_models(tmp_path / "bad", models["a"]):
        cases += [["compile", str(model), "-o", str(tmp_path / "out"), *FAST], ["exec", str(model)],
                  ["profile", "--models", str(model), "-o", str(tmp_path / "prof"), "--budget-s", "1"]]
    for broken in broken_plans(plan, tmp_path / "plans", 120):
        cases += [["show", str(broken)], ["run", str(broken), "--iters", "0"]]
    cases += option_cases(models, plan, bad_inputs(tmp_path / "inputs"), tmp_path)
    failures = []
    for argv in cases:
        code, err = _run(argv, capsys)
        lines = err.strip().splitlines()
        if code not in (0, 2) or (code == 2 and len(lines) != 1) or "Traceback" in err:
            failures.append(f"{argv}: exit {code}, stderr {err!r}")
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
    assert not failures, "\n".join(failures)
    assert len(cases) > 100


def test_mutations_are_seeded() -> None:
    data = {"a": [1, 2, {"b": "c"}], "d": {"e": 1.0}}
    once = [_mutate(data, random.Random(1)) for _ in range(3)]
    assert once[0] == once[1] == once[2]
