"""Measurements of this device that the search is fed, made by running the runtime.

The stages below (cost model, search) price schedules from numbers; some of those numbers
can only be had by running tasks and plans the way the runtime runs them. This module,
above the stages and below :func:`cosched.compile`, makes them:

- :func:`runtime_costs`: what the executor pays beyond the tasks (dispatch, event waits,
  thread scaling; :class:`~cosched.costmodel.overheads.RuntimeCosts`), cached per device;
- :func:`in_situ`: every task's latency in context, and with onnxruntime each tenant's
  segment-boundary cost (:func:`ort_in_situ`, :func:`task_latencies_in_situ`);
- :func:`schedule_timer`: the timer :func:`cosched.search.optimize` calls to run its
  finalist schedules on the device.

Layering: imports every stage; only :mod:`cosched.api` (and tests, benchmarks) import it.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from cosched.codegen import lower
from cosched.codegen.steps import Step
from cosched.costmodel.base import CostModel
from cosched.costmodel.device import DeviceSpec, default_cache_dir
from cosched.costmodel.overheads import CUDA_WAIT_MS, SCHEMA_VERSION, RuntimeCosts
from cosched.costmodel.profiler import standalone_threads
from cosched.costmodel.roofline import RooflineModel
from cosched.errors import ConfigError
from cosched.execution.bindings import bind_inputs, random_inputs
from cosched.execution.kernels import load_constants
from cosched.execution.ort import build_segment, segment_task_times
from cosched.execution.traced import TracedTask
from cosched.ir.graph import Graph
from cosched.runtime.cpu import CpuBackend
from cosched.runtime.executor import Executor
from cosched.runtime.program import PlanProgram, TaskProgram, interpret
from cosched.runtime.timing import time_interleaved, time_runs
from cosched.search.schedule import Schedule

__all__ = ["in_situ", "measure_runtime_costs", "ort_in_situ", "runtime_costs", "schedule_timer",
           "task_latencies_in_situ"]

log = logging.getLogger(__name__)


def runtime_costs(spec: DeviceSpec, model: CostModel) -> RuntimeCosts:
    """The device's measured runtime costs, relative to the thread count ``model``'s
    latencies assume: the profiler's standalone threads, or every core for the roofline."""
    base = spec.cores if isinstance(model, RooflineModel) else standalone_threads(spec)
    return measure_runtime_costs(spec, base_threads=base if spec.kind == "cpu" else 1)


def measure_runtime_costs(device: DeviceSpec, base_threads: int = 1, cache_dir: str | Path | None = None,
                          refresh: bool = False) -> RuntimeCosts:
    """The runtime costs of ``device`` (see the module docstring), cached per fingerprint, core
    count and base thread count: a compile with the roofline model (every core) and one with a
    profiled model (one thread) each keep their own, instead of re-measuring and overwriting
    one file, which made a roofline plan depend on which compile ran last on the machine."""
    if device.kind != "cpu":
        return RuntimeCosts(device.kind, device.cores, 0.0, CUDA_WAIT_MS, float("inf"), base_threads)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "runtime-costs" / f"{device.fingerprint}-c{device.cores}-t{base_threads}-v{SCHEMA_VERSION}.json"
    if path.exists() and not refresh:
        try:
            costs = RuntimeCosts.from_json(json.loads(path.read_text()), str(path))
            if costs.base_threads == base_threads and costs.cores == device.cores:
                return costs
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable runtime costs %s: %s", path, exc)
    dispatch, wait = _dispatch_and_wait_ms()
    costs = RuntimeCosts("cpu", device.cores, dispatch, wait, _parallel_half_ms(device.cores), base_threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs.to_json(), indent=2) + "\n")
    log.info("runtime costs of %s: dispatch %.1f us, wait %.1f us, parallel half %.3f ms; cached in %s",
             device.name, dispatch * 1e3, wait * 1e3, costs.parallel_half_ms, path)
    return costs


def _dispatch_and_wait_ms(n: int = 400, rounds: int = 5) -> tuple[float, float]:
    """Per-task dispatch (one stream of no-op tasks) and per hand-off wait (two streams that
    alternate through events), through the CPU backend; the fastest of ``rounds``."""
    tasks = {t: TaskProgram(t, "noop", "calibration", (), (), TracedTask((), (), lambda: ()))
             for t in range(2 * n)}
    one = PlanProgram((partial(interpret, tuple(Step(0, "run", task=t) for t in range(2 * n))),),
                      partial(interpret, ()), 0, (0,), {})
    ping: list[Step] = []
    pong: list[Step] = []
    for i in range(n):  # stream 0 runs 2i, stream 1 runs 2i+1 after it, and so on
        ping += [Step(0, "wait", event=2 * i - 1)] if i else []
        ping += [Step(0, "run", task=2 * i), Step(0, "record", event=2 * i)]
        pong += [Step(1, "wait", event=2 * i), Step(1, "run", task=2 * i + 1), Step(1, "record", event=2 * i + 1)]
    two = PlanProgram((partial(interpret, tuple(ping)), partial(interpret, tuple(pong))),
                      partial(interpret, ()), 2 * n, (0, 0), {})
    out = []
    for program in (one, two):
        backend = CpuBackend(program, tasks, threads_per_stream=1)
        try:
            backend.execute({})
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                backend.execute({})
                samples.append((time.perf_counter() - start) * 1e3)
            out.append(min(samples))  # the least disturbed round
        finally:
            backend.close()
    dispatch = out[0] / (2 * n)
    handoffs = 2 * n - 1
    return dispatch, max(0.0, (out[1] - 2 * n * dispatch) / handoffs)


def _parallel_half_ms(cores: int) -> float:
    """Fit ``parallel_half_ms`` to convolutions of several sizes at one and ``cores`` threads."""
    if cores <= 1:
        return float("inf")
    before = torch.get_num_threads()
    estimates = []
    try:
        with torch.inference_mode():
            for channels, size in ((8, 8), (16, 16), (32, 28), (64, 28), (64, 56), (128, 56)):
                x = torch.randn(1, channels, size, size)
                w = torch.randn(channels, channels, 3, 3)
                times = {}
                for threads in (1, cores):
                    torch.set_num_threads(threads)
                    torch.nn.functional.conv2d(x, w, padding=1)
                    samples = []
                    for _ in range(7):
                        start = time.perf_counter()
                        torch.nn.functional.conv2d(x, w, padding=1)
                        samples.append((time.perf_counter() - start) * 1e3)
                    times[threads] = min(samples)  # the least disturbed run
                one, many = times[1], times[cores]
                gain = one / many - 1.0
                # 1 + (n - 1) L / (L + h) = one / many  =>  h = L ((n - 1) / gain - 1)
                estimates.append(one * ((cores - 1) / gain - 1.0) if gain > 0.01 else one * 100.0)
    finally:
        torch.set_num_threads(before)
    return max(1e-3, statistics.median(estimates))


def in_situ(graph: Graph, spec: DeviceSpec, enabled: bool | None, provider: str
            ) -> tuple[dict[int, tuple[float, ...]] | None, dict[int, dict[str, float]] | None]:
    """In-situ task latencies at one thread and at every core (CPU, unless disabled), and
    with onnxruntime each tenant's segment boundary cost."""
    if not (spec.kind == "cpu" if enabled is None else enabled):
        return None, None
    if spec.kind != "cpu":
        raise ConfigError("in_situ measures CPU thread counts; it is not available for CUDA yet")
    threads = sorted({1, spec.cores})
    boundaries = None
    if provider == "ort":
        measured, boundaries = ort_in_situ(graph, random_inputs(graph), threads)
    else:
        measured = task_latencies_in_situ(graph, spec, random_inputs(graph), threads)
    log.info("in-situ task latencies: %s", ", ".join(
        f"{n} thread(s) {sum(v):.1f} ms summed" for n, v in measured.items()))
    return measured, boundaries


def schedule_timer(
    graph: Graph, device: Any, inputs: Mapping[str, Mapping[str, Any]], iters: int = 10, warmup: int = 3
) -> Callable[[Sequence[Schedule]], list[float]]:
    """The ``timer`` of :func:`cosched.search.optimize`: lowers each schedule to a plan, runs
    them all interleaved on ``inputs`` and returns their median ms."""

    def timer(schedules: Sequence[Schedule]) -> list[float]:
        executors = [Executor(lower(graph, s, device=device), graph) for s in schedules]
        try:
            runners = {str(i): partial(e.run, inputs) for i, e in enumerate(executors)}
            timings = time_interleaved(runners, iters=iters, warmup=warmup)
        finally:
            for e in executors:
                e.close()
        return [timings[str(i)].median for i in range(len(executors))]

    return timer


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
    order = list(nx.lexicographical_topological_sort(graph.to_networkx("task")))
    if provider == "ort":
        return ort_in_situ(graph, inputs, threads, runs=runs, warmup=warmup, order=order)[0]
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


def ort_in_situ(graph: Graph, inputs: Mapping[str, Mapping[str, Any]], threads: Sequence[int],
                runs: int = 3, warmup: int = 2, parts: int = 4, order: Sequence[int] | None = None
                ) -> tuple[dict[int, tuple[float, ...]], dict[int, dict[str, float]]]:
    """Tasks in context on onnxruntime, per intra-op thread count: every task's latency with
    each tenant run as one session (:func:`cosched.execution.ort.segment_task_times`), and
    each tenant's **segment boundary** cost: how much longer its tasks take cut into
    ``parts`` sessions than as one, per cut (a session call, and layouts converted at the
    cut: the NCHWc blocks onnxruntime keeps between convolutions inside one session)."""
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
            t_whole = statistics.median(time_runs(partial(_run_segments, (whole,), env), runs, warmup))
            t_split = statistics.median(time_runs(partial(_run_segments, split, env), runs, warmup))
            boundaries[n][tenant] = max(0.0, (t_split - t_whole) / (k - 1))
        latencies[n] = tuple(times[t] for t in range(len(order)))
    return latencies, boundaries


def _run_segments(segments: Sequence[Any], env: Mapping[str, Any]) -> None:
    local = dict(env)
    for segment in segments:
        segment(local)


