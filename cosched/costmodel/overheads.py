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

The measurement takes a few seconds and is cached per device fingerprint, like
:class:`~cosched.costmodel.device.DeviceSpec`.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cosched.costmodel.device import DeviceSpec, default_cache_dir
from cosched.errors import DeviceError

__all__ = ["RuntimeCosts", "measure_runtime_costs"]

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


def measure_runtime_costs(device: DeviceSpec, base_threads: int = 1, cache_dir: str | Path | None = None,
                          refresh: bool = False) -> RuntimeCosts:
    """The runtime costs of ``device`` (cached per fingerprint; see the module docstring)."""
    if device.kind != "cpu":
        return RuntimeCosts(device.kind, device.cores, 0.0, CUDA_WAIT_MS, float("inf"), base_threads)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "runtime-costs" / f"{device.fingerprint}-v{SCHEMA_VERSION}.json"
    if path.exists() and not refresh:
        try:
            costs = RuntimeCosts.from_json(json.loads(path.read_text()), str(path))
            if costs.base_threads == base_threads and costs.cores == device.cores:
                return costs
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable runtime costs %s: %s", path, exc)
    dispatch, wait = _dispatch_and_wait_ms()
    costs = RuntimeCosts("cpu", device.cores, dispatch, wait, _parallel_half_ms(device.cores), base_threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs.to_json(), indent=2) + "\n")
    log.info("runtime costs of %s: dispatch %.1f us, wait %.1f us, parallel half %.3f ms; cached in %s",
             device.name, dispatch * 1e3, wait * 1e3, costs.parallel_half_ms, path)
    return costs


def _dispatch_and_wait_ms(n: int = 400, rounds: int = 5) -> tuple[float, float]:
    """Per-task dispatch (one stream of no-op tasks) and per hand-off wait (two streams that
    alternate through events), through the CPU backend; the fastest of ``rounds``."""
    from functools import partial

    from cosched.codegen.steps import Step
    from cosched.runtime.cpu import CpuBackend
    from cosched.runtime.program import PlanProgram, TaskProgram, interpret
    from cosched.runtime.traced import TracedTask

    tasks = {t: TaskProgram(t, "noop", "calibration", (), (), TracedTask((), (), lambda: ()))
             for t in range(2 * n)}
    one = PlanProgram((partial(interpret, tuple(Step(0, "run", task=t) for t in range(2 * n))),),
                      partial(interpret, ()), 0, (0,), {})
    ping: list[Step] = []
    pong: list[Step] = []
    for i in range(n):  # stream 0 runs 2i, stream 1 runs 2i+1 after it, and so on
        ping += [Step(0, "wait", event=2 * i - 1)] if i else []
        ping += [Step(0, "run", task=2 * i), Step(0, "record", event=2 * i)]
        pong += [Step(1, "wait", event=2 * i), Step(1, "run", task=2 * i + 1), Step(1, "record", event=2 * i + 1)]
    two = PlanProgram((partial(interpret, tuple(ping)), partial(interpret, tuple(pong))),
                      partial(interpret, ()), 2 * n, (0, 0), {})
    out = []
    for program in (one, two):
        backend = CpuBackend(program, tasks, threads_per_stream=1)
        try:
            backend.execute({})
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                backend.execute({})
                samples.append((time.perf_counter() - start) * 1e3)
            out.append(min(samples))  # the least disturbed round
        finally:
            backend.close()
    dispatch = out[0] / (2 * n)
    handoffs = 2 * n - 1
    return dispatch, max(0.0, (out[1] - 2 * n * dispatch) / handoffs)


def _parallel_half_ms(cores: int) -> float:
    """Fit ``parallel_half_ms`` to convolutions of several sizes at one and ``cores`` threads."""
    import torch

    if cores <= 1:
        return float("inf")
    before = torch.get_num_threads()
    estimates = []
    try:
        with torch.inference_mode():
            for channels, size in ((8, 8), (16, 16), (32, 28), (64, 28), (64, 56), (128, 56)):
                x = torch.randn(1, channels, size, size)
                w = torch.randn(channels, channels, 3, 3)
                times = {}
                for threads in (1, cores):
                    torch.set_num_threads(threads)
                    torch.nn.functional.conv2d(x, w, padding=1)
                    samples = []
                    for _ in range(7):
                        start = time.perf_counter()
                        torch.nn.functional.conv2d(x, w, padding=1)
                        samples.append((time.perf_counter() - start) * 1e3)
                    times[threads] = min(samples)  # the least disturbed run
                one, many = times[1], times[cores]
                gain = one / many - 1.0
                # 1 + (n - 1) L / (L + h) = one / many  =>  h = L ((n - 1) / gain - 1)
                estimates.append(one * ((cores - 1) / gain - 1.0) if gain > 0.01 else one * 100.0)
    finally:
        torch.set_num_threads(before)
    return max(1e-3, statistics.median(estimates))
