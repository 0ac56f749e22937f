"""The merged multi-tenant operator graph: immutable values and the indexes built over them.

A :class:`Graph` holds the ops of every tenant in one topological order, a static
:class:`TensorInfo` for every tensor, weights by reference (the initializer stays in its
ONNX file and is read when a runtime needs it), folded constants by value, and the
:class:`Task` partition that the scheduler places on streams. Every name is namespaced
``tenant/name`` so tenants never collide.

Values never change after construction: passes build a new graph with
:meth:`Graph.replace`. Indexes (producer, consumers, task of an op) are derived lazily by the
graph itself, so no pass maintains them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

import networkx as nx
import numpy as np

from cosched.errors import GraphError

__all__ = [
    "COMM_DOMAIN",
    "Graph",
    "Op",
    "OpCost",
    "Task",
    "TenantInfo",
    "TensorInfo",
    "TensorKind",
    "WeightRef",
    "frozen_mapping",
    "qualify",
]

TensorKind = Literal["input", "weight", "constant", "activation"]

SEP = "/"

#: The domain of the communication ops a split inserts (Transfer, AllReduce, AllGather,
#: AllToAll; see :mod:`cosched.ir.sharding`).
COMM_DOMAIN = "cosched"


def qualify(tenant: str, name: str) -> str:
    """The graph-wide name of a tenant's tensor or op: ``tenant/name``."""
    return f"{tenant}{SEP}{name}"


def frozen_mapping(items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> Mapping[str, Any]:
    """A read-only copy of ``items``, for the mapping fields of the frozen IR values."""
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class TensorInfo:
    """A tensor with a fully static shape. ``dtype`` is a numpy dtype name (``"float32"``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    tenant: str
    kind: TensorKind = "activation"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class OpCost:
    """Analysed cost of one op (or a task: the sum over its ops)."""

    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    param_bytes: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte moved (0 for ops that move nothing)."""
        return self.flops / self.bytes if self.bytes else 0.0

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(
            self.flops + other.flops,
            self.bytes_read + other.bytes_read,
            self.bytes_written + other.bytes_written,
            self.param_bytes + other.param_bytes,
        )


@dataclass(frozen=True, eq=False)
class Op:
    """One ONNX node of one tenant.

    ``inputs`` uses ``""`` for an omitted optional input, as ONNX does. ``attrs`` maps attribute
    names to Python values (int, float, str, bytes, lists of those, or numpy arrays for tensor
    attributes). ``opset`` is the version of the op's domain imported by its model.
    """

    name: str
    op_type: str
    tenant: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=frozen_mapping)
    domain: str = ""
    opset: int = 0
    cost: OpCost | None = None
    shard: int | None = None

    @property
    def is_comm(self) -> bool:
        """Whether this is a communication op (domain :data:`COMM_DOMAIN`)."""
        return self.domain == COMM_DOMAIN

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def replace(self, **changes: Any) -> Op:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Task:
    """A unit the scheduler places on one stream: ops of one tenant run back to back.
    ``shard`` is its ops' shard slot (they share one; None in a tenant that is not split)."""

    id: int
    tenant: str
    ops: tuple[str, ...]
    name: str = ""
    shard: int | None = None


@dataclass(frozen=True)
class WeightRef:
    """Where a weight's value lives: initializer ``initializer`` of tenant ``tenant``'s model,
    or with ``slice = (axis, start, stop)`` the part ``start:stop`` of it along ``axis`` (a
    split op's shard of a weight)."""

    tenant: str
    initializer: str
    slice: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class TenantInfo:
    """One imported model.

    ``inputs``/``outputs`` pair the model's own tensor names with their graph-wide names.
    ``source`` is the ONNX file's path, or None for a model given in memory, in which case
    ``model`` holds it (it is excluded from equality and repr).
    """

    name: str
    source: str | None
    sha256: str
    opsets: Mapping[str, int]
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    batch: int | None = None
    model: Any = field(default=None, compare=False, repr=False)

    def input_names(self) -> tuple[str, ...]:
        return tuple(own for own, _ in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(own for own, _ in self.outputs)


@dataclass(frozen=True, eq=False)
class Graph:
    """The merged graph of all tenants. Build one with :func:`cosched.ir.load_models`."""

    tenants: tuple[TenantInfo, ...]
    ops: tuple[Op, ...]
    tensors: Mapping[str, TensorInfo]
    weights: Mapping[str, WeightRef] = field(default_factory=frozen_mapping)
    constants: Mapping[str, np.ndarray] = field(default_factory=frozen_mapping)
    tasks: tuple[Task, ...] = ()

    def replace(self, **changes: Any) -> Graph:
        """A new graph with some fields replaced (indexes are rebuilt lazily)."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- indexes
    @cached_property
    def _op_by_name(self) -> Mapping[str, Op]:
        return {op.name: op for op in self.ops}

    @cached_property
    def _producer(self) -> Mapping[str, Op]:
        return {out: op for op in self.ops for out in op.outputs if out}

    @cached_property
    def _consumers(self) -> Mapping[str, tuple[Op, ...]]:
        users: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in dict.fromkeys(i for i in op.inputs if i):
                users.setdefault(name, []).append(op)
        return {name: tuple(ops) for name, ops in users.items()}

    @cached_property
    def _task_of_op(self) -> Mapping[str, int]:
        return {op_name: task.id for task in self.tasks for op_name in task.ops}

    @cached_property
    def _task_by_id(self) -> Mapping[int, Task]:
        return {task.id: task for task in self.tasks}

    def op(self, name: str) -> Op:
        try:
            return self._op_by_name[name]
        except KeyError:
            raise GraphError(f"no op named {name!r} in the graph") from None

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GraphError(f"no tensor named {name!r} in the graph") from None

    def producer(self, tensor: str) -> Op | None:
        """The op that writes ``tensor``; None for inputs, weights and constants."""
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> tuple[Op, ...]:
        return self._consumers.get(tensor, ())

    def task(self, task_id: int) -> Task:
        try:
            return self._task_by_id[task_id]
        except KeyError:
            raise GraphError(f"no task with id {task_id} in the graph") from None

    def task_of(self, op_name: str) -> Task:
        return self.task(self._task_of_op[op_name])

    def tenant(self, name: str) -> TenantInfo:
        for t in self.tenants:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tenants)
        raise GraphError(f"no tenant named {name!r} in the graph (tenants: {known})")

    @property
    def tenant_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tenants)

    def task_ops(self, task: Task) -> tuple[Op, ...]:
        return tuple(self._op_by_name[name] for name in task.ops)

    def task_cost(self, task: Task) -> OpCost:
        total = OpCost()
        for op in self.task_ops(task):
            total = total + (op.cost or OpCost())
        return total

    def task_inputs(self, task: Task) -> tuple[str, ...]:
        """Tensors a task reads that it does not produce itself, in first-use order."""
        produced = {out for op in self.task_ops(task) for out in op.outputs}
        reads = (i for op in self.task_ops(task) for i in op.inputs if i and i not in produced)
        return tuple(dict.fromkeys(reads))

    def task_outputs(self, task: Task) -> tuple[str, ...]:
        """Tensors a task produces that are read outside it or are graph outputs."""
        inside = set(task.ops)
        graph_outputs = {name for t in self.tenants for _, name in t.outputs}
        outs = []
        for op in self.task_ops(task):
            for out in op.outputs:
                if not out:
                    continue
                outside = any(c.name not in inside for c in self.consumers(out))
                if outside or out in graph_outputs:
                    outs.append(out)
        return tuple(outs)

    # ------------------------------------------------------------- networkx
    def to_networkx(self, level: Literal["op", "task"] = "op") -> nx.DiGraph:
        """The dependency DAG of ops (nodes: op names) or tasks (nodes: task ids).

        Edges carry ``tensors``: the names flowing along them. Node attribute ``tenant`` is
        set on every node, and ``cost`` (an :class:`OpCost`) where analysed.
        """
        dag = nx.DiGraph()
        if level == "op":
            for op in self.ops:
                dag.add_node(op.name, tenant=op.tenant, op_type=op.op_type, cost=op.cost)
            for op in self.ops:
                for name in op.inputs:
                    src = self.producer(name) if name else None
                    if src is not None:
                        self._add_edge(dag, src.name, op.name, name)
            return dag
        for task in self.tasks:
            dag.add_node(task.id, tenant=task.tenant, cost=self.task_cost(task), name=task.name)
        for task in self.tasks:
            for name in self.task_inputs(task):
                src = self.producer(name)
                if src is not None:
                    self._add_edge(dag, self._task_of_op[src.name], task.id, name)
        return dag

    @staticmethod
    def _add_edge(dag: nx.DiGraph, u: Any, v: Any, tensor: str) -> None:
        if dag.has_edge(u, v):
            dag.edges[u, v]["tensors"].append(tensor)
        else:
            dag.add_edge(u, v, tensors=[tensor])

    # --------------------------------------------------------------- verify
    def verify(self) -> Graph:
        """Check the graph's invariants; raise :class:`GraphError` naming the first violation.

        Checks: unique op and tensor names, topological order (every consumed tensor is
        produced earlier, or is an input, weight or constant), tenant tags consistent
        between ops, tensors and names, every tensor has a TensorInfo, every weight and
        constant is declared, graph outputs exist, and the tasks partition the ops in an
        order consistent with dependencies. Returns the graph, so it chains.

        A graph is an immutable value, so it is checked once: every pass verifies its input
        and its result, and a result verified as one pass's output is not checked again as
        the next one's input.
        """
        self._verified  # noqa: B018  (the checks run on first access; a failure is not cached)
        return self

    @cached_property
    def _verified(self) -> bool:
        tenant_names = set(self.tenant_names)
        if len(tenant_names) != len(self.tenants):
            raise GraphError(f"duplicate tenant names in {self.tenant_names}")
        available: set[str] = set()
        for name, info in self.tensors.items():
            if info.name != name:
                raise GraphError(f"tensor table key {name!r} holds TensorInfo named {info.name!r}")
            if info.tenant not in tenant_names:
                raise GraphError(f"tensor {name!r} belongs to unknown tenant {info.tenant!r}")
            if info.kind in ("input", "weight", "constant"):
                available.add(name)
        for name in self.weights:
            if self.tensors.get(name) is None or self.tensors[name].kind != "weight":
                raise GraphError(f"weight {name!r} has no TensorInfo of kind 'weight'")
        for name in self.constants:
            if self.tensors.get(name) is None or self.tensors[name].kind != "constant":
                raise GraphError(f"constant {name!r} has no TensorInfo of kind 'constant'")
        seen_ops: set[str] = set()
        for op in self.ops:
            self._verify_op(op, tenant_names, seen_ops, available)
        for t in self.tenants:
            for own, name in t.inputs + t.outputs:
                if name not in self.tensors:
                    raise GraphError(f"tenant {t.name!r}: graph tensor {own!r} ({name}) has no TensorInfo")
        self._verify_shards()
        self._verify_tasks()
        return True

    def _verify_shards(self) -> None:
        """A tenant's ops all have a shard or none do; data crosses shards only through
        communication ops; graph inputs are fed on slot 0."""
        split: dict[str, bool] = {}
        inputs = {name for t in self.tenants for _, name in t.inputs}
        for op in self.ops:
            has = op.shard is not None
            if split.setdefault(op.tenant, has) != has:
                raise GraphError(f"tenant {op.tenant!r}: op {op.name!r} has shard {op.shard}, but other ops of "
                                 "the tenant do not agree; in a split tenant every op has a shard, else none")
            if not has:
                if op.is_comm:
                    raise GraphError(f"communication op {op.name!r} ({op.op_type}) has no shard")
                continue
            if isinstance(op.shard, bool) or not isinstance(op.shard, int) or op.shard < 0:
                raise GraphError(f"op {op.name!r} has shard {op.shard!r}; a shard is an int >= 0")
            if op.is_comm:
                home = op.attr("dst") if op.op_type == "Transfer" else op.attr("rank")
                if home != op.shard:
                    raise GraphError(f"communication op {op.name!r} ({op.op_type}) runs on shard {op.shard} "
                                     f"but its attributes place it on {home}")
                continue
            for name in op.inputs:
                src = self._producer.get(name) if name else None
                where = src.shard if src is not None else (0 if name in inputs else op.shard)
                if where != op.shard:
                    raise GraphError(
                        f"op {op.name!r} on shard {op.shard} reads {name!r}, which is on shard {where}; "
                        "data crosses shards only through a Transfer or a collective")

    def _verify_op(self, op: Op, tenants: set[str], seen: set[str], available: set[str]) -> None:
        if op.name in seen:
            raise GraphError(f"op name {op.name!r} is used twice; op names must be unique")
        seen.add(op.name)
        if op.tenant not in tenants:
            raise GraphError(f"op {op.name!r} belongs to unknown tenant {op.tenant!r}")
        if not op.name.startswith(op.tenant + SEP):
            raise GraphError(f"op {op.name!r} of tenant {op.tenant!r} is not namespaced '{op.tenant}/...'")
        for name in op.inputs:
            if not name:
                continue
            if name not in available:
                raise GraphError(
                    f"op {op.name!r} reads {name!r} before it has been defined; ops must be in "
                    "topological order and every input produced, a graph input, a weight or a constant"
                )
            if self.tensors[name].tenant != op.tenant:
                raise GraphError(f"op {op.name!r} of tenant {op.tenant!r} reads {name!r} of another tenant")
        for name in op.outputs:
            if not name:
                continue
            if name in available:
                raise GraphError(f"tensor {name!r} is written twice (again by op {op.name!r})")
            if name not in self.tensors:
                raise GraphError(f"op {op.name!r} writes {name!r}, which has no TensorInfo (static shape)")
            available.add(name)

    def _verify_tasks(self) -> None:
        if not self.tasks:
            return
        position = {op.name: i for i, op in enumerate(self.ops)}
        covered: dict[str, int] = {}
        for task in self.tasks:
            if not task.ops:
                raise GraphError(f"task {task.id} has no ops")
            for name in task.ops:
                if name not in position:
                    raise GraphError(f"task {task.id} names unknown op {name!r}")
                if name in covered:
                    raise GraphError(f"op {name!r} is in task {covered[name]} and task {task.id}")
                if self._op_by_name[name].tenant != task.tenant:
                    raise GraphError(f"task {task.id} of tenant {task.tenant!r} holds op {name!r} of another tenant")
                covered[name] = task.id
            ops = self.task_ops(task)
            if any(op.shard != task.shard for op in ops):
                raise GraphError(f"task {task.id} has shard {task.shard} but holds ops of shards "
                                 f"{sorted({str(op.shard) for op in ops})}; a task runs on one shard")
            if len(ops) > 1 and any(op.is_comm for op in ops):
                raise GraphError(f"task {task.id} holds a communication op among {len(ops)} ops; "
                                 "a communication op is alone in its task")
            order = [position[n] for n in task.ops]
            if order != sorted(order):
                raise GraphError(f"task {task.id} lists its ops out of topological order: {task.ops}")
        missing = [op.name for op in self.ops if op.name not in covered]
        if missing:
            raise GraphError(f"ops not in any task: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if len({t.id for t in self.tasks}) != len(self.tasks):
            raise GraphError("task ids are not unique")
        if not nx.is_directed_acyclic_graph(self.to_networkx("task")):
            raise GraphError("the task graph has a cycle: a fusion merged ops across a dependency path")
