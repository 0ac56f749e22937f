"""``cosched demo``: the whole pipeline on a zoo tenant mix, measured as a user would, with no arguments.

Exports the demo's zoo models (cached), compiles them together for the device present, then
times the plan, cosched's sequential execution and onnxruntime, each runner alone in a fresh
process (:mod:`cosched.isolated`), prints predicted and measured milliseconds and
the speedups, and writes the plan directory and a Gantt chart of measured timelines.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from cosched.errors import ConfigError
from cosched.isolated import ORT_RUNNERS as _ALL_ORT

__all__ = ["DEMO_SIZE", "DEMO_TENANTS", "register"]

DEMO_TENANTS = ("mobilenet_v2", "squeezenet1_1", "googlenet")
"""Full-size models that export, profile and run in seconds, so the demo's fresh processes fit
in its time. On a 2-core CPU their plan measures as fast as sequential execution, not
faster: two intra-op threads already run each of them 1.5x faster than one (BENCHMARKS.md,
mix ``demo``), which leaves side-by-side execution little to gain there."""
DEMO_SIZE = "full"
ORT_RUNNERS = tuple(n for n in _ALL_ORT if n.endswith("-nospin"))
"""onnxruntime as it runs best here: spinning off (spinning threads steal the other sessions' cores)."""

DESCRIPTION = f"""\
Compiles {", ".join(DEMO_TENANTS)} ({DEMO_SIZE} size, batch 1) together as tenants of one plan
for the device present (cuda if torch sees one, else cpu), then times, each runner alone in
a fresh process with the order rotated (the protocol of BENCHMARKS.md):
  plan                      the compiled plan
  sequential                the same tenants one after another (on CPU: each tenant one
                            onnxruntime session with every core, as the plan's tasks run)
  ort-sequential-1t-nospin  onnxruntime sessions of the model files one after another,
  ort-sequential-Nt-nospin  at one intra-op thread and at every core
  ort-threads-nospin        one onnxruntime session per tenant, each in its own thread
(the onnxruntime runners on CPU only). It prints predicted and measured ms, the plan's
speedups and the largest output difference, and writes under --out:
  plan/          the plan directory (cosched run / cosched show read it)
  measure/       what the runners' processes loaded and wrote
  schedule.png   measured timelines of one sequential run and one plan run, and the
                 predicted plan
  demo.json      the numbers printed

The cost model is "auto": the trained model cached for this device when there is one, else
a short profiling run (--profile-budget seconds, cached for the next run) to train one; the
graph's tasks are also timed in context (compile's in-situ step). On a 2-core CPU the first
run took 65 s with an empty cache (exporting the models, 20 s of profiling, compiling and ten
runner processes); later runs skip the export and the profiling."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="compile a zoo tenant mix and measure it against sequential execution and onnxruntime",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="cosched-demo", metavar="DIR",
                        help="folder to write (default ./cosched-demo)")
    parser.add_argument("--cost-model", default="auto", metavar="auto|roofline|DIR",
                        help="cost model (default auto, see above)")
    parser.add_argument("--profile-budget", type=float, default=20.0, metavar="S",
                        help="seconds of profiling when no model is cached (default 20)")
    parser.add_argument("--trials", type=int, default=40, metavar="N", help="search trials (default 40)")
    parser.add_argument("--iters", type=int, default=10, metavar="N",
                        help="timed runs per runner process (default 10)")
    parser.add_argument("--repeats", type=int, default=2, metavar="N",
                        help="fresh processes per runner (default 2)")
    parser.add_argument("--size", default=DEMO_SIZE, choices=("full", "tiny"),
                        help=f"zoo size of the tenants (default {DEMO_SIZE}; tiny is for quick checks)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.trials < 0 or args.iters < 1 or args.repeats < 1 or args.profile_budget < 0:
        raise ConfigError(f"demo needs --trials >= 0, --iters >= 1, --repeats >= 1 and --profile-budget >= 0; "
                          f"got {args.trials}, {args.iters}, {args.repeats} and {args.profile_budget}")
    result = run_demo(Path(args.out), cost_model=args.cost_model, profile_budget_s=args.profile_budget,
                      trials=args.trials, iters=args.iters, repeats=args.repeats, size=args.size,
                      quiet=args.quiet)
    if not args.quiet:
        print(format_table(result))
    return 0


def run_demo(out: Path, *, cost_model: str = "auto", profile_budget_s: float = 20.0, trials: int = 40,
             iters: int = 10, repeats: int = 2, size: str = DEMO_SIZE, quiet: bool = False) -> dict[str, Any]:
    """Export, compile, measure (each runner alone in a fresh process), save and plot; returns
    the numbers (also in demo.json)."""
    import numpy as np
    import torch

    import cosched
    from cosched import zoo
    from cosched.compiled import max_abs_diff
    from cosched.isolated import load_inputs, run_isolated, summarise
    from cosched.runtime import SequentialExecutor
    from cosched.viz import gantt_compare

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = [zoo.export(name, size=size) for name in DEMO_TENANTS]
    compiled = cosched.compile(paths, names=DEMO_TENANTS, device=device, cost_model=cost_model,
                               trials=trials, profile_budget_s=profile_budget_s, progress=not quiet)
    compiled.close()
    compiled.save(out / "plan")
    work = out / "measure"
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    for tenant in DEMO_TENANTS:
        np.savez(work / "inputs" / f"{tenant}.npz", **zoo.example_inputs(tenant, size, 1))
    (work / "meta.json").write_text(json.dumps({"models": {t: str(p) for t, p in zip(DEMO_TENANTS, paths, strict=True)}}))
    # the plan's own directory as the runners load it: cosched.load, as a user would
    if (work / "plan").exists():
        shutil.rmtree(work / "plan")
    shutil.copytree(out / "plan", work / "plan")
    runners = ["plan", "sequential"] + (list(ORT_RUNNERS) if device == "cpu" else [])
    if not quiet:
        print(f"measuring {', '.join(runners)}: each alone in a fresh process, {repeats} repeats x {iters} runs",
              flush=True)
    times = run_isolated(work, runners, repeats=repeats, iters=iters, warmup=2, progress=not quiet,
                         trace=("plan", "sequential"))
    summary = summarise(times)
    measured = {name: r["median_ms"] for name, r in summary.items()}
    outputs = {name: _saved_outputs(work / f"outputs-{name}.npz") for name in runners}
    reference = SequentialExecutor(compiled.graph).run(load_inputs(work))  # op by op, on the CPU
    diffs = {name: max_abs_diff(got, reference) for name, got in outputs.items()}
    timelines = {name: json.loads((work / f"timeline-{name}.json").read_text()) for name in ("sequential", "plan")}
    png = gantt_compare(
        {f"sequential, measured ({measured['sequential']:.1f} ms)": timelines["sequential"],
         f"cosched plan, measured ({measured['plan']:.1f} ms)": timelines["plan"],
         f"cosched plan, predicted ({compiled.plan.predicted_ms['plan']:.1f} ms)": compiled.timeline()},
        out / "schedule.png", xlabel="time (ms)",
        title=f"{' + '.join(DEMO_TENANTS)} ({size})\non {compiled.plan.device.get('name', device)}",
    )
    ort_best = min((n for n in ORT_RUNNERS if n in measured), key=measured.__getitem__, default=None)
    result = {
        "device": dict(compiled.plan.device),
        "tenants": list(DEMO_TENANTS),
        "size": size,
        "cost_model": compiled.cost_model,
        "compile_s": compiled.compile_s,
        "tasks": len(compiled.plan.tasks),
        "streams": len(compiled.plan.streams),
        "provider": compiled.plan.tasks[0].provider,
        "predicted_ms": dict(compiled.plan.predicted_ms),
        "measured_ms": measured,
        "spread": {name: r["spread"] for name, r in summary.items()},
        "protocol": f"each runner alone in a fresh process, order rotated, {repeats} repeats x {iters} runs",
        "speedup_vs_sequential": measured["sequential"] / measured["plan"],
        "ort_best": ort_best,
        "speedup_vs_ort_best": measured[ort_best] / measured["plan"] if ort_best else None,
        "max_abs_diff": diffs,
        "plan_dir": str(out / "plan"),
        "png": str(png),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _saved_outputs(path: Path) -> dict[str, dict[str, Any]]:
    import numpy as np

    with np.load(path) as data:
        got: dict[str, dict[str, Any]] = {}
        for key in data.files:
            tenant, _, name = key.partition("::")
            got.setdefault(tenant, {})[name] = data[key]
    return got


def format_table(result: dict[str, Any]) -> str:
    predicted, measured = result["predicted_ms"], result["measured_ms"]
    device = result["device"]
    lines = [
        f"{', '.join(result['tenants'])} ({result['size']}) on {device.get('kind', '?')} ({device.get('name', '?')}): "
        f"{result['tasks']} tasks on {result['streams']} streams, tasks run by {result['provider']}, "
        f"compiled in {result['compile_s']:.1f} s with the {result['cost_model']} cost model",
        f"measured: {result['protocol']}",
        "",
        f"  {'':28s} {'predicted':>11s} {'measured':>11s} {'plan faster by':>15s}",
    ]
    names = ["sequential", "plan"] + [n for n in measured if n not in ("sequential", "plan")]
    for name in names:
        pred = predicted.get(name)
        pred_text = f"{pred:8.2f} ms" if pred is not None else f"{'-':>11s}"
        ratio = measured[name] / measured["plan"]
        lines.append(f"  {name:28s} {pred_text} {measured[name]:8.2f} ms {ratio:14.2f}x")
    lines.append("")
    lines.append(f"  plan vs sequential: {result['speedup_vs_sequential']:.2f}x measured, "
                 f"{predicted['sequential'] / predicted['plan']:.2f}x predicted")
    if result["ort_best"]:
        lines.append(f"  plan vs onnxruntime's best here ({result['ort_best']}): {result['speedup_vs_ort_best']:.2f}x")
    worst = max(result["max_abs_diff"].values())
    lines.append(f"  largest output difference from op-by-op execution, over all runners: {worst:.3g}")
    lines += [
        "",
        f"plan:  {result['plan_dir']}   (cosched show {result['plan_dir']})",
        f"chart: {result['png']}   (measured timelines of one run each, and the predicted plan)",
    ]
    return "\n".join(lines)
