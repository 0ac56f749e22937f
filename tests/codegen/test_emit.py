"""The Python emitter: readable straight-line code that runs and matches sequential outputs."""

from __future__ import annotations

import linecache
import re
from pathlib import Path

import numpy as np
import pytest
from plan_graphs import per_tenant_streams, random_streams, tenant_mix

from cosched.codegen import emit_python, load_module, lower
from cosched.codegen.emit import _identifiers
from cosched.runtime import SequentialExecutor, random_inputs

CPU = {"kind": "cpu", "name": "test-cpu"}


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


def test_one_commented_line_per_launch_record_and_wait(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 3, 7), device=CPU)
    source = emit_python(plan)
    compile(source, "<test>", "exec")
    launches = [line for line in source.splitlines() if re.match(r"\s+k\.\w+\(env\)", line)]
    assert len(launches) == len(g.ops)
    for op in g.ops:
        assert any(f"# {op.tenant} · {op.name}" in line for line in launches), op.name
    n_records = sum(i.op == "record" for s in plan.streams for i in s.instructions)
    n_waits = sum(i.op == "wait" for s in plan.streams for i in s.instructions)
    assert len(re.findall(r"sync\.record\(\d+\)\s+# event", source)) == n_records > 0
    assert len(re.findall(r"sync\.wait\(\d+\)\s+# event \d+: task \d+ on stream", source)) == n_waits > 0
    assert source.count("def stream_") == len(plan.streams)
    assert "import cosched.codegen" not in source and "plan.json" not in source


def test_source_is_registered_for_tracebacks(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    source = emit_python(lower(g, [[t.id for t in g.tasks]], device=CPU))
    module = load_module(source, "mine")
    assert linecache.getline(module.__file__, 1).startswith('"""cosched plan for tenants a')


def test_identifiers_are_readable_and_unique() -> None:
    names = ["bert//layer.0/MatMul", "bert/_layer_0/MatMul", "9net/conv", "t/class", "class"]
    idents = _identifiers(names)
    assert list(idents.values()) == ["bert_layer_0_matmul", "bert_layer_0_matmul_2", "op_9net_conv", "t_class", "op_class"]
    assert all(i.isidentifier() for i in idents.values())
