"""The report of a distributed run: what rank 0 gathers, as a dict and as text.

``distributed_report`` merges every rank's outputs, rounds and memory into the report that
``cosched run`` prints for a multi-device plan (the same keys as a one-device run's where
they mean the same, plus one entry per rank):

- ``median_ms["plan"]``: the median round, timed on rank 0 from a barrier to a barrier;
- per rank: its device, streams and tasks, ``comm_ms`` (median time its communication
  thread spent in torch.distributed calls per round, waiting for peers included),
  ``rss_peak_bytes`` (peak resident memory), ``rss_held_bytes`` (resident after the timed
  rounds) and ``rss_base_bytes`` (after start-up, before the plan), against the plan's
  accounting of the device (``needed_bytes``: weights plus peak activations). The peak
  includes re-importing the plan's graph, which parses every tenant's model file (weights
  included) before the rank keeps only its shard;
- ``comm_share``: the largest rank's ``comm_ms`` over the round;
- with ``--compare sequential``: the outputs against single-device sequential execution of
  the unsplit models (``max_abs_diff``, ``max_rel_err``, and ``mismatches``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

import numpy as np

from cosched.codegen.plan import Plan
from cosched.errors import RuntimeFailure
from cosched.ir.graph import Graph

__all__ = ["distributed_report", "format_distributed", "output_lines"]

Outputs = dict[str, dict[str, np.ndarray]]


def distributed_report(plan: Plan, graph: Graph, feed: Mapping[str, Any], ranks: Sequence[Mapping[str, Any]],
                       args: argparse.Namespace, *, feed_given: bool = False) -> tuple[dict[str, Any], Outputs]:
    """The report of a run and every tenant's outputs (see the module docstring);
    ``feed_given``: the launcher passed every tenant's inputs (none are random)."""
    from cosched.execution.bindings import check_finite

    outputs: Outputs = {}
    for r in ranks:
        for tenant, values in r["outputs"].items():
            outputs.setdefault(tenant, {}).update(values)
    missing = [f"{t.name}:{own}" for t in graph.tenants for own, _ in t.outputs if own not in outputs.get(t.name, {})]
    if missing:
        raise RuntimeFailure(f"no rank holds the output(s) {missing[:4]} after the run")
    outputs = {t: outputs[t] for t in graph.tenant_names}
    given = set(graph.tenant_names) if feed_given else {s.partition("=")[0].strip() for s in args.inputs}
    rounds = list(ranks[0]["round_ms"])
    report: dict[str, Any] = {
        "plan_dir": str(args.plan_dir),
        "device": {"kind": plan.device_kind, "name": plan.device.get("name", "?"), "ranks": len(plan.devices)},
        "tenants": list(graph.tenant_names),
        "inputs": {t: ("file" if t in given else "random") for t in graph.tenant_names},
        "outputs": {t: {n: {"shape": list(v.shape), "dtype": str(v.dtype)} for n, v in outs.items()}
                    for t, outs in outputs.items()},
        "predicted_ms": dict(plan.predicted_ms),
        "tasks": len(plan.tasks),
        "streams": len(plan.streams),
        "ranks": [_rank_entry(plan, r) for r in ranks],
    }
    if args.iters:
        plan_ms = median(rounds)
        report |= {"iters": args.iters, "warmup": args.warmup, "median_ms": {"plan": plan_ms},
                   "spread": {"plan": [min(rounds), max(rounds)]},
                   "comm_share": max(r["comm_ms"] for r in ranks) / plan_ms if plan_ms else 0.0}
    skip = check_finite(feed, "input")  # NaN out of NaN in is the input's doing
    warnings = check_finite(outputs, "output", strict=args.strict, skip=skip)
    if warnings or skip:
        report["warnings"] = [m for found in (skip, warnings) for ms in found.values() for m in ms]
    if args.compare == "sequential":
        report |= _compare(plan, feed, outputs, args.strict)
    if args.save_outputs:
        from cosched.files import save_outputs

        report["saved_outputs"] = [str(p) for p in save_outputs(outputs, args.save_outputs)]
    if args.trace:
        from cosched.runtime.chrome_trace import write_trace

        timings = [t for r in ranks for t in r["timings"]]
        report["trace"] = str(write_trace(args.trace, timings, plan))
    return report, outputs


def _rank_entry(plan: Plan, r: Mapping[str, Any]) -> dict[str, Any]:
    entry = plan.devices[r["rank"]]
    streams = [s for s in plan.streams if s.device == entry.rank]
    return {
        "rank": entry.rank, "device": entry.label, "streams": len(streams),
        "tasks": sum(len(s.tasks) for s in streams),
        "comm_tasks": sum(1 for c in plan.comms for s in streams if c.task in s.tasks),
        "comm_ms": r["comm_ms"], "weight_bytes": entry.weight_bytes,
        "peak_activation_bytes": entry.peak_activation_bytes, "needed_bytes": entry.needed_bytes,
        "rss_base_bytes": r["rss_base_bytes"], "rss_peak_bytes": r["rss_peak_bytes"],
        "rss_held_bytes": r["rss_held_bytes"],
    }


def _compare(plan: Plan, feed: Mapping[str, Any], outputs: Outputs, strict: bool) -> dict[str, Any]:
    """The outputs against sequential execution of the unsplit models, on this process."""
    from cosched.codegen.rebuild import imported_graph
    from cosched.execution.compare import compare_outputs
    from cosched.runtime.sequential import SequentialExecutor

    reference = SequentialExecutor(imported_graph(plan), "cpu").run(feed)
    found = compare_outputs(outputs, reference, ("plan", "sequential"))
    if found.problems and strict:
        raise RuntimeFailure(f"plan outputs disagree with sequential execution: {found.problems[0]}")
    result: dict[str, Any] = {"max_abs_diff": found.max_abs_diff, "max_rel_err": found.max_rel_err}
    if found.problems:
        result["mismatches"] = list(found.problems)
    return result


def format_distributed(report: Mapping[str, Any]) -> str:
    """``report`` as the lines ``cosched run`` prints."""
    device = report["device"]
    lines = [f"plan {report['plan_dir']}: {len(report['tenants'])} tenants, {report['tasks']} tasks on "
             f"{report['streams']} streams over {device['ranks']} ranks ({device['kind']}, {device['name']})"]
    if "median_ms" in report:
        predicted = report["predicted_ms"].get("plan")
        guess = f", predicted {predicted:.3f} ms" if predicted is not None else ""
        lines.append(f"  round {report['median_ms']['plan']:9.3f} ms (median of {report['iters']}, every rank, "
                     f"barrier to barrier{guess}); {100 * report['comm_share']:.0f}% of it in communication "
                     "calls (waiting for peers included)")
    for r in report["ranks"]:
        lines.append(f"  rank {r['rank']} {r['device']:7s} {r['streams']} streams, {r['tasks']} tasks "
                     f"({r['comm_tasks']} communication), comm {r['comm_ms']:.3f} ms; memory: plan "
                     f"{_mib(r['needed_bytes'])}, resident +{_mib(r['rss_held_bytes'] - r['rss_base_bytes'])} "
                     f"over start-up (peak +{_mib(r['rss_peak_bytes'] - r['rss_base_bytes'])})")
    if "max_abs_diff" in report:
        agree = "MISMATCH, " if report.get("mismatches") else ""
        lines.append(f"  max abs diff {report['max_abs_diff']:9.3g} ({agree}relative {report['max_rel_err']:.3g}; "
                     "vs single-device sequential execution of the unsplit models)")
    lines += [f"  mismatch: {m}" for m in report.get("mismatches", [])]
    lines += output_lines(report)
    if report.get("trace"):
        lines.append(f"trace: {report['trace']} (a process per rank; open in https://ui.perfetto.dev)")
    return "\n".join(lines)


def output_lines(report: Mapping[str, Any]) -> list[str]:
    """A run report's warnings, each tenant's outputs (names, dtypes, shapes) and the saved
    files, as ``cosched run`` prints them for one device or several."""
    lines = [f"  warning: {m}" for m in report.get("warnings", [])]
    for tenant, outs in report["outputs"].items():
        shapes = ", ".join(f"{n} {o['dtype']}{o['shape']}" for n, o in outs.items())
        lines.append(f"  {tenant} ({report['inputs'][tenant]} inputs): {shapes}")
    if report.get("saved_outputs"):
        lines.append("saved outputs: " + ", ".join(report["saved_outputs"]))
    return lines


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
