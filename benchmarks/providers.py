"""Ways of running a task on CPU, per model and per op type, each timed alone in a fresh process.

    MALLOC_TOP_PAD_=536870912 .venv/bin/python -m benchmarks.providers [--models NAME ...]
        [--size full|tiny] [--variants NAME ...] [--repeats 3] [--iters 10] [--warmup 3]
        [--min-time 2] [--budget 300] [--no-probe] [--json F] [--markdown F] [--keep DIR [--resume]]

Issue 13, section 2. Each zoo model (batch 1, one intra-op thread) runs its fused tasks one
after another, as ``SequentialExecutor(graph, trace_tasks=True)`` does, with every task run by
one variant of :mod:`benchmarks.task_variants`: ``eager`` (op by op), ``traced`` (the current
default), ``frozen`` (``torch.jit.freeze`` + ``optimize_for_inference``), ``freeze-only``,
``inductor`` and ``inductor-freeze`` (``torch.compile`` per task), ``ort-task`` (one
onnxruntime session per task) and ``ort-model`` (the whole model in one session).

Protocol (the house rule): one process per model x variant x repeat, nothing else in it; the
variants' order is rotated by one each repeat. A process builds its variant, runs
``--warmup`` times, then times at least ``--iters`` runs and ``--min-time`` seconds, each
run's total and each task's time; it checks its outputs against op-by-op execution
(relative error <= 1e-4) and writes JSON. A variant's model time is the median over repeats
of its per-process medians; a task's time likewise; an op type's time (tasks grouped by
their op-type signature, e.g. ``Conv+Relu``) is the sum of its tasks'. Ratios are variant /
``traced`` and variant / ``ort-model`` (below 1: faster).

Inductor compiles into a cache directory per model and variant that is empty for the first
repeat (a fresh machine: "cold") and reused afterwards ("warm"); both compile times are
reported. A variant whose compile passes ``--budget`` seconds stops there, reports the
extrapolated cost and is not timed. ``--keep DIR --resume`` continues a stopped run from the
records in DIR (a first repeat's compile cache is emptied before it runs again).

Unless ``--no-probe``, two processes compile a tiny model's tasks with no C++ compiler
(``CXX=/nonexistent``; a ``PATH`` without one) and one with no compiler but a warm cache,
and the report says what happened.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.providers_report import format_markdown, summarise

MALLOC_TOP_PAD = 512 << 20
ROOT = Path(__file__).resolve().parents[1]
CHILD_MARGIN_S = 600.0


# ------------------------------------------------------------------------------ a child
def child(model: str, variant: str, size: str, *, iters: int, warmup: int, min_time: float,
          budget_s: float, out: Path) -> None:
    """Build one variant of one model, time it, write the JSON record; exits the process."""
    import torch

    from benchmarks.task_variants import OverBudget, build, prepare, rel_error, run_model

    torch.set_num_threads(1)
    record: dict[str, Any] = {"model": model, "variant": variant, "size": size}
    p = prepare(model, size)
    record["tasks"] = len(p.order)
    try:
        built = build(p, variant, budget_s=budget_s)
    except OverBudget as over:
        record.update(status="over-budget", **over.notes)
        out.write_text(json.dumps(record))
        os._exit(0)
    outputs, _, _ = run_model(p, built)
    errors = [rel_error(outputs[model][own], p.reference[name].numpy()) for own, name in p.graph.tenants[0].outputs]
    for _ in range(warmup - 1):
        run_model(p, built)
    totals, per_step = _timed_runs(p, built, iters, min_time)
    labels = [s.label for s in built.steps or []]
    record.update(
        status="ok", build_s=built.build_s, compile_s=built.compile_s, fallbacks=built.fallbacks,
        notes=built.notes, max_rel_error=max(errors), agrees=max(errors) <= 1e-4, times_ms=totals,
        task_ms={label: statistics.median(t) for label, t in zip(labels, per_step, strict=True)},
        signatures={s.label: s.signature for s in built.steps or []})
    out.write_text(json.dumps(record))
    os._exit(0)  # no teardown: compile workers and sessions go with the process


def _timed_runs(p: Any, built: Any, iters: int, min_time: float) -> tuple[list[float], list[list[float]]]:
    from benchmarks.task_variants import run_model

    totals: list[float] = []
    per_step: list[list[float]] = [[] for _ in built.steps or []]
    started = time.perf_counter()
    while len(totals) < iters or (time.perf_counter() - started < min_time and len(totals) < 50 * iters):
        _, total, steps = run_model(p, built)
        totals.append(total)
        for times, t in zip(per_step, steps, strict=True):
            times.append(t)
    return totals, per_step


# ------------------------------------------------------------------------------ the parent
def run_all(models: Sequence[str], variants: Sequence[str], args: argparse.Namespace,
            work: Path) -> list[dict[str, Any]]:
    """One child per model x variant x repeat, variants rotated each repeat."""
    records: list[dict[str, Any]] = []
    skip: set[tuple[str, str]] = set()
    for rep in range(args.repeats):
        for model in models:
            order = list(variants[rep % len(variants):]) + list(variants[: rep % len(variants)])
            for variant in order:
                if (model, variant) in skip:
                    continue
                record = _run_child(model, variant, rep, args, work)
                records.append(record)
                if record["status"] != "ok":
                    skip.add((model, variant))  # over budget or failed: not repeated
                ms = statistics.median(record["times_ms"]) if record["status"] == "ok" else float("nan")
                print(f"  repeat {rep} {model:14s} {variant:16s} {ms:9.2f} ms  build {record.get('build_s', 0):6.1f} s"
                      f"  {record['status']}", file=sys.stderr, flush=True)
    return records


def _run_child(model: str, variant: str, rep: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / f"{model}-{variant}-{rep}.json"
    if args.resume and out.exists():
        try:
            return {**json.loads(out.read_text()), "repeat": rep}
        except json.JSONDecodeError:
            pass  # written when the run was stopped: run it again
    cache = work / "inductor-cache" / f"{model}-{variant}"  # empty at repeat 0: a cold compile
    if rep == 0:
        shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, MALLOC_TOP_PAD_=str(MALLOC_TOP_PAD), TORCHINDUCTOR_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "benchmarks.providers", "--child", f"{model}:{variant}", "--size", args.size,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--min-time", str(args.min_time),
           "--budget", str(args.budget), "--out", str(out)]
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=args.budget + CHILD_MARGIN_S)
        failed = done.returncode != 0 or not out.exists()
        why = f"exit {done.returncode}: {done.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        failed, why = True, f"timed out after {args.budget + CHILD_MARGIN_S:.0f} s"
    record = ({"model": model, "variant": variant, "status": "error", "error": why} if failed
              else json.loads(out.read_text()))
    record["repeat"] = rep
    return record


# ------------------------------------------------------------------- no C++ compiler
def probe_child(mode: str, out: Path) -> None:
    """Compile tiny squeezenet's tasks with Inductor as the environment is; then again with
    ``torch._dynamo.config.suppress_errors``. Writes what happened; exits the process."""
    import torch

    from benchmarks.task_variants import build, prepare, rel_error, run_model

    torch.set_num_threads(1)
    p = prepare("squeezenet1_1", "tiny")
    result: dict[str, Any] = {"mode": mode, "tasks": len(p.order)}
    for label, suppress in (("default", False), ("suppress_errors", True)):
        torch._dynamo.reset()
        with torch._dynamo.config.patch(suppress_errors=suppress):
            built = build(p, "inductor", budget_s=1e9)
            outputs, _, _ = run_model(p, built)
        own, name = p.graph.tenants[0].outputs[0]
        result[label] = {"fallbacks": len(built.fallbacks), "build_s": built.build_s,
                         "reasons": sorted(set(built.fallbacks.values()))[:3],
                         "rel_error": rel_error(outputs[p.name][own], p.reference[name].numpy())}
    out.write_text(json.dumps(result))
    os._exit(0)


def probe_no_compiler(work: Path) -> list[dict[str, Any]]:
    """The three no-compiler probes of the module doc, each in its own process."""
    empty = work / "empty-bin"
    empty.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "CXX"}
    warm = work / "probe-warm-cache"
    modes = {
        "cold cache, CXX=/nonexistent": dict(base, CXX="/nonexistent"),
        "cold cache, PATH without g++": dict(base, PATH=str(empty)),
        "warm cache, CXX=/nonexistent": dict(base, CXX="/nonexistent"),
    }
    results: list[dict[str, Any]] = []
    subprocess.run([sys.executable, "-m", "benchmarks.providers", "--probe", "fill warm cache", "--out",
                    str(work / "probe-fill.json")], env=dict(base, TORCHINDUCTOR_CACHE_DIR=str(warm)), cwd=ROOT,
                   capture_output=True, text=True, timeout=900)
    for index, (mode, env) in enumerate(modes.items()):
        cache = warm if mode.startswith("warm") else work / f"probe-cold-{index}"
        out = work / f"probe-{index}.json"
        done = subprocess.run([sys.executable, "-m", "benchmarks.providers", "--probe", mode, "--out", str(out)],
                              env=dict(env, TORCHINDUCTOR_CACHE_DIR=str(cache)), cwd=ROOT, capture_output=True,
                              text=True, timeout=900)
        if not out.exists():
            results.append({"mode": mode, "error": f"exit {done.returncode}: {done.stderr[-1500:]}"})
            continue
        # with suppress_errors, Dynamo logs the failure (a WARNING with a traceback) and runs eager
        named = sum("InvalidCxxCompiler" in line for line in done.stderr.splitlines())
        results.append({**json.loads(out.read_text()), "stderr_lines_naming_the_error": named})
    return results


# ------------------------------------------------------------------------------ main
def _parser() -> argparse.ArgumentParser:
    from benchmarks.task_variants import VARIANTS
    from cosched import zoo

    parser = argparse.ArgumentParser(prog="python -m benchmarks.providers", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.names()), choices=zoo.names())
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per process, at least")
    parser.add_argument("--budget", type=float, default=300.0, help="compile seconds per model and variant")
    parser.add_argument("--no-probe", action="store_true", help="skip the no-compiler probes")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--keep", type=Path, help="work directory to keep (children's JSON, caches)")
    parser.add_argument("--resume", action="store_true",
                        help="with --keep: reuse the children's records already in the work directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        model, _, variant = args.child.partition(":")
        child(model, variant, args.size, iters=args.iters, warmup=args.warmup, min_time=args.min_time,
              budget_s=args.budget, out=args.out)
    if args.probe:
        probe_child(args.probe, args.out)
    if "traced" not in args.variants:
        _parser().error("--variants must include traced, the reference of the ratios")
    if args.resume and args.keep is None:
        _parser().error("--resume needs --keep DIR, the work directory of the run to resume")
    started, load_before = time.time(), os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cosched-providers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        records = run_all(args.models, args.variants, args, work)
        probes = [] if args.no_probe or not any(v.startswith("inductor") for v in args.variants) \
            else probe_no_compiler(work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "MALLOC_TOP_PAD_=536870912 python -m benchmarks.providers "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(), "machine": _machine(), "versions": _versions(),
        "size": args.size, "repeats": args.repeats, "iters": args.iters, "warmup": args.warmup,
        "min_time_s": args.min_time, "budget_s": args.budget, "wall_s": time.time() - started,
        "load_before": load_before, "load_after": os.getloadavg(), "no_compiler": probes,
        **summarise(records, args.models, args.variants),
    }
    text = format_markdown(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    ok = all(r["status"] in ("ok", "over-budget") and r.get("agrees", True) for r in records)
    return 0 if ok else 1


def _machine() -> str:
    from benchmarks.run import _cpu_model

    return f"{_cpu_model()}, {os.cpu_count()} cores"


def _versions() -> dict[str, str]:
    from benchmarks.run import _versions as versions

    return {**versions(), "g++": shutil.which("g++") or "none"}


if __name__ == "__main__":
    sys.exit(main())
