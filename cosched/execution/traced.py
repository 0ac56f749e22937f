"""Whole tasks as one TorchScript call: Python dispatch and the GIL paid once per task.

Run op by op, every kernel is a Python call that re-acquires the GIL when its aten op
returns. On CPU worker threads that makes co-running tasks take turns on the GIL: two
threads of 20-op tasks measured 3.5-4x slower each than alone on a 2-core machine, and
the slowdown swung 2x between identical repeats, which no cost model can predict. A task
traced with :func:`torch.jit.trace` runs its whole op sequence inside TorchScript's
interpreter, which releases the GIL for the duration of the call: the same pair then
measured 1.1-1.5x, and the task alone ran 1.5x faster. Tasks of one microsecond-scale op
gain little: the executor's Python per task is then as long as the task
(``python -m benchmarks.traced`` measures whole zoo models).

:func:`trace_task` traces a task's kernels on example inputs of the task's static shapes
and keeps the trace only when it is safe to replay:

- a :class:`torch.jit.TracerWarning` says a tensor was turned into a Python number, list,
  bool or NumPy array. In a cosched graph every shape is static, so a size turned into a
  number is safe (pooling computes its padding that way); a value turned into one is not,
  since replaying the trace would reuse the example's value. So on a warning the task is
  traced again on a second draw of inputs (other random floats; integers all ones instead
  of all zeros) and the two traces must print the same graph;
- the trace, run on every draw, must return outputs bit-identical to the kernels' on that
  draw (same dtypes and shapes too). This catches values baked into tensor constants, which
  a printed graph elides;
- any exception while tracing rejects it.

Weights and folded constants are not arguments of the trace: the kernels read them as
they are (a Reshape reads its shape tensor), and the trace holds them: the very tensors,
not copies (only values derived from constants alone are baked anew, e.g. bert's position
embeddings of its positions, a fraction of a weight). Tracing runs each task on example
inputs several times; executors hand that memory back once built
(:func:`cosched.execution.malloc.release_freed_memory`), or a CPU rank of full-size models
would keep about its weights' size of it resident.

A rejected task runs op by op, as before; :class:`TaskTracer` counts both kinds. Traces are
cached per graph and task (a graph's shapes are static, so one trace serves every run and
every executor of that graph). ``torch.jit.trace`` is deprecated in favour of
``torch.compile``/``torch.export``, whose compile times (seconds per task) do not suit a
plan with hundreds of tasks; where ``torch.jit`` is gone every task runs op by op.

CUDA tasks are not traced by default: TorchScript may fuse ops on CUDA, which changes
results in the last bits, and that path has not been run on a GPU.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cosched.execution.kernels import Kernel, load_constants
from cosched.execution.sharing import root
from cosched.ir.graph import Graph, Task

__all__ = ["TaskTracer", "TracedTask", "example_inputs", "provide_constants", "shared_constants", "trace_task"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracedTask:
    """A traced task: reads ``inputs`` from the env, writes ``outputs`` back."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: Callable[..., tuple[torch.Tensor, ...]]

    def __call__(self, env: MutableMapping[str, torch.Tensor]) -> None:
        results = self.fn(*(env[name] for name in self.inputs))
        for name, value in zip(self.outputs, results, strict=True):
            env[name] = value


def _run_kernels(kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str],
                 tensors: Sequence[torch.Tensor], fixed: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    env: dict[str, torch.Tensor] = dict(fixed)
    env.update(zip(inputs, tensors, strict=True))
    for kernel in kernels:
        kernel(env)
    return tuple(env[name] for name in outputs)


def trace_task(kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str],
               draws: Sequence[Mapping[str, torch.Tensor]],
               fixed: Mapping[str, torch.Tensor] | None = None) -> tuple[TracedTask | None, str]:
    """(the traced task, "") or (None, why it cannot be traced), as the module doc describes.

    ``inputs`` (the task's activations) become the trace's arguments; each of ``draws`` (at
    least two) holds an example value for every one of them. ``fixed`` are the values that
    never change between runs (weights and folded constants), read by the kernels as they are.
    """
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        return None, "torch.jit.trace is not available in this torch"
    if len(draws) < 2:
        raise ValueError("trace_task needs at least two draws of example inputs")
    fixed = dict(fixed or {})
    inputs, outputs = tuple(inputs), tuple(outputs)

    def fn(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _run_kernels(kernels, inputs, outputs, args, fixed)

    examples = [tuple(draw[name] for name in inputs) for draw in draws]
    expected = []
    with torch.no_grad():
        for tensors in examples:
            try:
                eager = fn(*tensors)
            except Exception as exc:  # run op by op, the executor reports the failure then
                return None, f"the kernels fail on example inputs: {type(exc).__name__}: {exc}"
            if not all(isinstance(t, torch.Tensor) for t in (*tensors, *eager)):
                return None, "an input or output is not a tensor"
            expected.append(eager)
    traced, warned = _trace(fn, examples[0])
    if isinstance(traced, str):
        return None, traced
    if warned:  # safe only when the trace does not depend on the example's values
        other, _ = _trace(fn, examples[1])
        if isinstance(other, str) or str(other.inlined_graph) != str(traced.inlined_graph):
            return None, f"value-dependent: {warned}"
    # every draw, not only the traced one: a printed graph elides tensor constants, so two
    # traces that baked different values can print alike; their outputs cannot agree
    with torch.no_grad():
        for tensors, eager in zip(examples, expected, strict=True):
            for _ in range(3):  # the executor specialises on early runs
                result = traced(*tensors)
                result = result if isinstance(result, tuple) else (result,)
                if len(result) != len(eager) or not all(_same(a, b) for a, b in zip(result, eager, strict=True)):
                    return None, "the trace's outputs differ from the kernels'"
    return TracedTask(inputs, outputs, traced), ""


def _trace(fn: Callable[..., tuple[torch.Tensor, ...]], example: tuple[torch.Tensor, ...]) -> tuple[Any, str]:
    """(the trace, the first TracerWarning's first line or ""), or (why tracing failed, "")."""
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            traced = torch.jit.trace(fn, example, check_trace=False)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            return f"tracing failed: {type(exc).__name__}: {first}", ""
    warned = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    return traced, (str(warned[0].message).splitlines()[0] if warned else "")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b) or _both_nan_equal(a, b))


def _both_nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.is_floating_point() and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))) and bool(
        torch.equal(torch.isnan(a), torch.isnan(b)))


def example_inputs(graph: Graph, names: Sequence[str], values: Mapping[str, torch.Tensor],
                   device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """``values[name]`` where given, else a tensor of the name's shape and dtype: standard
    normal for floats; for other dtypes all zeros with an even ``seed`` (a valid index for any
    gather), all ones with an odd one (so that two draws differ in every input)."""
    from cosched.execution.bindings import torch_dtype

    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name in values:
            out[name] = values[name]
            continue
        info = graph.tensor(name)
        dtype = torch_dtype(info.dtype)
        if np.dtype(info.dtype).kind == "f":
            out[name] = torch.randn(tuple(info.shape), generator=generator).to(device=device, dtype=dtype)
        else:
            out[name] = torch.full(tuple(info.shape), seed % 2, dtype=dtype, device=device)
    return out


_TRACES: weakref.WeakKeyDictionary[Graph, dict[tuple[str, tuple[str, ...]], tuple[TracedTask | None, str]]] = (
    weakref.WeakKeyDictionary())
_CONSTANTS: weakref.WeakKeyDictionary[Graph, dict[str, dict[str, torch.Tensor]]] = weakref.WeakKeyDictionary()


def provide_constants(graph: Graph, device: torch.device, values: dict[str, torch.Tensor]) -> None:
    """Make ``values`` the :func:`shared_constants` of ``graph`` on ``device``, for a graph
    whose weights come from elsewhere than its models (a rank's weight shard,
    :mod:`cosched.runtime.rank`): tracing then never reads the models."""
    _CONSTANTS.setdefault(graph, {})[str(device)] = values


def shared_constants(graph: Graph, device: torch.device) -> dict[str, torch.Tensor]:
    """The graph's weights and folded constants on ``device``, loaded once per graph and
    device and shared by every tracing executor of the graph: its traces hold these very
    tensors, so executors that share them hold the weights once. They live as long as the
    graph does. Callers must not modify the tensors (no kernel writes into its inputs). A
    graph cut from another (:func:`cosched.execution.sharing.share`) gets its root's values,
    which hold the cut's and its other tenants'."""
    per_graph = _CONSTANTS.setdefault(root(graph), {})
    key = str(device)
    if key not in per_graph:
        per_graph[key] = load_constants(root(graph), device)
    return per_graph[key]


@dataclass
class TaskTracer:
    """Traces tasks on ``device``; ``traced`` and ``eager`` count the outcomes of its calls,
    and ``reasons`` maps each task left op by op to why.

    Traces are cached per graph (weakly; a cut graph uses its root's,
    :mod:`cosched.execution.sharing`), device and task across tracers, so every executor of
    one graph shares them; they close over :func:`shared_constants`.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    traced: int = 0
    eager: int = 0
    reasons: dict[str, str] = field(default_factory=dict)

    def trace(self, graph: Graph, task: Task, kernels: Sequence[Kernel]) -> TracedTask | None:
        """The traced ``task`` (``kernels`` are its ops, in order), or None to run it op by op."""
        per_graph = _TRACES.setdefault(root(graph), {})  # a cut's tasks trace as its root's
        key = (str(self.device), tuple(task.ops))
        if key not in per_graph:
            values = shared_constants(graph, self.device)
            reads = graph.task_inputs(task)
            fixed = {n: values[n] for n in reads if n in values}
            inputs = [n for n in reads if n not in fixed]
            draws = [example_inputs(graph, inputs, {}, self.device, seed) for seed in (0, 1)]
            per_graph[key] = trace_task(kernels, inputs, graph.task_outputs(task), draws, fixed)
            if per_graph[key][0] is None:
                log.debug("task %s runs op by op: %s", task.name or task.id, per_graph[key][1])
        traced, why = per_graph[key]
        if traced is None:
            self.eager += 1
            self.reasons[f"{task.tenant}:{task.name or task.id}"] = why
        else:
            self.traced += 1
        return traced
