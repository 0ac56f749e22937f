"""A CUDA rank's communication (:class:`cosched.runtime.comm.CudaComm`), checked without a GPU.

Each rank of a two-device plan is issued through :class:`cosched.runtime.cuda.CudaBackend`
with the recording stand-in of :mod:`cuda_fakes` for every CUDA call and a ``run_step`` that
logs each torch.distributed call with the stream current when it is made. The log is
replayed with CUDA's ordering rules (:func:`_replay`): a stream runs its work in issue
order; recording an event snapshots what its stream has issued so far, a wait on it orders
the waiting stream after that; ``wait_stream`` snapshots the other stream at once. From
that, every communication step must come after its producer's run, every task reading a
communication's result after that communication, and the caller's stream after everything.

What this cannot check: that CUDA and NCCL behave as modelled (a blocking NCCL call orders
itself after the current stream and makes it wait for its result); the ``gpu``-marked test
of ``test_distributed_cuda.py`` runs a two-rank plan on two GPUs.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
from cuda_fakes import FakeTensor, Recorder, fake_env, fake_tasks
from plan_graphs import all_reduced, pipelined

from cosched.codegen import lower
from cosched.codegen.plan import Plan
from cosched.codegen.steps import issue_steps
from cosched.errors import RuntimeFailure
from cosched.ir.graph import Graph
from cosched.runtime.comm import CommStep, CudaComm, comm_steps, rank_program
from cosched.runtime.cuda import CudaBackend
from cosched.runtime.program import TaskProgram
from cosched.runtime.rank import rank_graph
from cosched.search.schedule import Schedule

CUDA = {"kind": "cuda", "name": "stand-in"}
TWO_GPUS = [{"kind": "cuda", "index": 0}, {"kind": "cuda", "index": 1}]


def _plans(tmp_path: Path) -> list[tuple[Graph, Plan]]:
    """Two-rank CUDA plans: a pipeline (one transfer) and two all-reduce groups fed by a
    transfer of an input, one stream per device and two."""
    piped = pipelined(tmp_path / "piped")
    reduced = all_reduced(tmp_path / "reduced")
    groups = all_reduced(tmp_path / "groups", ("g", "h"))
    timeline = {t: (10.0 if t in (3, 10) else 1.0 * t, 20.0) for t in range(13)}
    return [
        (piped, lower(piped, Schedule((((0, 1),), ((2, 3, 4),))), device=CUDA, devices=TWO_GPUS)),
        (reduced, lower(reduced, Schedule((((1, 3, 5),), ((0, 2, 4, 6),))), device=CUDA, devices=TWO_GPUS)),
        (groups, lower(groups, Schedule((((1, 3, 5), (7, 9, 11)), ((0, 2, 4, 6), (8, 10, 12)))), device=CUDA,
                       devices=TWO_GPUS, timeline=timeline)),
    ]


class _Rank:
    """Rank ``rank`` of ``plan`` on the stand-in: its backend, communication and log."""

    def __init__(self, graph: Graph, plan: Plan, rank: int, fail: int | None = None) -> None:
        self.graph, self.plan, self.rank = graph, plan, rank
        self.steps = comm_steps(plan, graph, rank)
        program, self.stream_ids = rank_program(plan, rank, self.steps)
        self.recorder = Recorder(len(program.streams))
        self.log = self.recorder.log
        self.comm_tasks = {s.task for s in self.steps if s.kind != "send"}
        device_of = plan.device_of_task()
        self.mine = {t for t, d in device_of.items() if d == rank}
        tasks = fake_tasks(rank_graph(graph, self.mine - self.comm_tasks), self.log)
        for t in self.comm_tasks:
            tasks[t] = TaskProgram(t, graph.task(t).name or "comm", graph.task(t).tenant, ())
        self.fail = fail
        self.comm = CudaComm(self.steps, self._run_step, None)  # type: ignore[arg-type]
        self.backend = CudaBackend(program, tasks, None, input_names=(), output_names=(),  # type: ignore[arg-type]
                                   api=self.recorder, comm=self.comm)

    def _run_step(self, step: CommStep, value: Any) -> Any:
        if step.task == self.fail:
            raise RuntimeError("NCCL error: remote process exited")
        self.log.append(("nccl", step.task, step.kind, self.recorder.current().name))
        assert (value is None) == (step.source is None) and (value is None or value.name == step.source)
        return FakeTensor(step.output) if step.output is not None else None

    def stream_of(self, task: int) -> str:
        local = {sid: i for i, sid in enumerate(self.stream_ids)}
        return f"s{local[self.plan.stream_of_task()[task]]}"

    def op_of(self, task: int) -> tuple[str, int]:
        return ("comm", task) if task in self.comm_tasks else ("task", task)

    def identity(self, step: CommStep) -> tuple[str, Any]:
        """What names a step alike on every rank: a transfer's task, a collective's group."""
        comm = next(c for c in self.plan.comms if c.task == step.task)
        return ("transfer", step.task) if comm.op == "transfer" else ("group", comm.group)


def _replay(rank: _Rank) -> dict[str, set[tuple[str, int]]]:
    """Each stream's work ordered before its end (see the module docstring); asserts each
    run and communication is ordered after what it depends on when it is issued."""
    log, streams = rank.log, [s.name for s in rank.recorder.streams]
    comm = rank.comm.stream.name
    clock: dict[str, set[tuple[str, int]]] = defaultdict(set)
    events: dict[Any, set[tuple[str, int]]] = {}
    deps = {v: {u for u, w in rank.graph.to_networkx("task").edges() if w == v and u in rank.mine}
            for v in rank.mine}
    by_task = {s.task: s for s in rank.steps}
    for entry in log:
        kind = entry[0]
        if kind == "fork":
            for s in streams:
                clock[s] |= clock[entry[1]]
        elif kind == "join":
            for s in streams:
                clock[entry[1]] |= clock[s]
        elif kind in ("record", "record_event"):
            stream = f"s{entry[1]}" if kind == "record" else entry[1]
            events[(kind, entry[2])] = set(clock[stream])
        elif kind in ("wait", "wait_event"):
            stream = f"s{entry[1]}" if kind == "wait" else entry[1]
            key = ("record" if kind == "wait" else "record_event", entry[2])
            assert key in events, f"{stream} waits for {entry[2]} before any record of it: a no-op on CUDA"
            clock[stream] |= events[key]
        elif kind == "wait_stream":
            clock[entry[1]] |= clock[entry[2]]
        elif kind == "run":
            task, stream = entry[1], rank.stream_of(entry[1])
            missing = {rank.op_of(u) for u in deps[task]} - clock[stream]
            assert not missing, f"rank {rank.rank}: task {task} on {stream} is not ordered after {missing}"
            clock[stream].add(("task", task))
        elif kind == "nccl":
            task, current = entry[1], entry[3]
            assert current == comm, f"step of task {task} called with {current} current, not {comm}"
            producer = by_task[task].producer
            assert producer is None or ("task", producer) in clock[comm], (
                f"rank {rank.rank}: communication of task {task} is not ordered after its producer {producer}")
            clock[comm].add(("comm", task))
    return clock


def test_each_rank_issues_its_steps_in_key_order_after_producers_and_before_consumers(tmp_path: Path) -> None:
    for graph, plan in _plans(tmp_path):
        ranks = [_Rank(graph, plan, r) for r in range(2)]
        for rank in ranks:
            rank.backend.execute(fake_env(graph))
            calls = [e for e in rank.log if e[0] == "nccl"]
            assert [c[1] for c in calls] == [s.task for s in rank.steps]
            assert [s.key for s in rank.steps] == sorted(s.key for s in rank.steps)
            clock = _replay(rank)
            # the caller's stream is after every run and every communication: the round is joined
            ran = {("task", e[1]) for e in rank.log if e[0] == "run"} | {("comm", c[1]) for c in calls}
            assert ran <= clock["main"]
            assert ran >= {("task", t) for t in rank.mine - rank.comm_tasks}
            assert rank.log[0] == ("fork", "main") and rank.log[-1] == ("join", "main")
            comm = rank.comm.stream.name
            assert rank.log[-2] == ("wait_stream", "main", comm)
            assert ("wait_stream", comm, "main") in rank.log[:rank.log.index(calls[0])]
            for step in rank.steps:  # record_stream for each cross-stream use
                at = rank.log.index(next(c for c in calls if c[1] == step.task))
                if step.source is not None:
                    assert ("keep_for", step.source, comm) in rank.log[:at]
                if step.kind != "send":
                    keep = ("keep_for", step.output, rank.stream_of(step.task))
                    assert keep in rank.log[at:]
        shared = [[r.identity(s) for s in r.steps] for r in ranks]
        common = set(shared[0]) & set(shared[1])
        assert common and [i for i in shared[0] if i in common] == [i for i in shared[1] if i in common]


def test_the_same_rank_runs_again_on_the_same_communication_stream(tmp_path: Path) -> None:
    graph, plan = _plans(tmp_path)[2]
    rank = _Rank(graph, plan, 1)
    rank.backend.execute(fake_env(graph))
    first = rank.comm.stream
    del rank.log[:]
    rank.backend.execute(fake_env(graph))
    assert rank.comm.stream is first and not any(e[0] == "new_stream" for e in rank.log)
    _replay(rank)


def test_a_failed_communication_names_its_step_and_still_joins_every_stream(tmp_path: Path) -> None:
    graph, plan = _plans(tmp_path)[1]
    rank = _Rank(graph, plan, 0, fail=3)
    with pytest.raises(RuntimeFailure, match=r"task 3 \(t:g_sum0\): all_reduce with ranks 0, 1 failed: "
                                             r"RuntimeError: NCCL error"):
        rank.backend.execute(fake_env(graph))
    comm = rank.comm.stream.name
    assert rank.log[-2:] == [("wait_stream", "main", comm), ("join", "main")]


def test_a_step_issued_before_its_producer_ran_is_refused(tmp_path: Path) -> None:
    graph, plan = _plans(tmp_path)[0]
    rank = _Rank(graph, plan, 0)
    send = rank.steps[0]
    assert send.kind == "send" and send.producer is not None
    rank.comm.begin(fake_env(graph), rank.recorder, rank.recorder.main)
    with pytest.raises(RuntimeFailure, match=rf"send to rank 1: issued before task {send.producer}, which computes"):
        rank.comm.issue(send)


def test_a_transfer_received_before_its_send_is_issued_is_keyed_at_the_receiving_run(tmp_path: Path) -> None:
    graph, plan = _plans(tmp_path)[2]
    sequence = issue_steps(plan)
    send_at = next(i for i, s in enumerate(sequence) if s.op == "send" and s.task == 0)
    run_at = next(i for i, s in enumerate(sequence) if s.op == "run" and s.task == 0)
    assert run_at < send_at  # the issue order puts the receiving run first
    steps = [comm_steps(plan, graph, r)[0] for r in range(2)]
    assert [(s.kind, s.key) for s in steps] == [("send", run_at), ("recv", run_at)]
