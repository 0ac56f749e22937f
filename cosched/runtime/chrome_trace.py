"""Per-task timings of a run and their export as Chrome trace JSON (Perfetto opens it).

Measured tasks go to process ``device <d>`` with one thread row per stream; the plan's
predicted timeline, when present, goes to a separate process so both can be compared.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosched.codegen.plan import Plan

__all__ = ["TaskTiming", "chrome_trace", "write_trace"]

PREDICTED_PID_OFFSET = 1000


@dataclass(frozen=True)
class TaskTiming:
    """One task's measured interval, in microseconds from the start of the run."""

    task: int
    stream: int
    device: int
    start_us: float
    end_us: float

    @property
    def duration_ms(self) -> float:
        return (self.end_us - self.start_us) / 1000.0


def chrome_trace(timings: Sequence[TaskTiming], plan: Plan | None = None) -> dict[str, Any]:
    """A Chrome trace document: complete events (``ph: "X"``), pid = device, tid = stream
    (-1: a rank's communication thread, :mod:`cosched.runtime.comm`)."""
    names = {t.id: (t.name or t.ops[0], t.tenant) for t in plan.tasks} if plan else {}
    events: list[dict[str, Any]] = []
    rows = sorted({(t.device, t.stream) for t in timings})
    for device in sorted({d for d, _ in rows}):
        events.append(_meta("process_name", device, 0, f"device {device} (measured)"))
    for device, stream in rows:
        events.append(_meta("thread_name", device, stream, f"stream {stream}" if stream >= 0 else "communication"))
    for t in sorted(timings, key=lambda t: (t.start_us, t.stream)):
        name, tenant = names.get(t.task, (f"task {t.task}", ""))
        events.append({
            "name": name, "cat": tenant or "task", "ph": "X", "ts": t.start_us,
            "dur": max(0.0, t.end_us - t.start_us), "pid": t.device, "tid": t.stream,
            "args": {"task": t.task, "tenant": tenant},
        })
    if plan is not None and plan.timeline:
        events += _predicted(plan, names)
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _predicted(plan: Plan, names: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
    device_of = {s.id: s.device for s in plan.streams}
    stream_of = plan.stream_of_task()
    events = []
    for device in sorted(set(device_of.values())):
        pid = PREDICTED_PID_OFFSET + device
        events.append(_meta("process_name", pid, 0, f"device {device} (predicted)"))
    for task, (start, end) in sorted(plan.timeline.items()):
        name, tenant = names[task]
        events.append({
            "name": name, "cat": tenant, "ph": "X", "ts": start * 1000.0,
            "dur": max(0.0, (end - start) * 1000.0),
            "pid": PREDICTED_PID_OFFSET + device_of[stream_of[task]], "tid": stream_of[task],
            "args": {"task": task, "tenant": tenant, "predicted": True},
        })
    return events


def _meta(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def write_trace(path: str | Path, timings: Sequence[TaskTiming], plan: Plan | None = None) -> Path:
    """Write :func:`chrome_trace` to ``path``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(chrome_trace(timings, plan)), encoding="utf-8")
    return out
