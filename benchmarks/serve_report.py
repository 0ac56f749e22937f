"""The report of :mod:`benchmarks.serve`: the markdown tables and the load-latency PNG.

Only the summary table (:func:`summary_lines`) and the plot are free of absolute times: the
SLO attainment of all requests and the worst tenant's p99 over its SLO, against offered
load, which BENCHMARKS.md quotes for CPU runs. :func:`report_lines` adds the per-tenant
milliseconds for the reader of one run's report.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot", "report_lines", "summary_lines", "worst_p99_over_slo"]


def report_lines(result: Mapping[str, Any]) -> list[str]:
    """The markdown report: command, machine, date; the SLOs; per system and rate the per-tenant
    latency, attainment and throughput; the max sustained load; the notes."""
    meta = result["meta"]
    lines = [f"### Serving the {meta['mix']} mix under {result['arrivals']} load ({meta['device']})", "",
             f"Command: `{result['command']}`; machine: {result['machine']}; date {result['date']}; "
             f"{result['repeats']} repeat(s) x {result['duration_s']:g} s per system and rate, each alone in a "
             "fresh process, systems' order rotated; latency from scheduled arrival to completion.", "",
             "| tenant | solo ms (sequential, every core) | SLO ms |", "|---|---|---|"]
    lines += [f"| {t} | {meta['solo_ms'][t]:.2f} | {meta['slo_ms'][t]:.2f} |" for t in meta["tenants"]]
    lines += ["", *summary_lines(result)]
    lines += ["", "| system | offered req/s | tenant | requests | p50 ms | p99 ms | SLO attainment | req/s done "
                  "| submit lag p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for system, by_rate in result["results"].items():
        for rate, tenants in by_rate.items():
            for tenant, s in tenants.items():
                lines.append(f"| {system} | {rate} | {tenant} | {s['requests']} | {_ms(s['p50_ms'])} | "
                             f"{_ms(s['p99_ms'])} | {s['attainment']:.1%} | {s['throughput_rps']:.2f} | "
                             f"{_ms(s['submit_lag_p99_ms'])} |")
    lines += ["", "| system | max sustained load (>= 99% of requests within SLO) |", "|---|---|"]
    for system, rate in result["max_sustained_rps"].items():
        lines.append(f"| {system} | {f'{rate:g} req/s' if rate is not None else '< lowest rate'} |")
    if result["burst"]:
        b = result["burst"]
        lines += ["", f"Bursty arrivals: ON {b['factor']:g}x the mean rate for {b['on_s']:g} s on average, "
                      f"OFF (silent) {b['on_s'] * (b['factor'] - 1):g} s on average."]
    lines += [f"Note: {n}" for n in result["notes"]]
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def worst_p99_over_slo(tenants: Mapping[str, Mapping[str, Any]], slo_ms: Mapping[str, float]) -> float:
    """The largest p99 / SLO over the tenants of one run (inf when a tenant completed nothing):
    above 1, some tenant's tail misses its objective. Dimensionless, so CPU rows can state it."""
    ratios = [math.inf if s["p99_ms"] is None else s["p99_ms"] / slo_ms[t] for t, s in tenants.items()
              if t != "all" and s["requests"]]
    return max(ratios) if ratios else math.nan


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """Per system and offered load: SLO attainment of all requests and the worst tenant's p99
    over its SLO (a markdown table, no absolute times)."""
    slo = result["meta"]["slo_ms"]
    rates = sorted({float(r) for by_rate in result["results"].values() for r in by_rate})
    head = "| system | " + " | ".join(f"{r:g} req/s" for r in rates) + " | max sustained |"
    lines = [head, "|---|" + "---|" * (len(rates) + 1)]
    for system, by_rate in result["results"].items():
        cells = []
        for rate in rates:
            run = by_rate.get(str(rate)) or by_rate.get(f"{rate:g}") or by_rate.get(rate)
            if run is None:
                cells.append("-")
                continue
            cells.append(f"{run['all']['attainment']:.1%} / {worst_p99_over_slo(run, slo):.2f}")
        best = result["max_sustained_rps"].get(system)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {f'{best:g} req/s' if best is not None else '-'} |")
    return [*lines, "", "Each cell: requests within SLO / the worst tenant's p99 over its SLO."]


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """The worst tenant's p99 over its SLO, and SLO attainment, against offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slo = result["meta"]["slo_ms"]
    fig, (lat, att) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, by_rate in result["results"].items():
        rates = [float(r) for r in by_rate]
        lat.plot(rates, [worst_p99_over_slo(v, slo) for v in by_rate.values()], marker="o", label=system)
        att.plot(rates, [100 * v["all"]["attainment"] for v in by_rate.values()], marker="o", label=system)
    lat.axhline(1, color="grey", linestyle="--", linewidth=1)
    lat.set(xlabel="offered load (req/s)", ylabel="worst tenant's p99 / its SLO", yscale="log",
            title="tail latency against the SLO")
    att.axhline(99, color="grey", linestyle="--", linewidth=1)
    att.set(xlabel="offered load (req/s)", ylabel="requests within SLO (%)", ylim=(0, 101), title="SLO attainment")
    for axes in (lat, att):
        axes.grid(alpha=0.3)
        axes.legend()
    meta = result["meta"]
    fig.suptitle(f"{meta['mix']} mix, {result['arrivals']} arrivals, {meta['device']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
