"""onnxruntime as a task provider: runs of a stream's tasks as one ``InferenceSession``.

Why: at one intra-op thread on a 2-core Xeon, onnxruntime runs the zoo's full-size models
1.85-5.2x faster than cosched's torch kernels (bert at parity; ``benchmarks.breakdown``,
BENCHMARKS.md), and much of that comes from what it does across ops: NCHWc blocked layouts
kept from one convolution to the next, weights prepacked once, Conv+activation fused. Run
task by task, one session per task, each session converts layouts at its borders and keeps
only part of the gain (1.55-3.9x slower than the model as one session on the CNNs,
``benchmarks.providers``). So a *segment*, the tasks
that run back to back on one stream with no event between them
(:func:`cosched.codegen.steps.segments`), is one session: a sequential plan runs each
tenant as one session, a multi-stream plan cuts tenants only where it synchronises.

A segment reads its inputs from the executor's environment and writes back only what is
read outside it (or is a graph output); the tensors in between never leave onnxruntime.
Tensors cross as NumPy views of torch's CPU memory (no copy); ``run`` releases the GIL,
so segments on different streams run in parallel. Each session has ``threads`` intra-op
threads (one per stream in a multi-stream plan: it then runs on the stream's own thread,
no pool) and never spins while idle.

:func:`segment_task_times` attributes a segment's time to its tasks from onnxruntime's
own profiler: what the cost model charges each task in context (:func:`cosched.calibration.ort_in_situ`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from cosched.errors import CoschedError, UnsupportedOpError
from cosched.execution.sharing import root
from cosched.ir.graph import Graph, Task
from cosched.ir.onnx_io import ops_model

__all__ = [
    "OrtSegment",
    "available",
    "build_segment",
    "release_segments",
    "segment_task_times",
    "session_options",
    "shared_segment",
]

log = logging.getLogger(__name__)

MIN_TASK_MS = 1e-3
"""What a task costs that left no kernel of its own in a segment's profile."""


def available() -> bool:
    """Whether onnxruntime can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None


def session_options(threads: int, profile_prefix: str | None = None) -> Any:
    """Options of every cosched session: ``threads`` intra-op threads, no spinning, quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


@dataclass(frozen=True)
class OrtSegment:
    """Tasks ``tasks`` (ids, in run order) as one onnxruntime session; call it on an env.
    ``session`` is None where nothing the tasks compute is read (dead code): nothing runs."""

    tasks: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    model: Callable[[], bytes]  # the session's ONNX model, written again on demand
    ops: Mapping[str, int]  # op and output names -> task id, to attribute profiled time
    session: Any

    def __call__(self, env: MutableMapping[str, torch.Tensor]) -> None:
        if self.session is None:  # nothing it computes is read: nothing to run
            return
        feeds = {name: env[name].numpy() for name in self.inputs}
        results = self.session.run(self.outputs, feeds)
        for name, value in zip(self.outputs, results, strict=True):
            env[name] = torch.from_numpy(value)


def build_segment(graph: Graph, task_ids: Sequence[int], threads: int,
                  constants: Mapping[str, torch.Tensor | np.ndarray]) -> OrtSegment:
    """One session for ``task_ids`` (one tenant's, in run order) with ``threads`` intra-op
    threads. Raises :class:`UnsupportedOpError` naming the tasks where onnxruntime cannot
    load them (a subgraph attribute, an op or opset it lacks) or where they hold a
    communication op (:attr:`~cosched.ir.graph.Op.is_comm`), which runs on torch kernels."""
    import onnxruntime as ort

    tasks = [graph.task(i) for i in task_ids]
    tenants = {t.tenant for t in tasks}
    if len(tenants) != 1:
        raise CoschedError(f"an onnxruntime segment holds one tenant's tasks, got tenants {sorted(tenants)}")
    tenant = graph.tenant(tasks[0].tenant)
    what = f"tasks {tasks[0].id}..{tasks[-1].id} of tenant {tenant.name!r}" if len(tasks) > 1 else (
        f"task {tasks[0].id} of tenant {tenant.name!r}")
    comm = [op.name for t in tasks for op in graph.task_ops(t) if op.is_comm]
    if comm:
        raise UnsupportedOpError(f"onnxruntime cannot run {what}: they hold communication op(s) {comm[:3]}, "
                                 "which run on torch kernels")
    whole = Task(tasks[0].id, tenant.name, tuple(op for t in tasks for op in t.ops))
    reads = graph.task_inputs(whole)
    fixed = {n: _array(constants[n]) for n in reads if n in constants}
    inputs = tuple(n for n in reads if n not in fixed)
    outputs = graph.task_outputs(whole)

    def spec(name: str) -> tuple[str, str, tuple[int, ...]]:
        info = graph.tensor(name)
        return name, info.dtype, info.shape

    # onnxruntime names a node it made after the op it came from, or after its output tensor
    ops = {name: t.id for t in tasks for op in graph.task_ops(t) for name in (op.name, *op.outputs) if name}
    if not outputs:
        return OrtSegment(tuple(task_ids), inputs, outputs, lambda: b"", ops, None)
    model = partial(ops_model, graph.task_ops(whole), [spec(n) for n in inputs], [spec(n) for n in outputs],
                    fixed, tenant.opsets, what)
    try:
        session = ort.InferenceSession(model(), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, NotImplemented)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedOpError(f"onnxruntime cannot load {what}: {first}") from exc
    return OrtSegment(tuple(task_ids), inputs, outputs, model, ops, session)


_SEGMENTS: weakref.WeakKeyDictionary[Graph, dict[tuple[tuple[int, ...], int], OrtSegment]] = (
    weakref.WeakKeyDictionary())


def shared_segment(graph: Graph, task_ids: Sequence[int], threads: int,
                   constants: Mapping[str, torch.Tensor | np.ndarray]) -> OrtSegment:
    """:func:`build_segment`, built once per graph (its root where it is a cut of another,
    :mod:`cosched.execution.sharing`), tasks and threads: every executor of a graph, and of
    its cuts, runs one session per segment (each session holds a copy of its weights).
    Sessions are safe to run from several threads; they live as long as the root does."""
    per_graph = _SEGMENTS.setdefault(root(graph), {})
    key = (tuple(task_ids), int(threads))
    if key not in per_graph:
        per_graph[key] = build_segment(graph, task_ids, threads, constants)
    return per_graph[key]


def release_segments(graph: Graph) -> None:
    """Forget the sessions :func:`shared_segment` keeps for ``graph`` (its root): executors
    that hold one keep it, and the rest are freed (a server's plans, when it closes)."""
    _SEGMENTS.pop(root(graph), None)


def _array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def segment_task_times(segment: OrtSegment, env: Mapping[str, torch.Tensor], threads: int,
                       runs: int = 3, warmup: int = 2) -> dict[int, float]:
    """Each task's milliseconds inside ``segment`` (run on ``env`` with ``threads``): the
    segment's median run, timed as the executor runs it, split among its tasks in the shares
    onnxruntime's profiler gives them (profiling slows small kernels, so it gives only the
    shares). A node's kernel time goes to the task of the op it was made from (its name
    starts with the op's name or with one of its outputs'); nodes onnxruntime inserts (layout reorders) go to the task of the
    next node that maps, else the previous one. A task with no kernel left (folded away,
    fused into a neighbour's) is charged :data:`MIN_TASK_MS`."""
    import onnxruntime as ort

    if segment.session is None:
        return dict.fromkeys(segment.tasks, MIN_TASK_MS)
    feeds = {name: env[name].numpy() for name in segment.inputs}
    walls = []
    for i in range(warmup + runs):
        start = time.perf_counter_ns()
        segment.session.run(segment.outputs, feeds)
        if i >= warmup:
            walls.append((time.perf_counter_ns() - start) / 1e6)
    with tempfile.TemporaryDirectory(prefix="cosched-ort-") as tmp:
        options = session_options(threads, profile_prefix=os.path.join(tmp, "profile"))
        session = ort.InferenceSession(segment.model(), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(segment.outputs, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_run = _kernel_times(events, segment.ops)
    if len(per_run) != warmup + runs:
        raise CoschedError(f"onnxruntime's profile of tasks {segment.tasks} holds {len(per_run)} runs, "
                           f"expected {warmup + runs}")
    total = {t: statistics.median(run.get(t, 0.0) for run in per_run[warmup:]) for t in segment.tasks}
    whole = sum(total.values())
    wall = statistics.median(walls)
    return {t: max(wall * (ms / whole if whole > 0 else 1 / len(total)), MIN_TASK_MS) for t, ms in total.items()}


def _kernel_times(events: Sequence[Mapping[str, Any]], ops: Mapping[str, int]) -> list[dict[int, float]]:
    """Per profiled run, kernel milliseconds per task (see :func:`segment_task_times`)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], e["name"][: -len("_kernel_time")], e["dur"]) for e in events
                   if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"))
    out: list[dict[int, float]] = []
    for begin, end in runs:
        inside = [(name, dur) for ts, name, dur in nodes if begin <= ts <= end]
        tasks = [_task_of(name, ops) for name, _ in inside]
        times: dict[int, float] = {}
        for i, (_, dur) in enumerate(inside):
            task = tasks[i]
            if task is None:  # an inserted node: the next mapped node's task, else the last one
                task = next((t for t in tasks[i + 1:] if t is not None), None)
                task = task if task is not None else next((t for t in reversed(tasks[:i]) if t is not None), None)
            if task is not None:
                times[task] = times.get(task, 0.0) + dur / 1e3
        out.append(times)
    return out


def _task_of(node: str, ops: Mapping[str, int]) -> int | None:
    """The task of the op whose name ``node`` is, or starts with before a ``_suffix``."""
    name = node
    while True:
        if name in ops:
            return ops[name]
        cut = name.rfind("_")
        if cut <= 0:
            return None
        name = name[:cut]
