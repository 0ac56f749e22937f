"""Runners the harness times side by side: cosched's own executors and its peers.

A :class:`Runner` runs the whole mix once on fixed inputs and returns the outputs keyed by
tenant, then by the model's own output names, so every runner's outputs can be compared
with every other's. Builders here cover the peers:

- ``ort-sequential``: one onnxruntime ``InferenceSession`` per tenant, run one after another,
  each with every core as intra-op threads (otherwise default session options).
- ``ort-threads``: the same sessions run concurrently, one Python thread per tenant (ORT
  releases the GIL while it runs), each session with ``max(1, cores // tenants)`` intra-op
  threads: naive concurrency in a mature runtime.
- ``cuda-graph-per-model`` (CUDA only): each tenant lowered alone to a one-stream plan and
  captured in its own CUDA graph by cosched's executor, graphs replayed one after another
  (what Nimble-style capture gives without co-scheduling).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosched.errors import ConfigError, DeviceError

__all__ = [
    "Outputs",
    "Runner",
    "available_cores",
    "cuda_graph_runner",
    "ort_providers",
    "ort_sequential_runner",
    "ort_threads_runner",
]

Outputs = dict[str, dict[str, np.ndarray]]
Feeds = Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Runner:
    """One way of running the whole mix: ``run()`` once per timed call, ``close()`` at the end."""

    name: str
    description: str
    run: Callable[[], Outputs]
    close: Callable[[], None] = lambda: None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ort_providers(device: str) -> list[str]:
    """Execution providers for ``device``; a :class:`DeviceError` when this onnxruntime lacks CUDA."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (it offers "
            f"{ort.get_available_providers()}); install onnxruntime-gpu to compare against it on CUDA"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _session(path: Path, threads: int, providers: Sequence[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def _run_session(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def ort_sequential_runner(models: Mapping[str, Path], feeds: Feeds, device: str) -> Runner:
    """(d) onnxruntime sessions one after another, each with every core as intra-op threads."""
    providers = ort_providers(device)
    sessions = {t: _session(p, available_cores(), providers) for t, p in models.items()}

    def run() -> Outputs:
        return {t: _run_session(s, feeds[t]) for t, s in sessions.items()}

    return Runner("ort-sequential", "onnxruntime, sessions one after another, all cores each", run)


def ort_threads_runner(models: Mapping[str, Path], feeds: Feeds, device: str) -> Runner:
    """(e) onnxruntime sessions concurrently, one thread per tenant, cores shared evenly."""
    providers = ort_providers(device)
    threads = max(1, available_cores() // max(1, len(models)))
    sessions = {t: _session(p, threads, providers) for t, p in models.items()}
    pool = ThreadPoolExecutor(max_workers=len(sessions), thread_name_prefix="ort-tenant")

    def run() -> Outputs:
        futures = {t: pool.submit(_run_session, s, feeds[t]) for t, s in sessions.items()}
        return {t: f.result() for t, f in futures.items()}

    return Runner(
        "ort-threads", f"onnxruntime, one thread per tenant, {threads} intra-op thread(s) each",
        run, close=lambda: pool.shutdown(wait=True),
    )


def cuda_graph_runner(models: Mapping[str, Path], feeds: Feeds, device: Mapping[str, Any]) -> Runner:
    """(f) each tenant alone in a one-stream plan captured in its own CUDA graph, run in turn.

    Written for GPU machines; not exercised on a machine without CUDA.
    """
    from cosched.codegen import lower
    from cosched.ir import analyse, fuse, load_models
    from cosched.runtime.executor import Executor

    if device.get("kind") != "cuda":
        raise ConfigError(f"CUDA-graph runner needs a cuda device, got {device.get('kind')!r}")
    executors = {}
    for tenant, path in models.items():
        graph = analyse(fuse(load_models([path], names=[tenant]))).verify()
        plan = lower(graph, [list(range(len(graph.tasks)))], device=device)
        executors[tenant] = Executor(plan, graph, cuda_graph=True)

    def run() -> Outputs:
        out: Outputs = {}
        for tenant, executor in executors.items():
            out.update(executor.run({tenant: feeds[tenant]}))
        return out

    def close() -> None:
        for executor in executors.values():
            executor.close()

    return Runner("cuda-graph-per-model", "each model in its own CUDA graph, one after another",
                  run, close=close)
