"""Search quality: gap of the Optuna search to the exact optimum on random small DAGs.

    .venv/bin/python benchmarks/search_gap.py [--graphs 100] [--tasks 10] [--streams 2] [--trials 60]

For each random DAG (synthetic cost model, a fresh one per graph), the exact branch-and-bound
optimum and the optimizer solve the same problem (same stream limit, same interference
threshold); the gap is ``search / optimum - 1``. The optimizer runs twice on the same study
settings: decoder only (``improve_budget=0``) and with the local-search improvement phase
(the default budget), so the table shows what each part earns. The exact solver is only the
yardstick: the optimizer never calls it. Prints a summary and BENCHMARKS.md rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

from cosched.search.costtable import CostTable
from cosched.search.exact import optimum
from cosched.search.optimizer import SearchConfig, optimize
from cosched.search.synthetic import SyntheticCostModel, random_task_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--threshold", type=float, default=1.10)
    parser.add_argument("--improve-budget", type=int, default=SearchConfig().improve_budget)
    args = parser.parse_args()
    gaps: dict[str, list[float]] = {"decoder only": [], "decoder + improve": []}
    seconds = dict.fromkeys(gaps, 0.0)
    unproven = 0
    for seed in range(args.graphs):
        graph = random_task_graph(args.tasks, args.tenants, seed=seed)
        table = CostTable(graph, SyntheticCostModel())
        exact = optimum(table, streams=args.streams, threshold=args.threshold)
        unproven += not exact.proven
        for name, budget in (("decoder only", 0), ("decoder + improve", args.improve_budget)):
            config = SearchConfig(
                trials=args.trials, seed=seed, max_streams=args.streams,
                threshold=args.threshold, improve_budget=budget,
            )
            t0 = time.perf_counter()
            found = optimize(table, config)
            seconds[name] += time.perf_counter() - t0
            gaps[name].append(found.sim.makespan / exact.makespan - 1.0)
    print(
        f"graphs={args.graphs} tasks={args.tasks} tenants={args.tenants} streams={args.streams} "
        f"threshold={args.threshold} trials={args.trials} improve_budget={args.improve_budget} "
        f"unproven optima {unproven}"
    )
    command = "python " + " ".join(["benchmarks/search_gap.py", *sys.argv[1:]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    today = datetime.date.today().isoformat()
    print("\n| command | machine | date | search | mean gap | max gap | optimal | search s/graph |")
    print("|---|---|---|---|---|---|---|---|")
    for name, values in gaps.items():
        optimal = sum(g <= 1e-9 for g in values)
        print(
            f"| `{command}` | {machine} | {today} | {name} | {100 * statistics.mean(values):.2f}% "
            f"| {100 * max(values):.2f}% | {optimal}/{len(values)} "
            f"| {seconds[name] / len(values):.2f} |"
        )


if __name__ == "__main__":
    main()
