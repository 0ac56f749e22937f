"""A rank of a multi-device plan: ``torchrun --nproc-per-node N -m cosched.runtime.distributed PLAN_DIR``.

One process per device of the plan, started by torch's elastic launcher: by ``torchrun`` for
users who launch their own jobs, or by ``cosched run`` and ``CompiledPlan.run()``
(:mod:`cosched.runtime.launch`), which start the same processes through the same launcher.
Each rank, before any computation:

1. loads the plan (every model and weight shard checked against its sha256), and checks that
   the job's world size is the plan's number of devices and that a CUDA plan's GPU exists;
2. pins itself to its share of the cores (CPU plans assume ``cores // N`` per rank);
3. joins the process group (gloo on CPU, NCCL on CUDA; every blocking call bounded by
   ``--timeout``) and agrees with every other rank that all of them are ready: a rank that
   failed a check makes every rank stop with that rank's error.

Then it runs its part (:class:`cosched.runtime.rank.RankExecutor`) ``--warmup`` + ``--iters``
times. A round is timed on rank 0 from a barrier to a barrier, so it covers every rank's
work. Rank 0 gathers every tenant's outputs (from the last round), per-rank timings, peak
resident memory and communication time, compares outputs with single-device sequential
execution of the unsplit models (``--compare sequential``), writes the Chrome trace (a
process per rank) and prints the report, or hands it to the launcher (``--run-dir``).

A failure anywhere (an exception in a kernel, a peer that died, a wait past ``--timeout``)
ends the rank with one line naming the rank, the task and the cause, written to the elastic
error file so the launcher can report it, and a non-zero exit; the launcher then stops every
other rank. ``COSCHED_FAULT=RANK:TASK:kill|raise|hang`` injects a fault before a task (for
the fault tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from cosched.errors import ConfigError, CoschedError, DeviceError, RuntimeFailure

__all__ = ["RESULT_FILE", "main", "parse_args"]

RESULT_FILE = "result.pkl"
STARTUP_S = 300.0
"""How long ranks wait for each other to start (import, load, check); --timeout bounds the rest."""
FEED_FILE = "feed.pkl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cosched.runtime.distributed",
        description="Run one rank of a multi-device cosched plan; start N of them with "
                    "`torchrun --nproc-per-node N -m cosched.runtime.distributed PLAN_DIR` (N: the plan's "
                    "devices), or let `cosched run PLAN_DIR` start them.",
    )
    parser.add_argument("plan_dir", metavar="PLAN_DIR", help="written by `cosched compile --devices ...`")
    parser.add_argument("--inputs", action="extend", nargs="+", default=[], metavar="TENANT=FILE.npz",
                        help="inputs of a tenant, keyed by the model's input names (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--save-outputs", metavar="DIR", help="rank 0 writes DIR/TENANT.npz")
    parser.add_argument("--iters", type=int, default=10, metavar="N", help="timed rounds (default 10; 0: one)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed rounds first (default 2)")
    parser.add_argument("--compare", choices=("sequential",),
                        help="rank 0 also runs the unsplit models sequentially and compares outputs")
    parser.add_argument("--trace", metavar="FILE.json", help="rank 0 writes a Chrome trace of one profiled round")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="the longest any rank waits for a peer, an input or a stream (default 60 s)")
    parser.add_argument("--strict", action="store_true", help="fail on NaN or inf, or outputs that disagree")
    parser.add_argument("--json", action="store_true", help="rank 0 prints the report as JSON")
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)  # set by cosched.runtime.launch
    args = parser.parse_args(argv)
    if args.iters < 0 or args.warmup < 0:
        raise ConfigError(f"--iters and --warmup must be >= 0, got {args.iters} and {args.warmup}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run this process's rank (see the module docstring); never returns normally from a
    torch.distributed job: the process exits, so no thread blocked in a call to a dead peer
    can keep it alive."""
    rank = int(os.environ.get("RANK", "0"))
    code = 0
    try:
        args = parse_args(argv)
        _Rank(args, rank).main()
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    except BaseException as exc:  # one line, on stderr and in the elastic error file
        code = 2 if isinstance(exc, ConfigError | DeviceError) else 1
        message = str(exc) if isinstance(exc, CoschedError) else f"{type(exc).__name__}: {exc}"
        if not message.startswith(("rank ", "ranks ")):
            message = f"rank {rank}: {message}"
        _record_error(message)
        alone = "--run-dir" not in (argv if argv is not None else sys.argv)
        if alone and (rank == 0 or not isinstance(exc, _Agreed)):  # an agreed error is printed once
            print(f"cosched: error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Agreed(ConfigError):
    """A problem found before any computation, that every rank raises alike."""


def _merge(problems: list[str]) -> str:
    """``rank 0: X; rank 1: X`` as ``ranks 0, 1: X`` (ranks with the same problem together)."""
    by_text: dict[str, list[str]] = {}
    for p in problems:
        head, _, text = p.partition(": ")
        by_text.setdefault(text, []).append(head.removeprefix("rank "))
    return "; ".join(f"rank {ranks[0]}: {text}" if len(ranks) == 1 else f"ranks {', '.join(ranks)}: {text}"
                     for text, ranks in by_text.items())


def _record_error(message: str) -> None:
    """Write ``message`` where torch's elastic agent reads a rank's error (if it set a file)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": message, "extraInfo": {"py_callstack": "", "timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError):
        Path(path).write_text(json.dumps(data), encoding="utf-8")


class _Rank:
    """The steps of one rank's life (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, rank: int) -> None:
        self.args, self.rank = args, rank
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.run_dir = Path(args.run_dir) if args.run_dir else None
        self.feed_given = self.run_dir is not None and (self.run_dir / FEED_FILE).is_file()

    def main(self) -> None:
        import torch
        import torch.distributed as dist

        from cosched.codegen.plan import load_plan

        args, rank = self.args, self.rank
        rss_base = _rss_bytes()
        problem = None
        launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
        try:
            plan = load_plan(args.plan_dir)
            if not launched and plan.devices:
                raise ConfigError(f"this is one rank of a torch.distributed job, and no launcher started it "
                                  f"(RANK, WORLD_SIZE, MASTER_ADDR or MASTER_PORT unset): run `cosched run "
                                  f"{args.plan_dir}`, or torchrun --nproc-per-node {len(plan.devices)} -m "
                                  f"cosched.runtime.distributed {args.plan_dir}")
            self._check(plan)
        except CoschedError as exc:  # told to every rank once the group exists
            if not launched:  # nobody else to tell
                raise
            problem, plan = f"rank {rank}: {exc}", None
        if plan is not None and plan.devices[rank].kind == "cpu":
            from cosched.runtime.rank import pin_cpu_rank

            pin_cpu_rank(int(os.environ.get("LOCAL_RANK", rank)), int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))
        try:  # gloo for start-up on every plan: agreeing on problems must not need a GPU
            dist.init_process_group("gloo", timeout=timedelta(seconds=max(args.timeout, STARTUP_S)))
        except Exception as exc:
            raise DeviceError(f"rank {rank} could not join the process group ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]})") from None
        problems: list[Any] = [None] * self.world
        dist.all_gather_object(problems, problem)
        found = [p for p in problems if p]
        if found:  # every rank stops, with the same words
            raise _Agreed(_merge(found))
        assert plan is not None
        entry = plan.devices[rank]
        if entry.kind == "cuda":
            torch.cuda.set_device(entry.index)
        from cosched.runtime.transport import TorchTransport

        # the run's groups now, while every rank is here: later a slow rank would meet --timeout
        device = torch.device("cpu") if entry.kind == "cpu" else torch.device("cuda", entry.index)
        transport = TorchTransport(device, args.timeout)
        transport.create_groups(plan)
        self._run(plan, transport, rss_base)
        dist.destroy_process_group()

    def _check(self, plan: Any) -> None:
        """Everything that would fail later, before any computation."""
        import torch

        where = self.args.plan_dir
        if not plan.devices:
            raise ConfigError(f"{where}: a one-device plan; run it with `cosched run {where}`, not on torch.distributed")
        if self.world != len(plan.devices):
            raise ConfigError(f"{where}: the plan runs on {len(plan.devices)} devices, but this job has world size "
                              f"{self.world}; start it with --nproc-per-node {len(plan.devices)}")
        entry = plan.devices[self.rank]
        if entry.kind == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if entry.index >= count:
                raise DeviceError(f"{where}: rank {self.rank} runs on {entry.label}, but this machine has {count} "
                                  f"CUDA device(s)")

    def _run(self, plan: Any, transport: Any, rss_base: int) -> None:
        import torch.distributed as dist

        from cosched.codegen.rebuild import graph_for_plan
        from cosched.execution.bindings import random_inputs
        from cosched.files import read_inputs
        from cosched.runtime.rank import RankExecutor

        args, rank = self.args, self.rank
        graph = graph_for_plan(plan)
        progress = _Progress(self.run_dir, rank, len([s for s in plan.streams if s.device == rank]))
        fault = _fault(rank)

        def on_task(stream: int, task: int) -> None:
            progress.started(stream, task)
            if fault is not None and fault[0] == task:
                _inject(fault[1], task)

        executor = RankExecutor(plan, rank, transport.run, graph=graph, timeout_s=args.timeout, on_task=on_task,
                                finish=transport.finish)
        feed = self._feed(graph, random_inputs, read_inputs)
        dist.barrier()  # every rank built (the start-up timeout); each round is bounded by --timeout
        rounds: list[float] = []
        comm: list[float] = []
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for i in range(args.warmup + max(1, args.iters)):
            transport.barrier()
            start = time.perf_counter()
            outputs = executor.run(feed)
            transport.barrier()
            if i >= args.warmup:
                rounds.append((time.perf_counter() - start) * 1e3)
                comm.append(executor.comm_ms())
        rss_ready = _rss_now()
        timings: list[Any] = []
        if args.trace:
            transport.barrier()
            origin = time.perf_counter_ns()
            executor.run(feed, profile=True)
            transport.barrier()
            from cosched.runtime.chrome_trace import TaskTiming

            timings = list(executor.last_timings) + [
                TaskTiming(task, -1, rank, (a - origin) / 1e3, (b - origin) / 1e3)
                for task, a, b in getattr(executor.comm, "timings", [])]
        mine = {
            "rank": rank, "outputs": outputs, "timings": timings, "round_ms": rounds,
            "comm_ms": median(comm) if comm else 0.0, "rss_base_bytes": rss_base, "rss_peak_bytes": _rss_bytes(),
            "rss_held_bytes": rss_ready,
        }
        gathered: list[Any] = [None] * self.world if rank == 0 else []
        try:
            dist.gather_object(mine, gathered if rank == 0 else None, dst=0)
        except Exception as exc:
            from cosched.runtime.comm import peer_error

            raise RuntimeFailure(f"gathering every rank's outputs on rank 0 failed: {peer_error(exc)}") from exc
        executor.close()
        if rank == 0:
            self._report(plan, graph, feed, gathered)

    def _feed(self, graph: Any, random_inputs: Any, read_inputs: Any) -> dict[str, dict[str, np.ndarray]]:
        if self.feed_given:
            with open(self.run_dir / FEED_FILE, "rb") as f:  # type: ignore[operator]
                return pickle.load(f)  # written by the launcher, from the caller's inputs
        return random_inputs(graph, self.args.seed) | read_inputs(self.args.inputs, list(graph.tenant_names))

    def _report(self, plan: Any, graph: Any, feed: Any, ranks: list[dict[str, Any]]) -> None:
        from cosched.runtime.report import distributed_report, format_distributed

        report, outputs = distributed_report(plan, graph, feed, ranks, self.args, feed_given=self.feed_given)
        if self.run_dir is not None:
            with open(self.run_dir / RESULT_FILE, "wb") as f:
                pickle.dump({"report": report, "outputs": outputs}, f)
        elif self.args.json:
            print(json.dumps(report, indent=2, sort_keys=True))
        else:
            print(format_distributed(report))


class _Progress:
    """The task each stream of this rank last started, in a memory-mapped file of the run
    directory: what the launcher names when the rank dies without a word (SIGKILL, OOM)."""

    def __init__(self, run_dir: Path | None, rank: int, streams: int) -> None:
        self.slots = None
        if run_dir is not None and streams:
            self.slots = np.memmap(run_dir / f"progress-{rank}.bin", dtype=np.int64, mode="w+", shape=(streams,))

    def started(self, stream: int, task: int) -> None:
        if self.slots is not None:
            self.slots[stream] = task + 1


def read_progress(run_dir: Path, rank: int) -> list[int | None]:
    """The task each stream of rank ``rank`` last started (by local stream; None: none yet),
    from its progress file; empty if it wrote none."""
    path = run_dir / f"progress-{rank}.bin"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return [int(v) - 1 if v > 0 else None for v in np.fromfile(path, dtype=np.int64)]


def _fault(rank: int) -> tuple[int, str] | None:
    spec = os.environ.get("COSCHED_FAULT", "")
    if not spec:
        return None
    try:
        where, task, kind = spec.split(":")
        if int(where) != rank:
            return None
        if kind not in ("kill", "raise", "hang"):
            raise ValueError(kind)
        return int(task), kind
    except ValueError:
        raise ConfigError(f"COSCHED_FAULT={spec!r}: expected RANK:TASK:kill|raise|hang") from None


def _inject(kind: str, task: int) -> None:
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "raise":
        raise RuntimeFailure(f"fault injected before task {task} (COSCHED_FAULT)")
    time.sleep(10 ** 6)


def _status_bytes(field: str) -> int | None:
    """A size field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_now() -> int:
    """Resident memory of this process now (``VmRSS``), 0 where /proc is missing."""
    return _status_bytes("VmRSS") or 0


def _rss_bytes() -> int:
    """Peak resident memory of this process so far: ``VmHWM`` (per address space, so it
    starts afresh at exec, where ``ru_maxrss`` keeps the forking parent's peak)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


if __name__ == "__main__":
    main()
