"""Side-by-side timing: runners measured in one process, interleaved, on the same inputs.

Interleaving (A, B, C, B, C, A, ...) rather than batching (A x n, then B x n) exposes every
runner to the same machine state (clock boosts, other load), so their ratio is fair even on
a noisy machine. Times are wall-clock milliseconds; the caller synchronises devices inside
its runner.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from cosched.errors import ConfigError

if TYPE_CHECKING:
    from cosched.ir.graph import Graph
    from cosched.search.schedule import Schedule

__all__ = ["Timing", "measure_interleaved", "ort_in_situ", "schedule_timer", "task_latencies_in_situ", "time_runs"]


@dataclass(frozen=True)
class Timing:
    """Samples of one runner, in ms."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0 with fewer than 4 samples)."""
        if len(self.samples) < 4:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median if self.median else 0.0


def measure_interleaved(
    runners: Mapping[str, Callable[[], object]], iters: int = 20, warmup: int = 3
) -> dict[str, Timing]:
    """Run every runner ``warmup`` times, then ``iters`` rounds of one call each, in turn;
    each round starts one runner later than the last."""
    if iters < 1 or warmup < 0:
        raise ConfigError(f"iters must be >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for round_ in range(iters):
        # rotate who goes first: the runner after another pays for what that one left behind
        # (warm thread pools spinning, evicted caches), so no runner always follows the same one
        shift = round_ % len(order)
        for name, run in order[shift:] + order[:shift]:
            start = time.perf_counter_ns()
            run()
            samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def schedule_timer(
    graph: Graph, device: Any, inputs: Mapping[str, Mapping[str, Any]], iters: int = 10, warmup: int = 3
) -> Callable[[Sequence[Schedule]], list[float]]:
    """A ``measure`` callable for :func:`cosched.search.optimize`: lowers each schedule to a
    plan, runs them all interleaved on ``inputs`` and returns their median ms."""

    def measure(schedules: Sequence[Schedule]) -> list[float]:
        from cosched.codegen import lower
        from cosched.runtime.executor import Executor

        executors = [Executor(lower(graph, s, device=device), graph) for s in schedules]
        try:
            runners = {str(i): partial(e.run, inputs) for i, e in enumerate(executors)}
            timings = measure_interleaved(runners, iters=iters, warmup=warmup)
        finally:
            for e in executors:
                e.close()
        return [timings[str(i)].median for i in range(len(executors))]

    return measure


def task_latencies_in_situ(graph: Graph, device: Any, inputs: Mapping[str, Mapping[str, Any]],
                           threads: Sequence[int], runs: int = 3, warmup: int = 2,
                           provider: str = "torch") -> dict[int, tuple[float, ...]]:
    """Every task's latency in context, per intra-op thread count: the graph's tasks run one
    after another (one stream) as a plan runs them, each task timed, median over ``runs``.

    A profiler measures a task alone in a loop, with its weights and inputs hot in the
    caches; in a plan each task reads weights no other task touched since the last run, so
    it runs slower (24-32% summed over the zoo's vision mix and over four CNNs from outside
    the zoo, 2-core CPU). These are the latencies the simulator should charge for this graph.
    """
    import networkx as nx

    from cosched.codegen import lower
    from cosched.runtime.executor import Executor

    order = list(nx.lexicographical_topological_sort(graph.to_networkx("task")))
    if provider == "ort":
        return _in_situ_ort(graph, order, inputs, threads, runs, warmup)
    plan = lower(graph, [order], device=device)
    out: dict[int, tuple[float, ...]] = {}
    for n in threads:
        with Executor(plan, graph, threads_per_stream=n) as executor:
            for _ in range(warmup):
                executor.run(inputs)
            samples: dict[int, list[float]] = {t: [] for t in order}
            for _ in range(runs):
                executor.run(inputs, profile=True)
                for timing in executor.last_timings:
                    samples[timing.task].append(timing.duration_ms)
        out[n] = tuple(statistics.median(samples[t]) for t in range(len(order)))
    return out


def _in_situ_ort(graph: Graph, order: Sequence[int], inputs: Mapping[str, Mapping[str, Any]],
                 threads: Sequence[int], runs: int, warmup: int) -> dict[int, tuple[float, ...]]:
    return ort_in_situ(graph, inputs, threads, runs=runs, warmup=warmup, order=order)[0]


def ort_in_situ(graph: Graph, inputs: Mapping[str, Mapping[str, Any]], threads: Sequence[int],
                runs: int = 3, warmup: int = 2, parts: int = 4, order: Sequence[int] | None = None
                ) -> tuple[dict[int, tuple[float, ...]], dict[int, dict[str, float]]]:
    """Tasks in context on onnxruntime, per intra-op thread count: every task's latency with
    each tenant run as one session (:func:`cosched.runtime.ort.segment_task_times`), and
    each tenant's **segment boundary** cost: how much longer its tasks take cut into
    ``parts`` sessions than as one, per cut (a session call, and layouts converted at the
    cut: the NCHWc blocks onnxruntime keeps between convolutions inside one session)."""
    import networkx as nx
    import torch

    from cosched.runtime.bindings import bind_inputs
    from cosched.runtime.kernels import load_constants
    from cosched.runtime.ort import build_segment, segment_task_times

    order = list(order) if order is not None else list(nx.lexicographical_topological_sort(graph.to_networkx("task")))
    constants = load_constants(graph, "cpu")
    env = dict(constants)
    env.update(bind_inputs(graph, inputs, torch.device("cpu")))
    latencies: dict[int, tuple[float, ...]] = {}
    boundaries: dict[int, dict[str, float]] = {}
    for n in threads:
        times: dict[int, float] = {}
        boundaries[n] = {}
        for tenant in graph.tenant_names:
            tasks = [t for t in order if graph.task(t).tenant == tenant]
            whole = build_segment(graph, tasks, n, constants)
            times.update(segment_task_times(whole, env, n, runs=runs, warmup=warmup))
            k = min(parts, len(tasks))
            if k < 2:
                boundaries[n][tenant] = 0.0
                continue
            cuts = [len(tasks) * i // k for i in range(k + 1)]
            split = [build_segment(graph, tasks[a:b], n, constants) for a, b in itertools.pairwise(cuts)]
            t_whole = _median_ms(partial(_run_segments, (whole,), env), runs, warmup)
            t_split = _median_ms(partial(_run_segments, split, env), runs, warmup)
            boundaries[n][tenant] = max(0.0, (t_split - t_whole) / (k - 1))
        latencies[n] = tuple(times[t] for t in range(len(order)))
    return latencies, boundaries


def _run_segments(segments: Sequence[Any], env: Mapping[str, Any]) -> None:
    local = dict(env)
    for segment in segments:
        segment(local)


def time_runs(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int) -> float:
    return statistics.median(time_runs(fn, runs, warmup))
