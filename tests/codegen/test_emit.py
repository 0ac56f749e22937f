"""The Python emitter: straight-line steps that run, match sequential outputs, and that no
name from a model can turn into code."""

from __future__ import annotations

import ast
import linecache
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from plan_graphs import per_tenant_streams, random_streams, tenant_mix

import cosched
from cosched.codegen import emit_python, load_module, lower
from cosched.codegen.emit import safe_text
from cosched.codegen.plan import Plan
from cosched.codegen.steps import Step, issue_steps, stream_steps
from cosched.runtime import SequentialExecutor, random_inputs

CPU = {"kind": "cpu", "name": "test-cpu"}

#: Names a hostile or careless model may carry: line breaks of every kind, quotes, triple
#: quotes, backslashes, NUL, format characters and non-ASCII text.
HOSTILE = [
    "relu\n    open('pwned','w').write('x')\n    #",
    'q"""q',
    "a'''b\\",
    "cr\rlf\r\n    import os",
    "ls\u2028ps\u2029nel\x85ff\x0cvt\x0b",
    "nul\x00end",
    "ünïcødé · 名前",
    "back\\\\slash\\",
]


@pytest.mark.parametrize("streams", ["tenant", "random", "single"])
def test_generated_module_matches_sequential(tmp_path: Path, streams: str) -> None:
    g = tenant_mix(tmp_path)
    layout = {
        "tenant": per_tenant_streams(g), "random": random_streams(g, 3, 7), "single": [[t.id for t in g.tasks]],
    }[streams]
    plan = lower(g, layout, device=CPU)
    module = load_module(emit_python(plan))
    inputs = random_inputs(g, seed=2)
    expected = SequentialExecutor(g).run(inputs)
    got = module.run(g, inputs)
    assert got.keys() == expected.keys()
    for tenant, outs in expected.items():
        for name, value in outs.items():
            np.testing.assert_allclose(got[tenant][name], value, rtol=1e-6, atol=1e-6)


def test_one_line_per_run_record_wait_and_free_with_the_ops_named(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 3, 7), device=CPU)
    source = emit_python(plan)
    stream_part = source.split("\ndef issue(m):")[0]
    assert len(re.findall(r"^    m\.run\(\d+, \d+\)$", stream_part, re.M)) == len(g.tasks)
    for op in g.ops:
        assert f"    #   {op.name}\n" in stream_part, op.name
    n_records = sum(i.op == "record" for s in plan.streams for i in s.instructions)
    n_waits = sum(i.op == "wait" for s in plan.streams for i in s.instructions)
    assert len(re.findall(r"m\.record\(\d+, \d+\)\s+# event \d+ for stream", stream_part)) == n_records > 0
    assert len(re.findall(r"m\.wait\(\d+, \d+\)\s+# event \d+: task \d+ on stream", stream_part)) == n_waits > 0
    assert source.count("m.run(") == 2 * len(g.tasks)  # the stream functions and issue()
    assert source.count("\ndef stream_") == len(plan.streams)
    assert "plan.json" not in source


def test_source_is_registered_for_tracebacks(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    source = emit_python(lower(g, [[t.id for t in g.tasks]], device=CPU))
    module = load_module(source, "mine")
    assert linecache.getline(module.__file__, 1).startswith('"""cosched plan for tenants a')


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_text_stays_on_one_line_and_inside_quotes(text: str) -> None:
    safe = safe_text(text)
    assert len(safe.splitlines()) <= 1 and "\x00" not in safe
    assert ast.literal_eval(f'"""{safe}"""') == text  # escaped, so it reads back exactly
    assert ast.literal_eval(f"'''{safe}'''") == text


def _hostile_model(path: Path, names: list[str]) -> None:
    """A chain of Relu nodes, each node and its output tensor named after a hostile name."""
    nodes, previous = [], "x"
    for i, name in enumerate(names):
        out = f"{name}#{i}"
        nodes.append(helper.make_node("Relu", [previous], [out], name=name))
        previous = out
    nodes.append(helper.make_node("Identity", [previous], ["y"], name="out"))
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def _expected_call(step: Step) -> str:
    if step.op == "free":
        return f"m.free({step.stream}, {step.tensors!r})"
    arg = step.task if step.op == "run" else step.event
    return f"m.{step.op}({step.stream}, {arg})"


def _function_calls(fn: ast.FunctionDef) -> list[str]:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    calls = []
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        assert isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call), ast.dump(stmt)
        call = stmt.value
        assert isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
        assert call.func.value.id == "m" and not call.keywords
        assert all(isinstance(a, ast.Constant) or (isinstance(a, ast.Tuple) and all(
            isinstance(e, ast.Constant) for e in a.elts)) for a in call.args), ast.dump(call)
        calls.append(ast.unparse(call))
    return calls


def _statements_are_the_plans(source: str, plan: Plan) -> None:
    """The module holds exactly: its docstring, three imports, one function per stream and
    issue() whose bodies are exactly the plan's steps, PROGRAM, and run()."""
    tree = ast.parse(source)
    kinds = [type(s).__name__ for s in tree.body]
    n = len(plan.streams)
    assert kinds == ["Expr", "ImportFrom", "ImportFrom", "ImportFrom", *["FunctionDef"] * (n + 1),
                     "Assign", "FunctionDef"], kinds
    imports = [(s.module, [a.name for a in s.names]) for s in tree.body[1:4]]  # type: ignore[attr-defined]
    assert imports == [("__future__", ["annotations"]), ("cosched.runtime.executor", ["Executor"]),
                       ("cosched.runtime.program", ["PlanProgram"])]
    functions = tree.body[4:4 + n + 1]
    assert [f.name for f in functions] == [f"stream_{i}" for i in range(n)] + ["issue"]  # type: ignore[attr-defined]
    for fn, steps in zip(functions, [*stream_steps(plan), issue_steps(plan)], strict=True):
        assert _function_calls(fn) == [_expected_call(s) for s in steps]  # type: ignore[arg-type]
    run = tree.body[-1]
    assert isinstance(run, ast.FunctionDef) and run.name == "run"
    assert [type(s).__name__ for s in run.body] == ["Expr", "With"]


def test_hostile_names_cannot_change_what_the_module_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    first, second = models / 'q"""q.onnx', models / "t'\\ü.onnx"
    _hostile_model(first, HOSTILE)
    _hostile_model(second, list(reversed(HOSTILE)))
    compiled = cosched.compile([first, second], cost_model="roofline", trials=3, seed=0)
    assert set(compiled.plan.tenants) == {'q"""q', "t'\\ü"}
    compiled.save(tmp_path / "plan")
    source = (tmp_path / "plan" / "plan_module.py").read_text(encoding="utf-8")
    _statements_are_the_plans(source, compiled.plan)
    monkeypatch.chdir(tmp_path)
    module = load_module(source)
    inputs = random_inputs(compiled.graph, seed=1)
    got = module.run(compiled.graph, inputs)
    expected = SequentialExecutor(compiled.graph).run(inputs)
    for tenant in expected:
        np.testing.assert_allclose(got[tenant]["y"], expected[tenant]["y"])
    assert not (tmp_path / "pwned").exists()
    compiled.close()


def test_statements_are_the_plans_for_every_test_layout(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    for layout in (per_tenant_streams(g), random_streams(g, 3, 7), [[t.id for t in g.tasks]]):
        plan = lower(g, layout, device=CPU)
        _statements_are_the_plans(emit_python(plan), plan)
