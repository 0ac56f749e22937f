"""A rank's communication steps and program, and every rank of a plan run in one process.

The order of communication is what keeps ranks from deadlocking (and NCCL from pairing the
wrong send with a receive): these tests check it on small plans, then run split zoo plans
with every rank on a thread over an in-memory wire, against the unsplit models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))

from dist_plans import loopback, split_plan
from plan_graphs import all_reduced, pipelined

from cosched import zoo
from cosched.codegen import lower, save_plan
from cosched.codegen.steps import issue_steps
from cosched.execution.bindings import random_inputs
from cosched.execution.compare import compare_outputs
from cosched.ir import load_models
from cosched.runtime import SequentialExecutor
from cosched.runtime.comm import (
    CommStep,
    comm_steps,
    rank_program,
)
from cosched.search.schedule import Schedule

CPU = {"kind": "cpu", "name": "test-cpu"}
RANKED = Schedule((((1, 3, 5),), ((0, 2, 4, 6),)))


def test_a_transfer_is_a_send_on_its_source_and_a_receive_on_its_destination(tmp_path: Path) -> None:
    g = pipelined(tmp_path)
    plan = lower(g, Schedule((((0, 1),), ((2, 3, 4),))), device=CPU)
    send, = comm_steps(plan, g, 0)
    recv, = comm_steps(plan, g, 1)
    assert (send.kind, recv.kind) == ("send", "recv") and send.task == recv.task and send.key == recv.key
    assert send.peers == (1,) and recv.peers == (0,) and send.producer == 1 and recv.producer is None
    sequence = issue_steps(plan)
    assert sequence[send.key].op == "send" and sequence[send.key].task == send.task
    assert recv.output is not None and recv.source is None and send.source == g.op(g.task(send.task).ops[0]).inputs[0]


def test_a_collective_meets_at_its_first_rank_on_every_device(tmp_path: Path) -> None:
    g = all_reduced(tmp_path)
    plan = lower(g, RANKED, device=CPU)
    steps = [comm_steps(plan, g, r) for r in (0, 1)]
    reduce0 = next(s for s in steps[0] if s.kind == "all_reduce")
    reduce1 = next(s for s in steps[1] if s.kind == "all_reduce")
    runs = {s.task: i for i, s in enumerate(issue_steps(plan)) if s.op == "run"}
    assert reduce0.key == reduce1.key == min(runs[reduce0.task], runs[reduce1.task])
    assert (reduce0.index, reduce1.index) == (0, 1) and reduce0.peers == reduce1.peers == (0, 1)
    for rank, mine in enumerate(steps):  # every step after the producer of what it sends
        for s in mine:
            assert s.producer is None or runs[s.producer] < s.key, (rank, s)


def test_each_device_keeps_one_order_of_what_it_shares(tmp_path: Path) -> None:
    plan_dir = split_plan(tmp_path / "plan", ["bert", "dlrm", "resnet50", "mobilenet_v2"],
                          ["bert", "dlrm", "resnet50"])
    from cosched.codegen.plan import load_plan
    from cosched.codegen.rebuild import graph_for_plan

    plan = load_plan(plan_dir)
    g = graph_for_plan(plan)
    steps = [comm_steps(plan, g, r) for r in (0, 1)]
    assert {s.kind for s in steps[0] + steps[1]} >= {"send", "recv", "all_reduce", "all_gather"}
    for mine in steps:  # one place each in the order
        keys = [s.key for s in mine]
        assert keys == sorted(set(keys))
    transfers = [{(s.key, s.task) for s in mine if s.kind in ("send", "recv")} for mine in steps]
    assert transfers[0] == transfers[1]  # each send meets its receive at the same place
    groups = [{(s.key, s.peers) for s in mine if s.kind not in ("send", "recv")} for mine in steps]
    assert groups[0] == groups[1]  # both devices meet every collective at the same place


def test_a_rank_program_renumbers_its_streams_and_events(tmp_path: Path) -> None:
    g = pipelined(tmp_path)
    plan = lower(g, Schedule((((0,), (1,)), ((2, 3, 4),))), device=CPU)
    steps = comm_steps(plan, g, 1)
    program, ids = rank_program(plan, 1, steps)
    assert ids == tuple(s.id for s in plan.streams if s.device == 1) and len(program.streams) == len(ids)
    assert program.num_events == len([e for e in plan.events if e.stream in ids])

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []  # type: ignore[type-arg]

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return lambda *args: self.calls.append((name, *args))

    machine = Recorder()
    program.issue(machine)
    kinds = [c[0] for c in machine.calls]
    assert kinds.index("communicate") < kinds.index("run")  # the receive is posted before its task runs
    assert all(c[1] == 0 for c in machine.calls if c[0] == "run")  # local stream ids
    assert isinstance(next(c[1] for c in machine.calls if c[0] == "communicate"), CommStep)


@pytest.mark.parametrize(("names", "split"), [
    (["bert", "mobilenet_v2"], ["bert"]),
    (["dlrm", "resnet50"], ["dlrm"]),
    (["resnet50", "bert", "dlrm"], ["resnet50"]),
])
def test_every_rank_in_one_process_computes_the_unsplit_outputs(tmp_path: Path, names: list[str],
                                                                split: list[str]) -> None:
    plan_dir = split_plan(tmp_path / "plan", names, split)
    models = load_models([zoo.export(n, size="tiny") for n in names], names=names)
    feed = random_inputs(models, seed=4)
    got, wire = loopback(plan_dir, feed, rounds=2)
    want = SequentialExecutor(models).run(feed)
    assert compare_outputs(got, want).agrees(1e-4)
    assert wire.calls and not wire.mail and not wire.meetings  # every send received, every group met


@pytest.mark.parametrize("case", ["placed", "pipelined", "all_reduced", "two_groups"])
def test_the_lowering_tests_plans_run_rank_by_rank(tmp_path: Path, case: str) -> None:
    """The multi-device plans of the lowering tests (weights folded into the graph), every
    rank on a thread, against the graph run sequentially in one process."""
    from plan_graphs import tenant_mix

    two = [{"kind": "cpu", "index": 0}, {"kind": "cpu", "index": 1}]
    if case == "placed":
        g = tenant_mix(tmp_path, ("a", "b"))
        plan = lower(g, Schedule((((0, 1, 3, 4), (2,)), ((5, 6, 7, 8, 9),))), device=CPU, devices=two)
    elif case == "pipelined":
        g = pipelined(tmp_path)
        plan = lower(g, Schedule((((0,), (1,)), ((2, 3, 4),))), device=CPU)
    else:
        g = all_reduced(tmp_path, ("g", "h") if case == "two_groups" else ("g",))
        on = {t.id: t.shard or 0 for t in g.tasks}
        plan = lower(g, Schedule(tuple((tuple(t for t in range(len(g.tasks)) if on[t] == d),) for d in (0, 1))),
                     device=CPU)
    feed = random_inputs(g, seed=2)
    got, wire = loopback(plan, feed, rounds=2, graph=g)
    assert compare_outputs(got, SequentialExecutor(g).run(feed)).agrees(1e-5)
    assert not wire.mail and not wire.meetings


def test_a_plan_saved_without_shards_has_nothing_for_a_rank_to_load(tmp_path: Path) -> None:
    from cosched.codegen.plan import load_plan
    from cosched.runtime.rank import load_shard

    g = all_reduced(tmp_path)
    plan = lower(g, RANKED, device=CPU)
    save_plan(plan, tmp_path / "plan")
    assert load_shard(load_plan(tmp_path / "plan"), 1, __import__("torch").device("cpu")) == {}
