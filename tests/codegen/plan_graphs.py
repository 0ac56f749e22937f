"""Tiny graphs with tasks for the codegen and runtime tests, built inline (no ONNX import).

Each tenant references a small stand-in model file (its bytes only feed the sha256 a plan
records); weights are folded constants, so executors need no model to read.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosched.ir.graph import Graph, Op, Task, TenantInfo, TensorInfo, frozen_mapping, qualify

SHAPE = (4, 8)

SHARDED_IR = "shard" in {f.name for f in dataclasses.fields(Op)}
"""Whether ops carry their shard slot (cosched.ir.sharding's contract): split tenants built
here then tag every op with it, as Graph.verify asks of a split tenant."""


def on_slot(op: Op, slot: int | None) -> Op:
    """``op`` on shard slot ``slot`` of its split tenant, where the IR records slots."""
    return op.replace(shard=slot) if SHARDED_IR and slot is not None else op


def task_of(task_id: int, ops: Sequence[Op], name: str) -> Task:
    """A task running ``ops`` (of one tenant), on their shard slot where the IR records slots."""
    names = tuple(op.name for op in ops)
    if SHARDED_IR:
        return Task(task_id, ops[0].tenant, names, name, ops[0].shard)  # type: ignore[call-arg, attr-defined]
    return Task(task_id, ops[0].tenant, names, name)


class Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.inputs: dict[str, list[tuple[str, str]]] = {}
        self.outputs: dict[str, list[tuple[str, str]]] = {}
        self.rng = np.random.default_rng(0)

    def input(self, tenant: str, name: str) -> str:
        full = qualify(tenant, name)
        self.tensors[full] = TensorInfo(full, SHAPE, "float32", tenant, "input")
        self.inputs.setdefault(tenant, []).append((name, full))
        return full

    def constant(self, tenant: str, name: str, shape: tuple[int, ...]) -> str:
        full = qualify(tenant, name)
        self.tensors[full] = TensorInfo(full, shape, "float32", tenant, "constant")
        self.constants[full] = self.rng.standard_normal(shape).astype(np.float32) * 0.3
        return full

    def op(self, tenant: str, op_type: str, inputs: Sequence[str], name: str, slot: int | None = None) -> str:
        out = qualify(tenant, f"{name}_out")
        self.tensors[out] = TensorInfo(out, SHAPE, "float32", tenant, "activation")
        self.ops.append(on_slot(Op(qualify(tenant, name), op_type, tenant, tuple(inputs), (out,), opset=18), slot))
        return out

    def comm(self, tenant: str, op_type: str, inputs: Sequence[str], name: str, **attrs: int | str) -> str:
        """A communication op of domain "cosched" (Transfer, AllReduce, ...), as the split
        passes make them, on the slot it runs on (a Transfer's ``dst``, a collective's ``rank``)."""
        out = qualify(tenant, f"{name}_out")
        self.tensors[out] = TensorInfo(out, SHAPE, "float32", tenant, "activation")
        op = Op(qualify(tenant, name), op_type, tenant, tuple(inputs), (out,), frozen_mapping(attrs),
                domain="cosched", opset=1)
        self.ops.append(on_slot(op, int(attrs["dst"] if op_type == "Transfer" else attrs["rank"])))
        return out

    def output(self, tenant: str, tensor: str, name: str) -> None:
        self.outputs.setdefault(tenant, []).append((name, tensor))

    def build(self, groups: Sequence[Sequence[str]] | None = None) -> Graph:
        """One task per op unless ``groups`` lists op names (unqualified ids) per task."""
        tenants = []
        for t in self.inputs:
            self.root.mkdir(parents=True, exist_ok=True)
            model = self.root / f"{t}.onnx"
            model.write_bytes(f"stand-in model of tenant {t}".encode())
            tenants.append(TenantInfo(
                t, str(model), "0" * 64, frozen_mapping({"": 18}),
                tuple(self.inputs[t]), tuple(self.outputs.get(t, ())), batch=1,
            ))
        tasks = [task_of(i, [op], op.name.split("/", 1)[1]) for i, op in enumerate(self.ops)]
        if groups is not None:
            by_name = {op.name: op for op in self.ops}
            tasks = [task_of(i, [by_name[n] for n in names], "+".join(n.split("/")[1] for n in names))
                     for i, names in enumerate(groups)]
        return Graph(
            tenants=tuple(tenants), ops=tuple(self.ops), tensors=frozen_mapping(self.tensors),
            constants=frozen_mapping(self.constants), tasks=tuple(tasks),
        ).verify()


def tenant_mix(root: Path, tenants: Sequence[str] = ("a", "b", "c")) -> Graph:
    """Per tenant a diamond: relu -> (matmul, add) -> add -> mul, one task per op."""
    b = Builder(root)
    for t in tenants:
        x = b.input(t, "x")
        w = b.constant(t, "w", (8, 8))
        c = b.constant(t, "c", SHAPE)
        r = b.op(t, "Relu", [x], "relu")
        m = b.op(t, "MatMul", [r, w], "matmul")
        a = b.op(t, "Add", [r, c], "shift")
        s = b.op(t, "Add", [m, a], "join")
        y = b.op(t, "Mul", [s, s], "square")
        b.output(t, y, "y")
        b.output(t, m, "hidden")
    return b.build()


def random_dag(root: Path, n_ops: int, seed: int) -> Graph:
    """One tenant, ``n_ops`` ops each reading one or two random earlier tensors."""
    rng = random.Random(seed)
    b = Builder(root)
    values = [b.input("r", "x0"), b.input("r", "x1")]
    w = b.constant("r", "w", (8, 8))
    for i in range(n_ops):
        kind = rng.choice(["Add", "Mul", "Relu", "MatMul", "Tanh"])
        first = rng.choice(values[-6:])
        inputs = {"Add": [first, rng.choice(values)], "Mul": [first, rng.choice(values)],
                  "MatMul": [first, w]}.get(kind, [first])
        values.append(b.op("r", kind, inputs, f"op{i}"))
    b.output("r", values[-1], "y")
    b.output("r", values[len(values) // 2], "mid")
    return b.build()


def random_streams(graph: Graph, k: int, seed: int) -> list[list[int]]:
    """Tasks dealt to ``k`` streams at random, each stream in topological (id) order."""
    rng = random.Random(seed)
    streams: list[list[int]] = [[] for _ in range(k)]
    for task in graph.tasks:
        streams[rng.randrange(k)].append(task.id)
    return [s for s in streams if s]


def per_tenant_streams(graph: Graph) -> list[list[int]]:
    streams: dict[str, list[int]] = {}
    for task in graph.tasks:
        streams.setdefault(task.tenant, []).append(task.id)
    return list(streams.values())


def pipelined(root: Path) -> Graph:
    """Tenant "a" cut in two stages: relu, matmul | Transfer | double, square (tasks 0..4)."""
    b = Builder(root)
    x = b.input("a", "x")
    w = b.constant("a", "w", (8, 8))
    m = b.op("a", "MatMul", [b.op("a", "Relu", [x], "relu", 0), w], "matmul", 0)
    t = b.comm("a", "Transfer", [m], "move", src=0, dst=1)
    s = b.op("a", "Add", [t, t], "double", 1)
    b.output("a", b.op("a", "Mul", [s, s], "square", 1), "y")
    return b.build()


def all_reduced(root: Path, groups: Sequence[str] = ("g",)) -> Graph:
    """Tenant "t" over two slots: task 0 moves input x (fed on slot 0) to slot 1; then per
    group six tasks: relu on slot 0, neg on slot 1, an AllReduce of the two on rank 0 and on
    rank 1, and a square of each rank's sum."""
    b = Builder(root)
    x = b.input("t", "x")
    x1 = b.comm("t", "Transfer", [x], "move_x", src=0, dst=1)
    for g in groups:
        parts = [b.op("t", "Relu", [x], f"{g}_relu", 0), b.op("t", "Neg", [x1], f"{g}_neg", 1)]
        sums = [b.comm("t", "AllReduce", parts, f"{g}_sum{r}", group=g, rank=r, world=2) for r in range(2)]
        for r, y in enumerate(sums):
            b.output("t", b.op("t", "Mul", [y, y], f"{g}_square{r}", r), f"{g}_y{r}")
    return b.build()
