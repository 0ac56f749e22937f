"""Baseline schedules, always available and always reported beside a search result.

- ``sequential``: one stream, tasks in topological (id) order: what a framework does.
- ``stream-per-tenant``: one stream per tenant, each tenant's tasks in order: blind
  concurrency, no regard for interference.
- ``greedy``: priority list scheduling by bottom level on a few streams with the
  interference guard at the threshold: the decoder with default knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.schedule import Schedule
from cosched.search.simulator import SimResult, simulate

__all__ = [
    "Baseline",
    "all_baselines",
    "greedy",
    "greedy_knobs",
    "sequential",
    "stream_per_tenant",
]

DEFAULT_THRESHOLD = 1.10


@dataclass(frozen=True)
class Baseline:
    name: str
    schedule: Schedule
    sim: SimResult


def sequential(table: CostTable) -> Schedule:
    return Schedule.single([range(table.n)], "sequential")


def stream_per_tenant(table: CostTable) -> Schedule:
    streams = [table.tasks_of_tenant(i) for i in range(len(table.tenants))]
    return Schedule.single(streams, "stream-per-tenant")


def greedy_knobs(table: CostTable, threshold: float = DEFAULT_THRESHOLD) -> DecoderKnobs:
    """Bottom-level priorities on up to 4 streams (one per tenant), guard at ``threshold``."""
    return DecoderKnobs(streams=max(1, min(4, len(table.tenants))), w_bottom=1.0, guard=threshold)


def greedy(table: CostTable, threshold: float = DEFAULT_THRESHOLD) -> tuple[Schedule, SimResult]:
    return decode(table, greedy_knobs(table, threshold), method="greedy")


def all_baselines(table: CostTable, threshold: float = DEFAULT_THRESHOLD) -> tuple[Baseline, ...]:
    """Every baseline with its simulated timeline, in a fixed order."""
    seq = sequential(table)
    out = [Baseline("sequential", seq, simulate(seq, table))]
    per_tenant = stream_per_tenant(table)
    out.append(Baseline("stream-per-tenant", per_tenant, simulate(per_tenant, table)))
    schedule, sim = greedy(table, threshold)
    out.append(Baseline("greedy", schedule, sim))
    return tuple(out)
