"""Tasks traced against tasks op by op: alone, and two copies side by side on two threads.

    MALLOC_TOP_PAD_=$((512<<20)) .venv/bin/python -m benchmarks.traced [--size tiny|full]
        [--models resnet50 bert ...] [--iters N]

For each zoo model (batch 1, fused into tasks, one intra-op thread per thread), two sequential
executors run its tasks in order: op by op, and each task as one traced TorchScript call
(:mod:`cosched.execution.traced`). Reported, all from runs interleaved in one process:

- ``alone``: t(op by op) / t(traced) with one thread running;
- ``pair, op by op`` and ``pair, traced``: how much slower one run is while a second thread
  runs the same executor in a loop, t(side by side) / t(alone). Near 1 means the two
  threads ran in parallel; 2 means they took turns (on the GIL, or on one core).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import torch

import cosched.ir
from cosched import zoo
from cosched.runtime import SequentialExecutor
from cosched.runtime.timing import time_interleaved

__all__ = ["compare", "main"]


def _beside(run: Callable[[], object], iters: int) -> float:
    """Median ms of ``run`` on this thread while another thread loops it."""
    stop = threading.Event()

    def loop() -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():
            while not stop.is_set():
                run()

    other = threading.Thread(target=loop, daemon=True)
    other.start()
    try:
        times = []
        for _ in range(iters):
            start = time.perf_counter_ns()
            run()
            times.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        stop.set()
        other.join()
    return statistics.median(times)


def compare(name: str, size: str, iters: int) -> dict[str, float]:
    """The three ratios of the module doc for one zoo model (on this thread's thread count)."""
    graph = cosched.ir.fuse(cosched.ir.load_models([zoo.export(name, size=size)], names=[name]))
    feeds = {name: zoo.example_inputs(name, size, 1)}
    runners = {
        "op by op": SequentialExecutor(graph),
        "traced": SequentialExecutor(graph, trace_tasks=True),
    }
    calls = {label: (lambda ex=ex: ex.run(feeds)) for label, ex in runners.items()}
    alone = time_interleaved(calls, iters=iters, warmup=3)
    row = {"alone": alone["op by op"].median / alone["traced"].median}
    for label, run in calls.items():
        row[f"pair, {label}"] = _beside(run, iters) / alone[label].median
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.traced", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--models", nargs="+", default=list(zoo.names()), choices=zoo.names())
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"| model ({args.size}) | op by op / traced, alone | pair, op by op | pair, traced |")
    print("|---|---|---|---|")
    try:
        for name in args.models:
            row = compare(name, args.size, args.iters)
            print(f"| {name} | {row['alone']:.2f} | {row['pair, op by op']:.2f} | {row['pair, traced']:.2f} |")
    finally:
        torch.set_num_threads(before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
