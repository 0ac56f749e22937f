"""Race stress: random plans run hundreds of times on the CPU backend with random per-task
delays; every run's outputs must be bit-identical to sequential execution."""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from plan_graphs import random_dag, random_streams

from cosched.codegen import lower
from cosched.runtime import SequentialExecutor, random_inputs
from cosched.runtime.executor import Executor

RUNS_PER_PLAN = 100


def _reference(graph, inputs):  # type: ignore[no-untyped-def]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers use one intra-op thread each: same arithmetic
    try:
        return SequentialExecutor(graph).run(inputs)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("seed", range(6))
def test_random_delays_never_change_outputs(tmp_path: Path, seed: int) -> None:
    graph = random_dag(tmp_path, 36, seed=100 + seed)
    plan = lower(graph, random_streams(graph, 2 + seed % 3, seed), device={"kind": "cpu"})
    assert plan.events, "a stress plan without events tests nothing"
    rng = random.Random(seed)
    lock = threading.Lock()

    def delay(task: int) -> float:
        with lock:
            return rng.choice((0.0, 0.0, 0.0002, 0.0008))

    inputs = [random_inputs(graph, seed=s) for s in range(3)]
    expected = [_reference(graph, i) for i in inputs]
    with Executor(plan, graph, threads_per_stream=1, delay=delay, wait_timeout_s=30.0) as ex:
        for run in range(RUNS_PER_PLAN):
            got = ex.run(inputs[run % 3])
            want = expected[run % 3]
            for name, value in want["r"].items():
                np.testing.assert_array_equal(got["r"][name], value, err_msg=f"run {run}, output {name}")
