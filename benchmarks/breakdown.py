"""Where cosched's sequential time goes, against onnxruntime's, one zoo model at a time.

    MALLOC_TOP_PAD_=536870912 .venv/bin/python -m benchmarks.breakdown [--models resnet50 ...]
        [--size full|tiny] [--batches 1 8] [--threads 1,all] [--iters 10 3] [--repeats 2]
        [--breakdown-runs 3 2] [--json FILE] [--markdown FILE]

For every model, batch and intra-op thread count ("all" is every core this process may run
on), each runner is timed alone in a fresh process of its own, ``--repeats`` times, the order
of the runners rotated by one each repeat; a runner's time is the median over repeats of the
median of its runs, and a speed comparison is the ratio of two such times. Runners:

- ``cosched``: :class:`cosched.runtime.SequentialExecutor` with ``trace_tasks``, the graph
  imported and fused as ``compile`` does: every task one TorchScript call, one after another,
  ``torch.set_num_threads(threads)``;
- ``cosched-ort``: the same with ``provider="ort"``, present when the executor takes a
  ``provider`` keyword (:func:`runners`);
- ``ort``: one onnxruntime session of the model file, ``intra_op_num_threads=threads``,
  spinning off.

After its timed runs, the first repeat's process of each runner measures a breakdown of its
own time, in separate runs (``--breakdown-runs``, averaged), and saves its outputs, which
the parent compares with onnxruntime's (relative error <= 1e-4):

- cosched: the executor's run loop, mirrored, timed step by step (one step per task) with
  ``perf_counter_ns``; then the same loop under ``torch.profiler``, each step in a
  ``record_function`` range, which gives the step's top-level aten ops. A step's kernel
  time is its timed duration times the share of its profiled range spent in aten ops (the
  share, not the profiled time, since profiling slows the Python around the ops most); the
  rest is ``overhead per task`` (Python, TorchScript's interpreter, the env), and the run's
  time outside its steps is ``overhead per run`` (binding inputs, freeing, collecting
  outputs). A step in which the profiler sees no aten op (a step run by another provider)
  counts as kernel time throughout. The kernel time of a task goes to the row of its first
  op: fusion makes an anchor (Conv, MatMul, pooling...) head its task and its elementwise
  epilogue follow, as onnxruntime fuses Conv+Add+Relu into one Conv kernel. The same process
  also times the graph op by op (no tracing): "op by op / traced" is what tracing saves.
- onnxruntime: a second session with ``enable_profiling``; the ``_kernel_time`` events of
  the runs after a warm-up give each kernel's op type (after onnxruntime's fusions) and
  duration; ``model_run`` minus its kernels is ``overhead per task`` (the executor between
  kernels), the Python call's wall time minus ``model_run`` is ``overhead per run``.

Both sides' op types map onto shared rows (:mod:`benchmarks.breakdown_report`): fused and
contrib kernels to the ONNX type they replace (FusedConv -> Conv, FusedGemm -> Gemm,
FusedMatMul -> MatMul, SkipLayerNormalization -> LayerNormalization, BiasGelu -> Gelu),
NCHWc ``ReorderInput``/``ReorderOutput`` to "layout (NCHWc reorders)", Conv split by kind
(depthwise, 1x1, 3x3, other: where the algorithm choice differs), MatMul with Gemm, and
elementwise ops with views (cosched fuses them into the anchor's task; where onnxruntime
does not, its kernels show up in this row). A row's cosched/ORT and its gap come from its
shares of each side's breakdown scaled by the timed ratio, so the gaps of the rows sum to
the ratio minus one: the gap attributed to op types and to overheads.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.breakdown_report import (
    OVERHEAD_RUN,
    OVERHEAD_TASK,
    attribute,
    format_markdown,
    row_of,
    task_row,
)
from cosched.runtime.timing import time_runs

if TYPE_CHECKING:
    from cosched.ir.graph import Graph
    from cosched.runtime import SequentialExecutor

__all__ = ["cosched_breakdown", "main", "measure", "ort_breakdown", "runners"]

MALLOC_TOP_PAD = 512 << 20
STEP = "cosched-step-"
Outputs = dict[str, dict[str, np.ndarray]]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def runners() -> list[str]:
    """The runners of this build: ``cosched-ort`` only where the executor takes ``provider``."""
    from cosched.runtime import SequentialExecutor

    has_provider = "provider" in inspect.signature(SequentialExecutor).parameters
    return ["cosched", *(["cosched-ort"] if has_provider else []), "ort"]


def cosched_executor(graph: Graph, runner: str) -> SequentialExecutor:
    """The sequential executor of a cosched runner (``cosched`` or ``cosched-<provider>``)."""
    import torch

    from cosched.runtime import SequentialExecutor

    provider = runner.partition("-")[2]
    # onnxruntime sessions take their thread count when made: this thread's, set by the child
    extra: dict[str, Any] = {"provider": provider, "threads": torch.get_num_threads()} if provider else {}
    return SequentialExecutor(graph, "cpu", trace_tasks=True, **extra)


# ----------------------------------------------------------------------- cosched breakdown
def _steps(executor: SequentialExecutor) -> list[Callable[[dict[str, Any]], None]]:
    if executor._steps is None:
        raise ValueError("the breakdown times a task-traced executor's steps; this one runs op by op")
    return executor._steps


def _run_steps(executor: SequentialExecutor, feeds: dict[str, dict[str, np.ndarray]], step: Callable[[int, Any, dict], None]) -> None:
    """:meth:`SequentialExecutor.run`'s loop, each step called through ``step(index, fn, env)``.

    It reads the executor's private ``_steps`` and ``_last_use``: a change to ``run`` must be
    mirrored here (:func:`cosched_breakdown` checks that there is still one step per task)."""
    import torch

    from cosched.execution.bindings import bind_inputs, collect_outputs

    graph = executor.graph
    env = dict(executor.constants)
    env.update(bind_inputs(graph, feeds, executor.device))
    keep = set(executor.constants) | {n for t in graph.tenants for _, n in t.outputs}
    with torch.inference_mode():
        for index, fn in enumerate(_steps(executor)):
            step(index, fn, env)
            for name in executor._last_use.get(index, ()):
                if name not in keep:
                    env.pop(name, None)
    collect_outputs(graph, env)


def _step_times(executor: SequentialExecutor, feeds: dict[str, dict[str, np.ndarray]], runs: int) -> tuple[list[float], float]:
    """Mean ms of each step, and of the whole run, over ``runs`` step-timed runs."""
    steps = [0] * len(_steps(executor))

    def timed(index: int, fn: Any, env: dict) -> None:
        start = time.perf_counter_ns()
        fn(env)
        steps[index] += time.perf_counter_ns() - start

    start = time.perf_counter_ns()
    for _ in range(runs):
        _run_steps(executor, feeds, timed)
    total = (time.perf_counter_ns() - start) / runs / 1e6
    return [ns / runs / 1e6 for ns in steps], total


def _aten_shares(executor: SequentialExecutor, feeds: dict[str, dict[str, np.ndarray]],
                 runs: int) -> tuple[list[float], dict[str, float]]:
    """Per step, the share of its profiled range spent in top-level aten ops (1.0 when it ran
    none); and the profiled ms per run of each aten op name."""
    from torch.profiler import ProfilerActivity, profile, record_function

    def profiled(index: int, fn: Any, env: dict) -> None:
        with record_function(f"{STEP}{index}"):
            fn(env)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            _run_steps(executor, feeds, profiled)
    inside = [0.0] * len(_steps(executor))
    aten = [0.0] * len(_steps(executor))
    names: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if not event.name.startswith(STEP):
            continue
        index = int(event.name[len(STEP):])
        inside[index] += event.cpu_time_total
        for op in _top_aten(event):
            aten[index] += op.cpu_time_total
            names[op.name] += op.cpu_time_total / runs / 1e3
    shares = [min(1.0, a / i) if a > 0 and i > 0 else 1.0 for a, i in zip(aten, inside, strict=True)]
    return shares, dict(names)


def _top_aten(event: Any) -> list[Any]:
    """The outermost aten ops under a profiler event (TorchScript's frames skipped)."""
    found = []
    for child in event.cpu_children:
        found += [child] if child.name.startswith("aten::") else _top_aten(child)
    return found


def cosched_breakdown(executor: SequentialExecutor, feeds: dict[str, dict[str, np.ndarray]], runs: int) -> dict[str, Any]:
    """The cosched side's breakdown (see the module doc): rows_ms sum to total_ms."""
    import networkx as nx

    graph = executor.graph
    order = [graph.task(i) for i in nx.lexicographical_topological_sort(graph.to_networkx("task"))]
    if len(order) != len(_steps(executor)):
        raise RuntimeError(f"{len(_steps(executor))} executor steps for {len(order)} tasks; "
                           "the executor no longer runs one step per task")
    _run_steps(executor, feeds, lambda _, fn, env: fn(env))  # warm after the timed runs' last free
    step_ms, total_ms = _step_times(executor, feeds, runs)
    shares, aten_ms = _aten_shares(executor, feeds, runs)
    rows: dict[str, float] = defaultdict(float)
    for task, ms, share in zip(order, step_ms, shares, strict=True):
        rows[task_row(graph, task)] += ms * share
    rows[OVERHEAD_TASK] = sum(ms * (1 - share) for ms, share in zip(step_ms, shares, strict=True))
    rows[OVERHEAD_RUN] = total_ms - sum(step_ms)
    traced = executor.tracer.traced if executor.tracer is not None else 0
    return {"total_ms": total_ms, "rows_ms": dict(rows), "aten_ms": aten_ms, "tasks": len(order),
            "traced_tasks": traced}


# --------------------------------------------------------------------------- ORT breakdown
def _ort_session(path: str, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_breakdown(path: str, feeds: dict[str, np.ndarray], threads: int, runs: int, work: Path) -> dict[str, Any]:
    """The onnxruntime side's breakdown (see the module doc): rows_ms sum to total_ms."""
    session = _ort_session(path, threads, str(work / "ort-profile"))
    session.run(None, feeds)  # warm-up, left out below
    start = time.perf_counter_ns()
    for _ in range(runs):
        session.run(None, feeds)
    total_ms = (time.perf_counter_ns() - start) / runs / 1e6
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    first = model_runs[0]["ts"]
    rows: dict[str, float] = defaultdict(float)
    op_ms: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < first:
            continue
        args = event["args"]
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        conv = (int(shapes[0][1]), shapes[1]) if len(shapes) > 1 and len(shapes[0]) > 1 else None
        rows[row_of(args["op_name"], conv)] += event["dur"] / runs / 1e3
        op_ms[args["op_name"]] += event["dur"] / runs / 1e3
    model_run_ms = sum(e["dur"] for e in model_runs) / runs / 1e3
    rows[OVERHEAD_TASK] = model_run_ms - sum(op_ms.values())
    rows[OVERHEAD_RUN] = total_ms - model_run_ms
    return {"total_ms": total_ms, "rows_ms": dict(rows), "op_ms": dict(op_ms)}


# ------------------------------------------------------------------------------- a runner
def measure(runner: str, model: str, size: str, batch: int, threads: int, path: str, *, iters: int,
            warmup: int, breakdown_runs: int, work: Path) -> tuple[dict[str, Any], Outputs | None]:
    """One runner's times (and, with ``breakdown_runs``, its breakdown and outputs), in this process."""
    import torch

    import cosched.ir
    from cosched import zoo
    from cosched.runtime import SequentialExecutor

    torch.set_num_threads(threads)
    feeds = zoo.example_inputs(model, size, batch)
    result: dict[str, Any] = {"runner": runner, "model": model, "batch": batch, "threads": threads}
    outputs: Outputs | None = None
    if runner == "ort":
        session = _ort_session(path, threads)
        result["times_ms"] = time_runs(lambda: session.run(None, feeds), iters, warmup)
        if breakdown_runs:
            result["breakdown"] = ort_breakdown(path, feeds, threads, breakdown_runs, work)
            names = [o.name for o in session.get_outputs()]
            outputs = {model: dict(zip(names, session.run(names, feeds), strict=True))}
        return result, outputs
    graph = cosched.ir.fuse(cosched.ir.load_models([path], names=[model], batch=batch))
    executor = cosched_executor(graph, runner)
    result["times_ms"] = time_runs(lambda: executor.run({model: feeds}), iters, warmup)
    if breakdown_runs and runner == "cosched-ort":  # one session: onnxruntime's profiler splits it
        (segment,) = _steps(executor)
        segment_path = work / f"{model}-b{batch}-segment.onnx"
        segment_path.write_bytes(segment.model())
        by_graph_name = {name: feeds[own] for own, name in graph.tenant(model).inputs}
        result["breakdown"] = ort_breakdown(str(segment_path), by_graph_name, threads, breakdown_runs, work)
        outputs = executor.run({model: feeds})
    elif breakdown_runs:
        result["breakdown"] = cosched_breakdown(executor, {model: feeds}, breakdown_runs)
        outputs = executor.run({model: feeds})
        del executor
        op_by_op = SequentialExecutor(graph, "cpu")
        times = time_runs(lambda: op_by_op.run({model: feeds}), breakdown_runs, 1)
        result["breakdown"]["op_by_op_over_traced"] = statistics.median(times) / statistics.median(result["times_ms"])
    return result, outputs


def child(args: argparse.Namespace) -> None:
    result, outputs = measure(args.child, args.models[0], args.size, args.batches[0], int(args.threads),
                              args.path, iters=args.iters[0], warmup=args.warmup,
                              breakdown_runs=args.breakdown_runs[0], work=args.out.parent)
    args.out.write_text(json.dumps(result))
    if outputs is not None:
        arrays: dict[str, Any] = {f"{t}::{k}": v for t, o in outputs.items() for k, v in o.items()}
        np.savez(args.out.with_suffix(".npz"), **arrays)
    os._exit(0)  # no teardown: sessions and executors go with the process


# ------------------------------------------------------------------------------ the parent
def run_config(model: str, size: str, batch: int, threads: int, path: str, names: Sequence[str], *,
               repeats: int, iters: int, warmup: int, breakdown_runs: int, work: Path) -> dict[str, Any]:
    """Every runner of one model, batch and thread count, each repeat in fresh processes."""
    from benchmarks.run import check_runners

    env = dict(os.environ, MALLOC_TOP_PAD_=str(MALLOC_TOP_PAD))
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    breakdowns: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Outputs] = {}
    for rep in range(repeats):
        for name in [*names[rep % len(names):], *names[: rep % len(names)]]:
            out = work / f"{model}-b{batch}-t{threads}-{name}-{rep}.json"
            cmd = [sys.executable, "-m", "benchmarks.breakdown", "--child", name, "--models", model, "--size", size,
                   "--batches", str(batch), "--threads", str(threads), "--path", path, "--iters", str(iters),
                   "--warmup", str(warmup), "--breakdown-runs", str(breakdown_runs if rep == 0 else 0),
                   "--out", str(out)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"runner {name} on {model} (batch {batch}, {threads} threads, repeat {rep}) "
                                   f"failed:\n{done.stderr[-3000:]}")
            result = json.loads(out.read_text())
            times[name].append(result["times_ms"])
            if rep == 0:
                breakdowns[name] = result["breakdown"]
                with np.load(out.with_suffix(".npz")) as data:
                    outputs[name] = {}
                    for key in data.files:
                        tenant, _, output = key.partition("::")
                        outputs[name].setdefault(tenant, {})[output] = data[key]
            print(f"  {model} b{batch} t{threads} repeat {rep} {name:12s} "
                  f"{statistics.median(times[name][-1]):9.2f} ms", file=sys.stderr, flush=True)
    medians = {n: [statistics.median(r) for r in reps] for n, reps in times.items()}
    median = {n: statistics.median(m) for n, m in medians.items()}
    variants = [n for n in names if n != "ort"]
    checks = check_runners(outputs, reference="ort")
    del checks["ort"]
    return {
        "model": model, "batch": batch, "threads": threads, "times_ms": times,
        "ratios": {v: median[v] / median["ort"] for v in variants},
        "spread": max((max(m) - min(m)) / statistics.median(m) for m in medians.values()),
        "op_by_op_over_traced": breakdowns[variants[0]].get("op_by_op_over_traced", float("nan")),
        "breakdown": breakdowns, "outputs": checks,
        "attribution": {v: attribute(breakdowns[v], breakdowns["ort"], median[v] / median["ort"]) for v in variants},
    }


def _threads(text: str) -> list[int]:
    return [_cores() if t.strip() == "all" else int(t) for t in text.split(",") if t.strip()]


def _per_batch(values: list[int], batches: list[int], flag: str, parser: argparse.ArgumentParser) -> list[int]:
    if len(values) == 1:
        return values * len(batches)
    if len(values) != len(batches):
        parser.error(f"{flag} takes one value, or one per batch ({len(batches)}); got {len(values)}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    from cosched import zoo

    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(zoo.names()), choices=zoo.names())
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", default="1,all", help="comma-separated thread counts; 'all': every core")
    parser.add_argument("--iters", nargs="+", type=int, default=[10, 3], help="timed runs, one value or one per batch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--breakdown-runs", nargs="+", type=int, default=[3, 2],
                        help="runs of each breakdown, one value or one per batch")
    parser.add_argument("--json", metavar="FILE", type=Path)
    parser.add_argument("--markdown", metavar="FILE", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
    iters = _per_batch(args.iters, args.batches, "--iters", parser)
    profile_runs = _per_batch(args.breakdown_runs, args.batches, "--breakdown-runs", parser)
    if min(profile_runs) < 1 or min(iters) < 1 or args.repeats < 1:
        parser.error(f"--iters, --breakdown-runs and --repeats must be >= 1; got {iters}, {profile_runs}, "
                     f"{args.repeats}")
    names, threads = runners(), _threads(args.threads)
    load_before = os.getloadavg()[0]
    configs = []
    with tempfile.TemporaryDirectory(prefix="cosched-breakdown-") as tmp:
        for model in args.models:
            for batch, n_iters, n_profile in zip(args.batches, iters, profile_runs, strict=True):
                path = str(zoo.export(model, size=args.size, batch=batch))
                for n in threads:
                    configs.append(run_config(model, args.size, batch, n, path, names, repeats=args.repeats,
                                              iters=n_iters, warmup=args.warmup, breakdown_runs=n_profile,
                                              work=Path(tmp)))
    result = {
        "models": args.models, "size": args.size, "batches": args.batches, "threads": threads,
        "variants": [n for n in names if n != "ort"], "repeats": args.repeats, "iters": iters,
        "breakdown_runs": profile_runs, "warmup": args.warmup, "configs": configs,
        "date": datetime.date.today().isoformat(), "machine": _machine(),
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "command": "MALLOC_TOP_PAD_=536870912 python -m benchmarks.breakdown "
                   + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = format_markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0 if all(c["agrees"] for r in configs for c in r["outputs"].values()) else 1


def _machine() -> str:
    from benchmarks.run import _cpu_model

    return f"{_cpu_model()}, {_cores()} cores"


if __name__ == "__main__":
    sys.exit(main())
