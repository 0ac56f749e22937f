"""One task made runnable on its own, and the timing loops the profiler builds on.

A :class:`TaskRunner` binds a task's ops to their :mod:`cosched.ops` implementations and
holds the task's external inputs: weights and folded constants by value, every other input
random of the right shape and dtype (integer and boolean inputs are zeros, which is a valid
index for any gather). Calling it runs the ops back to back, as a stream would.

:func:`time_standalone` measures one runner (warm-up, repeats, median and interquartile
spread); :func:`corun_cpu` and :func:`corun_cuda` measure k runners together.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cosched.errors import CoschedError, ProfileError, UnsupportedOpError
from cosched.ir.graph import Graph, Task
from cosched.ops.registry import OpContext, OpImpl, is_supported, lookup

__all__ = ["CorunMeasure", "TaskRunner", "corun_cpu", "corun_cuda", "time_standalone"]


class TaskRunner:
    """A task's ops bound to implementations, with its inputs ready on ``device``."""

    def __init__(self, graph: Graph, task: Task, device: torch.device,
                 weights: Mapping[str, np.ndarray], seed: int = 0) -> None:
        self.label = f"task {task.id} ({task.name or task.tenant})"
        ops = graph.task_ops(task)
        missing = sorted({f"{op.op_type} (opset {op.opset})" for op in ops
                          if not is_supported(op.op_type, op.opset, op.domain)})
        if missing:
            raise UnsupportedOpError(f"{self.label} cannot be profiled: unsupported {', '.join(missing)}")
        self._kernels: list[tuple[tuple[str, ...], tuple[str, ...], OpImpl, OpContext]] = [
            (op.inputs, op.outputs, lookup(op.op_type, op.opset, op.domain),
             OpContext(op.op_type, op.opset, op.attrs, len(op.outputs), op.name))
            for op in ops
        ]
        generator = torch.Generator().manual_seed(seed)
        self._inputs = {name: self._value(graph, name, weights, generator).to(device)
                        for name in graph.task_inputs(task)}

    def _value(self, graph: Graph, name: str, weights: Mapping[str, np.ndarray],
               generator: torch.Generator) -> torch.Tensor:
        info = graph.tensor(name)
        if name in graph.constants:
            return torch.from_numpy(np.array(graph.constants[name], copy=True))
        if info.kind == "weight":
            if name not in weights:
                raise ProfileError(f"{self.label}: weight {name!r} was not read from its model")
            return torch.from_numpy(np.array(weights[name], copy=True))
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            return torch.randn(info.shape, generator=generator).to(getattr(torch, dtype.name))
        return torch.from_numpy(np.zeros(info.shape, dtype=dtype))

    def __call__(self) -> None:
        env = dict(self._inputs)
        for inputs, outputs, fn, ctx in self._kernels:
            try:
                result = fn(ctx, *(env[n] if n else None for n in inputs))
            except CoschedError:
                raise
            except Exception as exc:
                raise ProfileError(
                    f"{self.label}: op {ctx.name!r} ({ctx.op_type}) failed on profiling inputs: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            for name, value in zip(outputs, result if isinstance(result, tuple) else (result,), strict=False):
                if name:
                    env[name] = value


# ----------------------------------------------------------------- standalone
def time_standalone(run: Callable[[], None], device: torch.device, warmup: int = 2,
                    min_repeats: int = 5, max_repeats: int = 50,
                    target_s: float = 0.05) -> tuple[float, float, int]:
    """(median ms, interquartile spread ms, repeats) of ``run`` alone on ``device``."""
    timer = _cuda_timer(device) if device.type == "cuda" else _cpu_timer
    for _ in range(warmup):
        timer(run)
    first = timer(run)
    repeats = int(min(max_repeats, max(min_repeats, target_s / max(first, 1e-7))))
    samples = [timer(run) for _ in range(repeats)]
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return statistics.median(samples) * 1e3, (q[2] - q[0]) * 1e3, repeats


def _cpu_timer(run: Callable[[], None]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) * 1e-9


def _cuda_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def timer(run: Callable[[], None]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    return timer


# --------------------------------------------------------------------- co-run
@dataclass(frozen=True)
class CorunMeasure:
    """Median latency (ms) of each member while all ran, and the group's makespan (ms)."""

    latencies_ms: tuple[float, ...]
    makespan_ms: float


def corun_cpu(runners: Sequence[Callable[[], None]], threads: int, min_iters: int = 3,
              window_s: float = 0.03) -> CorunMeasure:
    """Run every member on its own thread (``torch.set_num_threads(threads)`` each), released
    together by a barrier, each repeating until all did ``min_iters`` runs over ``window_s``.

    A member's latency is the median of its runs that ended while every member still ran;
    the makespan is from the release to the end of the slowest member's first run.
    """
    k = len(runners)
    barrier = threading.Barrier(k + 1)
    stop = threading.Event()
    ends: list[list[int]] = [[] for _ in range(k)]
    begin = [0] * k
    errors: list[BaseException | None] = [None] * k

    def work(i: int) -> None:
        torch.set_num_threads(threads)
        try:
            runners[i]()  # warm-up: this thread's first parallel region builds its pool
            barrier.wait()
            begin[i] = time.perf_counter_ns()
            while not stop.is_set():
                runners[i]()
                ends[i].append(time.perf_counter_ns())
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # re-raised by the caller below, naming the task
            errors[i] = exc
            barrier.abort()
            stop.set()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(k)]
    for w in workers:
        w.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter_ns()
    while not stop.is_set():
        time.sleep(0.0005)
        done = min(len(e) for e in ends)
        if done >= min_iters and time.perf_counter_ns() - start >= window_s * 1e9:
            break
    stop_ns = time.perf_counter_ns()
    stop.set()
    for w in workers:
        w.join()
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        raise failed if isinstance(failed, CoschedError) else ProfileError(f"co-run member failed: {failed}")
    latencies = []
    for i in range(k):
        marks = [begin[i], *ends[i]]
        runs = [(b - a) * 1e-6 for a, b in itertools.pairwise(marks) if b <= stop_ns]
        latencies.append(statistics.median(runs))
    return CorunMeasure(tuple(latencies), (max(e[0] for e in ends) - start) * 1e-6)


def corun_cuda(runners: Sequence[Callable[[], None]], alone_ms: Sequence[float],
               device: torch.device, window_ms: float = 20.0) -> CorunMeasure:
    """Issue every member on its own stream from one host thread, interleaved breadth-first,
    each repeated to cover ``window_ms``; time each run with CUDA events."""
    streams = [torch.cuda.Stream(device) for _ in runners]
    iters = [max(2, int(window_ms / max(ms, 1e-3))) for ms in alone_ms]
    marks: list[list[tuple[torch.cuda.Event, torch.cuda.Event]]] = [[] for _ in runners]
    for run in runners:
        run()
    torch.cuda.synchronize(device)
    for r in range(max(iters)):
        for i, run in enumerate(runners):
            if r >= iters[i]:
                continue
            with torch.cuda.stream(streams[i]):
                pair = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                pair[0].record()
                run()
                pair[1].record()
            marks[i].append(pair)
    torch.cuda.synchronize(device)
    latencies = tuple(statistics.median(s.elapsed_time(e) for s, e in m) for m in marks)
    first = marks[0][0][0]
    makespan = max(first.elapsed_time(m[0][1]) for m in marks)
    return CorunMeasure(latencies, makespan)
