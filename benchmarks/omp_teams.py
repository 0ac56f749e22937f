"""Does a plan's worker thread slow the process's other parallel work? One process, one mix.

    MALLOC_TOP_PAD_=$((512<<20)) .venv/bin/python -m benchmarks.omp_teams [--mix vision]

Times, in this order in one fresh process: sequential execution of the mix's traced tasks
on the calling thread with every core; the same with a one-stream plan's executor created
but not yet run; the one-stream plan (every core for its stream); sequential again with the
plan's executor idle; sequential after the executor is closed; a two-stream plan (tenants
dealt to the streams in turn) and sequential after it. Medians of 7 runs after three warm-ups.

It shows the mechanism behind :mod:`cosched.runtime.cpu`'s choice to run stream 0 on the
calling thread: a thread that runs ops with more than one intra-op thread owns an OpenMP
team, and once a process holds more OpenMP threads than cores libgomp puts idle team
threads to sleep instead of spinning, so every parallel op pays a wake-up. With stream 0 on
a worker, the one-stream plan and the sequential runs after it both measured about 1.6x
slower than sequential before it (2-core CPU); with stream 0 on the caller all agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import networkx as nx
import torch

import cosched.ir
from benchmarks.mixes import get_mix
from cosched.codegen import lower
from cosched.runtime import SequentialExecutor
from cosched.runtime.executor import Executor


def _median_ms(run: Callable[[], object], n: int = 7) -> float:
    for _ in range(3):  # TorchScript specialises traced tasks over their first runs
        run()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.omp_teams", description=__doc__.splitlines()[0])
    parser.add_argument("--mix", default="vision")
    args = parser.parse_args()
    mix = get_mix(args.mix)
    feeds = mix.inputs()
    graph = cosched.ir.fuse(cosched.ir.load_models([str(p) for p in mix.export()], names=list(mix.models), batch=1))
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    seq = SequentialExecutor(graph, "cpu", trace_tasks=True)
    order = list(nx.lexicographical_topological_sort(graph.to_networkx("task")))
    device = {"kind": "cpu", "name": "omp-teams"}
    rows = [("sequential, fresh process", _median_ms(lambda: seq.run(feeds)))]
    one = Executor(lower(graph, [order], device=device), graph)
    rows.append(("sequential, one-stream executor created", _median_ms(lambda: seq.run(feeds))))
    rows.append(("one-stream plan", _median_ms(lambda: one.run(feeds))))
    rows.append(("sequential, one-stream executor idle", _median_ms(lambda: seq.run(feeds))))
    one.close()
    rows.append(("sequential, executor closed", _median_ms(lambda: seq.run(feeds))))
    tenant_stream = {t: i % 2 for i, t in enumerate(graph.tenant_names)}
    streams: list[list[int]] = [[], []]
    for t in order:
        streams[tenant_stream[graph.task(t).tenant]].append(t)
    two = Executor(lower(graph, streams, device=device), graph)
    rows.append(("two-stream plan (tenants alternate)", _median_ms(lambda: two.run(feeds))))
    rows.append(("sequential, two-stream executor idle", _median_ms(lambda: seq.run(feeds))))
    two.close()
    base = rows[0][1]
    print(f"mix {mix.name}, {torch.get_num_threads()} intra-op threads, load {os.getloadavg()[0]:.2f}")
    for name, ms in rows:
        print(f"{name:42s} {ms:8.1f} ms  {ms / base:5.2f}x of fresh sequential")


if __name__ == "__main__":
    main()
