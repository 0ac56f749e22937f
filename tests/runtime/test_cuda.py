"""CUDA backend: streams, events and CUDA graph capture give sequential outputs (GPU only)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from plan_graphs import per_tenant_streams, random_dag, random_streams, tenant_mix

from cosched.codegen import emit_python, load_module, lower
from cosched.errors import ConfigError
from cosched.runtime import SequentialExecutor, random_inputs
from cosched.runtime.executor import Executor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = {"kind": "cuda", "name": "test-gpu", "index": 0}


def _close(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    for tenant in b:
        for name in b[tenant]:
            np.testing.assert_allclose(a[tenant][name], b[tenant][name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_streams_and_graph_capture_equal_sequential(tmp_path: Path, cuda_graph: bool) -> None:
    g = random_dag(tmp_path, 40, seed=5)
    plan = lower(g, random_streams(g, 3, 5), device=CUDA)
    assert plan.events
    with Executor(plan, g, cuda_graph=cuda_graph) as ex:
        for seed in range(4):  # replays see new inputs through the static buffers
            inputs = random_inputs(g, seed=seed)
            _close(ex.run(inputs), SequentialExecutor(g).run(inputs))


def test_priorities_profile_and_graph_mode_refuses_profiling(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device=CUDA, latency_critical=["a"])
    with Executor(plan, g) as ex:
        assert ex.backend.streams[0].priority < ex.backend.streams[1].priority
        ex.run(random_inputs(g), profile=True)
        assert sorted(t.task for t in ex.last_timings) == [t.id for t in g.tasks]
        assert all(t.end_us >= t.start_us >= 0 for t in ex.last_timings)
    with Executor(plan, g, cuda_graph=True) as ex, pytest.raises(ConfigError, match="profiling"):
        ex.run(random_inputs(g), profile=True)


def test_generated_module_runs_on_cuda(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 3, 2), device=CUDA)
    inputs = random_inputs(g)
    _close(load_module(emit_python(plan)).run(g, inputs, device="cuda"), SequentialExecutor(g).run(inputs))
