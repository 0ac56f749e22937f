"""Executor conformance (every backend) and CPU-backend specifics: errors, timeouts, threads, traces."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from plan_graphs import Builder, per_tenant_streams, random_streams, tenant_mix

from cosched.codegen import lower
from cosched.errors import DeviceError, PlanError, RuntimeFailure
from cosched.runtime import SequentialExecutor, random_inputs
from cosched.runtime.executor import Executor

BACKENDS = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


def _close(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    assert a.keys() == b.keys()
    for tenant in a:
        assert a[tenant].keys() == b[tenant].keys()
        for name in a[tenant]:
            np.testing.assert_allclose(a[tenant][name], b[tenant][name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["tenant", "random", "single"])
def test_outputs_equal_sequential(tmp_path: Path, backend: str, layout: str) -> None:
    g = tenant_mix(tmp_path)
    streams = {"tenant": per_tenant_streams(g), "random": random_streams(g, 3, 11),
               "single": [[t.id for t in g.tasks]]}[layout]
    plan = lower(g, streams, device={"kind": backend, "name": "test"})
    with Executor(plan, g) as ex:
        for seed in range(3):  # the executor is reusable; each run sees its own inputs
            inputs = random_inputs(g, seed=seed)
            _close(ex.run(inputs), SequentialExecutor(g).run(inputs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_trace_and_hook(tmp_path: Path, backend: str) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, random_streams(g, 3, 5), device={"kind": backend, "name": "test"})
    seen = []
    with Executor(plan, g, on_profile=lambda timings, p: seen.append((timings, p))) as ex:
        ex.run(random_inputs(g))
        assert seen == []
        ex.run(random_inputs(g), profile=True)
        timings = ex.last_timings
        assert sorted(t.task for t in timings) == [t.id for t in g.tasks]
        stream_of = plan.stream_of_task()
        assert all(t.stream == stream_of[t.task] and 0 <= t.start_us <= t.end_us for t in timings)
        assert seen == [(timings, plan)]
        trace = json.loads(ex.write_trace(tmp_path / "t.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
    assert {e["args"]["task"] for e in spans} == {t.id for t in g.tasks}
    assert {e["tid"] for e in spans} == {s.id for s in plan.streams}


def _failing_graph(root: Path):  # type: ignore[no-untyped-def]
    b = Builder(root)
    x = b.input("t", "x")
    w = b.constant("t", "w", (8, 8))
    r = b.op("t", "Relu", [x], "ok")
    m = b.op("t", "MatMul", [r, w], "bad")
    b.output("t", b.op("t", "Tanh", [m], "after"), "y")
    b.output("t", b.op("t", "Sigmoid", [r], "side"), "z")
    b.constants[w] = np.zeros((3, 3), np.float32)  # wrong shape: MatMul fails at run time
    return b.build()


def test_task_failure_raises_naming_the_task(tmp_path: Path) -> None:
    g = _failing_graph(tmp_path)
    plan = lower(g, [[0, 1, 2], [3]], device={"kind": "cpu"})
    with Executor(plan, g, wait_timeout_s=5.0) as ex:
        for _ in range(2):  # a failed run leaves the workers usable; the next one fails the same way
            with pytest.raises(RuntimeFailure, match=r"task 1 \(t:bad\) on stream 0 failed.*t/bad"):
                ex.run(random_inputs(g))


def test_failure_aborts_waiting_streams(tmp_path: Path) -> None:
    g = _failing_graph(tmp_path)
    # stream 1 waits for the failing task's event; it must be released, not hang
    plan = lower(g, [[0, 1], [2, 3]], device={"kind": "cpu"})
    assert plan.events
    with Executor(plan, g, wait_timeout_s=30.0) as ex, pytest.raises(RuntimeFailure, match="task 1"):
        ex.run(random_inputs(g))


def test_wait_timeout_names_the_event(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    plan = lower(g, [[0, 1, 3, 4], [2]], device={"kind": "cpu"})
    slow = {0: 0.6}
    with Executor(plan, g, wait_timeout_s=0.1, delay=lambda t: slow.get(t, 0.0)) as ex, \
            pytest.raises(RuntimeFailure, match=r"stream 1 waited 0.1 s for event 0 \(recorded after task 0\)"):
        ex.run(random_inputs(g))


def test_stream_0_runs_on_the_caller_and_every_stream_gets_its_thread_count(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path)
    plan = lower(g, per_tenant_streams(g), device={"kind": "cpu"})
    counts: dict[str, int] = {}

    def probe(task: int) -> float:
        counts[threading.current_thread().name] = torch.get_num_threads()
        return 0.0

    before = torch.get_num_threads()
    with Executor(plan, g, threads_per_stream=3, delay=probe) as ex:
        ex.run(random_inputs(g))
        assert len(ex.backend._threads) == 2  # one worker per stream but the first
    caller = threading.current_thread().name
    assert counts == {caller: 3, "cosched-stream-1": 3, "cosched-stream-2": 3}
    assert torch.get_num_threads() == before  # the caller's own count is restored


def test_unverified_or_multi_device_plans_are_refused(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, tenants=("a",))
    plan = lower(g, [[0, 1, 3, 4], [2]], device={"kind": "cpu"})
    racy = plan.replace(streams=tuple(
        type(s)(s.id, s.device, tuple(i for i in s.instructions if i.op == "run"), s.priority)
        for s in plan.streams
    ))
    with pytest.raises(PlanError, match="race"):
        Executor(racy, g)
    spread = plan.replace(streams=(plan.streams[0], type(plan.streams[1])(1, 1, plan.streams[1].instructions)))
    with pytest.raises(DeviceError, match="needs the distributed runtime"):
        Executor(spread, g)
