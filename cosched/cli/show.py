"""``cosched show``: what a plan directory holds, as text, and its schedule as a Gantt chart."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cosched.errors import PlanError
from cosched.files import check_output_file, writing

__all__ = ["format_predicted", "register", "summarize", "text_gantt"]

WIDTH = 64


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "show", help="summarize a plan and draw its schedule (Gantt chart)",
        description="Print a plan's tenants, tasks, streams, events and predicted makespan "
                    "against the baselines, with a text timeline of the streams; --png draws "
                    "the Gantt chart (streams over time, colored by tenant).",
    )
    parser.add_argument("plan_dir", metavar="PLAN_DIR", help="written by `cosched compile`")
    parser.add_argument("--png", metavar="FILE.png", help="write the Gantt chart there")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from cosched.codegen import graph_for_plan, load_plan
    from cosched.compiled import plan_timeline

    if args.png:
        check_output_file(args.png, "--png")
    plan = load_plan(args.plan_dir)
    graph_for_plan(plan)  # validated as `run` validates it, except that any device may be shown
    summary = summarize(plan, _saved_report(Path(args.plan_dir)))
    rows = plan_timeline(plan)
    if args.png:
        from cosched.viz import gantt

        title = f"{Path(args.plan_dir).name}: {', '.join(plan.tenants)} on {plan.device.get('name', '?')}"
        with writing("--png", args.png):
            summary["png"] = str(gantt(rows, args.png, title=title))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif not args.quiet:
        print(format_summary(summary))
        print(text_gantt(rows, plan.tenants))
    return 0


def _saved_report(directory: Path) -> dict[str, Any]:
    """report.json written beside plan.json by CompiledPlan.save, or {} when absent."""
    path = directory / "report.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable JSON report ({exc})") from None
    return report if isinstance(report, dict) else {}


def summarize(plan: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """Counts, predicted makespans and per-stream contents of ``plan`` (plus saved facts)."""
    stream_tasks = {s.id: s.tasks for s in plan.streams}
    tenant_of = {t.id: t.tenant for t in plan.tasks}
    summary: dict[str, Any] = {
        "device": dict(plan.device),
        "tenants": _by_tenant(Counter(t.tenant for t in plan.tasks), plan.tenants),
        "tasks": len(plan.tasks),
        "streams": len(plan.streams),
        "events": len(plan.events),
        "schedule_method": plan.schedule_method,
        "predicted_ms": dict(plan.predicted_ms),
        "per_stream": {
            str(sid): {"tasks": len(tasks), "tenants": _by_tenant(Counter(tenant_of[t] for t in tasks), plan.tenants)}
            for sid, tasks in stream_tasks.items()
        },
    }
    if plan.devices:
        summary["devices"] = [_device_summary(plan, d) for d in plan.devices]
        summary["comms"] = dict(Counter(c.op for c in plan.comms))
    summary |= {k: saved[k] for k in ("compile_s", "cost_model", "trials", "slo", "measured") if k in saved}
    return summary


def _device_summary(plan: Any, d: Any) -> dict[str, Any]:
    """One rank of a multi-device plan: its device, streams, weights and memory."""
    return {
        "rank": d.rank, "device": d.label, "name": d.name,
        "streams": [s.id for s in plan.streams if s.device == d.rank],
        "weights": len(d.weights), "weight_bytes": d.weight_bytes, "weights_file": d.weights_file,
        "peak_activation_bytes": d.peak_activation_bytes, "cap_bytes": d.cap_bytes,
        "memory_bytes": d.memory_bytes,
    }


def _by_tenant(counts: Counter[str], tenants: tuple[str, ...]) -> dict[str, int]:
    """``counts`` in the plan's tenant order, tenants without tasks left out."""
    return {t: counts[t] for t in tenants if counts[t]}


def format_predicted(predicted: dict[str, float]) -> list[str]:
    """Lines of predicted makespans: the plan, then each baseline with the plan's speedup."""
    plan = predicted.get("plan")
    lines = []
    for name, ms in predicted.items():
        speedup = f"   plan {ms / plan:.2f}x faster" if name != "plan" and plan else ""
        lines.append(f"  {name:18s} {ms:10.3f} ms{speedup}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    device = summary["device"]
    lines = [
        f"device     {device.get('kind', '?')} ({device.get('name', '?')})",
        "tenants    " + ", ".join(f"{t} ({n} tasks)" for t, n in summary["tenants"].items()),
        f"tasks      {summary['tasks']} on {summary['streams']} streams, {summary['events']} events"
        f" (schedule: {summary['schedule_method'] or '?'})",
    ]
    if "cost_model" in summary:
        lines.append(f"compiled   in {summary.get('compile_s', 0.0):.1f} s, cost model "
                     f"{summary['cost_model']}, {summary.get('trials', '?')} trials")
    if summary["predicted_ms"]:
        lines += ["predicted makespan:", *format_predicted(summary["predicted_ms"])]
    medians = summary.get("measured", {}).get("median_ms", {})
    if medians:
        lines.append("measured (median): " + ", ".join(f"{k} {v:.3f} ms" for k, v in medians.items()))
    if "devices" in summary:
        comms = ", ".join(f"{n} {op}" for op, n in summary["comms"].items()) or "none"
        lines.append(f"devices    {len(summary['devices'])} ranks; communication tasks: {comms}")
        for d in summary["devices"]:
            shard = f", {d['weights_file']}" if d["weights_file"] else ""
            limit = f", cap {d['cap_bytes']}" if d["cap_bytes"] is not None else ""
            lines.append(f"  rank {d['rank']}  {d['device']}  streams {', '.join(map(str, d['streams'])) or '-'}; "
                         f"{d['weights']} weights ({d['weight_bytes']} bytes{shard}); peak activations "
                         f"{d['peak_activation_bytes']} bytes{limit}")
    lines.append("streams:")
    for sid, info in summary["per_stream"].items():
        mix = ", ".join(f"{t} {n}" for t, n in info["tenants"].items())
        lines.append(f"  stream {sid}: {info['tasks']:4d} tasks ({mix})")
    return "\n".join(lines)


def text_gantt(rows: list[dict[str, Any]], tenants: tuple[str, ...], width: int = WIDTH) -> str:
    """Streams as lines of ``width`` time bins; each bin shows the tenant busiest in it
    (a letter per tenant, '.' idle)."""
    if not rows or not all(r["end_ms"] >= r["start_ms"] for r in rows):
        return "(no predicted timeline in this plan)"
    makespan = max(r["end_ms"] for r in rows) or 1.0
    letters = {t: chr(ord("A") + i) if i < 26 else "#" for i, t in enumerate(tenants)}
    lanes: dict[int, list[Counter[str]]] = {}
    for row in rows:
        bins = lanes.setdefault(row["stream"], [Counter() for _ in range(width)])
        for b in range(width):
            lo, hi = b * makespan / width, (b + 1) * makespan / width
            overlap = min(hi, row["end_ms"]) - max(lo, row["start_ms"])
            if overlap > 0:
                bins[b][row["tenant"]] += overlap
    lines = [f"timeline (predicted, 0 .. {makespan:.3g} ms): "
             + ", ".join(f"{letters[t]}={t}" for t in tenants)]
    for stream in sorted(lanes):
        cells = "".join(letters[c.most_common(1)[0][0]] if c else "." for c in lanes[stream])
        lines.append(f"  stream {stream:<3d}|{cells}|")
    return "\n".join(lines)
