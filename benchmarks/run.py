"""Side-by-side benchmark of a cosched plan against sequential execution and its peers.

    MALLOC_TOP_PAD_=$((512<<20)) .venv/bin/python -m benchmarks.run \\
        --mix tiny|vision|mixed|outside-cnn|outside-mixed \\
        --device cpu|cuda [--batch N] [--iters N] [--warmup N] [--trials N] [--cost-model auto|roofline|DIR] \\
        [--seed N] [--write BENCHMARKS.md] [--json FILE]

The mixes are in :mod:`benchmarks.mixes`: zoo models, or (``outside-*``) models written from
their papers outside the zoo. In one process, on the same inputs (each model's deterministic
example inputs), runs interleaved (one call of each runner per round, so every runner sees
the same machine state). CPU rows of BENCHMARKS.md come from the process-isolated protocol
instead (:mod:`benchmarks.isolated`): executors and onnxruntime sessions sharing one process
can disturb each other. This harness is what the GPU run kit runs on CUDA, and a quick look:

  plan                  the cosched plan (a)
  sequential            every task of every tenant in turn, run as the plan's executor runs
                        it (on CPU one traced TorchScript call per task), every core as
                        intra-op threads (b)
  sequential-1-thread   (CPU) the same with one intra-op thread: shows when "every core"
                        hurts, e.g. on a machine shared with other processes
  stream-per-tenant     the stream-per-tenant baseline lowered to a plan and run by the same
                        executor: one CPU thread / CUDA stream per tenant, naive concurrency (c)
  ort-sequential        onnxruntime sessions one after another (d)
  ort-threads           onnxruntime sessions concurrently, one thread per tenant (e)
  cuda-graph-per-model  on CUDA: each model in its own CUDA graph, one after another (f)
  plan-cuda-graph       on CUDA: the plan captured as one multi-stream CUDA graph
  stream-per-tenant-cuda-graph  on CUDA: (c) captured as one CUDA graph

Reports medians, spreads (IQR / median), time ratios against sequential and against the plan,
the plan's predicted vs measured ms, and checks that every runner's outputs agree with
op-by-op sequential execution (relative error <= 1e-4; nothing traced). ``--write`` updates this mix and device's
section of BENCHMARKS.md (see :mod:`benchmarks.report`); exit code 1 when outputs disagree.

glibc returns freed heap memory to the OS (trimming) once the free top of the heap exceeds a
threshold; the next run then page-faults the same memory back in, which inflates every hot
loop that allocates large tensors. ``MALLOC_TOP_PAD_`` keeps 512 MiB of padding. glibc reads
it only at process start, so when it is unset this harness re-executes itself with it set
(same interpreter, same arguments) and records the value in the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mixes import MIXES, Mix, get_mix
from benchmarks.peers import (
    Outputs,
    Runner,
    available_cores,
    cuda_graph_runner,
    ort_sequential_runner,
    ort_threads_runner,
)
from cosched.compiled import CompiledPlan
from cosched.errors import ConfigError, CoschedError, DeviceError
from cosched.execution.compare import compare_outputs
from cosched.runtime.timing import time_interleaved

__all__ = [
    "MALLOC_TOP_PAD",
    "REL_TOLERANCE",
    "Bench",
    "check_runners",
    "main",
    "measure",
    "prepare",
]

MALLOC_TOP_PAD = 512 << 20
REL_TOLERANCE = 1e-4


@dataclass
class Bench:
    """A compiled mix with its inputs and live runners, ready to measure (then ``close()``)."""

    mix: Mix
    device: str
    compiled: CompiledPlan
    inputs: dict[str, dict[str, np.ndarray]]
    runners: dict[str, Runner]
    skipped: dict[str, str] = field(default_factory=dict)
    trials: int = 0
    study: str | None = None

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.compiled.close()


def prepare(mix: str, device: str = "cpu", *, trials: int = 40, cost_model: str = "auto",
            seed: int = 0, study: str | None = None, interference_threshold: float = 1.10,
            progress: bool = False, batch: int | None = None) -> Bench:
    """Export and compile ``mix`` for ``device`` and build every runner over the same inputs.

    Sets the calling thread's torch intra-op threads to every available core, so sequential
    execution (which runs in this thread) gets the whole machine. ``study`` is an Optuna
    storage URL ("sqlite:///FILE.db") the search persists to, for plotting its history.
    ``batch`` overrides the mix's batch size.
    """
    import dataclasses

    import torch

    import cosched

    chosen = get_mix(mix)
    if batch is not None:
        if batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {batch}")
        chosen = dataclasses.replace(chosen, batch=batch)
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but torch sees no CUDA device here")
    torch.set_num_threads(available_cores())
    paths = dict(zip(chosen.models, chosen.export(), strict=True))
    compiled = cosched.compile(list(paths.values()), names=list(paths), device=device,
                               cost_model=cost_model, trials=trials, seed=seed, study=study,
                               interference_threshold=interference_threshold, progress=progress)
    feeds = chosen.inputs()
    runners = {r.name: r for r in _cosched_runners(compiled, feeds)}
    skipped: dict[str, str] = {}
    for build in (ort_sequential_runner, ort_threads_runner):
        try:
            runner = build(paths, feeds, device)
        except DeviceError as exc:
            skipped[build.__name__.removesuffix("_runner").replace("_", "-")] = str(exc)
            continue
        runners[runner.name] = runner
    if device == "cuda":
        runner = cuda_graph_runner(paths, feeds, compiled.plan.device)
        runners[runner.name] = runner
    return Bench(chosen, device, compiled, feeds, runners, skipped, trials=trials, study=study)


def _cosched_runners(compiled: CompiledPlan, feeds: Outputs) -> list[Runner]:
    """(a) the plan, (b) sequential, (c) the stream-per-tenant baseline through the same executor."""
    from cosched.codegen import lower
    from cosched.runtime.executor import Executor

    base = next(b for b in compiled.search.baselines if b.name == "stream-per-tenant")
    per_tenant_plan = lower(compiled.graph, base.schedule, device=compiled.plan.device,
                            timeline=base.sim, predicted_ms={"plan": base.sim.makespan})
    per_tenant = Executor(per_tenant_plan, compiled.graph)
    plan, sequential = compiled.executor, compiled.baseline
    streams = len(compiled.plan.streams)
    runners = [
        Runner("plan", f"cosched plan, {streams} stream(s)", lambda: plan.run(feeds)),
        Runner("sequential", "cosched tasks one after another (run as the plan runs them), all cores",
               lambda: sequential.run(feeds)),
        Runner("stream-per-tenant", "cosched executor, one stream/thread per tenant",
               lambda: per_tenant.run(feeds), close=per_tenant.close),
    ]
    if compiled.plan.device_kind == "cuda":
        graphed = Executor(compiled.plan, compiled.graph, cuda_graph=True)
        per_tenant_graphed = Executor(per_tenant_plan, compiled.graph, cuda_graph=True)
        runners += [
            Runner("plan-cuda-graph", f"cosched plan, {streams} stream(s), captured as one CUDA graph",
                   lambda: graphed.run(feeds), close=graphed.close),
            Runner("stream-per-tenant-cuda-graph", "one stream per tenant, captured as one CUDA graph",
                   lambda: per_tenant_graphed.run(feeds), close=per_tenant_graphed.close),
        ]
    if compiled.plan.device_kind == "cpu":
        runners.append(Runner("sequential-1-thread", "cosched tasks one after another, one intra-op thread",
                              lambda: _one_thread(sequential.run, feeds)))
    return runners


def _one_thread(run: Any, feeds: Outputs) -> Outputs:
    """``run(feeds)`` with one intra-op thread in this thread, restoring the count after.

    A diagnostic beside ``sequential``: on a CPU shared with other processes, a team of
    intra-op threads stalls at every op's barrier while one of its threads is descheduled,
    so "every core" can be far slower than one thread; this runner shows how much.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(feeds)
    finally:
        torch.set_num_threads(before)


def measure(bench: Bench, *, iters: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Time every runner interleaved, compare their outputs; a JSON-ready result."""
    load_before = _loadavg()
    timings = time_interleaved({n: r.run for n, r in bench.runners.items()}, iters=iters, warmup=warmup)
    seq, plan = timings["sequential"].median, timings["plan"].median
    runners = {
        name: {
            "description": bench.runners[name].description,
            "median_ms": t.median,
            "spread": t.spread,
            "sequential_over_runner": seq / t.median,
            "runner_over_plan": t.median / plan,
        }
        for name, t in timings.items()
    }
    outputs = {name: runner.run() for name, runner in bench.runners.items()}
    # checked against op-by-op execution: the timed runners share traced tasks
    outputs["op-by-op"] = bench.compiled.reference.run(bench.inputs)
    checks = check_runners(outputs, reference="op-by-op")
    del checks["op-by-op"]
    compiled = bench.compiled
    return {
        "mix": bench.mix.name,
        "models": list(bench.mix.models),
        "size": bench.mix.size,
        "batch": bench.mix.batch,
        "device": _device_info(bench.device, compiled),
        "date": datetime.date.today().isoformat(),
        "versions": _versions(),
        "malloc_top_pad": os.environ.get("MALLOC_TOP_PAD_"),
        "loadavg_1min": [load_before, _loadavg()],
        "iters": iters,
        "warmup": warmup,
        "trials": bench.trials,
        "cost_model": compiled.cost_model,
        "compile_s": compiled.compile_s,
        "tasks": len(compiled.plan.tasks),
        "streams": len(compiled.plan.streams),
        "runners": runners,
        "skipped": dict(bench.skipped),
        "fidelity": _fidelity(compiled.plan.predicted_ms, runners),
        "outputs": checks,
        "outputs_agree": all(c["agrees"] for c in checks.values()),
    }


def _fidelity(predicted: Mapping[str, float], runners: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Predicted (simulated) vs measured ms for the runners that have a prediction."""
    pairs = {"plan": "plan", "sequential": "sequential", "stream-per-tenant": "stream_per_tenant"}
    out = {}
    for runner, key in pairs.items():
        if key in predicted and runner in runners:
            measured = runners[runner]["median_ms"]
            out[runner] = {"predicted_ms": predicted[key], "measured_ms": measured,
                           "predicted_over_measured": predicted[key] / measured}
    return out


def check_runners(outputs: Mapping[str, Outputs], reference: str) -> dict[str, dict[str, Any]]:
    """Each runner's worst absolute and relative difference to ``reference``'s outputs.

    The relative error of one output is max |a - b| / max |b| (scaled by the reference's
    magnitude, so near-zero elements do not dominate); a runner agrees when its worst
    relative error is at most :data:`REL_TOLERANCE`. A missing tenant or output, a shape
    mismatch, or a difference that is not finite (NaN on either side, infinities that differ),
    is a disagreement with the reason recorded.
    """
    checks: dict[str, dict[str, Any]] = {}
    for name, got in outputs.items():
        c = compare_outputs(got, outputs[reference], (name, reference))
        checks[name] = {"max_abs_diff": c.max_abs_diff, "max_rel_err": c.max_rel_err, "problems": list(c.problems),
                        "agrees": c.agrees(REL_TOLERANCE)}
    return checks


def _device_info(device: str, compiled: CompiledPlan) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": device, "cpu": _cpu_model(), "cores": available_cores()}
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(int(compiled.plan.device.get("index", 0)))
    return info


def _loadavg() -> float | None:
    """The 1-minute load average (other processes share the machine), None where unknown."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0],
        epilog="See the module docstring (benchmarks/run.py) for the runners and MALLOC_TOP_PAD_.")
    parser.add_argument("--mix", required=True, choices=tuple(MIXES))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, metavar="N", help="batch size (default: the mix's, 1)")
    parser.add_argument("--iters", type=int, default=20, help="interleaved timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--trials", type=int, default=40, help="search trials (default 40)")
    parser.add_argument("--cost-model", default="auto", metavar="auto|roofline|DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interference-threshold", type=float, default=1.10, metavar="X",
                        help="largest predicted slowdown allowed between overlapping tasks "
                             "(default 1.10; inf: no interference constraint)")
    parser.add_argument("--write", metavar="FILE",
                        help="update this mix's section of FILE (BENCHMARKS.md); CUDA only")
    parser.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _reexec_with_malloc_pad() -> None:
    """Start this process again with MALLOC_TOP_PAD_ set (glibc reads it only at start-up)."""
    env = dict(os.environ, MALLOC_TOP_PAD_=str(MALLOC_TOP_PAD))
    print(f"benchmarks.run: MALLOC_TOP_PAD_ unset; re-running with MALLOC_TOP_PAD_={MALLOC_TOP_PAD}",
          file=sys.stderr)
    sys.stdout.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.report import format_table, write_markdown

    args = _parser().parse_args(argv)
    if args.write and args.device == "cpu":
        raise ConfigError("--write: CPU rows of BENCHMARKS.md come from `python -m benchmarks.isolated`, "
                          "which times each runner in a process of its own; this harness shares one")
    if "MALLOC_TOP_PAD_" not in os.environ and argv is None:
        _reexec_with_malloc_pad()
    bench = prepare(args.mix, args.device, trials=args.trials, cost_model=args.cost_model,
                    seed=args.seed, interference_threshold=args.interference_threshold,
                    progress=not args.quiet, batch=args.batch)
    try:
        result = measure(bench, iters=args.iters, warmup=args.warmup)
    finally:
        bench.close()
    result["command"] = _command(argv)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.write:
        write_markdown(result, Path(args.write))
    return 0 if result["outputs_agree"] else 1


def _command(argv: Sequence[str] | None) -> str:
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    pad = os.environ.get("MALLOC_TOP_PAD_")
    prefix = f"MALLOC_TOP_PAD_={pad} " if pad else ""
    return f"{prefix}python -m benchmarks.run {shlex.join(args)}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoschedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
