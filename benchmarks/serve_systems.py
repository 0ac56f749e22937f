"""The systems :mod:`benchmarks.serve` puts under load: cosched's server and three baselines.

A *system* is anything with ``submit(tenant, inputs) -> Future`` (the future's result: that
tenant's outputs, output name -> array) and ``close()``. Each is built from a prepared work
directory (``plan/``, the saved cosched plan, and ``meta.json`` with the tenants' ONNX files)
inside the child process that measures it, so nothing else shares its process:

- ``cosched``: ``cosched.load(plan).serve()`` as a user calls it: the plan cache, SLO
  priorities, and the default lanes (two on a CPU of two or more cores: a request of an idle
  tenant starts beside a running dispatch instead of waiting for it, the cores shared).
- ``cosched-1-lane``: the same, one dispatch at a time (``lanes=1``): what lanes add.
- ``fcfs``: one worker thread, one global FIFO queue, one request at a time; each tenant run by
  cosched's sequential executor of its own tenant graph, on the plan's provider, every core.
  First-come-first-served, the scheduler every serving paper compares against.
- ``per-tenant``: one worker thread per tenant, each with its own queue, running its own model
  as soon as a request arrives: what Triton does with one instance per model. The same
  sequential executors, the cores shared evenly (on CUDA each worker on a stream of its own).
- ``ort``: one onnxruntime session per tenant on the tenant's ONNX file, each in its own thread
  with its own queue, ``cores // tenants`` intra-op threads (at least one), no spinning (CPU
  only: cosched's onnxruntime provider is CPU-only, so a CUDA run skips it).

The baselines' queues are unbounded: they never reject, so overload shows as latency, and
SLO attainment counts it. A failing run fails that request's future with the error.

The child processes of :mod:`benchmarks.serve` live here too: :func:`run_child` (one system
under one arrival schedule) and :func:`solo_child` (one tenant's solo latency, for its SLO).
"""

from __future__ import annotations

import json
import math
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cosched.errors import ConfigError, CoschedError, RuntimeFailure
from cosched.isolated import cores

__all__ = ["SYSTEMS", "QueueWorkers", "System", "available", "build_system", "cores", "response_error", "run_child",
           "serving_available", "solo_child"]

SYSTEMS = ("cosched", "cosched-1-lane", "fcfs", "per-tenant", "ort")
Outputs = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, Any]], Outputs]


class System(Protocol):
    """What the load generator submits to."""

    def submit(self, tenant: str, inputs: Mapping[str, Any]) -> Future[Outputs]: ...

    def close(self) -> None: ...


def available(system: str, device: str) -> str | None:
    """None when ``system`` can run on ``device`` here, else the reason it is skipped."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown system {system!r}; systems are {', '.join(SYSTEMS)}")
    if system == "ort" and device != "cpu":
        return "ort: skipped on cuda (cosched runs onnxruntime on CPU only, so there is no like-for-like session)"
    if system.startswith("cosched") and not serving_available():
        return "cosched: skipped, this cosched has no server (CompiledPlan.serve, cosched.runtime.serve)"
    return None


def serving_available() -> bool:
    """Whether this cosched has ``CompiledPlan.serve()`` and the server module it returns."""
    import importlib.util

    from cosched.compiled import CompiledPlan

    return hasattr(CompiledPlan, "serve") and importlib.util.find_spec("cosched.runtime.serve") is not None


class QueueWorkers:
    """Worker threads draining FIFO queues of requests: one queue and thread for all tenants
    (``shared=True``, FCFS) or one per tenant. ``setup`` runs first in each worker thread
    (thread count, CUDA stream: settings that are per thread)."""

    def __init__(self, runs: Mapping[str, RunFn], *, shared: bool, name: str,
                 setup: Callable[[], None] | None = None) -> None:
        self._runs = dict(runs)
        self._closed = False
        self._lock = threading.Lock()
        keys = ["*"] if shared else list(self._runs)
        self._queues: dict[str, queue.SimpleQueue[tuple[str, Mapping[str, Any], Future[Outputs]] | None]] = {
            k: queue.SimpleQueue() for k in keys}
        self._shared = shared
        self._threads = [threading.Thread(target=self._work, args=(q, setup), name=f"{name}-{k}", daemon=True)
                         for k, q in self._queues.items()]
        for thread in self._threads:
            thread.start()

    def submit(self, tenant: str, inputs: Mapping[str, Any]) -> Future[Outputs]:
        if tenant not in self._runs:
            raise ConfigError(f"unknown tenant {tenant!r}; tenants are {', '.join(self._runs)}")
        future: Future[Outputs] = Future()
        with self._lock:  # no request slips in behind the stop marker
            if self._closed:
                raise RuntimeFailure(f"request of {tenant!r} submitted after close()")
            self._queues["*" if self._shared else tenant].put((tenant, inputs, future))
        return future

    def close(self) -> None:
        """Finish every queued request, then stop the workers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for q in self._queues.values():
                q.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self, requests: queue.SimpleQueue[tuple[str, Mapping[str, Any], Future[Outputs]] | None],
              setup: Callable[[], None] | None) -> None:
        if setup is not None:
            setup()
        while (item := requests.get()) is not None:
            tenant, inputs, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._runs[tenant](inputs))
            except Exception as error:  # the request fails; the worker serves the next one
                future.set_exception(error)


def build_system(name: str, work: Path, meta: Mapping[str, Any]) -> System:
    """System ``name`` built in this process from the prepared work directory."""
    reason = available(name, meta["device"])
    if reason is not None:
        raise ConfigError(reason)
    if name.startswith("cosched"):
        import cosched

        # the SLOs the benchmark scores against, not whatever else the plan may carry
        lanes = 1 if name == "cosched-1-lane" else None  # None: serve()'s default
        return cosched.load(work / "plan").serve(slo_ms=meta["slo_ms"], lanes=lanes)  # type: ignore[no-any-return]
    if name == "ort":
        return _ort(meta)
    return _sequential(name, work, meta)


def _sequential(name: str, work: Path, meta: Mapping[str, Any]) -> System:
    """``fcfs`` or ``per-tenant``: cosched's sequential executor of each tenant's own graph."""
    import torch

    import cosched

    compiled = cosched.load(work / "plan")
    tenants = list(compiled.graph.tenant_names)
    threads = cores() if name == "fcfs" else max(1, cores() // len(tenants))
    device = compiled.plan.device_kind or "cpu"
    runs = {t: tenant_runner(compiled.graph, t, device, plan_provider(compiled), threads) for t in tenants}

    def setup() -> None:
        torch.set_num_threads(threads)  # torch's intra-op threads (provider torch); ort sessions have their own
        if device == "cuda" and name == "per-tenant":
            torch.cuda.set_stream(torch.cuda.Stream())  # per thread: the workers' kernels may overlap
    return QueueWorkers(runs, shared=name == "fcfs", name=name, setup=setup)


def plan_provider(compiled: Any) -> str:
    """Who runs the plan's tasks: ``"ort"`` when any task is an onnxruntime one, else ``"torch"``
    (as :mod:`cosched.isolated`'s ``sequential`` runner decides)."""
    return "ort" if any(t.provider == "ort" for t in compiled.plan.tasks) else "torch"


def tenant_runner(graph: Any, tenant: str, device: str, provider: str, threads: int) -> RunFn:
    """``tenant`` alone by cosched's sequential executor: its tasks traced (or its onnxruntime
    session, provider ``ort``) one after another, ``threads`` intra-op threads."""
    from cosched.ir.cut import tenant_graph
    from cosched.runtime import SequentialExecutor

    executor = SequentialExecutor(tenant_graph(graph, [tenant]), device, trace_tasks=True, provider=provider,
                                  threads=threads)

    def run(inputs: Mapping[str, Any]) -> Outputs:
        return executor.run({tenant: inputs})[tenant]
    return run


def _ort(meta: Mapping[str, Any]) -> System:
    import onnxruntime as ort

    from cosched.execution.ort import session_options

    models: Mapping[str, str] = meta["models"]
    threads = max(1, cores() // len(models))
    runs = {}
    for tenant, path in models.items():
        session = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        runs[tenant] = _session_run(session)
    return QueueWorkers(runs, shared=False, name="ort")


def _session_run(session: Any) -> RunFn:
    names = [o.name for o in session.get_outputs()]

    def run(inputs: Mapping[str, Any]) -> Outputs:
        return dict(zip(names, session.run(names, dict(inputs)), strict=True))
    return run


# ------------------------------------------------------------------------------ children
def solo_child(work: Path, tenant: str, out: Path) -> None:
    """``tenant``'s solo latency: its own graph (imported as ``compile`` imports it), cosched's
    sequential executor on the benchmark's provider, every core; the median of ``solo_iters``
    runs after ``warmup`` (at least one) untimed ones."""
    import torch

    from cosched.execution.bindings import random_inputs
    from cosched.ir import analyse, fuse, load_models

    meta = json.loads((work / "meta.json").read_text())
    if tenant not in meta["models"]:
        raise ConfigError(f"unknown tenant {tenant!r}; the mix's tenants are {', '.join(meta['models'])}")
    graph = analyse(fuse(load_models([meta["models"][tenant]], names=[tenant])))
    torch.set_num_threads(cores())
    run = tenant_runner(graph, tenant, meta["device"], meta["provider"], cores())
    feed = random_inputs(graph, 0)[tenant]
    for _ in range(max(1, meta["warmup"])):
        run(feed)
    times = []
    for _ in range(meta["solo_iters"]):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1e3)
    out.write_text(json.dumps({"tenant": tenant, "median_ms": statistics.median(times), "times_ms": times}))


def run_child(name: str, work: Path, schedule_file: Path, out: Path) -> int:
    """System ``name`` under the arrivals of ``schedule_file`` (``[[time_s, tenant, index], ...]``):
    build, warm up, submit each request at its time (open loop), wait for every response (at
    most ``drain_timeout_s`` after the last arrival), check each against its input's reference
    output, write the records. Returns 0, or 3 when some request never completed."""
    meta = json.loads((work / "meta.json").read_text())
    tenants: list[str] = meta["tenants"]
    pools, references = _pool(work / "inputs", tenants), _pool(work / "reference", tenants)
    arrivals = [(float(t), str(who), int(k)) for t, who, k in json.loads(schedule_file.read_text())]
    system = build_system(name, work, meta)
    for _ in range(meta["warmup"]):  # untimed; a system that cannot serve fails here, clearly
        for future in [system.submit(t, pools[t][0]) for t in tenants]:
            future.result(timeout=meta["drain_timeout_s"])
    tracker = _Tracker(len(arrivals))
    futures: list[Future[Outputs] | None] = [None] * len(arrivals)
    submitted = [math.nan] * len(arrivals)
    errors: dict[int, str] = {}
    tracker.start()
    for i, (at, tenant, k) in enumerate(arrivals):
        delay = tracker.t0 + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted[i] = time.perf_counter() - tracker.t0
        try:
            future = system.submit(tenant, pools[tenant][k % len(pools[tenant])])
        except CoschedError as error:  # refused at the door: a miss, not a crash
            errors[i] = f"{type(error).__name__}: {error}"
            tracker.finish(i)
            continue
        futures[i] = future
        future.add_done_callback(tracker.on_done(i))
    last = arrivals[-1][0] if arrivals else 0.0
    stalled = tracker.wait(tracker.t0 + last + meta["drain_timeout_s"])
    records = [_record(i, a, submitted[i], tracker.done[i], futures[i], errors.get(i), references)
               for i, a in enumerate(arrivals)]
    stats = getattr(system, "stats", None)
    result = {"system": name, "records": records, "stalled": stalled,
              "stats": stats().as_dict() if callable(stats) and not stalled else None}
    out.write_text(json.dumps(result, default=str))
    if stalled:
        print(f"system {name}: {stalled} of {len(arrivals)} requests not done {meta['drain_timeout_s']:g} s "
              "after the last arrival (stalled)", file=sys.stderr, flush=True)
        os._exit(3)  # its threads may never finish; do not wait for them
    system.close()
    return 0


class _Tracker:
    """When each request finished (seconds from :meth:`start`), and a wait for all of them."""

    def __init__(self, n: int) -> None:
        self.done = [math.nan] * n
        self.t0 = 0.0
        self._left = n
        self._changed = threading.Condition()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def finish(self, i: int) -> None:
        stamp = time.perf_counter() - self.t0
        with self._changed:
            self.done[i] = stamp
            self._left -= 1
            self._changed.notify_all()

    def on_done(self, i: int) -> Callable[[Future[Any]], None]:
        """A done-callback that stamps request ``i`` (it runs in the thread completing the future)."""
        return lambda _: self.finish(i)

    def wait(self, deadline: float) -> int:
        """Block until every request finished or ``deadline`` (perf_counter); how many did not."""
        with self._changed:
            while self._left and (left := deadline - time.perf_counter()) > 0:
                self._changed.wait(left)
            return self._left


def _record(i: int, arrival: tuple[float, str, int], submitted: float, done: float, future: Future[Outputs] | None,
            error: str | None, references: Mapping[str, list[Outputs]]) -> dict[str, Any]:
    at, tenant, k = arrival
    record: dict[str, Any] = {"tenant": tenant, "index": k, "arrival": at, "submit": submitted,
                              "done": None if math.isnan(done) else done, "ok": False, "error": error}
    if error is not None:
        return record
    if future is None or not future.done():
        record["error"] = "not done (stalled)"
        return record
    if (failure := future.exception()) is not None:
        record["error"] = f"{type(failure).__name__}: {failure}"
        return record
    record["error"] = response_error(tenant, future.result(), references[tenant][k % len(references[tenant])])
    record["ok"] = record["error"] is None
    return record


def response_error(tenant: str, got: Mapping[str, Any], want: Outputs) -> str | None:
    """None when ``got`` is ``want`` (the reference output of the request's own input) within
    :data:`benchmarks.run.REL_TOLERANCE`, else what differs."""
    from benchmarks.run import REL_TOLERANCE
    from cosched.execution.compare import compare_outputs

    check = compare_outputs({tenant: dict(got)}, {tenant: want}, ("response", "reference"))
    if check.agrees(REL_TOLERANCE):
        return None
    return "wrong response to its own input: " + "; ".join((*check.problems, f"max relative error {check.max_rel_err:.3g}"))


def _pool(folder: Path, tenants: list[str]) -> dict[str, list[Outputs]]:
    """Per tenant, its pool of arrays (inputs or reference outputs) as saved: ``k::name`` keys."""
    out: dict[str, list[Outputs]] = {}
    for tenant in tenants:
        with np.load(folder / f"{tenant}.npz") as data:
            entries: dict[int, Outputs] = {}
            for key in data.files:
                k, _, name = key.partition("::")
                entries.setdefault(int(k), {})[name] = data[key]
        out[tenant] = [entries[k] for k in sorted(entries)]
    return out
