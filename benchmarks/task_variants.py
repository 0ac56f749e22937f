"""Ways of running one fused task on CPU, for ``python -m benchmarks.providers``.

A model is :func:`prepare`\\ d once (graph fused into tasks, weights loaded, kernels bound,
tasks in the order :class:`cosched.runtime.SequentialExecutor` runs them), then
:func:`build` turns each task into a :class:`Step` of one variant (:data:`VARIANTS`):

- ``eager``: the task's cosched kernels op by op;
- ``traced``: one ``torch.jit.trace`` per task (:class:`cosched.execution.traced.TaskTracer`,
  the current default); a task it rejects runs op by op and counts as a fallback;
- ``frozen``: the task as an ``nn.Module`` whose weights are buffers, traced, then
  ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``. A traced *function* cannot
  be frozen ("Freezing expects a ScriptModule"): its weights are already constants of the
  graph, so no freezing pass sees them as foldable attributes;
- ``freeze-only``: the same module frozen, without ``optimize_for_inference`` (no oneDNN
  conversion), to tell the two steps apart;
- ``inductor``: ``torch.compile(fn, backend="inductor", dynamic=False)`` per task;
- ``inductor-freeze``: the same with ``torch._inductor.config.freezing`` on a task module
  (weights become constants, oneDNN prepacks them);
- ``ort-task``: the task's ops as a standalone ONNX model in its own onnxruntime session;
- ``ort-model``: the whole model as one onnxruntime session (no task steps).

Every frozen, compiled or onnxruntime task is checked against its kernels on the model's
real activations (relative error <= :data:`TOLERANCE`); one that fails to build or to
agree runs as ``traced`` instead and is counted in :attr:`Built.fallbacks`.
"""

from __future__ import annotations

import dataclasses
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

import cosched.ir
from cosched import zoo
from cosched.execution.bindings import bind_inputs, collect_outputs
from cosched.execution.compare import compare_outputs
from cosched.execution.kernels import Kernel, host_values, prepare_kernels
from cosched.execution.malloc import keep_freed_memory
from cosched.execution.traced import TaskTracer, shared_constants
from cosched.ir.graph import Graph, Task
from cosched.runtime.sequential import last_uses

__all__ = ["TOLERANCE", "VARIANTS", "Built", "Prepared", "Step", "build", "prepare", "rel_error", "run_model"]

TOLERANCE = 1e-4
VARIANTS = ("eager", "traced", "frozen", "freeze-only", "inductor", "inductor-freeze", "ort-task", "ort-model")
Env = dict[str, torch.Tensor]
Feeds = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Prepared:
    """One zoo model ready to run task by task; ``reference`` holds every tensor of one
    op-by-op run on ``feeds`` (the activations tasks are checked and compiled on)."""

    name: str
    path: Path
    graph: Graph
    order: tuple[Task, ...]
    kernels: Mapping[str, Kernel]
    constants: Mapping[str, torch.Tensor]
    feeds: Feeds
    reference: Mapping[str, torch.Tensor]
    last_use: Mapping[int, Sequence[str]]

    def signature(self, task: Task) -> str:
        return "+".join(op.op_type for op in self.graph.task_ops(task))

    def io(self, task: Task) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, torch.Tensor]]:
        """(activation inputs, outputs, constants read) of ``task``."""
        reads = self.graph.task_inputs(task)
        fixed = {n: self.constants[n] for n in reads if n in self.constants}
        return tuple(n for n in reads if n not in fixed), self.graph.task_outputs(task), fixed


@dataclass(frozen=True)
class Step:
    """One task of one variant: reads its inputs from the env, writes its outputs."""

    label: str
    signature: str
    run: Callable[[Env], None]


@dataclass
class Built:
    """A variant's steps (``None`` for ``ort-model``, which runs ``whole``), what building
    them cost, and the tasks that fell back to ``traced`` with why."""

    variant: str
    steps: list[Step] | None
    build_s: float = 0.0
    whole: Callable[[Feeds], Feeds] | None = None
    fallbacks: dict[str, str] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def prepare(name: str, size: str = "full", batch: int = 1) -> Prepared:
    """Export, import and fuse zoo model ``name`` and run it once op by op. Tunes malloc to
    keep freed memory, as every CPU executor does (:mod:`cosched.execution.malloc`)."""
    keep_freed_memory()
    path = zoo.export(name, size=size, batch=batch)
    graph = cosched.ir.analyse(cosched.ir.fuse(cosched.ir.load_models([path], names=[name], batch=batch)))
    constants = shared_constants(graph, torch.device("cpu"))
    kernels = prepare_kernels(graph.ops, host=host_values(graph.ops, constants), device="cpu")
    order = tuple(graph.task(i) for i in nx.lexicographical_topological_sort(graph.to_networkx("task")))
    feeds = {name: zoo.example_inputs(name, size, batch)}
    env: Env = dict(constants)
    env.update(bind_inputs(graph, feeds))
    with torch.inference_mode():
        for kernel in kernels:
            kernel(env)
    return Prepared(name, path, graph, order, {k.op.name: k for k in kernels}, constants, feeds, env,
                    last_uses(graph, [list(graph.task_ops(t)) for t in order]))


def run_model(p: Prepared, built: Built) -> tuple[Feeds, float, list[float]]:
    """(outputs, total ms, ms of each step) of one run, as ``SequentialExecutor.run`` runs."""
    if built.whole is not None:
        start = time.perf_counter_ns()
        outputs = built.whole(p.feeds)
        return outputs, (time.perf_counter_ns() - start) / 1e6, []
    assert built.steps is not None
    keep = set(p.constants) | {n for t in p.graph.tenants for _, n in t.outputs}
    times: list[float] = []
    start = time.perf_counter_ns()
    env: Env = dict(p.constants)
    env.update(bind_inputs(p.graph, p.feeds))
    with torch.inference_mode():
        for index, step in enumerate(built.steps):
            began = time.perf_counter_ns()
            step.run(env)
            times.append((time.perf_counter_ns() - began) / 1e6)
            for name in p.last_use.get(index, ()):
                if name not in keep:
                    env.pop(name, None)
    outputs = collect_outputs(p.graph, env)
    return outputs, (time.perf_counter_ns() - start) / 1e6, times


def rel_error(got: Any, want: Any) -> float:
    """max |got - want| / max |want| (inf on a shape mismatch or a difference that is not
    finite: :func:`cosched.execution.compare.compare_outputs` of one output)."""
    return compare_outputs({"t": {"o": got}}, {"t": {"o": want}}).max_rel_err


# ------------------------------------------------------------------------- the variants
class _Call:
    """A task as one callable of its activation inputs returning its outputs."""

    def __init__(self, inputs: Sequence[str], outputs: Sequence[str], fn: Callable[..., Any]) -> None:
        self.inputs, self.outputs, self.fn = tuple(inputs), tuple(outputs), fn

    def __call__(self, env: Env) -> None:
        results = self.fn(*(env[n] for n in self.inputs))
        results = results if isinstance(results, tuple | list) else (results,)
        for name, value in zip(self.outputs, results, strict=True):
            env[name] = value


class _Ops:
    def __init__(self, kernels: Sequence[Kernel]) -> None:
        self.kernels = tuple(kernels)

    def __call__(self, env: Env) -> None:
        for kernel in self.kernels:
            kernel(env)


def _run_task(kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str],
              args: Sequence[torch.Tensor], fixed: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    env: Env = dict(fixed)
    env.update(zip(inputs, args, strict=True))
    for kernel in kernels:
        kernel(env)
    return tuple(env[n] for n in outputs)


class TaskModule(torch.nn.Module):
    """A task whose constants are buffers, so that tracing records them as attributes that
    ``torch.jit.freeze`` (and Inductor's freezing) can fold and prepack."""

    def __init__(self, kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str],
                 fixed: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.kernels, self.inputs, self.outputs = tuple(kernels), tuple(inputs), tuple(outputs)
        self.slots = {}
        for index, (name, value) in enumerate(fixed.items()):
            self.register_buffer(f"c{index}", value)
            self.slots[name] = f"c{index}"

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fixed = {name: getattr(self, slot) for name, slot in self.slots.items()}
        return _run_task(self.kernels, self.inputs, self.outputs, args, fixed)


def _fresh_code(fn: Callable[..., Any], tag: str) -> Any:
    """``fn`` with a code object of its own: Dynamo caches compiled frames per code object
    (at most ``recompile_limit`` each), so tasks sharing one would evict each other."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _agrees(p: Prepared, task: Task, fn: Callable[..., Any]) -> str:
    """"" when ``fn`` reproduces the task's reference outputs, else why not."""
    inputs, outputs, _ = p.io(task)
    with torch.inference_mode():
        got = fn(*(p.reference[n] for n in inputs))
    got = got if isinstance(got, tuple | list) else (got,)
    worst = max((rel_error(g.numpy() if isinstance(g, torch.Tensor) else g, p.reference[n].numpy())
                 for g, n in zip(got, outputs, strict=True)), default=0.0)
    return "" if worst <= TOLERANCE else f"outputs differ from the kernels' (relative error {worst:.2e})"


class OverBudget(Exception):
    """Building a variant took longer than its budget; ``notes`` extrapolate the full cost."""

    def __init__(self, notes: dict[str, Any]) -> None:
        super().__init__(f"compile budget exceeded: {notes}")
        self.notes = notes


def build(p: Prepared, variant: str, *, budget_s: float = 300.0) -> Built:
    """The steps of ``variant`` for every task of ``p`` (see the module doc). Raises
    :class:`OverBudget` when the tasks' compile times add up to more than ``budget_s``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    started = time.perf_counter()
    if variant == "ort-model":
        built = Built(variant, None, whole=_ort_model(p))
    elif variant == "eager":
        built = Built(variant, [Step(_label(t), p.signature(t), _Ops(_kernels(p, t))) for t in p.order])
    else:
        built = _traced(p)
        built.variant = variant
        if variant != "traced":
            _replace(p, built, budget_s)
    built.build_s = time.perf_counter() - started
    return built


def _label(task: Task) -> str:
    return task.name or str(task.id)


def _kernels(p: Prepared, task: Task) -> list[Kernel]:
    return [p.kernels[name] for name in task.ops]


def _traced(p: Prepared) -> Built:
    tracer = TaskTracer()
    steps = []
    for task in p.order:
        traced = tracer.trace(p.graph, task, _kernels(p, task))
        steps.append(Step(_label(task), p.signature(task), traced if traced is not None else _Ops(_kernels(p, task))))
    return Built("traced", steps, fallbacks={k.split(":", 1)[1]: f"op by op: {v}" for k, v in tracer.reasons.items()})


def _replace(p: Prepared, built: Built, budget_s: float) -> None:
    """Swap each traced step for the variant's, where it builds and agrees."""
    assert built.steps is not None
    make = _MAKERS[built.variant]
    options = _ort_options() if built.variant == "ort-task" else None
    for index, task in enumerate(p.order):
        label = built.steps[index].label
        if built.variant in ("frozen", "freeze-only") and isinstance(built.steps[index].run, _Ops):
            continue  # not traceable: already counted, runs op by op as in ``traced``
        began = time.perf_counter()
        fn: Callable[..., Any] | None = None
        try:
            fn = make(p, task, options)
            why = _agrees(p, task, fn)
        except Exception as exc:  # counted as a fallback with its reason, never silent
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        built.compile_s[label] = time.perf_counter() - began
        if fn is None or why:
            built.fallbacks[label] = why
        else:
            inputs, outputs, _ = p.io(task)
            built.steps[index] = Step(label, p.signature(task), _Call(inputs, outputs, fn))
        spent = sum(built.compile_s.values())
        if spent > budget_s:
            done = len(built.compile_s)
            raise OverBudget({"compiled_tasks": done, "tasks": len(p.order), "compile_s": spent,
                              "extrapolated_compile_s": spent / done * len(p.order)})
    if built.variant.startswith("inductor"):
        from torch._dynamo.utils import counters

        built.notes["graph_breaks"] = sum(counters["graph_break"].values())
        built.notes["unique_graphs"] = counters["stats"]["unique_graphs"]


def _frozen(p: Prepared, task: Task, _: Any, *, optimize: bool = True) -> Callable[..., Any]:
    inputs, outputs, fixed = p.io(task)
    module = TaskModule(_kernels(p, task), inputs, outputs, fixed).eval()
    example = tuple(p.reference[n] for n in inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        return torch.jit.optimize_for_inference(frozen) if optimize else frozen


def _freeze_only(p: Prepared, task: Task, options: Any) -> Callable[..., Any]:
    return _frozen(p, task, options, optimize=False)


def _inductor(p: Prepared, task: Task, _: Any, *, freeze: bool = False) -> Callable[..., Any]:
    """A compiled task; compilation happens at its first call (in :func:`_agrees`)."""
    inputs, outputs, fixed = p.io(task)
    kernels = _python_hosts(_kernels(p, task))
    if freeze:
        forward = _fresh_code(TaskModule.forward, str(task.id))
        module = type(f"Task{task.id}", (TaskModule,), {"forward": forward})(kernels, inputs, outputs, fixed)
        compiled = torch.compile(module.eval(), backend="inductor", dynamic=False)

        def first_call_frozen(*args: torch.Tensor) -> Any:
            with torch._inductor.config.patch(freezing=True):
                return compiled(*args)
        return _Once(first_call_frozen, compiled)

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _run_task(kernels, inputs, outputs, args, fixed)
    return torch.compile(_fresh_code(fn, str(task.id)), backend="inductor", dynamic=False)


def _python_hosts(kernels: Sequence[Kernel]) -> list[Kernel]:
    """``kernels`` with their integer host values (shapes, axes) as tuples of ints, which the
    ops read alike (``int_list``): Dynamo sees constants where it would see a tensor's
    ``.tolist()``, a data-dependent graph break."""
    def plain(value: torch.Tensor) -> Any:
        return value if value.is_floating_point() else tuple(int(v) for v in value.reshape(-1).tolist())
    return [dataclasses.replace(k, host=tuple((i, plain(v)) for i, v in k.host)) for k in kernels]


class _Once:
    """``first`` for the first call (compiling under a config patch), ``then`` afterwards."""

    def __init__(self, first: Callable[..., Any], then: Callable[..., Any]) -> None:
        self.first, self.then, self.called = first, then, False

    def __call__(self, *args: Any) -> Any:
        if not self.called:
            self.called = True
            return self.first(*args)
        return self.then(*args)


def _inductor_freeze(p: Prepared, task: Task, options: Any) -> Callable[..., Any]:
    return _inductor(p, task, options, freeze=True)


def _ort_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _ort_task(p: Prepared, task: Task, options: Any) -> Callable[..., Any]:
    import onnxruntime as ort

    inputs, outputs, _ = p.io(task)
    session = ort.InferenceSession(task_model(p, task).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    run = session.run
    names = list(outputs)

    def call(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {n: np.ascontiguousarray(a.numpy()) for n, a in zip(inputs, args, strict=True)}
        return tuple(torch.from_numpy(o) for o in run(names, feeds))
    return call


def task_model(p: Prepared, task: Task) -> Any:
    """``task``'s ops as a standalone ``onnx.ModelProto``: constants become initializers,
    activations inputs, the task's outputs outputs."""
    import onnx
    from onnx import helper, numpy_helper

    inputs, outputs, fixed = p.io(task)

    def value_info(name: str) -> Any:
        info = p.graph.tensor(name)
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)),
                                             list(info.shape))
    nodes = [helper.make_node(op.op_type, list(op.inputs), list(op.outputs), name=op.name, domain=op.domain,
                              **{k: _onnx_attr(v) for k, v in op.attrs.items()})
             for op in p.graph.task_ops(task)]
    graph = helper.make_graph(nodes, _label(task), [value_info(n) for n in inputs],
                              [value_info(n) for n in outputs],
                              [numpy_helper.from_array(v.numpy(), name=n) for n, v in fixed.items()])
    opsets = [helper.make_opsetid(d, v) for d, v in p.graph.tenants[0].opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def _onnx_attr(value: Any) -> Any:
    from onnx import numpy_helper

    if isinstance(value, np.ndarray):
        return numpy_helper.from_array(value)
    if isinstance(value, tuple):
        return [numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for v in value]
    return value


def _ort_model(p: Prepared) -> Callable[[Feeds], Feeds]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(p.path), _ort_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def whole(feeds: Feeds) -> Feeds:
        return {p.name: dict(zip(names, session.run(names, feeds[p.name]), strict=True))}
    return whole


_MAKERS: dict[str, Callable[[Prepared, Task, Any], Callable[..., Any]]] = {
    "frozen": _frozen, "freeze-only": _freeze_only, "inductor": _inductor,
    "inductor-freeze": _inductor_freeze, "ort-task": _ort_task,
}
