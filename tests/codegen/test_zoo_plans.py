"""Plans over tiny zoo mixes (three tenants): compile, save, load, re-import, run, compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cosched.ir
from cosched import zoo
from cosched.codegen import emit_python, graph_for_plan, load_module, load_plan, lower, save_plan
from cosched.runtime import SequentialExecutor, random_inputs
from cosched.runtime.executor import Executor

MIXES = [("resnet50", "bert", "mobilenet_v2"), ("squeezenet1_1", "dlrm", "googlenet")]


def _streams(graph, k: int) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """Round-robin per tenant over ``k`` streams: cross-stream dependencies everywhere."""
    streams: list[list[int]] = [[] for _ in range(k)]
    for task in graph.tasks:
        streams[(task.id // 3) % k].append(task.id)
    return [s for s in streams if s]


@pytest.mark.parametrize("mix", MIXES, ids="+".join)
def test_zoo_mix_plan_equals_sequential(tmp_path: Path, mix: tuple[str, ...], run_device: str) -> None:
    paths = [zoo.export(name, tmp_path / f"{name}.onnx") for name in mix]
    graph = cosched.ir.fuse(cosched.ir.load_models([str(p) for p in paths], batch=1))
    plan = lower(graph, _streams(graph, 3), device={"kind": run_device, "name": "test"})
    save_plan(plan, tmp_path / "plan", module_source=emit_python(plan))
    loaded = load_plan(tmp_path / "plan", device_kind=run_device)
    rebuilt = graph_for_plan(loaded)
    assert [t.ops for t in rebuilt.tasks] == [t.ops for t in graph.tasks]
    inputs = random_inputs(graph, seed=1)
    expected = SequentialExecutor(graph).run(inputs)
    with Executor(loaded) as ex:
        got = ex.run(inputs)
    generated = load_module((tmp_path / "plan" / "plan_module.py").read_text()).run(rebuilt, inputs, run_device)
    for tenant, outs in expected.items():
        for name, value in outs.items():
            np.testing.assert_allclose(got[tenant][name], value, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(generated[tenant][name], value, rtol=1e-4, atol=1e-4)
