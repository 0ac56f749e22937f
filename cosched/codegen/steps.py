"""A verified plan's instructions as the steps every runner executes, in its two orders.

A plan's streams are instruction lists (run a task, record an event, wait for one) that
:func:`cosched.codegen.verify.verify_plan` has proved race-free. Every way of running a
plan executes exactly these instructions, plus a ``free`` step after the last reader of
each buffer (from the plan's buffer lifetimes), in one of two orders:

- **per stream** (:func:`stream_steps`): one list per stream, in program order. The CPU
  backend walks each on its own worker thread.
- **one issue sequence** (:func:`issue_steps`): every stream's steps interleaved for a single
  issuing host thread, as CUDA needs (a wait issued before its event's record is a no-op
  there). Each run is issued at its place in the plan's ``issue_order``, with the waits
  before it and the records and frees after it on its stream; each stream's own order is
  kept. A sequence in which some wait would come before its record is refused.

In a multi-device plan a ``send`` step follows the run of the task producing the tensor
it sends, in the run's chunk; each device (rank) issues the steps of its own streams, in the
order they have in the one sequence.

Nothing is re-derived or dropped: each instruction of the plan is one step in each order.
The runtime's backends interpret these steps (:mod:`cosched.runtime.machine`), and the
generated module (:mod:`cosched.codegen.emit`) is the same steps written out as calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cosched.codegen.plan import Plan
from cosched.errors import PlanError

__all__ = ["Step", "StepOp", "frees_after", "issue_steps", "segments", "stream_steps"]

StepOp = Literal["run", "record", "wait", "free", "send"]


@dataclass(frozen=True)
class Step:
    """One step on ``stream``: run ``task``, record or wait for ``event``, free ``tensors``,
    or (a multi-device plan) send the input of transfer ``task`` to device ``peer``."""

    stream: int
    op: StepOp
    task: int | None = None
    event: int | None = None
    tensors: tuple[str, ...] = ()
    peer: int | None = None


def frees_after(plan: Plan) -> dict[int, tuple[str, ...]]:
    """Per task, the buffers dead after it (sorted), from the plan's buffer lifetimes."""
    out: dict[int, list[str]] = {}
    for b in plan.buffers:
        if b.free_after is not None:
            out.setdefault(b.free_after, []).append(b.tensor)
    return {t: tuple(sorted(names)) for t, names in out.items()}


def stream_steps(plan: Plan) -> tuple[tuple[Step, ...], ...]:
    """Each stream's steps in program order: its instructions, a free after each run whose
    task ends some buffer's life."""
    frees = frees_after(plan)
    out = []
    for s in plan.streams:
        steps: list[Step] = []
        for ins in s.instructions:
            if ins.op == "run":
                steps.append(Step(s.id, "run", task=ins.task))
                if ins.task in frees:
                    steps.append(Step(s.id, "free", task=ins.task, tensors=frees[ins.task]))  # type: ignore[index]
            elif ins.op == "send":
                steps.append(Step(s.id, "send", task=ins.task, peer=ins.peer))
            else:
                steps.append(Step(s.id, ins.op, event=ins.event))
        out.append(tuple(steps))
    return tuple(out)


def segments(plan: Plan) -> tuple[tuple[int, ...], ...]:
    """The runs of onnxruntime tasks that execute as one session each (:mod:`cosched.execution.ort`).

    A segment is a maximal run of tasks with provider ``"ort"`` of one tenant, back to back on
    one stream with no event between them: no other stream waits inside it and it waits on
    nothing inside it, so running it as one call changes no ordering. Frees between its tasks
    do not cut it (the tensors they free are read only inside the segment, or before it).
    """
    providers = {t.id: t.provider for t in plan.tasks}
    tenants = {t.id: t.tenant for t in plan.tasks}
    out: list[tuple[int, ...]] = []
    for s in plan.streams:
        run: list[int] = []
        for ins in s.instructions:
            joins = (ins.op == "run" and providers.get(ins.task) == "ort"  # type: ignore[arg-type]
                     and (not run or tenants[run[-1]] == tenants[ins.task]))  # type: ignore[index]
            if not joins and run:
                out.append(tuple(run))
                run = []
            if ins.op == "run" and providers.get(ins.task) == "ort":  # type: ignore[arg-type]
                run.append(ins.task)  # type: ignore[arg-type]
        if run:
            out.append(tuple(run))
    return tuple(out)


def issue_steps(plan: Plan) -> tuple[Step, ...]:
    """All streams' steps in one order for a single issuing thread (see the module docstring).

    A stream's steps are cut into chunks, one per run: the waits (and any records) before
    the run, the run, then the records and frees after it up to the next wait or run. Chunks
    are issued in the order of their run in ``plan.issue_order``; steps after a stream's
    last run follow that run, and the steps of a stream that runs no task come first. Raises :class:`PlanError` if a wait would be issued before the
    record of its event.
    """
    position = {t: i for i, t in enumerate(plan.issue_order)}
    keyed: list[tuple[int, int, tuple[Step, ...]]] = []
    for steps in stream_steps(plan):
        chunks: list[list[Step]] = [[]]
        seen_run = False
        for step in steps:
            if seen_run and step.op in ("wait", "run"):
                chunks.append([])
                seen_run = False
            chunks[-1].append(step)
            seen_run = seen_run or step.op == "run"
        key = -1  # steps after a stream's last run go with that run; a stream without runs first
        for chunk in chunks:
            runs = [s.task for s in chunk if s.op == "run"]
            if not chunk:
                continue
            if runs:
                if runs[0] not in position:
                    raise PlanError(f"issue_order does not list task {runs[0]}")
                key = position[runs[0]]
            keyed.append((key, chunk[0].stream, tuple(chunk)))
    keyed.sort(key=lambda k: (k[0], k[1]))  # stable: a stream's chunks of one key keep their order
    sequence = tuple(step for _, _, chunk in keyed for step in chunk)
    _check_records_first(sequence)
    return sequence


def _check_records_first(sequence: tuple[Step, ...]) -> None:
    recorded: set[int] = set()
    for step in sequence:
        if step.op == "record":
            recorded.add(step.event)  # type: ignore[arg-type]
        elif step.op == "wait" and step.event not in recorded:
            raise PlanError(
                f"issued from one thread, stream {step.stream} would wait for event {step.event} "
                "before it is recorded (a CUDA wait on an unrecorded event does nothing): "
                "the plan's issue_order does not fit its events"
            )
