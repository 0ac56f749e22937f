"""``cosched compile``: several ONNX models -> one plan directory, with a predicted report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cosched.cli.options import add_model_options, check_model_file, parse_model_options
from cosched.cli.show import format_predicted
from cosched.errors import ConfigError, OptionError
from cosched.files import parse_assignments
from cosched.options import DEFAULTS, OBJECTIVES, PROVIDER_CHOICES, CompileOptions

__all__ = ["FLAGS", "format_report", "options_from_args", "parse_slos", "register"]

#: The flag that sets each compile option, for errors that name the option.
FLAGS = {
    "names": "--name", "device": "--device", "batch": "--batch", "input_shapes": "--shape",
    "cost_model": "--cost-model", "trials": "--trials", "time_budget_s": "--time-budget", "seed": "--seed",
    "slo_ms": "--slo", "objective": "--objective", "max_streams": "--max-streams",
    "interference_threshold": "--interference-threshold", "best_effort": "--best-effort", "study": "--study",
    "profile_budget_s": "--profile-budget", "measure": "--measure", "in_situ": "--no-in-situ",
    "provider": "--provider", "progress": "--quiet", "devices": "--devices", "memory_cap": "--memory-cap",
    "device_spec": "--device-spec", "comm_model": "--comm-model", "splits": "--split",
    "serve": "--serve",
}

EPILOG = """\
examples:
  cosched compile resnet50.onnx bert.onnx mobilenet_v2.onnx -o plan
  cosched compile resnet50.onnx bert.onnx -o plan --cost-model profiles/cpu --trials 200
  cosched compile a.onnx b.onnx -o plan --slo b=5 --objective pareto --json
  cosched compile a.onnx b.onnx -o plan --study sqlite:///search.db   (resumes when run again)
tenant names are the file stems (a.onnx -> a), or --name (one per model, in order);
--slo, --batch and --shape use them.
then: cosched run plan --compare sequential; cosched show plan --png plan.png"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "compile", help="compile ONNX models (one per tenant) into one concurrent plan",
        description="Import the models as tenants of one graph, fuse ops into tasks, pick a cost "
                    "model, search the schedule, and write a plan directory (plan.json, the "
                    "generated plan_module.py, the models and report.json).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", required=True, metavar="PLAN_DIR", help="plan directory to write")
    add_model_options(parser)
    parser.add_argument("--device", default=DEFAULTS.device, help="cpu, cuda or cuda:<i> (default %(default)s)")
    parser.add_argument("--cost-model", default=DEFAULTS.cost_model, metavar="DIR|roofline|auto",
                        help="auto (default): this device's cached model, topped up by profiling the "
                             "task signatures its store lacks within --profile-budget seconds and "
                             "refitted (no cache: profile the models; nothing measured: roofline); "
                             "roofline: no profiling; DIR: written by `cosched profile`")
    parser.add_argument("--profile-budget", dest="profile_budget_s", type=float, default=DEFAULTS.profile_budget_s,
                        metavar="S", help="seconds of profiling --cost-model auto may spend (default %(default)s; 0: none)")
    parser.add_argument("--trials", type=int, default=DEFAULTS.trials, metavar="N",
                        help="search trials (default %(default)s)")
    parser.add_argument("--time-budget", dest="time_budget_s", type=float, default=DEFAULTS.time_budget_s, metavar="S",
                        help="stop the search after S seconds even if trials remain")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="search seed (default %(default)s)")
    parser.add_argument("--slo", action="extend", nargs="+", default=[], metavar="TENANT=MS",
                        help="latency objective of a tenant in ms (repeatable)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=DEFAULTS.objective,
                        help="makespan (default), or pareto: makespan against the SLOs (NSGA-II)")
    parser.add_argument("--max-streams", type=int, default=DEFAULTS.max_streams, metavar="N",
                        help="most streams (default %(default)s)")
    parser.add_argument("--interference-threshold", type=float, default=DEFAULTS.interference_threshold, metavar="X",
                        help="largest predicted slowdown two overlapping tasks may inflict on each "
                             "other (default %(default)s); inf lifts the constraint (throughput first)")
    parser.add_argument("--best-effort", action="store_true", default=DEFAULTS.best_effort,
                        help="keep the best plan found even when an SLO cannot be met")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default=DEFAULTS.provider,
                        help="who runs the tasks: onnxruntime sessions, one per run of a tenant's tasks "
                             "on a stream (CPU only), or cosched's torch kernels; auto (default): "
                             "onnxruntime on CPU, torch on CUDA")
    parser.add_argument("--no-in-situ", dest="in_situ", action="store_false", default=DEFAULTS.in_situ,
                        help="CPU: do not time the graph's tasks in context before the search (by "
                             "default they run one after another at one thread and at every core, "
                             "a few seconds, and the simulator charges those latencies)")
    parser.add_argument("--measure", action="store_true", default=DEFAULTS.measure,
                        help="run the best candidates and the sequential baseline on the device, "
                             "in this process, and keep the fastest measured")
    parser.add_argument("--study", default=DEFAULTS.study, metavar="sqlite:///FILE.db",
                        help="persist the Optuna study there; running again resumes it for the same graph, cost "
                             "model and objective (another gets a new study in the same file)")
    parser.add_argument("--devices", metavar="DEV,DEV,...",
                        help="a multi-device plan: cpu:0,cpu:1 (ranks on this machine, sharing its cores and "
                             "memory) or cuda:0,...,cuda:7; the search places the tenants under --memory-cap")
    parser.add_argument("--memory-cap", metavar="SIZE|DEV=SIZE,...",
                        help="memory each device may use, e.g. 2GB or 512MiB for all, or cuda:0=16GB,cuda:1=8GB "
                             "(default: each device's memory)")
    parser.add_argument("--comm-model", default=DEFAULTS.comm_model, metavar="auto|FILE|DIR",
                        help="what prices the communication of split tenants: auto (default: this device's "
                             "measurement, made once when missing), a comm.json, or DIR from cosched profile --comm")
    parser.add_argument("--device-spec", metavar="SPEC.json",
                        help="plan for devices this machine lacks: a device spec (DeviceSpec JSON) for every "
                             "device of --devices")
    parser.add_argument("--split", action="extend", nargs="+", default=[], metavar="TENANT=KIND",
                        help="split TENANT over every device of --devices even when it fits one: tensor, "
                             "pipeline, embedding-row or embedding-table (repeatable)")
    parser.add_argument("--serve", action="store_true", default=DEFAULTS.serve,
                        help="also search a plan for each set of tenants a server may find active (every "
                             "proper subset up to 5 tenants, else each alone and each pair), kept in the plan "
                             "directory's serve.json for CompiledPlan.serve() (one device only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_main)


def parse_slos(specs: list[str], tenants: list[str] | None = None) -> dict[str, float]:
    """``["bert=5", "dlrm=2.5"]`` -> ``{"bert": 5.0, "dlrm": 2.5}``; errors name the spec,
    and a tenant not among ``tenants`` (when given). :class:`CompileOptions` checks the values."""
    slos = {}
    for tenant, text in parse_assignments(specs, "--slo", "bert=5").items():
        if tenants is not None and tenant not in tenants:
            raise ConfigError(f"--slo {tenant}={text}: unknown tenant {tenant!r}; tenants are {tenants}")
        try:
            slos[tenant] = float(text)
        except ValueError:
            raise ConfigError(f"--slo {tenant}={text}: the SLO must be a number of ms, got {text!r}") from None
    return slos


def options_from_args(args: argparse.Namespace) -> CompileOptions:
    """The compile options that ``args`` give, checked; an error names the flag."""
    model_options = parse_model_options(args)
    try:
        return CompileOptions(
            **model_options, device=args.device, cost_model=args.cost_model, trials=args.trials,
            time_budget_s=args.time_budget_s, seed=args.seed, slo_ms=parse_slos(args.slo, model_options["names"]),
            objective=args.objective, max_streams=args.max_streams,
            interference_threshold=args.interference_threshold, best_effort=args.best_effort,
            study=args.study, profile_budget_s=args.profile_budget_s, measure=args.measure, in_situ=args.in_situ,
            provider=args.provider, progress=not args.quiet, devices=_devices(args.devices),
            memory_cap=_memory_cap(args.memory_cap), device_spec=args.device_spec, comm_model=args.comm_model,
            splits=parse_assignments(args.split, "--split", "bert=tensor"), serve=args.serve,
        )
    except OptionError as exc:
        raise ConfigError(exc.worded(_flag(exc, args), exc.see and FLAGS[exc.see])) from None


def _devices(text: str | None) -> list[str] | None:
    """``--devices cpu:0,cpu:1`` -> ``["cpu:0", "cpu:1"]``."""
    if text is None:
        return None
    devices = [d.strip() for d in text.split(",")]
    if not all(devices):
        raise ConfigError(f"--devices {text!r}: expected device names separated by commas, e.g. cpu:0,cpu:1")
    return devices


def _memory_cap(text: str | None) -> str | dict[str, str] | None:
    """``--memory-cap 2GB`` -> ``"2GB"``; ``cuda:0=16GB,cuda:1=8GB`` -> per device."""
    if text is None or "=" not in text:
        return text
    return dict(parse_assignments([p for p in text.split(",") if p.strip()], "--memory-cap", "cuda:0=16GB"))


def _flag(error: OptionError, args: argparse.Namespace) -> str:
    """The flag (with its value, for a per-tenant one) that set the option ``error`` names."""
    if error.option == "slo_ms" and error.key is not None:
        spec = next(s for s in args.slo if s.partition("=")[0].strip() == error.key)
        return f"--slo {spec}"
    return FLAGS[error.option]


def _check_paths(args: argparse.Namespace) -> None:
    """Output and model paths, before any work: a bad -o fails now, not after the search."""
    from cosched.codegen.plan import check_plan_dir

    check_plan_dir(args.output, "-o")
    for model in args.models:
        check_model_file(model)


def _main(args: argparse.Namespace) -> int:
    import cosched

    options = options_from_args(args)
    _check_paths(args)
    compiled = cosched.compile(args.models, options)
    compiled.save(args.output)
    report = compiled.report() | {"plan_dir": str(Path(args.output))}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    elif not args.quiet:
        print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    device = report.get("device", {})
    lines = [
        f"compiled {len(report['tenants'])} tenants ({', '.join(report['tenants'])}) for "
        f"{device.get('kind', '?')} ({device.get('name', '?')}) in {report.get('compile_s', 0.0):.1f} s",
        f"  {'cost model':18s} {report.get('cost_model', '?')}",
        f"  {'search trials':18s} {report.get('trials', '?')}{' (baselines only)' if report.get('trials') == 0 else ''}",
        f"  {'tasks':18s} {report['tasks']}",
        f"  {'streams':18s} {report['streams']}",
        f"  {'events':18s} {report['events']}",
        "predicted makespan:",
        *format_predicted(report["predicted_ms"]),
    ]
    for tenant, slo in report.get("slo", {}).items():
        met = "met" if slo["predicted_ms"] <= slo["slo_ms"] else "MISSED"
        lines.append(f"  SLO {tenant}: {slo['slo_ms']:g} ms, predicted {slo['predicted_ms']:.3f} ms ({met})")
    if report.get("interference_violations"):
        lines.append(f"  {report['interference_violations']} co-running pair(s) exceed the interference "
                     "threshold (no schedule avoided them)")
    serve = report.get("serve", {})
    if serve:
        lines.append(f"plans for serving ({len(serve)} sets of tenants, predicted makespan):")
        lines += [f"  {name:40s} {row['predicted_ms']:.3f} ms, {row['streams']} stream(s)" for name, row in serve.items()]
    files = "plan.json, plan_module.py, models/, report.json" + (", serve.json" if serve else "")
    lines.append(f"wrote {report['plan_dir']} ({files})")
    return "\n".join(lines)
