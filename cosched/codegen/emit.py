"""The Python emitter: a plan as a readable, standalone, straight-line module.

Every stream becomes a function with one line per op launch, event record, event wait and
buffer free, each commented with its tenant and op. ``run(graph, inputs, device)`` runs the
stream functions in one thread each; on CUDA each thread issues under its own
``torch.cuda.Stream``, and events pair a host flag (so a wait is issued after its record)
with a CUDA event. The module needs torch and cosched's op kernels, nothing else. It runs
every op through its kernel, one Python call per op, even where the executor runs a task as
one traced call (:mod:`cosched.runtime.traced`): it is the plan spelled out to be read and
stepped through, not the fastest way to run it.
:func:`load_module` compiles the source and registers it with ``linecache`` so tracebacks
point into the generated lines.
"""

from __future__ import annotations

import itertools
import keyword
import linecache
import re
import types

from cosched.codegen.plan import Plan, TaskSpec

__all__ = ["emit_python", "load_module"]

_HELPERS = '''
WAIT_TIMEOUT_S = 300.0


class Aborted(Exception):
    """Another stream failed; this one stops."""


class Sync:
    """Plan events: host flags between stream threads, plus CUDA events on a GPU."""

    def __init__(self, count, cuda):
        self.host = [threading.Event() for _ in range(count)]
        self.cuda = [torch.cuda.Event() for _ in range(count)] if cuda else None
        self.abort = threading.Event()

    def record(self, event):
        if self.cuda is not None:
            self.cuda[event].record()
        self.host[event].set()

    def wait(self, event):
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not self.host[event].wait(0.05):
            if self.abort.is_set():
                raise Aborted()
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"timed out waiting for event {event}")
        if self.cuda is not None:
            torch.cuda.current_stream().wait_event(self.cuda[event])

    def free(self, env, name):
        tensor = env.pop(name)
        if tensor.is_cuda:
            tensor.record_stream(torch.cuda.current_stream())


def run(graph, inputs, device="cpu", threads_per_stream=1):
    """Run the plan over ``graph`` (which must hold the plan's tasks); outputs by tenant."""
    device = torch.device(device)
    k = types.SimpleNamespace(**{
        ident: kernel for ident, kernel in zip(OPS, prepare_kernels([graph.op(n) for n in OPS.values()]))
    })
    env = load_constants(graph, device)
    env.update(bind_inputs(graph, inputs, device))
    cuda = device.type == "cuda"
    sync = Sync(NUM_EVENTS, cuda)
    errors = []
    joins = [None] * len(STREAMS)
    main = torch.cuda.current_stream(device) if cuda else None

    def worker(index):
        try:
            torch.set_num_threads(threads_per_stream)
            with torch.inference_mode():
                if not cuda:
                    STREAMS[index](env, k, sync)
                    return
                stream = torch.cuda.Stream(device, priority=PRIORITIES[index])
                stream.wait_stream(main)
                with torch.cuda.stream(stream):
                    STREAMS[index](env, k, sync)
                    joins[index] = torch.cuda.Event()
                    joins[index].record(stream)
        except BaseException as exc:
            sync.abort.set()
            errors.append((index, exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(STREAMS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [(i, e) for i, e in errors if not isinstance(e, Aborted)]
    if real:
        index, error = real[0]
        raise RuntimeFailure(f"stream {index} failed: {error}") from error
    if cuda:
        for join in joins:
            main.wait_event(join)
    return collect_outputs(graph, env)
'''


def emit_python(plan: Plan) -> str:
    """The source of a module that runs ``plan`` (see the module docstring)."""
    specs = {t.id: t for t in plan.tasks}
    idents = _identifiers([name for t in plan.tasks for name in t.ops])
    record_of = {e.id: e for e in plan.events}
    frees: dict[int, list[str]] = {}
    for b in plan.buffers:
        if b.free_after is not None:
            frees.setdefault(b.free_after, []).append(b.tensor)
    lines = [_header(plan), *_imports(), "", "# Kernel attribute -> op it launches.", "OPS = {"]
    lines += [f"    {ident!r}: {name!r}," for name, ident in idents.items()]
    lines += ["}", f"NUM_EVENTS = {len(plan.events)}",
              f"PRIORITIES = {tuple(s.priority for s in plan.streams)!r}", ""]
    for stream in plan.streams:
        lines += ["", f"def stream_{stream.id}(env, k, sync):",
                  f'    """Stream {stream.id} (device {stream.device}, priority {stream.priority}): '
                  f'{len(stream.tasks)} tasks."""']
        for ins in stream.instructions:
            if ins.op == "wait":
                e = record_of[ins.event]  # type: ignore[index]
                lines.append(_line(f"sync.wait({e.id})", f"event {e.id}: task {e.after_task} on stream {e.stream} done"))
            elif ins.op == "record":
                e = record_of[ins.event]  # type: ignore[index]
                lines.append(_line(f"sync.record({e.id})", f"event {e.id} for stream(s) {_waiting_streams(plan, e.waiters)}"))
            else:
                lines += _task_lines(specs[ins.task], idents, frees.get(ins.task, []), plan)  # type: ignore[index]
        if not stream.instructions:
            lines.append("    pass")
    lines += ["", "", f"STREAMS = ({', '.join(f'stream_{s.id}' for s in plan.streams)},)"]
    lines += _HELPERS.splitlines()
    return "\n".join(lines) + "\n"


def _header(plan: Plan) -> str:
    predicted = plan.predicted_ms.get("plan")
    makespan = f" Predicted makespan {predicted:.3f} ms." if predicted is not None else ""
    return (
        f'"""cosched plan for tenants {", ".join(plan.tenants)} on {plan.device_kind} '
        f"({plan.device.get('name', '?')}): {len(plan.streams)} streams, {len(plan.tasks)} tasks, "
        f"{len(plan.events)} events.{makespan}\n\nGenerated by cosched.codegen.emit from a "
        f"{plan.schedule_method or 'given'} schedule; regenerate it rather than editing.\n"
        'Run it with ``run(graph, inputs, device)``; ``graph`` must hold the plan\'s tasks.\n"""'
    )


def _imports() -> list[str]:
    return [
        "", "from __future__ import annotations", "", "import threading", "import time", "import types",
        "", "import torch", "",
        "from cosched.errors import RuntimeFailure",
        "from cosched.runtime.bindings import bind_inputs, collect_outputs",
        "from cosched.runtime.kernels import load_constants, prepare_kernels",
    ]


def _task_lines(task: TaskSpec, idents: dict[str, str], frees: list[str], plan: Plan) -> list[str]:
    when = plan.timeline.get(task.id)
    predicted = f", predicted {when[0]:.3f}-{when[1]:.3f} ms" if when else ""
    lines = [f"    # task {task.id} · tenant {task.tenant} · {task.name or task.ops[0]}{predicted}"]
    for name in task.ops:
        lines.append(_line(f"k.{idents[name]}(env)", f"{task.tenant} · {name}"))
    for name in frees:
        lines.append(_line(f"sync.free(env, {name!r})", "last use"))
    return lines


def _line(code: str, comment: str) -> str:
    return f"    {code:<44}  # {comment}"


def _waiting_streams(plan: Plan, waiters: tuple[int, ...]) -> str:
    stream_of = plan.stream_of_task()
    return ", ".join(str(s) for s in sorted({stream_of[w] for w in waiters})) or "none"


def _identifiers(names: list[str]) -> dict[str, str]:
    """Readable unique Python identifiers for op names: ``bert//layer.0/MatMul`` -> ``bert_layer_0_matmul``."""
    used: set[str] = set()
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "op"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = f"op_{base}"
        ident = base
        for n in itertools.count(2):
            if ident not in used:
                break
            ident = f"{base}_{n}"
        used.add(ident)
        out[name] = ident
    return out


def load_module(source: str, name: str = "cosched_plan") -> types.ModuleType:
    """Compile generated source into a module, registered with linecache for tracebacks."""
    filename = f"<cosched-plan {name} {abs(hash(source)):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module
