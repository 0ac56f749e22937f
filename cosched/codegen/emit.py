"""The Python emitter: a plan's steps written out as a readable, straight-line module.

The module holds one function per stream, ``stream_<i>(m)``, with one call per step of that
stream (:func:`cosched.codegen.steps.stream_steps`): ``m.wait``, ``m.run``, ``m.free`` and
``m.record``, and one function ``issue(m)`` with every stream's steps in the order a single
host thread issues them on CUDA (:func:`cosched.codegen.steps.issue_steps`). Each run is
preceded by comment lines naming its tenant, ops and provider (torch kernels, or the
onnxruntime session of its segment, :func:`cosched.codegen.steps.segments`). ``run(graph, inputs, device)`` hands
these functions to the runtime's executor (:meth:`cosched.runtime.executor.Executor.for_program`),
whose CPU worker threads call the stream functions and whose CUDA backend calls ``issue``:
the module is the plan spelled out, and runs through the same machines as the plan itself.

A multi-device plan (schema version 2) is written as one section per device (rank): its
stream functions, ``issue_rank_<d>(m)`` with its steps in issue order (``m.send`` posts a
Transfer's input to its peer device; a collective's rank is an ``m.run`` whose comment names
its group and peers), and ``RANKS`` mapping each rank to its device, streams, issue function
and weight shard. It shows each rank's program and has no ``run`` function: the plan runs on
the distributed runtime (:mod:`cosched.runtime.distributed`), one process per device, which
executes plan.json itself.

Generated code is safe to read and to import: names taken from models and files (tenants,
ops, tensors) appear only inside comments, with every character that could end a comment
escaped, and inside string literals written by :func:`repr`; nothing from a model becomes
an identifier or a statement. :func:`load_module` compiles the source and registers it with
``linecache`` so tracebacks point into the generated lines.
"""

from __future__ import annotations

import linecache
import types

from cosched.codegen.plan import Event, Plan, TaskSpec
from cosched.codegen.steps import Step, issue_steps, segments, stream_steps

__all__ = ["emit_python", "load_module", "safe_text"]

_FOOTER = '''

def run(graph, inputs, device="cpu", **options):
    """Run the plan over ``graph`` (which must hold the plan's tasks); outputs by tenant.

    ``options`` are the executor's (e.g. ``threads_per_stream``, ``cuda_graph``).
    """
    with Executor.for_program(graph, PROGRAM, device, **options) as executor:
        return executor.run(inputs)
'''


def emit_python(plan: Plan) -> str:
    """The source of a module that runs ``plan`` (see the module docstring)."""
    specs = {t.id: t for t in plan.tasks}
    events = {e.id: e for e in plan.events}
    stream_of = plan.stream_of_task()
    writer = _Writer(plan, specs, events, stream_of, segments(plan))
    if plan.devices:
        return _emit_ranks(plan, writer)
    lines = [_header(plan), "", "from __future__ import annotations", "",
             "from cosched.runtime.executor import Executor",
             "from cosched.runtime.program import PlanProgram", ""]
    for stream, steps in zip(plan.streams, stream_steps(plan), strict=True):
        lines += ["", f"def stream_{stream.id}(m):",
                  f'    """Stream {stream.id} (device {stream.device}, priority {stream.priority}): '
                  f'{len(stream.tasks)} tasks."""']
        lines += [line for step in steps for line in writer.lines(step)] or ["    pass"]
    lines += ["", "", "def issue(m):",
              '    """Every stream\'s steps in the order one host thread issues them (CUDA)."""']
    lines += [line for step in issue_steps(plan) for line in writer.lines(step, issue=True)] or ["    pass"]
    lines += [
        "", "",
        "PROGRAM = PlanProgram(",
        f"    streams=({''.join(f'stream_{s.id}, ' for s in plan.streams)}),",
        "    issue=issue,",
        f"    num_events={len(plan.events)},",
        f"    priorities={tuple(int(s.priority) for s in plan.streams)!r},",
        f"    recorders={ {int(e.id): int(e.after_task) for e in plan.events}!r},",
        f"    segments={tuple(tuple(int(t) for t in seg) for seg in segments(plan))!r},",
        ")",
    ]
    lines += _FOOTER.splitlines()
    return "\n".join(lines) + "\n"


def _emit_ranks(plan: Plan, writer: _Writer) -> str:
    """A multi-device plan's module: one section per rank (see the module docstring)."""
    lines = [_header(plan), "", "from __future__ import annotations"]
    sequence = issue_steps(plan)
    per_stream = stream_steps(plan)
    device_of_stream = {s.id: s.device for s in plan.streams}
    for d in plan.devices:
        streams = [s for s in plan.streams if s.device == d.rank]
        weights = (f"{len(d.weights)} weight(s), {d.weight_bytes} bytes, from {safe_text(d.shard_file)}"
                   if d.shard_file else f"{len(d.weights)} weight(s), {d.weight_bytes} bytes")
        cap = f", cap {d.cap_bytes} bytes" if d.cap_bytes is not None else ""
        lines += ["", "", f"# {'=' * 76}",
                  f"# rank {d.rank}: {d.label} ({safe_text(d.name or '?')}), streams "
                  f"{', '.join(str(s.id) for s in streams) or 'none'}",
                  f"# {weights}; peak activations {d.peak_activation_bytes} bytes{cap}",
                  f"# {'=' * 76}"]
        for s in streams:
            steps = per_stream[s.id]
            lines += ["", "", f"def stream_{s.id}(m):",
                      f'    """Stream {s.id} of rank {d.rank} (priority {s.priority}): {len(s.tasks)} tasks."""']
            lines += [line for step in steps for line in writer.lines(step)] or ["    pass"]
        lines += ["", "", f"def issue_rank_{d.rank}(m):",
                  f'    """Rank {d.rank}\'s steps in the order its host thread issues them (CUDA)."""']
        mine = [step for step in sequence if device_of_stream[step.stream] == d.rank]
        lines += [line for step in mine for line in writer.lines(step, issue=True)] or ["    pass"]
    lines += ["", "", "RANKS = {"]
    for d in plan.devices:
        functions = "".join(f"stream_{s.id}, " for s in plan.streams if s.device == d.rank)
        lines.append(f"    {d.rank}: {{'device': {d.label!r}, 'streams': ({functions}), "
                     f"'issue': issue_rank_{d.rank}, 'weights': {d.shard_file!r}}},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def safe_text(text: object) -> str:
    """``text`` fit for a comment or docstring of generated code: backslashes, quotes and
    every character that is not printable (newlines and other line breaks, NUL, control and
    format characters) escaped, so it cannot end the comment or the string."""
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\"'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class _Writer:
    """Lines of generated code for steps, with their comments."""

    def __init__(self, plan: Plan, specs: dict[int, TaskSpec], events: dict[int, Event],
                 stream_of: dict[int, int], runs: tuple[tuple[int, ...], ...]) -> None:
        self.plan = plan
        self.specs = specs
        self.events = events
        self.stream_of = stream_of
        self.segment_of = {t: seg for seg in runs for t in seg}
        self.comms = {c.task: c for c in plan.comms}

    def lines(self, step: Step, issue: bool = False) -> list[str]:
        s = int(step.stream)
        if step.op == "wait":
            e = self.events.get(step.event)
            why = f"task {int(e.after_task)} on stream {int(e.stream)} done" if e else "recorded elsewhere"
            return [_line(f"m.wait({s}, {int(step.event)})", f"event {int(step.event)}: {why}")]  # type: ignore[arg-type]
        if step.op == "record":
            e = self.events.get(step.event)
            waiting = sorted({self.stream_of[w] for w in e.waiters if w in self.stream_of}) if e else []
            return [_line(f"m.record({s}, {int(step.event)})",  # type: ignore[arg-type]
                          f"event {int(step.event)} for stream(s) {', '.join(map(str, waiting)) or 'none'}")]
        if step.op == "free":
            names = tuple(str(n) for n in step.tensors)
            return [_line(f"m.free({s}, {names!r})", "last use")]
        if step.op == "send":
            task = int(step.task)  # type: ignore[arg-type]
            return [_line(f"m.send({s}, {task}, {int(step.peer)})",  # type: ignore[arg-type]
                          f"input of transfer task {task} to device {int(step.peer)}")]  # type: ignore[arg-type]
        return self._run_lines(s, int(step.task), issue)  # type: ignore[arg-type]

    def _run_lines(self, stream: int, task_id: int, issue: bool) -> list[str]:
        task = self.specs[task_id]
        when = self.plan.timeline.get(task_id)
        predicted = f", predicted {float(when[0]):.3f}-{float(when[1]):.3f} ms" if when else ""
        on = f" on stream {stream}" if issue else ""
        lines = [f"    # task {task_id}{on} · tenant {safe_text(task.tenant)} · "
                 f"{safe_text(task.name or task.ops[0])}{predicted} · {self._provider(task)}"]
        lines += [f"    #   {safe_text(name)}" for name in task.ops]
        comm = self.comms.get(task_id)
        if comm is not None and comm.op == "transfer":
            lines.append(f"    #   receives from device {int(comm.peers[0])}" if comm.peers[0] != comm.peers[1]
                         else "    #   source and destination on this device: a local copy")
        elif comm is not None:
            lines.append(f"    #   {comm.op} group {safe_text(comm.group)}, rank {int(comm.rank or 0)} of devices "
                         f"{', '.join(str(int(p)) for p in comm.peers)}: waits for every rank")
        lines.append(f"    m.run({stream}, {task_id})")
        return lines


    def _provider(self, task: TaskSpec) -> str:
        """Who runs ``task``: torch kernels, or its onnxruntime session (which task's call
        runs the whole segment)."""
        seg = self.segment_of.get(task.id)
        if seg is None:
            return "torch kernels"
        if len(seg) == 1:
            return "onnxruntime session of this task"
        if seg[0] == task.id:
            return f"onnxruntime session of tasks {', '.join(map(str, seg))}, run here"
        return f"ran in the onnxruntime session of task {seg[0]}: nothing left to do"


def _header(plan: Plan) -> str:
    predicted = plan.predicted_ms.get("plan")
    makespan = f" Predicted makespan {float(predicted):.3f} ms." if predicted is not None else ""
    tenants = ", ".join(safe_text(t) for t in plan.tenants)
    if plan.devices:
        return (
            f'"""cosched plan for tenants {tenants} on {len(plan.devices)} {safe_text(plan.device_kind)} '
            f"devices ({', '.join(d.label for d in plan.devices)}): {len(plan.streams)} streams, "
            f"{len(plan.tasks)} tasks, {len(plan.events)} events, {len(plan.comms)} communication tasks."
            f"{makespan}\n\n"
            f"Generated by cosched.codegen.emit from a {safe_text(plan.schedule_method or 'given')} "
            "schedule; regenerate it rather than editing. Names from the models appear only in\n"
            "comments (escaped) and string literals.\n"
            "One section per rank shows that device's program. The plan runs with `cosched run PLAN_DIR`\n"
            "or `torchrun --nproc-per-node N -m cosched.runtime.distributed PLAN_DIR`: one process per\n"
            'device, executing plan.json (cosched.runtime.distributed)."""'
        )
    return (
        f'"""cosched plan for tenants {tenants} on {safe_text(plan.device_kind)} '
        f"({safe_text(plan.device.get('name', '?'))}): {len(plan.streams)} streams, "
        f"{len(plan.tasks)} tasks, {len(plan.events)} events.{makespan}\n\n"
        f"Generated by cosched.codegen.emit from a {safe_text(plan.schedule_method or 'given')} "
        "schedule; regenerate it rather than editing. Names from the models appear only in\n"
        "comments (escaped) and string literals.\n"
        'Run it with ``run(graph, inputs, device)``; ``graph`` must hold the plan\'s tasks.\n"""'
    )


def _line(code: str, comment: str) -> str:
    return f"    {code:<44}  # {comment}"


def load_module(source: str, name: str = "cosched_plan") -> types.ModuleType:
    """Compile generated source into a module, registered with linecache for tracebacks."""
    filename = f"<cosched-plan {name} {abs(hash(source)):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module
