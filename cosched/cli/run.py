"""``cosched run``: run a compiled plan, measure it against sequential execution, save outputs."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from cosched.errors import ConfigError, RuntimeFailure
from cosched.files import check_output_dir, check_output_file, read_inputs, save_outputs, writing
from cosched.runtime.report import output_lines

__all__ = ["register"]

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  cosched run plan --compare sequential
  cosched run plan --inputs bert=bert_in.npz --save-outputs out/ --iters 0
  cosched run plan --iters 50 --warmup 5 --trace run.json --json
tenants without --inputs get seeded random inputs (--seed). --iters 0 runs once, untimed.
timings interleave plan and sequential runs on the same inputs; sequential execution runs in
the main thread with every core as intra-op threads, so the speedup is a fair ratio.

multi-device plans (compiled with --devices) run on torch.distributed: one process per
device, started here through torch's elastic launcher (as `torchrun --nproc-per-node N -m
cosched.runtime.distributed PLAN_DIR` would). A round is timed across every rank; --compare
sequential checks the outputs against the unsplit models run sequentially (no speedup is
printed: time the isolated runners with benchmarks/distributed.py). A rank that fails ends
every rank within --timeout seconds, with one error naming the rank, task and cause."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run", help="run a compiled plan; time it against sequential execution",
        description="Load a plan directory (validated, models checked by sha256), run it, and "
                    "with --iters time it; --compare sequential also times sequential execution "
                    "of the same kernels, interleaved, and compares the outputs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("plan_dir", metavar="PLAN_DIR", help="written by `cosched compile`")
    parser.add_argument("--inputs", action="extend", nargs="+", default=[], metavar="TENANT=FILE.npz",
                        help="inputs of a tenant, keyed by the model's input names (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--save-outputs", metavar="DIR", help="write DIR/TENANT.npz, keyed by output names")
    parser.add_argument("--iters", type=int, default=10, metavar="N",
                        help="timed runs (default 10; 0: run once, untimed)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed runs first (default 2)")
    parser.add_argument("--compare", choices=("sequential",), help="also run sequential execution and compare")
    parser.add_argument("--trace", metavar="FILE.json", help="write a Chrome trace of one profiled run")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="CUDA plans: capture the whole plan once as one CUDA graph and replay it")
    parser.add_argument("--write-profile", metavar="STORE.sqlite",
                        help="profile 5 runs and append their task timings to this profile store "
                             "(alone -> standalone records, mutually overlapping pairs -> co-run groups)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2) on NaN or inf in an input or output, or on outputs that "
                             "disagree with sequential execution (default: warn)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="multi-device plans: the longest a rank waits for a peer before the run fails "
                             "(default 60)")
    parser.add_argument("--port", type=int, metavar="PORT",
                        help="multi-device plans: the rendezvous port on 127.0.0.1 (default: a free one)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import cosched

    if args.iters < 0 or args.warmup < 0:
        raise ConfigError(f"--iters and --warmup must be >= 0, got {args.iters} and {args.warmup}")
    if args.save_outputs:
        check_output_dir(args.save_outputs, "--save-outputs")
    if args.trace:
        check_output_file(args.trace, "--trace")
    if args.write_profile:
        check_output_file(args.write_profile, "--write-profile")
    from cosched.codegen.plan import load_plan

    plan = load_plan(args.plan_dir)
    if plan.devices:
        return _main_distributed(args, plan)
    compiled = cosched.load(args.plan_dir)
    if args.cuda_graph and compiled.plan.device_kind != "cuda":
        compiled.close()
        raise ConfigError(f"--cuda-graph needs a CUDA plan; {args.plan_dir} targets {compiled.plan.device_kind}")
    compiled.cuda_graph = args.cuda_graph
    try:
        report = _run(compiled, args)
    finally:
        compiled.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    elif not args.quiet:
        print(format_run(report))
    return 0


def _main_distributed(args: argparse.Namespace, plan: Any) -> int:
    """A multi-device plan: its ranks started through torch's elastic launcher."""
    from cosched.runtime.launch import launch
    from cosched.runtime.report import format_distributed

    for flag, given in (("--cuda-graph", args.cuda_graph), ("--write-profile", args.write_profile)):
        if given:
            raise ConfigError(f"{flag} is for one-device plans; {args.plan_dir} runs on several devices")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    forward = ["--seed", str(args.seed), "--iters", str(args.iters), "--warmup", str(args.warmup)]
    forward += [flag for flag, on in (("--strict", args.strict),) if on]
    for flag, value in (("--save-outputs", args.save_outputs), ("--trace", args.trace), ("--compare", args.compare)):
        if value:
            forward += [flag, str(value)]
    if args.inputs:
        read_inputs(args.inputs, list(plan.tenants))  # a bad file is named before any rank starts
        forward += ["--inputs", *args.inputs]
    result = launch(args.plan_dir, args=forward, timeout_s=args.timeout, port=args.port, plan=plan)
    report = result["report"]
    _check_agreement(report, args.strict)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    elif not args.quiet:
        print(format_distributed(report))
    return 0


def _run(compiled: Any, args: argparse.Namespace) -> dict[str, Any]:
    tenants = list(compiled.graph.tenant_names)
    feed = compiled.inputs(args.seed) | read_inputs(args.inputs, tenants)
    outputs = compiled.run(feed, strict=args.strict)
    report: dict[str, Any] = {
        "plan_dir": str(args.plan_dir),
        "device": dict(compiled.plan.device),
        "tenants": tenants,
        "inputs": {t: ("file" if t in {s.partition("=")[0].strip() for s in args.inputs} else "random")
                   for t in tenants},
        "outputs": {t: {name: {"shape": list(v.shape), "dtype": str(v.dtype)} for name, v in outs.items()}
                    for t, outs in outputs.items()},
        "predicted_ms": dict(compiled.plan.predicted_ms),
        "tasks": len(compiled.plan.tasks),
        "streams": len(compiled.plan.streams),
    }
    if args.iters:
        measured = compiled.benchmark(feed, iters=args.iters, warmup=args.warmup,
                                      compare_sequential=args.compare == "sequential")
        report |= {"iters": args.iters, "warmup": args.warmup, **measured}
    elif args.compare == "sequential":
        from cosched.compiled import max_abs_diff, nonfinite_differences

        reference = compiled.reference.run(feed)
        report["max_abs_diff"] = max_abs_diff(outputs, reference)
        report["mismatches"] = nonfinite_differences(outputs, reference)
    _check_agreement(report, args.strict)
    if compiled.last_warnings:
        report["warnings"] = list(compiled.last_warnings)
    if args.save_outputs:
        report["saved_outputs"] = [str(p) for p in save_outputs(outputs, args.save_outputs)]
    if args.trace:
        with writing("--trace", args.trace):
            report["trace"] = str(compiled.trace(args.trace, feed))
    if args.write_profile:
        written = compiled.write_profile(args.write_profile, feed)
        report["profile_written"] = {"store": args.write_profile, "standalone": len(written.standalone),
                                     "corun_groups": len(written.groups), "skipped": written.skipped}
    return report


def _check_agreement(report: dict[str, Any], strict: bool) -> None:
    """Outputs that differ from sequential execution by a non-finite amount are a mismatch:
    logged (and listed in the report), or with ``strict`` an error."""
    mismatches = report.pop("mismatches", None) or []
    if not mismatches:
        return
    if strict:
        raise RuntimeFailure(f"plan outputs disagree with sequential execution: {mismatches[0]}")
    report["mismatches"] = mismatches
    for message in mismatches:
        log.warning("plan outputs disagree with sequential execution: %s", message)


def format_run(report: dict[str, Any]) -> str:
    device = report["device"]
    lines = [f"plan {report['plan_dir']}: {len(report['tenants'])} tenants, {report['tasks']} tasks on "
             f"{report['streams']} streams ({device.get('kind', '?')}, {device.get('name', '?')})"]
    predicted = report.get("predicted_ms", {})
    medians = report.get("median_ms", {})
    if medians:
        lines.append(f"  {'':14s} {'measured':>12s} {'predicted':>12s}   (median of {report['iters']} runs)")
        for name, ms in medians.items():
            guess = f"{predicted[name]:9.3f} ms" if name in predicted else f"{'-':>12s}"
            lines.append(f"  {name:14s} {ms:9.3f} ms {guess}")
    if "speedup_vs_sequential" in report:
        lines.append(f"  {'speedup':14s} {report['speedup_vs_sequential']:9.2f}x  (sequential / plan)")
    if "max_abs_diff" in report:
        agree = "MISMATCH: not finite, " if report.get("mismatches") else ""
        lines.append(f"  {'max abs diff':14s} {report['max_abs_diff']:9.3g}     "
                     f"({agree}plan vs op-by-op sequential outputs)")
    lines += output_lines(report)
    if report.get("profile_written"):
        w = report["profile_written"]
        lines.append(f"profile store {w['store']}: +{w['standalone']} standalone, +{w['corun_groups']} "
                     f"co-run groups ({w['skipped']} task samples overlapped changing sets, left out)")
    if report.get("trace"):
        lines.append(f"trace: {report['trace']} (open in https://ui.perfetto.dev)")
    return "\n".join(lines)
