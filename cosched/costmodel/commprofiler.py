"""Profiling communication on the real backend: gloo over loopback on CPU, NCCL on CUDA.

One process per rank, started by ``torch.multiprocessing`` (spawn) and joined into a
``torch.distributed`` process group through a TCP store on a free port of 127.0.0.1; on CUDA,
rank r uses ``cuda:r``, on CPU each rank gets ``cores // world`` threads (more ranks than cores
are allowed, and then share them: say so where the numbers are reported).

Each world size is one launch. Rank 0 reports progress with tqdm and writes the results to a
JSON file the parent reads; every world's rows are appended to the store as soon as it ends, so
a failure in a later world keeps the earlier ones. Kinds (``nbytes`` is the result's bytes on
one rank, as :mod:`cosched.costmodel.comm` defines it):

- ``send_recv``: rank 0 sends ``nbytes`` to rank 1 (the other ranks idle); measured once, in
  the smallest world, and stored with world 2;
- ``all_reduce`` (sum), ``all_gather`` (into one tensor of ``nbytes``), ``all_to_all``
  (``all_to_all_single`` of ``nbytes`` in and out). A kind the backend does not support (gloo
  builds without all-to-all) is detected on a tiny tensor, agreed between the ranks, logged
  at WARNING with the backend's reason and skipped; nothing is recorded for it.

Timing: for each repeat, every rank passes a barrier, then times the operation alone
(``perf_counter_ns``, with CUDA synchronised before and after); after ``warmup`` untimed runs,
each rank takes the median and interquartile range of its repeats, and the record keeps the
largest over ranks (an operation is done when its slowest rank is). Repeats shrink for large
messages (``repeat_bytes / nbytes``, between ``min_repeats`` and ``repeats``) so that a size
sweep to tens of MiB stays within minutes; the count depends on the size alone, so every rank
runs the same sequence of collectives. The (kind, size) pairs run in a seeded shuffled order:
on a shared machine load comes and goes, and a burst then disturbs a few scattered points of
several fits instead of a run of neighbouring sizes of one kind, which would bend its fit.

Bounded time: every collective has ``op_timeout_s`` (the process group's timeout), each world's
launch ``timeout_s`` in all; a rank that raises or exits ends the launch at once (the others
are terminated) and the parent raises :class:`ProfileError` naming the ranks and their errors.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import math
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosched.costmodel.comm import KINDS
from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.store import CommRecord, ProfileStore
from cosched.errors import ConfigError, ProfileError

__all__ = ["BACKENDS", "CommProfileConfig", "message_sizes", "profile_comm", "repeats_for", "run_ranks"]

log = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")
ELEMENT_BYTES = 4  # float32


@dataclass(frozen=True)
class CommProfileConfig:
    """What to measure and how long it may take."""

    backend: str = "gloo"
    world_sizes: tuple[int, ...] = (2, 4)
    kinds: tuple[str, ...] = KINDS
    min_bytes: int = 4
    max_bytes: int = 16 << 20
    sizes: int = 12
    warmup: int = 2
    repeats: int = 15
    min_repeats: int = 3
    repeat_bytes: int = 64 << 20
    op_timeout_s: float = 60.0
    timeout_s: float = 600.0
    port: int | None = None
    seed: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r} is not one of {list(BACKENDS)}")
        if not self.world_sizes or min(self.world_sizes) < 2:
            problems.append(f"world sizes {list(self.world_sizes)} must each be >= 2")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown or not self.kinds:
            problems.append(f"kinds {list(self.kinds)} must be a non-empty subset of {list(KINDS)}")
        if not 1 <= self.min_bytes <= self.max_bytes:
            problems.append(f"1 <= min_bytes <= max_bytes must hold, got {self.min_bytes} and {self.max_bytes}")
        if self.sizes < 1 or self.warmup < 0 or not 1 <= self.min_repeats <= self.repeats:
            problems.append(f"sizes >= 1, warmup >= 0 and 1 <= min_repeats <= repeats must hold, got "
                            f"{self.sizes}, {self.warmup}, {self.min_repeats} and {self.repeats}")
        if not (self.op_timeout_s > 0 and self.timeout_s > 0):
            problems.append(f"timeouts must be > 0 s, got {self.op_timeout_s} and {self.timeout_s}")
        if self.port is not None and not 1 <= self.port <= 65535:
            problems.append(f"port {self.port} is not a TCP port")
        if problems:
            raise ConfigError("communication profile: " + "; ".join(problems))


def message_sizes(config: CommProfileConfig, world: int) -> list[int]:
    """``config.sizes`` log-spaced sizes from ``min_bytes`` to ``max_bytes``, each rounded to a
    whole number of float32 elements per rank's share (a multiple of ``4 * world``)."""
    unit = ELEMENT_BYTES * world
    raw = np.geomspace(config.min_bytes, config.max_bytes, config.sizes)
    return sorted({max(unit, round(float(n) / unit) * unit) for n in raw})


def repeats_for(config: CommProfileConfig, nbytes: int) -> int:
    """Timed repeats of one size: ``repeat_bytes / nbytes`` within [min_repeats, repeats]."""
    return max(config.min_repeats, min(config.repeats, config.repeat_bytes // max(nbytes, 1)))


def profile_comm(device: DeviceSpec, config: CommProfileConfig, store: ProfileStore) -> list[CommRecord]:
    """Measure every kind at every size over each world size, append to ``store`` (keyed by
    ``device``'s fingerprint and the backend) world by world, and return the records."""
    _check_backend(config)
    records: list[CommRecord] = []
    for index, world in enumerate(sorted(set(config.world_sizes))):
        kinds = [k for k in config.kinds if k != "send_recv" or index == 0]
        plan = [(kind, n, repeats_for(config, n)) for kind in kinds for n in message_sizes(config, world)]
        random.Random(config.seed + world).shuffle(plan)  # load drift spreads over kinds and sizes
        with tempfile.TemporaryDirectory(prefix="cosched-comm-") as tmp:
            result = Path(tmp) / "result.json"
            run_ranks(_measure_rank, world, (config.backend, plan, asdict(config), str(result)),
                      timeout_s=config.timeout_s, port=config.port,
                      what=f"communication profile ({config.backend}, world {world})")
            try:
                found = json.loads(result.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ProfileError(f"communication profile ({config.backend}, world {world}): rank 0 "
                                   f"wrote no readable result ({exc})") from exc
        for kind, reason in found["skipped"].items():
            log.warning("%s does not support %s over %d ranks, so it was not profiled: %s",
                        config.backend, kind, world, reason)
        rows = [CommRecord(config.backend, r["kind"], 2 if r["kind"] == "send_recv" else world,
                           r["nbytes"], r["median_ms"], r["spread_ms"], r["repeats"]) for r in found["records"]]
        store.add_comm(device, rows)
        records.extend(rows)
    return records


def _check_backend(config: CommProfileConfig) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        raise ProfileError("this torch was built without torch.distributed; communication cannot be profiled")
    if config.backend == "gloo" and not dist.is_gloo_available():
        raise ProfileError("this torch has no gloo backend; expected one for profiling CPU communication")
    if config.backend == "nccl":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not dist.is_nccl_available() or count < max(config.world_sizes):
            raise ProfileError(
                f"NCCL over world sizes {list(config.world_sizes)} needs NCCL and a GPU per rank; this "
                f"torch has NCCL: {dist.is_nccl_available()}, GPUs: {count}; lower --world-sizes or use gloo"
            )


# ----------------------------------------------------------------- launching
def run_ranks(fn: Callable[..., None], world: int, args: tuple[Any, ...], *, timeout_s: float,
              port: int | None = None, what: str = "distributed run") -> None:
    """Run ``fn(rank, world, port, *args)`` in ``world`` spawned processes; return when all
    end well. A rank that raises or dies, a busy ``port`` or ``timeout_s`` passing raises
    :class:`ProfileError` (naming the ranks and their errors) after the others are ended."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

    chosen = _free_port() if port is None else _check_port(port, what)
    with tempfile.TemporaryDirectory(prefix="cosched-ranks-") as errors_dir:
        context = mp.start_processes(_guarded, args=(fn, errors_dir, world, chosen, *args), nprocs=world,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)), grace_period=2.0):
                if time.monotonic() >= deadline:
                    raise ProfileError(f"{what}: the {world} ranks did not finish within {timeout_s:g} s "
                                       "and were ended; raise the timeout, or look for a rank that hangs")
        except ProcessException as exc:
            errors = sorted(Path(errors_dir).glob("rank*.txt"), key=lambda p: int(p.stem[4:]))
            shown = "; ".join(f"{p.stem.replace('rank', 'rank ')}: {p.read_text()}" for p in errors)
            if not shown and isinstance(exc, ProcessExitedException):  # died without raising
                shown = f"rank {exc.error_index}: " + (f"killed by {exc.signal_name}" if exc.signal_name
                                                        else f"exited with code {exc.exit_code}")
                shown += _script_hint()
            raise ProfileError(f"{what} on 127.0.0.1:{chosen} failed: {shown or str(exc).strip()}") from None
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join()


def _script_hint() -> str:
    """Why a rank may die before it starts: spawned processes import the parent's main script,
    and a script that calls cosched at import time (no ``if __name__ == "__main__":``) then
    runs again in the rank and fails."""
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) and getattr(main, "__spec__", None) is None:
        return (f" before it started; ranks are spawned processes that import your script "
                f"{main.__file__}: put its work under `if __name__ == \"__main__\":`")  # type: ignore[union-attr]
    return ""


def _guarded(rank: int, fn: Callable[..., None], errors_dir: str, *args: Any) -> None:
    """``fn(rank, *args)``; an exception is also written, as one line, to ``rank<r>.txt``."""
    try:
        fn(rank, *args)
    except BaseException as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        (Path(errors_dir) / f"rank{rank}.txt").write_text(f"{type(exc).__name__}: {line}")
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_port(port: int, what: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
            raise ProfileError(f"{what}: port {port} on 127.0.0.1 {reason}; pick another port, or "
                               "leave the port unset to use a free one") from exc
    return port


# --------------------------------------------------------------- in a rank
def _measure_rank(rank: int, world: int, port: int, backend: str, plan: list[tuple[str, int, int]],
                  settings: dict[str, Any], result: str) -> None:
    """The body of one rank: measure ``plan`` and, on rank 0, write the records to ``result``."""
    import torch.distributed as dist
    from tqdm import tqdm

    config = CommProfileConfig(**{**settings, "world_sizes": tuple(settings["world_sizes"]),
                                  "kinds": tuple(settings["kinds"])})
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=config.op_timeout_s))
    try:
        skipped = {kind: reason for kind in dict.fromkeys(k for k, _, _ in plan)
                   if (reason := _unsupported(kind, rank, world, device)) is not None}
        records = []
        for kind, nbytes, repeats in tqdm(plan, desc=f"{backend} world {world}", unit="size",
                                          disable=config.quiet or rank != 0, leave=False):
            if kind in skipped:
                continue
            op = _operation(kind, nbytes, rank, world, device)
            times = _time(op, config.warmup, repeats, device)
            stats = torch.tensor([statistics.median(times), _iqr(times)], dtype=torch.float64, device=device)
            dist.all_reduce(stats, op=dist.ReduceOp.MAX)
            records.append({"kind": kind, "nbytes": nbytes, "median_ms": float(stats[0]),
                            "spread_ms": float(stats[1]), "repeats": repeats})
        if rank == 0:
            Path(result).write_text(json.dumps({"records": records, "skipped": skipped}))
    finally:
        dist.destroy_process_group()


def _unsupported(kind: str, rank: int, world: int, device: torch.device) -> str | None:
    """Why the backend cannot run ``kind`` (tried on a tiny tensor, agreed by every rank), or None."""
    import torch.distributed as dist

    reason = None
    try:
        _operation(kind, ELEMENT_BYTES * world, rank, world, device)()
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    failed = torch.tensor([0.0 if reason is None else 1.0], device=device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if float(failed[0]) == 0.0:
        return None
    return reason or "it failed on another rank"


def _operation(kind: str, nbytes: int, rank: int, world: int, device: torch.device) -> Callable[[], None]:
    """One ``kind`` with a result of ``nbytes`` bytes on this rank, as a call (zeros: sums
    stay finite however often they repeat)."""
    import torch.distributed as dist

    elements = nbytes // ELEMENT_BYTES
    out = torch.zeros(elements, dtype=torch.float32, device=device)
    if kind == "send_recv":
        if rank == 0:
            return lambda: dist.send(out, dst=1)
        return (lambda: _void(dist.recv(out, src=0))) if rank == 1 else (lambda: None)
    if kind == "all_reduce":
        return lambda: dist.all_reduce(out)
    if kind == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        shard = torch.zeros(elements // world, dtype=torch.float32, device=device)
        return lambda: gather(out, shard)
    source = torch.zeros_like(out)
    return lambda: dist.all_to_all_single(out, source)


def _void(_: object) -> None:
    """Drop a return value (``dist.recv`` returns the sender's rank)."""


def _time(op: Callable[[], None], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Milliseconds of ``op`` on this rank for each of ``repeats`` runs, each after a barrier."""
    import torch.distributed as dist

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        op()
    sync()
    times = []
    for _ in range(repeats):
        dist.barrier()
        sync()
        start = time.perf_counter_ns()
        op()
        sync()
        times.append((time.perf_counter_ns() - start) * 1e-6)
    return times


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return float(q[2] - q[0]) if all(map(math.isfinite, q)) else 0.0
