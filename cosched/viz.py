"""Gantt charts of schedules: streams over time, one bar per task, colored by tenant.

The input is timeline rows as :meth:`cosched.CompiledPlan.timeline` returns them (dicts with
``task``, ``tenant``, ``stream``, ``start_ms`` and ``end_ms``); :func:`schedule_rows` builds
the same rows from a search schedule and its simulation (e.g. the sequential baseline), so a
plan and its baseline can be drawn side by side with :func:`gantt_compare`.

matplotlib is imported inside the functions, with the non-interactive Agg backend, so
importing this module costs nothing and never opens a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosched.errors import ConfigError

__all__ = ["gantt", "gantt_compare", "schedule_rows"]

Row = Mapping[str, Any]

_REQUIRED = ("task", "tenant", "stream", "start_ms", "end_ms")


def schedule_rows(graph: Any, schedule: Any, sim: Any) -> list[dict[str, Any]]:
    """Timeline rows of a one-device search ``schedule`` simulated as ``sim`` over ``graph``."""
    rows = []
    for stream, tasks in enumerate(schedule.streams):
        for task_id in tasks:
            task = graph.tasks[task_id]
            rows.append({"task": task_id, "name": task.name, "tenant": task.tenant, "stream": stream,
                         "start_ms": float(sim.start[task_id]), "end_ms": float(sim.end[task_id])})
    return rows


def gantt(rows: Sequence[Row], path: str | Path, *, title: str = "schedule") -> Path:
    """Draw ``rows`` as a Gantt chart (one lane per stream) and save it as PNG at ``path``."""
    return gantt_compare({title: rows}, path)


def gantt_compare(panels: Mapping[str, Sequence[Row]], path: str | Path, *, title: str = "",
                  xlabel: str = "time (ms, predicted)") -> Path:
    """One Gantt panel per entry of ``panels`` (e.g. ``{"sequential": ..., "plan": ...}``),
    stacked with a shared time axis and one tenant legend; saved as PNG at ``path``."""
    if not panels:
        raise ConfigError("gantt: no timeline to draw (panels is empty)")
    for name, rows in panels.items():
        _check_rows(name, rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tenants = list(dict.fromkeys(str(r["tenant"]) for rows in panels.values() for r in rows))
    palette = plt.get_cmap("tab10" if len(tenants) <= 10 else "tab20")
    colors = {t: palette(i % palette.N) for i, t in enumerate(tenants)}
    lanes = [len({r["stream"] for r in rows}) for rows in panels.values()]
    height = 1.2 + sum(0.45 * n + 0.9 for n in lanes)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, height), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [n + 1 for n in lanes]})
    for ax, (name, rows) in zip(axes[:, 0], panels.items(), strict=True):
        _draw(ax, name, rows, colors)
    axes[-1, 0].set_xlabel(xlabel)
    handles = [matplotlib.patches.Patch(color=colors[t], label=t) for t in tenants]
    fig.legend(handles=handles, loc="upper right", ncol=min(len(tenants), 6), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if len(tenants) <= 6 else 0.94))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)
    return out


def _check_rows(name: str, rows: Sequence[Row]) -> None:
    if not rows:
        raise ConfigError(f"gantt panel {name!r}: no timeline rows to draw")
    for row in rows:
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise ConfigError(f"gantt panel {name!r}: row {dict(row)} lacks {missing}")
        start, end = float(row["start_ms"]), float(row["end_ms"])
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ConfigError(
                f"gantt panel {name!r}: task {row['task']} has times [{start}, {end}] ms; "
                "expected finite start <= end (a plan without a predicted timeline cannot be drawn)"
            )


def _draw(ax: Any, name: str, rows: Sequence[Row], colors: Mapping[str, Any]) -> None:
    streams = sorted({r["stream"] for r in rows})
    lane = {s: i for i, s in enumerate(streams)}
    makespan = max(float(r["end_ms"]) for r in rows)
    for row in rows:
        start, end = float(row["start_ms"]), float(row["end_ms"])
        ax.barh(lane[row["stream"]], max(end - start, makespan * 1e-4), left=start, height=0.7,
                color=colors[str(row["tenant"])], edgecolor="white", linewidth=0.4)
    ax.set_yticks(range(len(streams)), [f"stream {s}" for s in streams])
    ax.set_ylim(len(streams) - 0.4, -0.6)
    ax.axvline(makespan, color="0.3", linestyle="--", linewidth=0.8)
    ax.set_title(f"{name}: {makespan:.3g} ms, {len(rows)} tasks on {len(streams)} stream(s)",
                 loc="left", fontsize=10)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
