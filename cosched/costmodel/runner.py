"""One task made runnable on its own, and the timing loops the profiler builds on.

A :class:`TaskRunner` binds a task's ops to their :mod:`cosched.ops` implementations and
holds the task's external inputs: weights and folded constants by value, every other input
random of the right shape and dtype (integer and boolean inputs are zeros, which is a valid
index for any gather). Calling it runs the task as the runtime's executor does: on CPU as
an onnxruntime session (the default provider, :mod:`cosched.execution.ort`), or as one traced
TorchScript call (:mod:`cosched.execution.traced`) where the task can be traced, else its ops
back to back.

Definitions (CPU; every time is wall time from ``perf_counter_ns``, in ms):

- **execution latency**: the time of one call of a runner, measured on a worker thread of
  its own that called ``torch.set_num_threads(threads)`` and already ran the task once;
- **co-run latency** of a member of a group of k: the *mean* execution latency of that
  member over the executions that ran while all k members were looping their tasks
  concurrently, released together by a barrier (:func:`loop_concurrent`), i.e. the overlap
  time it spent over the executions it completed: the reciprocal of its throughput, which is
  what the simulator's progress rate needs. Not the median: tasks of a few microseconds are
  bound by Python dispatch and take turns on the GIL, either in switch-interval slices (most
  executions see no co-runner, a few wait milliseconds: the median shows no slowdown while
  throughput fell k-fold) or op by op, and a shared machine flips between the two regimes;
- **spread**: the interquartile range of the execution latencies;
- **standalone latency**: the same with k = 1 (:func:`time_standalone`): same thread, same
  thread count, same per-execution definition, so co-run / standalone is the interference;
- **makespan** of a group: the largest member co-run latency, i.e. the steady-state time for
  every member to complete one execution when all run together (so every member's latency
  is <= the makespan).

On CUDA each member runs on its own stream, issued breadth-first from one host thread, and
executions are timed with CUDA events (:func:`corun_cuda`); the makespan is again the
largest member latency.
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
from cosched.execution.cuda_events import EventSpan, cuda_seconds
from cosched.execution.kernels import host_values, prepare_kernels
from cosched.execution.traced import example_inputs, trace_task
from cosched.ir.graph import Graph, Task

__all__ = ["CorunMeasure", "TaskRunner", "corun_cpu", "corun_cuda", "loop_concurrent", "time_standalone"]


class TaskRunner:
    """A task's ops bound to implementations, with its inputs ready on ``device``.

    With ``trace`` (the default on CPU) the task runs as one TorchScript call when
    :mod:`cosched.execution.traced` can trace it, as the CPU executor runs it; ``traced`` says
    whether it does. With ``provider="ort"`` (CPU) it runs as an onnxruntime session of its
    own (:mod:`cosched.execution.ort`) with as many intra-op threads as the calling thread's
    torch setting, one session per thread count; ``provider`` says which ran it (torch where
    onnxruntime cannot load the task).
    """

    def __init__(self, graph: Graph, task: Task, device: torch.device,
                 weights: Mapping[str, np.ndarray], seed: int = 0, trace: bool | None = None,
                 provider: str = "torch") -> None:
        self.label = f"task {task.id} ({task.name or task.tenant})"
        ops = graph.task_ops(task)
        reads = graph.task_inputs(task)
        on_host = {n: self._fixed(graph, n, weights) for n in reads
                   if n in graph.constants or graph.tensor(n).kind == "weight"}
        try:  # shapes and axes bound as host values, as the executor binds them
            self._kernels = prepare_kernels(ops, host=host_values(ops, on_host), device=device)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"{self.label} cannot be profiled: {exc}") from exc
        fixed = {n: t.to(device) for n, t in on_host.items()}
        activations = [n for n in reads if n not in fixed]
        self._inputs = {**fixed, **example_inputs(graph, activations, {}, device, 2 * seed)}
        self._program: Callable[[dict[str, torch.Tensor]], None] = self._eager
        self.traced = False
        self.provider = "torch"
        if provider == "ort" and device.type == "cpu":
            self._graph, self._task, self._fixed_values = graph, task, fixed
            self._sessions: dict[int, Callable[[dict[str, torch.Tensor]], None]] = {}
            with contextlib.suppress(UnsupportedOpError):  # runs on torch, as the executor would
                self._session(torch.get_num_threads())
                self._program, self.provider = self._on_ort, "ort"
            if self.provider == "ort":
                return
        if trace if trace is not None else device.type == "cpu":
            draws = [self._inputs, example_inputs(graph, activations, {}, device, 2 * seed + 1)]
            traced, _why = trace_task(self._kernels, activations, graph.task_outputs(task), draws, fixed)
            if traced is not None:
                self._program, self.traced = traced, True

    def _fixed(self, graph: Graph, name: str, weights: Mapping[str, np.ndarray]) -> torch.Tensor:
        if name in graph.constants:
            return torch.from_numpy(np.array(graph.constants[name], copy=True))
        if name not in weights:
            raise ProfileError(f"{self.label}: weight {name!r} was not read from its model")
        return torch.from_numpy(np.array(weights[name], copy=True))

    def _session(self, threads: int) -> Callable[[dict[str, torch.Tensor]], None]:
        """The task as an onnxruntime session with ``threads`` intra-op threads (made once)."""
        if threads not in self._sessions:
            from cosched.execution.ort import build_segment

            self._sessions[threads] = build_segment(self._graph, [self._task.id], threads, self._fixed_values)
        return self._sessions[threads]

    def _on_ort(self, env: dict[str, torch.Tensor]) -> None:
        # the calling thread's torch thread count is the stream's (see time_standalone, corun_cpu)
        self._session(torch.get_num_threads())(env)

    def _eager(self, env: dict[str, torch.Tensor]) -> None:
        for kernel in self._kernels:
            kernel(env)

    def __call__(self) -> None:
        try:
            self._program(dict(self._inputs))
        except CoschedError as exc:
            raise ProfileError(f"{self.label} failed on profiling inputs: {exc}") from exc
        except Exception as exc:
            raise ProfileError(f"{self.label} failed on profiling inputs: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------- standalone
def time_standalone(run: Callable[[], None], device: torch.device, warmup: int = 2,
                    min_repeats: int = 5, max_repeats: int = 50,
                    target_s: float = 0.05, threads: int = 1) -> tuple[float, float, int]:
    """(latency ms, interquartile spread ms, executions) of ``run`` alone on ``device``: the
    mean execution latency on CPU (as the module doc defines), the median on CUDA.

    On CPU this is :func:`loop_concurrent` with one member: the same worker thread, thread
    count and per-execution timing as a co-run member, so a co-run latency divided by this
    is the interference alone. ``max_repeats`` applies on CUDA only; on CPU the loop runs
    for ``target_s`` and at least ``min_repeats`` executions.
    """
    if device.type != "cuda":
        samples = loop_concurrent([run], threads, min_repeats, target_s)[0]
        return statistics.fmean(samples), *_summary(samples)[1:]
    for _ in range(warmup):
        cuda_seconds(run)
    first = cuda_seconds(run)
    repeats = int(min(max_repeats, max(min_repeats, target_s / max(first, 1e-7))))
    return _summary([cuda_seconds(run) * 1e3 for _ in range(repeats)])


def _summary(samples_ms: Sequence[float]) -> tuple[float, float, int]:
    q = statistics.quantiles(samples_ms, n=4) if len(samples_ms) >= 2 else [samples_ms[0]] * 3
    return statistics.median(samples_ms), q[2] - q[0], len(samples_ms)


# --------------------------------------------------------------------- co-run
@dataclass(frozen=True)
class CorunMeasure:
    """Each member's co-run latency (ms) and the group's makespan (ms), as the module doc defines."""

    latencies_ms: tuple[float, ...]
    makespan_ms: float


def loop_concurrent(runners: Sequence[Callable[[], None]], threads: int, min_iters: int = 3,
                    window_s: float = 0.03) -> list[list[float]]:
    """Per member, the latencies (ms) of its executions that ran entirely inside the overlap.

    Every member gets its own worker thread (``torch.set_num_threads(threads)`` there), runs
    once to warm up, waits at a barrier, then repeats its task until every member has done
    ``min_iters`` executions and ``window_s`` has passed; the stop time is then taken before
    any member is told to stop, so every execution that ended before it overlapped only
    executions of members that were all still looping. The execution in flight at the stop
    is discarded.
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
    stop_ns = start
    # The watcher is a Python thread too: it sleeps through the window, then checks coarsely,
    # so that it rarely contends for the GIL with the members it measures.
    time.sleep(window_s)
    while not stop.is_set():
        done = min(len(e) for e in ends)  # counted first: these all ended before stop_ns
        stop_ns = time.perf_counter_ns()
        if done >= max(1, min_iters) and stop_ns - start >= window_s * 1e9:
            break
        time.sleep(max(0.002, window_s / 4))
    stop.set()
    for w in workers:
        w.join()
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        raise failed if isinstance(failed, CoschedError) else ProfileError(f"co-run member failed: {failed}")
    out = []
    for i in range(k):
        marks = [begin[i], *(e for e in ends[i] if e <= stop_ns)]
        out.append([(b - a) * 1e-6 for a, b in itertools.pairwise(marks)])
    return out


def corun_cpu(runners: Sequence[Callable[[], None]], threads: int, min_iters: int = 3,
              window_s: float = 0.03) -> CorunMeasure:
    """Measure ``runners`` together with :func:`loop_concurrent` (see the module doc)."""
    samples = loop_concurrent(runners, threads, min_iters, window_s)
    latencies = tuple(statistics.fmean(s) for s in samples)
    return CorunMeasure(latencies, max(latencies))


def corun_cuda(runners: Sequence[Callable[[], None]], alone_ms: Sequence[float],
               device: torch.device, window_ms: float = 20.0) -> CorunMeasure:
    """Issue every member on its own stream from one host thread, interleaved breadth-first,
    each repeated to cover ``window_ms``; time each run with CUDA events."""
    streams = [torch.cuda.Stream(device) for _ in runners]
    iters = [max(2, int(window_ms / max(ms, 1e-3))) for ms in alone_ms]
    marks: list[list[EventSpan]] = [[] for _ in runners]
    for run in runners:
        run()
    torch.cuda.synchronize(device)
    for r in range(max(iters)):
        for i, run in enumerate(runners):
            if r >= iters[i]:
                continue
            with torch.cuda.stream(streams[i]), EventSpan() as span:
                run()
            marks[i].append(span)
    torch.cuda.synchronize(device)
    latencies = tuple(statistics.median(span.ms() for span in m) for m in marks)
    return CorunMeasure(latencies, max(latencies))
