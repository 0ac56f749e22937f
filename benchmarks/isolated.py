"""The benchmark protocol of record: every runner timed alone, in a fresh process of its own.

    MALLOC_TOP_PAD_=$((512<<20)) .venv/bin/python -m benchmarks.isolated --mix vision \\
        [--repeats 3] [--iters 10] [--warmup 3] [--trials 40] [--cost-model auto|roofline|DIR] \\
        [--runners NAME,...] [--check-inprocess] [--json FILE] [--write BENCHMARKS.md]

The parent compiles the mix once, saves the plan, the stream-per-tenant baseline lowered to
a plan and the inputs into a work directory, then times the runners with the protocol of
:mod:`cosched.isolated` (one fresh process per runner and repeat, order rotated;
its docstring lists the runners). The outputs of each runner's first process are compared
with op-by-op execution (relative error <= 1e-4).

``--check-inprocess`` also times the cosched runners interleaved in one process
(:func:`cosched.runtime.timing.time_interleaved`, what ``cosched run --compare`` and
``compile(measure=True)`` use) and flags every runner whose in-process median differs from
its isolated median by more than 10%; exit code 3 when one does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosched.isolated import (
    COSCHED_RUNNERS,
    MALLOC_TOP_PAD,
    RUNNERS,
    build_runner,
    cores,
    load_inputs,
    run_isolated,
    summarise,
)

AGREEMENT = 0.10
INPROCESS = "@inprocess"
Outputs = dict[str, dict[str, np.ndarray]]


def prepare(mix_name: str, work: Path, *, trials: int, cost_model: str, seed: int,
            interference_threshold: float, provider: str = "auto") -> dict[str, Any]:
    """Compile the mix and write what every runner's process needs into ``work``."""
    import cosched
    from benchmarks.mixes import get_mix
    from cosched.codegen import emit_python, lower, save_plan

    mix = get_mix(mix_name)
    paths = dict(zip(mix.models, mix.export(), strict=True))
    compiled = cosched.compile(list(paths.values()), names=list(paths), device="cpu", cost_model=cost_model,
                               trials=trials, seed=seed, interference_threshold=interference_threshold,
                               provider=provider)
    compiled.save(work / "plan")
    provider = compiled.plan.tasks[0].provider
    base = next(b for b in compiled.search.baselines if b.name == "stream-per-tenant")
    per_tenant = lower(compiled.graph, base.schedule, device=compiled.plan.device, timeline=base.sim,
                       predicted_ms={"plan": base.sim.makespan}, provider=provider)
    save_plan(per_tenant, work / "stream-per-tenant", module_source=emit_python(per_tenant))
    (work / "inputs").mkdir()
    for tenant, feeds in mix.inputs().items():
        np.savez(work / "inputs" / f"{tenant}.npz", **feeds)
    meta = {"mix": mix.name, "models": {t: str(p) for t, p in paths.items()}, "batch": mix.batch,
            "size": mix.size, "cost_model": compiled.cost_model, "compile_s": compiled.compile_s,
            "streams": len(compiled.plan.streams), "tasks": len(compiled.plan.tasks), "provider": provider,
            "predicted_ms": dict(compiled.plan.predicted_ms)}
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    compiled.close()
    return meta


def check_outputs(work: Path, runners: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each runner's saved outputs against op-by-op execution of the plan's graph."""
    import cosched
    from benchmarks.run import check_runners

    compiled = cosched.load(work / "plan")
    outputs = {"op-by-op": compiled.reference.run(load_inputs(work))}
    for name in runners:
        with np.load(work / f"outputs-{name}.npz") as data:
            got: Outputs = {}
            for key in data.files:
                tenant, _, out = key.partition("::")
                got.setdefault(tenant, {})[out] = data[key]
        outputs[name] = got
    compiled.close()
    checks = check_runners(outputs, reference="op-by-op")
    del checks["op-by-op"]
    return checks


def check_inprocess(work: Path, isolated: dict[str, dict[str, Any]], *, iters: int, warmup: int) -> dict[str, Any]:
    """The cosched runners timed interleaved in one fresh process (as ``cosched run --compare``
    times plan and sequential), against their isolated medians."""
    out_file = work / "inprocess.json"
    names = [n for n in COSCHED_RUNNERS if n in isolated]
    subprocess.run([sys.executable, "-m", "benchmarks.isolated", "--child", INPROCESS, "--work", str(work),
                    "--iters", str(iters), "--warmup", str(warmup), "--out", str(out_file),
                    "--runners", ",".join(names)],
                   env=dict(os.environ, MALLOC_TOP_PAD_=str(MALLOC_TOP_PAD)), check=True)
    medians = json.loads(out_file.read_text())
    out = {}
    for name in names:
        ratio = medians[name] / isolated[name]["median_ms"]
        out[name] = {"inprocess_ms": medians[name], "isolated_ms": isolated[name]["median_ms"],
                     "inprocess_over_isolated": ratio, "agrees": abs(ratio - 1) <= AGREEMENT}
    return out


def _inprocess_child(work: Path, names: Sequence[str], iters: int, warmup: int, out: Path) -> None:
    from cosched.runtime.timing import time_interleaved

    timings = time_interleaved({n: build_runner(n, work)[0] for n in names}, iters=iters, warmup=warmup)
    out.write_text(json.dumps({n: t.median for n, t in timings.items()}))
    os._exit(0)


# ------------------------------------------------------------------------------- a runner
# ------------------------------------------------------------------------------ reporting
def rows(result: dict[str, Any]) -> list[str]:
    runners, predicted = result["runners"], result["meta"]["predicted_ms"]
    seq, plan = runners["sequential"]["median_ms"], runners["plan"]["median_ms"]
    keys = {"plan": "plan", "sequential": "sequential", "stream-per-tenant": "stream_per_tenant"}
    out = []
    for name, r in runners.items():
        pred = predicted.get(keys.get(name, ""))
        fidelity = f"{pred / r['median_ms']:.2f}" if pred else "-"
        agrees = result["outputs"].get(name, {}).get("agrees")
        out.append(f"| {name} | {seq / r['median_ms']:.2f}x | {r['median_ms'] / plan:.2f}x | "
                   f"{r['spread']:.0%} | {fidelity} | {'yes' if agrees else 'NO'} |")
    return out


def format_result(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"### {meta['mix']} (batch {meta['batch']}, {meta['size']}): {meta['streams']} streams, "
             f"{meta['tasks']} tasks, cost model {meta['cost_model']}, tasks on {meta.get('provider', 'torch')}", "",
             f"Command: `{result['command']}`; machine: {result['machine']}; date {result['date']}; "
             f"{result['repeats']} repeats x {result['iters']} runs, each runner alone in a fresh process.", "",
             "| runner | sequential / runner | runner / plan | spread | predicted / measured | outputs agree |",
             "|---|---|---|---|---|---|", *rows(result)]
    if result.get("inprocess"):
        lines += ["", "In-process (interleaved, one process) against isolated:", ""]
        lines += [f"- {n}: {c['inprocess_over_isolated']:.2f}x {'(agrees)' if c['agrees'] else '(DIFFERS > 10%)'}"
                  for n, c in result["inprocess"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolated", description=__doc__.splitlines()[0])
    parser.add_argument("--mix", default="vision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-model", default="auto")
    parser.add_argument("--provider", choices=("auto", "ort", "torch"), default="auto",
                        help="who runs cosched's tasks (compile's provider; default auto: onnxruntime on CPU)")
    parser.add_argument("--interference-threshold", type=float, default=1.10)
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated subset of the runners")
    parser.add_argument("--check-inprocess", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--write", metavar="FILE", help="append the section to FILE (BENCHMARKS.md)")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save-outputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == INPROCESS:
        _inprocess_child(args.work, args.runners.split(","), args.iters, args.warmup, args.out)
    runners = [r for r in args.runners.split(",") if r]
    unknown = sorted(set(runners) - set(RUNNERS))
    if unknown or not {"plan", "sequential"} <= set(runners):
        parser.error(f"--runners must name plan, sequential and others of {', '.join(RUNNERS)}; unknown: {unknown}")
    with tempfile.TemporaryDirectory(prefix="cosched-isolated-") as tmp:
        work = Path(tmp)
        meta = prepare(args.mix, work, trials=args.trials, cost_model=args.cost_model, seed=args.seed,
                       interference_threshold=args.interference_threshold, provider=args.provider)
        times = run_isolated(work, runners, repeats=args.repeats, iters=args.iters, warmup=args.warmup)
        summary = summarise(times)
        result: dict[str, Any] = {
            "meta": meta, "runners": summary, "outputs": check_outputs(work, runners),
            "repeats": args.repeats, "iters": args.iters, "warmup": args.warmup,
            "date": datetime.date.today().isoformat(), "machine": _machine(),
            "command": "MALLOC_TOP_PAD_=536870912 python -m benchmarks.isolated "
                       + " ".join(sys.argv[1:] if argv is None else argv),
            "times_ms": times,
        }
        if args.check_inprocess:
            result["inprocess"] = check_inprocess(work, summary, iters=args.iters * args.repeats,
                                                  warmup=args.warmup)
            print(f"  in-process: {result['inprocess']}", file=sys.stderr)
    text = format_result(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
    agree = all(c["agrees"] for c in result["outputs"].values())
    inproc = all(c["agrees"] for c in result.get("inprocess", {}).values())
    return 0 if agree and inproc else (1 if not agree else 3)


def _machine() -> str:
    from benchmarks.run import _cpu_model

    return f"{_cpu_model()}, {cores()} cores"


if __name__ == "__main__":
    sys.exit(main())
