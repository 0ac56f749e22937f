"""The CUDA backend's issuing logic, checked without a GPU through a recording stand-in.

:class:`cuda_fakes.Recorder` replaces :class:`cosched.runtime.cuda.TorchCuda` (the one place
the backend calls CUDA) and logs every call; tasks are stand-ins that log their run and write
placeholder tensors. From the log, :func:`_check_cuda_semantics` replays CUDA's rules: a
stream runs its work in issue order; a wait orders the stream after the work of the last
record of that event issued before the wait, and a wait on an event never recorded does
nothing. It checks that every dependency of every task is ordered that way.

What this cannot check: that CUDA itself behaves as modelled (event and stream semantics,
priorities), kernel results on a GPU, host synchronisations inside ops, the caching
allocator's reuse of memory, or what graph capture accepts; the ``gpu``-marked tests in
``test_cuda.py`` and ``test_host_values.py`` do, on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from cuda_fakes import Recorder, fake_env, fake_tasks
from plan_graphs import per_tenant_streams, random_dag, random_streams, tenant_mix

import cosched.runtime.cpu as cpu_backend
from cosched.codegen import emit_python, load_module, lower
from cosched.codegen.plan import Plan
from cosched.errors import RuntimeFailure
from cosched.execution.bindings import bind_inputs
from cosched.execution.kernels import load_constants
from cosched.ir.graph import Graph
from cosched.runtime import random_inputs
from cosched.runtime.cpu import CpuBackend
from cosched.runtime.cuda import WARMUP_ROUNDS, CudaBackend
from cosched.runtime.program import build_programs, plan_program

CUDA = {"kind": "cuda", "name": "stand-in", "index": 0}


def _backend(graph: Graph, plan: Plan, *, cuda_graph: bool = False, fail: int | None = None
             ) -> tuple[CudaBackend, Recorder]:
    recorder = Recorder(len(plan.streams))
    tasks = fake_tasks(graph, recorder.log, fail, recorder)
    inputs = tuple(n for t in graph.tenants for _, n in t.inputs)
    outputs = tuple(n for t in graph.tenants for _, n in t.outputs)
    backend = CudaBackend(plan_program(plan), tasks, None, input_names=inputs,  # type: ignore[arg-type]
                          output_names=outputs, cuda_graph=cuda_graph, api=recorder)
    return backend, recorder


def _plans(tmp_path: Path) -> list[tuple[Graph, Plan]]:
    mix = tenant_mix(tmp_path / "mix")
    plans = [(mix, lower(mix, layout, device=CUDA))
             for layout in (per_tenant_streams(mix), random_streams(mix, 3, 7), [[t.id for t in mix.tasks]])]
    for seed in range(4):
        dag = random_dag(tmp_path / f"dag{seed}", 30, seed=seed)
        plans.append((dag, lower(dag, random_streams(dag, 3, seed), device=CUDA)))
    return plans


def _stream_of_run(plan: Plan) -> dict[int, int]:
    return plan.stream_of_task()


def _check_cuda_semantics(graph: Graph, plan: Plan, log: list[tuple[Any, ...]]) -> None:
    """Replay the log with CUDA's stream and event rules (see the module docstring)."""
    n = len(plan.streams)
    where = _stream_of_run(plan)
    position = {t: i for s in plan.streams for i, t in enumerate(s.tasks)}
    clock = [[-1] * n for _ in range(n)]
    snapshot: dict[int, list[int]] = {}
    deps = {v: {u for u, w in graph.to_networkx("task").edges() if w == v} for v in where}
    for entry in log:
        if entry[0] == "record":
            _, s, e = entry
            snapshot[e] = list(clock[s])
        elif entry[0] == "wait":
            _, s, e = entry
            assert e in snapshot, f"stream {s} waits for event {e} before any record of it: a no-op on CUDA"
            clock[s] = [max(a, b) for a, b in zip(clock[s], snapshot[e], strict=True)]
        elif entry[0] == "run":
            t = entry[1]
            s = where[t]
            for u in deps[t]:
                assert clock[s][where[u]] >= position[u], f"task {t} on stream {s} is not ordered after task {u}"
            clock[s][s] = position[t]


def test_eager_issue_orders_every_dependency(tmp_path: Path) -> None:
    for graph, plan in _plans(tmp_path):
        backend, recorder = _backend(graph, plan)
        backend.execute(fake_env(graph))
        assert [e[1] for e in recorder.log if e[0] == "run"] == list(plan.issue_order)
        assert sum(e[0] == "record" for e in recorder.log) == len(plan.events)
        _check_cuda_semantics(graph, plan, recorder.log)
        assert recorder.log[0] == ("fork", "main") and recorder.log[-1] == ("join", "main")


def test_every_cross_stream_use_is_recorded_before_the_buffer_is_freed(tmp_path: Path) -> None:
    for graph, plan in _plans(tmp_path):
        backend, recorder = _backend(graph, plan)
        backend.execute(fake_env(graph))
        where, log = plan.stream_of_task(), recorder.log
        ran = {e[1]: i for i, e in enumerate(log) if e[0] == "run"}
        for b in plan.buffers:
            for use in b.use_tasks:
                if where[use] == where[b.def_task]:
                    continue
                marks = [i for i, e in enumerate(log) if e == ("record_stream", b.tensor, where[use])]
                assert any(ran[b.def_task] < i < ran[use] for i in marks), (b.tensor, use)
                if b.free_after is not None:
                    assert min(marks) < ran[b.free_after]


def test_capture_issues_the_eager_sequence_after_warming_up_on_a_side_stream(tmp_path: Path) -> None:
    for graph, plan in _plans(tmp_path):
        eager, eager_rec = _backend(graph, plan)
        eager.execute(fake_env(graph))
        graphed, rec = _backend(graph, plan, cuda_graph=True)
        graphed.execute(fake_env(graph))
        graphed.execute(fake_env(graph))  # replays, captures once
        begin = rec.log.index(next(e for e in rec.log if e[0] == "capture_begin"))
        end = rec.log.index(next(e for e in rec.log if e[0] == "capture_end"))
        warm, captured = rec.log[:begin], rec.log[begin + 1:end]
        order = ("wait", "record", "run")
        assert [e for e in captured if e[0] in order] == [e for e in eager_rec.log if e[0] in order]
        assert not any(e[0] == "record_stream" for e in captured)  # nothing is freed in capture
        warm_side = warm[0][1]
        assert warm[0] == ("side_stream", warm_side)
        assert [e for e in warm if e[0] == "fork"] == [("fork", warm_side)] * WARMUP_ROUNDS
        assert captured[0][0] == "fork" and captured[-1][0] == "join"
        assert sum(e[0] == "replay" for e in rec.log) == 2


def test_a_task_failing_in_capture_is_the_error_reported(tmp_path: Path) -> None:
    graph = tenant_mix(tmp_path)
    plan = lower(graph, random_streams(graph, 3, 7), device=CUDA)
    failing = plan.issue_order[len(plan.issue_order) // 2]
    backend, recorder = _backend(graph, plan, cuda_graph=True, fail=failing)
    with pytest.raises(RuntimeFailure, match=rf"capturing .* failed: task {failing} \(.*\) on stream \d+ failed: "
                                             rf"ValueError: kernel of task {failing} broke"):
        backend.execute(fake_env(graph))
    end = recorder.log.index(next(e for e in recorder.log if e[0] == "capture_end"))
    assert recorder.log[end - 1][0] == "join"  # streams joined before capture ended


class _Steps:
    """A machine that records each step."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def run(self, stream: int, task: int) -> None:
        self.log.append(("run", stream, task))

    def record(self, stream: int, event: int) -> None:
        self.log.append(("record", stream, event))

    def wait(self, stream: int, event: int) -> None:
        self.log.append(("wait", stream, event))

    def free(self, stream: int, tensors: tuple[str, ...]) -> None:
        self.log.append(("free", stream, tensors))


def _steps_of(program: Any) -> list[tuple[Any, ...]]:
    machine = _Steps()
    program(machine)
    return machine.log


def test_cpu_backend_cuda_backend_and_generated_module_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for graph, plan in _plans(tmp_path):
        ours, module = plan_program(plan), load_module(emit_python(plan)).PROGRAM
        per_stream = [_steps_of(p) for p in ours.streams]
        assert per_stream == [_steps_of(p) for p in module.streams]
        issued = _steps_of(ours.issue)
        assert issued == _steps_of(module.issue)
        # the CUDA backend issues exactly that sequence
        backend, recorder = _backend(graph, plan)
        backend.execute(fake_env(graph))
        kinds = ("run", "record", "wait")
        want = [("run", e[2]) if e[0] == "run" else e for e in issued if e[0] in kinds]
        assert [e for e in recorder.log if e[0] in kinds] == want
        # each CPU worker walks exactly its stream's steps
        seen: dict[int, list[tuple[Any, ...]]] = {s: [] for s in range(len(plan.streams))}
        for name in ("run", "record", "wait", "free"):
            original = getattr(cpu_backend._Worker, name)

            def logged(self: Any, stream: int, arg: Any, _name: str = name, _original: Any = original,
                       _seen: dict[int, list[tuple[Any, ...]]] = seen) -> None:
                _seen[stream].append((_name, stream, arg))
                _original(self, stream, arg)
            monkeypatch.setattr(cpu_backend._Worker, name, logged)
        cpu = CpuBackend(ours, build_programs(graph))
        try:
            cpu.execute({**load_constants(graph), **bind_inputs(graph, random_inputs(graph), "cpu")})
        finally:
            cpu.close()
            monkeypatch.undo()
        assert [seen[s] for s in range(len(plan.streams))] == per_stream
