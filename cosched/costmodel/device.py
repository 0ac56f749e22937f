"""The device a cost model describes: identity, fingerprint and measured ceilings.

:meth:`DeviceSpec.detect` identifies a device (``"cpu"``, ``"cuda"`` or ``"cuda:i"``), then
measures three ceilings: the FLOP/s of a large float32 matmul, the bandwidth of a large copy
(bytes read plus bytes written per second) and the per-op overhead, which every op of a plan
pays on top of its arithmetic: a tiny op issued the way the runtime issues ops on that
device. On CPU that is inside a traced task (:mod:`cosched.execution.traced`: TorchScript's
interpreter), on CUDA cosched's own dispatch path (registry implementation, environment reads
and writes). Measurements are cached as JSON per fingerprint, so a device is measured once
per machine, torch version and thread count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from cosched.errors import DeviceError
from cosched.execution.cuda_events import cuda_seconds

__all__ = ["DeviceSpec", "default_cache_dir", "parse_device"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 3: the CPU per-op overhead is measured inside a traced task

DeviceKind = Literal["cpu", "cuda"]


def default_cache_dir() -> Path:
    """cosched's cache folder, :func:`cosched.cache.cache_root`; device measurements go in
    its ``devices/`` subfolder."""
    from cosched.cache import cache_root

    return cache_root()


def parse_device(device: str) -> tuple[DeviceKind, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` -> ("cuda", 0); ``"cuda:1"`` -> ("cuda", 1);
    ``"cpu:1"`` -> ("cpu", 1), rank 1 of a multi-device plan on this machine's CPU."""
    text = device.strip().lower()
    if text in ("cpu", "cuda"):
        return text, 0  # type: ignore[return-value]
    kind, colon, index = text.partition(":")
    if colon and kind in ("cpu", "cuda") and index.isdigit():
        return kind, int(index)  # type: ignore[return-value]
    raise DeviceError(f"device {device!r} is not understood; expected 'cpu', 'cpu:<rank>', 'cuda' or 'cuda:<index>'")


@dataclass(frozen=True)
class DeviceSpec:
    """One device and its measured ceilings.

    ``cores`` counts CPU threads torch uses (cpu) or streaming multiprocessors (cuda).
    ``peak_flops`` is FLOP/s, ``bandwidth`` bytes/s (read + write), ``launch_overhead_s``
    the seconds a trivial op takes end to end.
    """

    kind: DeviceKind
    name: str
    fingerprint: str
    cores: int
    memory_bytes: int
    peak_flops: float
    bandwidth: float
    launch_overhead_s: float
    torch_version: str = torch.__version__
    index: int = 0

    def threads_per_member(self, k: int) -> int:
        """CPU threads each of ``k`` co-running tasks gets (0 on CUDA, where streams share SMs).

        The profiler measures co-runs with this policy; a runtime that runs tasks on worker
        threads should use it too, or the learned slowdowns do not describe it.
        """
        return max(1, self.cores // max(1, k)) if self.kind == "cpu" else 0

    # ------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<json>") -> DeviceSpec:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DeviceError(
                f"{source}: device spec schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        if set(fields) != names:
            raise DeviceError(
                f"{source}: device spec fields {sorted(fields)} do not match the expected {sorted(names)}"
            )
        spec = cls(**fields)
        if spec.kind not in ("cpu", "cuda") or min(spec.peak_flops, spec.bandwidth) <= 0:
            raise DeviceError(f"{source}: device spec has kind {spec.kind!r} and non-positive ceilings")
        return spec

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DeviceSpec:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeviceError(f"cannot read device spec {path}: {exc}") from exc
        return cls.from_json(data, str(path))

    # ----------------------------------------------------------- detect
    @classmethod
    def detect(
        cls, device: str = "cpu", cache_dir: str | Path | None = None, refresh: bool = False
    ) -> DeviceSpec:
        """Identify and measure ``device``; reuse the cached measurement for its fingerprint."""
        kind, index = parse_device(device)
        identity = _cpu_identity() if kind == "cpu" else _cuda_identity(index)
        fingerprint = fingerprint_of(identity)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = root / "devices" / f"{fingerprint}-v{SCHEMA_VERSION}.json"
        if path.exists() and not refresh:
            spec = cls.load(path)
            log.debug("device %s: cached measurement %s", device, path)
            return dataclasses.replace(spec, index=index)
        measure = _measure_cpu if kind == "cpu" else _measure_cuda
        peak, bandwidth, overhead = measure(index)
        spec = cls(
            kind=kind, name=identity["name"], fingerprint=fingerprint, cores=identity["cores"],
            memory_bytes=identity["memory_bytes"], peak_flops=peak, bandwidth=bandwidth,
            launch_overhead_s=overhead, index=index,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.save(path)
        log.info("device %s (%s): %.1f GFLOP/s, %.1f GB/s, %.1f us per op; cached in %s",
                 device, spec.name, peak / 1e9, bandwidth / 1e9, overhead * 1e6, path)
        return spec


def fingerprint_of(identity: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of the identity fields (never of measured values)."""
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _cpu_identity() -> dict[str, Any]:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return {
        "kind": "cpu", "name": name, "cores": torch.get_num_threads(),
        "logical_cpus": os.cpu_count() or 1, "memory_bytes": int(memory),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def _cuda_identity(index: int) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise DeviceError(f"device 'cuda:{index}' requested but torch sees no CUDA device")
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device 'cuda:{index}' requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    props = torch.cuda.get_device_properties(index)
    return {
        "kind": "cuda", "name": props.name, "cores": int(props.multi_processor_count),
        "memory_bytes": int(props.total_memory), "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__, "cuda": torch.version.cuda,
    }


def _best_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure_cpu(index: int) -> tuple[float, float, float]:
    """Matmul FLOP/s, copy bandwidth and tiny-op latency on the CPU (well under 2 s)."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    matmul_s = _best_seconds(lambda: torch.mm(a, b, out=out), 5, lambda: None)
    src = torch.randn(16 * 1024 * 1024)  # 64 MiB
    dst = torch.empty_like(src)
    copy_s = _best_seconds(lambda: dst.copy_(src), 5, lambda: None)
    overhead = _traced_overhead(torch.ones(1))
    return 2.0 * n**3 / matmul_s, 2.0 * src.nbytes / copy_s, overhead


def _traced_overhead(tiny: torch.Tensor, ops: int = 200) -> float:
    """Seconds per tiny op inside a traced task of ``ops`` registry Adds (median of 15 runs),
    or through the dispatch path where this torch cannot trace."""
    from cosched.ops.registry import OpContext, lookup

    add = lookup("Add", 14)
    ctx = OpContext("Add", 14)

    def chain(x: torch.Tensor) -> torch.Tensor:
        for _ in range(ops):
            x = add(ctx, x, tiny)
        return x

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(chain, (tiny,), check_trace=False)
            for _ in range(3):
                traced(tiny)
    except Exception:  # no TorchScript here: the runtime runs ops one by one, so measure that
        return _dispatch_overhead(tiny, lambda: None, ops)
    runs = []
    for _ in range(15):
        start = time.perf_counter_ns()
        traced(tiny)
        runs.append((time.perf_counter_ns() - start) / ops)
    return statistics.median(runs) * 1e-9


def _dispatch_overhead(tiny: torch.Tensor, sync: Callable[[], None], ops: int = 200) -> float:
    """Seconds per tiny op issued the way executors issue ops: a registry implementation
    called on tensors read from, and written to, an environment dict (median of 15 bursts)."""
    from cosched.ops.registry import OpContext, lookup

    add = lookup("Add", 14)
    ctx = OpContext("Add", 14)
    env = {"a": tiny, "b": tiny}
    bursts = []
    for _ in range(15):
        sync()
        start = time.perf_counter_ns()
        for _ in range(ops):
            env["c"] = add(ctx, env["a"], env["b"])
        sync()
        bursts.append((time.perf_counter_ns() - start) / ops)
    return statistics.median(bursts) * 1e-9


def _measure_cuda(index: int) -> tuple[float, float, float]:
    """The same three ceilings on a CUDA device, timed with CUDA events."""
    device = torch.device("cuda", index)
    with torch.cuda.device(device):
        n = 8192
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        matmul_s = _event_seconds(lambda: torch.mm(a, b), 5)
        src = torch.empty(256 * 1024 * 1024, device=device)  # 1 GiB
        dst = torch.empty_like(src)
        copy_s = _event_seconds(lambda: dst.copy_(src), 5)
        overhead = _dispatch_overhead(
            torch.ones(1, device=device), lambda: torch.cuda.synchronize(device)
        )
    return 2.0 * n**3 / matmul_s, 2.0 * 256 * 1024 * 1024 * 4 / copy_s, overhead


def _event_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    return min(cuda_seconds(fn) for _ in range(repeats))
