"""Search time against task count, on synthetic multi-tenant DAGs.

    .venv/bin/python benchmarks/search_scaling.py [--sizes 100 1000 5000 10000] [--trials 20]

For each size: building the cost table (one batched latency prediction), the baselines,
one warm decode + simulation, and a full search of ``--trials`` trials (cold slowdown cache,
as in a compile). Prints one row per size.
"""

from __future__ import annotations

import argparse
import time

from cosched.search.baselines import all_baselines
from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.optimizer import SearchConfig, optimize
from cosched.search.simulator import simulate
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def row(n: int, trials: int, tenants_per_task: int) -> str:
    tenants = max(2, n // tenants_per_task)
    graph = random_task_graph(n, n_tenants=tenants, seed=0)
    table, t_table = _timed(lambda: CostTable(graph, SyntheticCostModel()))
    _, t_base = _timed(lambda: all_baselines(table))
    knobs = DecoderKnobs(streams=4, guard=1.1)
    decode(table, knobs, record_pairs=False)
    (schedule, _), t_decode = _timed(lambda: decode(table, knobs, record_pairs=False))
    _, t_sim = _timed(lambda: simulate(schedule, table, record_pairs=False))
    fresh = CostTable(graph, SyntheticCostModel())
    result, t_search = _timed(lambda: optimize(fresh, SearchConfig(trials=trials, seed=0)))
    seq = next(b for b in result.baselines if b.name == "sequential").sim.makespan
    return (
        f"| {n:>6} | {tenants:>3} | {t_table:6.2f} | {t_base:6.2f} | {t_decode:6.3f} | "
        f"{t_sim:6.3f} | {t_search:7.1f} | {seq / result.sim.makespan:5.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tasks-per-tenant", type=int, default=200)
    args = parser.parse_args()
    print(f"trials={args.trials}, one tenant per {args.tasks_per_tenant} tasks (>= 2)")
    print("| tasks | tenants | table s | baselines s | decode s (warm) | simulate s (warm) "
          "| search s | speedup vs sequential |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        print(row(n, args.trials, args.tasks_per_tenant), flush=True)


if __name__ == "__main__":
    main()
