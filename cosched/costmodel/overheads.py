"""What the runtime pays beyond the tasks themselves, measured once per device.

The cost model predicts how long a task runs, alone or beside others. Running a plan costs
more than that, and the search must see it or it prefers plans the runtime cannot run fast:

- ``dispatch_ms``: the executor's own cost of one task (the interpreter's step, the Python
  call of a traced task), measured through the CPU backend with tasks that do nothing;
- ``wait_ms``: what a stream that waits for another stream's event loses when the event
  comes: on CPU the waiting worker thread's wake-up (measured as the hand-off time of two
  streams that ping-pong events), on CUDA an event wait (a small constant);
- ``parallel_half_ms``: how a task's speed grows with intra-op threads. A plan of k streams
  on c cores gives each stream ``max(1, c // k)`` threads; a task of one-thread latency L
  on n threads is modelled ``1 + (n - 1) * L / (L + parallel_half_ms)`` times faster: tiny
  tasks gain nothing, large convolutions nearly n-fold. ``parallel_half_ms`` is fitted to
  convolutions of several sizes timed at one and at every core.

The measurement (:func:`cosched.calibration.measure_runtime_costs`, which runs the CPU
backend) takes a few seconds and is cached per device fingerprint, like
:class:`~cosched.costmodel.device.DeviceSpec`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from cosched.errors import DeviceError

__all__ = ["CUDA_WAIT_MS", "RuntimeCosts"]

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)

#: CUDA has no threads per stream to share and its event waits cost microseconds.
CUDA_WAIT_MS = 0.005


@dataclass(frozen=True)
class RuntimeCosts:
    """See the module docstring. ``base_threads`` is the intra-op thread count the cost
    model's standalone latencies were measured with."""

    kind: str
    cores: int
    dispatch_ms: float
    wait_ms: float
    parallel_half_ms: float
    base_threads: int = 1

    @staticmethod
    def free(cores: int = 1) -> RuntimeCosts:
        """Costs of an ideal runtime: nothing charged, no thread scaling (tests, old behaviour)."""
        return RuntimeCosts("none", cores, 0.0, 0.0, float("inf"), 1)

    def threads(self, streams: int) -> int:
        """Intra-op threads of each stream in a plan of ``streams`` streams (1 on CUDA)."""
        return max(1, self.cores // max(1, streams)) if self.kind == "cpu" else 1

    def speedup(self, latency_ms: float, threads: int) -> float:
        """How much faster than on one thread a task of one-thread latency ``latency_ms`` runs."""
        if threads <= 1 or self.parallel_half_ms == float("inf"):
            return 1.0
        return 1.0 + (threads - 1) * latency_ms / (latency_ms + self.parallel_half_ms)

    def latency_at(self, latency_ms: float, streams: int) -> float:
        """A task's latency in a plan of ``streams`` streams, from its latency at ``base_threads``."""
        threads = self.threads(streams)
        if threads == self.base_threads:
            return latency_ms
        return latency_ms * self.speedup(latency_ms, self.base_threads) / self.speedup(latency_ms, threads)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<json>") -> RuntimeCosts:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DeviceError(f"{source}: runtime costs schema_version {data.get('schema_version')!r}, "
                              f"expected {SCHEMA_VERSION}")
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise DeviceError(f"{source}: runtime costs fields {sorted(fields)} are not as expected: {exc}") from exc


