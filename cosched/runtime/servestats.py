"""What a server counted: per tenant requests, latency percentiles and SLO attainment
(:class:`TenantStats`), per active set the dispatches (:class:`ServerStats`), and the
bounded latency sample percentiles are taken from (:class:`Samples`)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from cosched.errors import ConfigError

__all__ = ["MAX_SAMPLES", "Samples", "ServerStats", "TenantStats"]

#: latencies kept per tenant for percentiles; past it a uniform sample is kept (reservoir)
MAX_SAMPLES = 1_000_000


@dataclass(frozen=True)
class TenantStats:
    """One tenant's requests. Latencies are submit -> result over completed requests;
    queueing is submit -> dispatch start and execution dispatch start -> end, averaged over
    completed requests. ``slo_attainment`` is the share of finished requests (completed,
    failed, rejected or cancelled) that completed within ``slo_ms``; None without an SLO or
    before any request finished. ``pending``: queued or running when the stats were taken."""

    tenant: str
    submitted: int
    completed: int
    failed: int
    rejected: int
    cancelled: int
    pending: int
    slo_ms: float | None
    slo_attainment: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_queue_ms: float | None
    mean_exec_ms: float | None


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of a server's counters. ``per_set``: dispatches per active set (named by
    :func:`cosched.runtime.serve.set_name`); ``sources``: whether each set that ran had the full plan (``"full"``),
    a plan found by the search (``"compiled"``) or one the runtime composed from the full
    plan (``"composed"``)."""

    tenants: tuple[TenantStats, ...]
    dispatches: int
    per_set: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: dispatches that started while another lane's ran (``lanes`` > 1)
    overlapped: int = 0

    @property
    def composed(self) -> tuple[str, ...]:
        """The sets that ran on a composed plan (no plan for them was compiled)."""
        return tuple(sorted(s for s, src in self.sources.items() if src == "composed"))

    def tenant(self, name: str) -> TenantStats:
        for t in self.tenants:
            if t.tenant == name:
                return t
        raise ConfigError(f"no tenant {name!r} in these stats; tenants: {[t.tenant for t in self.tenants]}")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (numbers, strings, None)."""
        return {"tenants": {t.tenant: asdict(t) for t in self.tenants}, "dispatches": self.dispatches,
                "overlapped": self.overlapped, "per_set": dict(self.per_set), "sources": dict(self.sources),
                "composed": list(self.composed)}

    def format(self) -> str:
        """A small text table, one row per tenant, then the dispatches per active set."""
        head = ("tenant", "submitted", "done", "failed", "rejected", "cancelled", "p50 ms", "p95 ms", "p99 ms",
                "queue ms", "exec ms", "slo ms", "slo met")
        rows = [head] + [(t.tenant, str(t.submitted), str(t.completed), str(t.failed), str(t.rejected),
                          str(t.cancelled), _num(t.p50_ms), _num(t.p95_ms), _num(t.p99_ms), _num(t.mean_queue_ms),
                          _num(t.mean_exec_ms), _num(t.slo_ms),
                          "-" if t.slo_attainment is None else f"{100 * t.slo_attainment:.1f}%")
                         for t in self.tenants]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        sets = ", ".join(f"{s}: {n}" + (" (composed)" if self.sources.get(s) == "composed" else "")
                         for s, n in sorted(self.per_set.items()))
        lines.append(f"dispatches: {self.dispatches}" + (f" ({sets})" if sets else "")
                     + (f"; {self.overlapped} beside another" if self.overlapped else ""))
        return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


class Samples:
    """Up to ``MAX_SAMPLES`` latencies; past that a uniform reservoir sample (algorithm R,
    seeded, so runs are repeatable), which keeps percentiles unbiased in bounded memory."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.seen = 0
        self._rng = random.Random(0)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < MAX_SAMPLES:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.seen)
            if j < MAX_SAMPLES:
                self.values[j] = value
