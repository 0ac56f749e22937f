"""Markdown tables of a communication profile, for BENCHMARKS.md.

Reads the ``comm-metrics.json`` that ``cosched profile --comm -o DIR`` writes and prints, per
world size, each kind's fitted model parameters (alpha in us, bandwidth in GB/s, the fit's
mean relative error on every size) and predicted/measured on each size held out of a second
fit (:func:`cosched.costmodel.comm.held_out_split`), with a summary of those ratios.

    python -m benchmarks.comm_report DIR/comm-metrics.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def tables(metrics: dict[str, Any]) -> str:
    lines = []
    for world in sorted({f["world"] for f in metrics["fits"]}):
        fits = [f for f in metrics["fits"] if f["world"] == world]
        held = [r for r in metrics["held_out"] if r["world"] == world]
        sizes = sorted({r["nbytes"] for r in held})
        lines.append(f"World {world} ({metrics['backend']}):\n")
        lines.append("| kind | alpha (us) | bandwidth (GB/s) | fit MAPE | "
                     + " | ".join(f"pred/meas {_size(n)}" for n in sizes) + " |")
        lines.append("|---" * (4 + len(sizes)) + "|")
        for fit in fits:
            ratio = {r["nbytes"]: r["ratio"] for r in held if r["kind"] == fit["kind"]}
            gbps = "inf" if fit["bandwidth_gbps"] is None else f"{fit['bandwidth_gbps']:.2f}"
            cells = [f"{ratio[n]:.2f}" if n in ratio else "-" for n in sizes]
            lines.append(f"| {fit['kind']} | {fit['alpha_us']:.0f} | {gbps} | {fit['mape']:.2f} | "
                         + " | ".join(cells) + " |")
        ratios = [r["ratio"] for r in held]
        if ratios:
            lines.append(f"\nHeld out at world {world}: {len(ratios)} sizes, predicted/measured median "
                         f"{statistics.median(ratios):.2f}, mean |ratio - 1| "
                         f"{statistics.mean(abs(r - 1) for r in ratios):.2f}, "
                         f"{sum(0.8 <= r <= 1.25 for r in ratios)} of {len(ratios)} within 0.8-1.25.")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="comm-metrics.json written by `cosched profile --comm`")
    args = parser.parse_args()
    print(tables(json.loads(args.metrics.read_text())))


if __name__ == "__main__":
    main()
