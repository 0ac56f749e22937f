"""The measurement protocol of record: every runner timed alone, in a fresh process of its own.

Runners that share a process disturb each other (idle thread pools, OpenMP teams, allocator
state): on a 2-core CPU cosched's sequential runner once took 1.8x longer inside a harness
process than alone. So a speed claim is a ratio of medians of runners each timed alone.

A *work directory* holds what runners need: ``plan/`` (a saved plan), optionally
``stream-per-tenant/`` (another saved plan), ``inputs/<tenant>.npz`` and ``meta.json`` with
``models`` (tenant -> ONNX path, for the onnxruntime runners). :func:`run_isolated` starts one
process per runner and repeat (``python -m cosched.isolated --child NAME``), rotating
the order by one each repeat. A runner's process loads what it runs as a user would
(``cosched.load`` of the plan directory, or onnxruntime sessions of the model files), runs
``warmup`` times, times ``iters`` runs and writes its times; nothing else lives in that
process. :func:`summarise`: a runner's time is the median over its repeats of the median of
its runs; its spread is (max - min) / median over repeats.

Runners (:data:`RUNNERS`): ``plan``; ``sequential`` (the plan's tasks one tenant after
another on the main thread, every core, on the plan's provider: each tenant one onnxruntime
session, or its traced tasks); ``sequential-1-thread``; ``stream-per-tenant`` (that plan
through the same executor); ``ort-sequential-{1t,Nt}[-nospin]`` (onnxruntime sessions of the
model files one after another with 1 or every intra-op thread, spinning on or off);
``ort-threads[-nospin]`` (one session per tenant in its own Python thread, cores shared
evenly). With ``trace`` a child also writes the measured timeline of one more run
(:func:`timeline`): per task for the plan, per tenant for ``sequential``.

Layering: a harness above the public API (its children call :func:`cosched.load`); used by
``cosched demo`` and ``benchmarks/``, imported by no stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COSCHED_RUNNERS", "MALLOC_TOP_PAD", "ORT_RUNNERS", "RUNNERS", "build_runner", "cores",
           "load_inputs", "run_isolated", "summarise"]

MALLOC_TOP_PAD = 512 << 20
"""glibc keeps this much freed memory for reuse in every runner (no page faults in hot loops)."""
COSCHED_RUNNERS = ("plan", "sequential", "sequential-1-thread", "stream-per-tenant")
ORT_RUNNERS = ("ort-sequential-1t", "ort-sequential-Nt", "ort-sequential-1t-nospin", "ort-sequential-Nt-nospin",
               "ort-threads", "ort-threads-nospin")
RUNNERS = COSCHED_RUNNERS + ORT_RUNNERS
Outputs = dict[str, dict[str, np.ndarray]]
Timeline = list[dict[str, Any]]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_inputs(work: Path) -> dict[str, dict[str, np.ndarray]]:
    feeds = {}
    for path in sorted((work / "inputs").glob("*.npz")):
        with np.load(path) as data:
            feeds[path.stem] = {k: data[k] for k in data.files}
    return feeds


def run_isolated(work: Path, runners: Sequence[str], *, repeats: int, iters: int, warmup: int,
                 progress: bool = True, trace: Sequence[str] = (),
                 children: Mapping[str, str] | None = None) -> dict[str, list[list[float]]]:
    """Per runner, the run times (ms) of each repeat, each repeat in a fresh process. The
    first process of each runner saves its outputs (``outputs-<name>.npz``) and, for those
    in ``trace``, its measured timeline (``timeline-<name>.json``). Repeat ``k`` of a runner
    writes ``times-<name>-<k>.json`` (``times_ms`` and whatever else its process reports).

    ``children`` adds runners defined elsewhere: name -> the module whose
    ``python -m MODULE --child NAME`` runs it with this module's child options (``--work``,
    ``--iters``, ``--warmup``, ``--out``, ``--save-outputs``, ``--trace``), rotated with the rest."""
    children = dict(children or {})
    env = dict(os.environ, MALLOC_TOP_PAD_=str(MALLOC_TOP_PAD))
    times: dict[str, list[list[float]]] = {r: [] for r in runners}
    for rep in range(repeats):
        order = list(runners[rep % len(runners):]) + list(runners[: rep % len(runners)])
        for name in order:
            out = work / f"times-{name}-{rep}.json"
            cmd = [sys.executable, "-m", children.get(name, "cosched.isolated"), "--child", name, "--work", str(work),
                   "--iters", str(iters), "--warmup", str(warmup), "--out", str(out)]
            if rep == 0:
                cmd.append("--save-outputs")
                if name in trace:
                    cmd.append("--trace")
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                from cosched.errors import RuntimeFailure

                raise RuntimeFailure(f"runner {name} failed (repeat {rep}):\n{done.stderr[-3000:]}")
            times[name].append(json.loads(out.read_text())["times_ms"])
            if progress:
                print(f"  repeat {rep} {name:26s} {statistics.median(times[name][-1]):9.2f} ms "
                      f"({time.perf_counter() - started:.0f} s with load)", file=sys.stderr, flush=True)
    return times


def summarise(times: dict[str, list[list[float]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, reps in times.items():
        medians = [statistics.median(r) for r in reps]
        median = statistics.median(medians)
        out[name] = {"median_ms": median, "repeat_medians_ms": medians,
                     "spread": (max(medians) - min(medians)) / median if median else 0.0}
    return out


# ------------------------------------------------------------------------------- runners
def build_runner(name: str, work: Path) -> tuple[Callable[[], Outputs], str, Callable[[], Timeline] | None]:
    """The runner called ``name``, its description, and (cosched runners) a function that runs
    it once more and returns the measured timeline; built in this process."""
    feeds = load_inputs(work)
    if name in COSCHED_RUNNERS:
        return _cosched_runner(name, work, feeds)
    if name in ORT_RUNNERS:
        run, what = _ort_runner(name, work, feeds)
        return run, what, None
    from cosched.errors import ConfigError

    raise ConfigError(f"unknown runner {name!r}; runners are {', '.join(RUNNERS)}")


def _cosched_runner(name: str, work: Path, feeds: dict[str, dict[str, np.ndarray]]
                    ) -> tuple[Callable[[], Outputs], str, Callable[[], Timeline] | None]:
    import torch

    import cosched
    from cosched.runtime import SequentialExecutor

    if name in ("plan", "stream-per-tenant"):
        compiled = cosched.load(work / ("plan" if name == "plan" else "stream-per-tenant"))

        def traced() -> Timeline:
            compiled.run(feeds, profile=True)
            covered = {t for seg in compiled.executor.segments for t in seg[1:]}  # ran in their head's session
            rows = []
            for t in compiled.executor.last_timings:
                if t.task in covered:
                    continue
                spec = compiled.plan.task_spec(t.task)
                rows.append({"task": t.task, "name": spec.name, "tenant": spec.tenant, "stream": t.stream,
                             "start_ms": t.start_us / 1e3, "end_ms": t.end_us / 1e3})
            return rows
        what = (f"cosched plan, {len(compiled.plan.streams)} stream(s)" if name == "plan"
                else "one stream per tenant, cosched executor")
        return (lambda: compiled.run(feeds)), what, traced
    compiled = cosched.load(work / "plan")
    threads = 1 if name == "sequential-1-thread" else cores()
    provider = "ort" if any(t.provider == "ort" for t in compiled.plan.tasks) else "torch"
    seq = SequentialExecutor(compiled.graph, compiled.plan.device_kind or "cpu", trace_tasks=True,
                             provider=provider, threads=threads)

    def sequential() -> Outputs:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return seq.run(feeds)
        finally:
            torch.set_num_threads(before)

    def timed() -> Timeline:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            seq.run(feeds, profile=True)
        finally:
            torch.set_num_threads(before)
        return [{"task": i, "name": tenant, "tenant": tenant, "stream": 0, "start_ms": begin, "end_ms": end}
                for i, (tenant, begin, end) in enumerate(seq.last_timeline)]
    how = "each tenant one onnxruntime session" if provider == "ort" else "traced tasks"
    return sequential, f"cosched sequential ({how}), tenants one after another, {threads} intra-op thread(s)", timed


def _ort_runner(name: str, work: Path, feeds: dict[str, dict[str, np.ndarray]]) -> tuple[Callable[[], Outputs], str]:
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    meta = json.loads((work / "meta.json").read_text())
    models = meta["models"]
    spin = not name.endswith("-nospin")
    concurrent = name.startswith("ort-threads")
    threads = max(1, cores() // len(models)) if concurrent else (1 if "-1t" in name else cores())
    sessions = {}
    for tenant, path in models.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        sessions[tenant] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def one(tenant: str) -> dict[str, np.ndarray]:
        session = sessions[tenant]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds[tenant]), strict=True))

    what = f"onnxruntime, {threads} intra-op thread(s), spinning {'on' if spin else 'off'}"
    if not concurrent:
        return (lambda: {t: one(t) for t in sessions}), f"{what}, sessions one after another"
    pool = ThreadPoolExecutor(max_workers=len(sessions))

    def threaded() -> Outputs:
        futures = {t: pool.submit(one, t) for t in sessions}
        return {t: f.result() for t, f in futures.items()}
    return threaded, f"{what}, one Python thread per tenant"


def child(name: str, work: Path, iters: int, warmup: int, out: Path, save_outputs: bool, trace: bool) -> None:
    """One runner's process: build, warm up, time, save; exits without teardown."""
    run, _, timeline = build_runner(name, work)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        outputs = run()
        times.append((time.perf_counter() - start) * 1e3)
    out.write_text(json.dumps({"runner": name, "times_ms": times}))
    if save_outputs:
        np.savez(work / f"outputs-{name}.npz",
                 **{f"{t}::{k}": v for t, outs in outputs.items() for k, v in outs.items()})
    if trace and timeline is not None:
        (work / f"timeline-{name}.json").write_text(json.dumps(timeline()))
    sys.stdout.flush()
    os._exit(0)  # no teardown: executors' threads and sessions go with the process


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cosched.isolated",
                                     description="one runner of the isolated protocol (started by run_isolated)")
    parser.add_argument("--child", required=True, choices=RUNNERS)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save-outputs", action="store_true")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    child(args.child, args.work, args.iters, args.warmup, args.out, args.save_outputs, args.trace)


if __name__ == "__main__":
    main()
