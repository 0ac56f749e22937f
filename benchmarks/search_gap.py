"""Search quality: gap of the Optuna search to the exact optimum on random small DAGs.

    .venv/bin/python benchmarks/search_gap.py [--graphs 100] [--tasks 10] [--streams 2] [--trials 60]

For each random DAG (synthetic cost model), the exact branch-and-bound optimum and the
optimizer solve the same problem (same stream limit, same interference threshold); the gap
is ``search / optimum - 1``. Prints mean, max and the share of graphs solved optimally.
"""

from __future__ import annotations

import argparse
import statistics
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
    args = parser.parse_args()
    model = SyntheticCostModel()
    gaps, unproven = [], 0
    t0 = time.perf_counter()
    for seed in range(args.graphs):
        table = CostTable(random_task_graph(args.tasks, args.tenants, seed=seed), model)
        exact = optimum(table, streams=args.streams, threshold=args.threshold)
        unproven += not exact.proven
        config = SearchConfig(
            trials=args.trials, seed=seed, max_streams=args.streams, threshold=args.threshold
        )
        found = optimize(table, config)
        gaps.append(found.sim.makespan / exact.makespan - 1.0)
    elapsed = time.perf_counter() - t0
    print(
        f"graphs={args.graphs} tasks={args.tasks} tenants={args.tenants} streams={args.streams} "
        f"threshold={args.threshold} trials={args.trials}"
    )
    print(
        f"gap to optimum: mean {100 * statistics.mean(gaps):.2f}%  max {100 * max(gaps):.2f}%  "
        f"optimal on {sum(g <= 1e-9 for g in gaps)}/{len(gaps)}  "
        f"min {100 * min(gaps):.2f}%  unproven optima {unproven}  ({elapsed:.0f} s)"
    )


if __name__ == "__main__":
    main()
