"""Search time against task count, on synthetic multi-tenant DAGs.

    .venv/bin/python benchmarks/search_scaling.py [--sizes 100 1000 5000 10000] [--trials 20]

For each size: building the cost table (one batched latency prediction), the baselines,
one warm decode + simulation, and a full search of ``--trials`` trials (cold slowdown cache,
as in a compile) including the local-search improvement phase, whose budget is given in
task-simulations (``--improve-budget``): the improvement gets ``budget // (tasks * 3)``
simulations per candidate, so it costs about the same at every size. Prints BENCHMARKS.md rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
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


def row(n: int, trials: int, tasks_per_tenant: int, improve_budget: int) -> str:
    tenants = max(2, n // tasks_per_tenant)
    graph = random_task_graph(n, n_tenants=tenants, seed=0)
    table, t_table = _timed(lambda: CostTable(graph, SyntheticCostModel()))
    _, t_base = _timed(lambda: all_baselines(table))
    knobs = DecoderKnobs(streams=4, guard=1.1)
    decode(table, knobs, record_pairs=False)
    (schedule, _), t_decode = _timed(lambda: decode(table, knobs, record_pairs=False))
    _, t_sim = _timed(lambda: simulate(schedule, table, record_pairs=False))
    fresh = CostTable(graph, SyntheticCostModel())
    config = SearchConfig(trials=trials, seed=0, improve_budget=improve_budget)
    result, t_search = _timed(lambda: optimize(fresh, config))
    seq = next(b for b in result.baselines if b.name == "sequential").sim.makespan
    evals = improve_budget // (n * config.improve_top) if config.improve_top else 0
    return (
        f"| {n:>6} | {tenants:>3} | {t_table:6.2f} | {t_base:6.2f} | {t_decode:6.3f} | "
        f"{t_sim:6.3f} | {evals:>5} | {t_search:7.1f} | {seq / result.sim.makespan:5.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tasks-per-tenant", type=int, default=200)
    parser.add_argument("--improve-budget", type=int, default=SearchConfig().improve_budget)
    args = parser.parse_args()
    command = "python " + " ".join(["benchmarks/search_scaling.py", *sys.argv[1:]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    print(f"`{command}` on {machine}, {datetime.date.today().isoformat()}: trials={args.trials}, "
          f"one tenant per {args.tasks_per_tenant} tasks (>= 2), improve_budget={args.improve_budget}")
    print("\n| tasks | tenants | table s | baselines s | decode s (warm) | simulate s (warm) "
          "| improve sims/candidate | search s | speedup vs sequential |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        print(row(n, args.trials, args.tasks_per_tenant, args.improve_budget), flush=True)


if __name__ == "__main__":
    main()
