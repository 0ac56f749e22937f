"""``cosched demo``: the whole pipeline on a tiny-zoo tenant mix, with no arguments.

Exports tiny zoo models (cached), compiles them together for the device present, runs the
plan against sequential execution of the same kernels (interleaved, same inputs), prints
predicted and measured milliseconds, and writes the plan directory and a Gantt chart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cosched.errors import ConfigError

__all__ = ["DEMO_TENANTS", "register"]

DEMO_TENANTS = ("resnet50", "bert", "mobilenet_v2")

DESCRIPTION = f"""\
Compiles tiny versions of {", ".join(DEMO_TENANTS)} together as tenants of one plan for the
device present (cuda if torch sees one, else cpu), runs the plan against sequential execution
of the same kernels (interleaved runs, same inputs), prints predicted and measured ms,
speedup and the largest output difference, and writes under --out:
  plan/          the plan directory (cosched run / cosched show read it)
  schedule.png   Gantt charts of the predicted sequential baseline and of the plan
  demo.json      the numbers printed

The cost model is "auto": the trained model cached for this device when there is one, else
a short profiling run (--profile-budget seconds, cached for the next run) to train one. The
learned model knows this machine's per-task overheads and how co-running tasks slow each
other; the roofline model (--cost-model roofline, no profiling, fastest) does not, so its
schedules and predictions are cruder on a CPU. The best candidates and the sequential baseline
are then run on the device, in this process, and the fastest measured is kept
(compile(measure=True)): on a small CPU, where tiny models' tasks contend for the Python GIL,
that is often a one-stream plan. On a 2-core CPU the first
run takes about half a minute (mostly profiling), later runs a few seconds."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="compile, run and plot a tiny multi-tenant mix (no arguments needed)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="cosched-demo", metavar="DIR",
                        help="folder to write (default ./cosched-demo)")
    parser.add_argument("--cost-model", default="auto", metavar="auto|roofline|DIR",
                        help="cost model (default auto, see above)")
    parser.add_argument("--profile-budget", type=float, default=20.0, metavar="S",
                        help="seconds of profiling when no model is cached (default 20)")
    parser.add_argument("--trials", type=int, default=40, metavar="N", help="search trials (default 40)")
    parser.add_argument("--iters", type=int, default=10, metavar="N", help="timed runs each (default 10)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.trials < 0 or args.iters < 1 or args.profile_budget < 0:
        raise ConfigError(f"demo needs --trials >= 0, --iters >= 1 and --profile-budget >= 0; got "
                          f"{args.trials}, {args.iters} and {args.profile_budget}")
    result = run_demo(Path(args.out), cost_model=args.cost_model, profile_budget_s=args.profile_budget,
                      trials=args.trials, iters=args.iters, quiet=args.quiet)
    if not args.quiet:
        print(format_table(result))
    return 0


def run_demo(out: Path, *, cost_model: str = "auto", profile_budget_s: float = 20.0, trials: int = 40,
             iters: int = 10, quiet: bool = False) -> dict[str, Any]:
    """Export, compile, measure, save and plot; returns the numbers (also in demo.json)."""
    import torch

    import cosched
    from cosched import zoo
    from cosched.viz import gantt_compare, schedule_rows

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = [zoo.export(name, size="tiny") for name in DEMO_TENANTS]
    compiled = cosched.compile(paths, names=DEMO_TENANTS, device=device, cost_model=cost_model,
                               trials=trials, profile_budget_s=profile_budget_s, measure=True,
                               progress=not quiet)
    try:
        measured = compiled.benchmark(iters=iters, warmup=2)
    finally:
        compiled.close()
    compiled.save(out / "plan")
    sequential = next(b for b in compiled.search.baselines if b.name == "sequential")
    png = gantt_compare(
        {"sequential": schedule_rows(compiled.graph, sequential.schedule, sequential.sim),
         "cosched plan": compiled.timeline()},
        out / "schedule.png",
        title=f"{' + '.join(DEMO_TENANTS)} (tiny) on {compiled.plan.device.get('name', device)}",
    )
    result = {
        "device": dict(compiled.plan.device),
        "tenants": list(DEMO_TENANTS),
        "cost_model": compiled.cost_model,
        "compile_s": compiled.compile_s,
        "tasks": len(compiled.plan.tasks),
        "streams": len(compiled.plan.streams),
        "predicted_ms": dict(compiled.plan.predicted_ms),
        "measured_ms": measured["median_ms"],
        "finalists_measured_ms": list(compiled.search.measured_ms),
        "speedup_vs_sequential": measured["speedup_vs_sequential"],
        "max_abs_diff": measured["max_abs_diff"],
        "plan_dir": str(out / "plan"),
        "png": str(png),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def format_table(result: dict[str, Any]) -> str:
    predicted, measured = result["predicted_ms"], result["measured_ms"]
    device = result["device"]
    lines = [
        f"{', '.join(result['tenants'])} (tiny) on {device.get('kind', '?')} ({device.get('name', '?')}): "
        f"{result['tasks']} tasks on {result['streams']} streams, compiled in {result['compile_s']:.1f} s "
        f"with the {result['cost_model']} cost model",
        "",
        f"  {'':18s} {'predicted':>12s} {'measured':>12s}",
    ]
    for name in ("sequential", "stream_per_tenant", "greedy", "plan"):
        if name in predicted:
            got = f"{measured[name]:9.3f} ms" if name in measured else f"{'-':>12s}"
            lines.append(f"  {name:18s} {predicted[name]:9.3f} ms {got}")
    lines.append(f"  {'speedup':18s} {predicted['sequential'] / predicted['plan']:11.2f}x "
                 f"{result['speedup_vs_sequential']:11.2f}x")
    lines.append(f"  max abs diff, plan vs sequential outputs: {result['max_abs_diff']:.3g}")
    if result["streams"] == 1:
        lines.append("  (the best candidates and sequential execution were run on this device and "
                     "one stream measured fastest, so the plan runs the tenants' tasks on one "
                     "stream; see BENCHMARKS.md for where concurrency pays)")
    lines += [
        "",
        f"plan:  {result['plan_dir']}   (cosched run {result['plan_dir']} --compare sequential)",
        f"chart: {result['png']}",
    ]
    return "\n".join(lines)
