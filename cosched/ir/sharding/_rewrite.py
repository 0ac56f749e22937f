"""The rewriting a split pass shares: placing ops on shards, moving data, slicing weights.

A :class:`Rewriter` rebuilds one tenant's ops in order. A pass hands it each op with the
shard it runs on (:meth:`Rewriter.place`); the rewriter reroutes every input that lives on
another shard through one ``Transfer`` per (tensor, destination), so the rule "data crosses
shards only through communication ops" (checked by :meth:`Graph.verify`) holds by
construction. Graph inputs live on slot 0; weights and constants are wherever they are read
(each device loads its own). :meth:`Rewriter.finish` gives the new graph, one task per op,
without the tensors no op reads or writes any more (a replaced weight is not loaded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from cosched.errors import ConfigError
from cosched.ir.graph import (
    COMM_DOMAIN,
    SEP,
    Graph,
    Op,
    Task,
    TensorInfo,
    WeightRef,
    frozen_mapping,
)

__all__ = ["Rewriter", "bounds", "local_ops", "short"]

COMM_OPSET = 1


def bounds(size: int, world: int) -> list[tuple[int, int]]:
    """``world`` contiguous, near-equal ranges covering ``0..size`` (as ``numpy.array_split``)."""
    base, extra = divmod(size, world)
    out, start = [], 0
    for r in range(world):
        stop = start + base + (1 if r < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def short(name: str) -> str:
    """A graph-wide name without its ``tenant/`` prefix."""
    return name.split(SEP, 1)[1] if SEP in name else name


def local_ops(graph: Graph, tenant: str, names: Iterable[Any], kind: str) -> list[Op]:
    """The ops of ``tenant`` named (model-local or graph-wide) in a split's ``ops`` option."""
    if isinstance(names, str):
        raise ConfigError(f"{kind} split of tenant {tenant!r}: option 'ops' must list op names, got {names!r}")
    found = []
    for name in names:
        full = name if str(name).startswith(tenant + SEP) else f"{tenant}{SEP}{name}"
        op = next((o for o in graph.ops if o.name == full), None)
        if op is None:
            raise ConfigError(f"{kind} split of tenant {tenant!r}: no op named {name!r} in the tenant")
        found.append(op)
    return found


class Rewriter:
    """Rebuilds tenant ``tenant`` of ``graph`` op by op (see the module docstring)."""

    def __init__(self, graph: Graph, tenant: str) -> None:
        self.graph = graph
        self.tenant = tenant
        self.tensors: dict[str, TensorInfo] = dict(graph.tensors)
        self.weights: dict[str, WeightRef] = dict(graph.weights)
        self.constants: dict[str, np.ndarray] = dict(graph.constants)
        self.ops: list[Op] = []
        self._home: dict[str, int] = {}
        self._moved: dict[tuple[str, int], str] = {}
        self._slices: dict[tuple[str, int, int, int], str] = {}
        self._inputs = {name for _, name in graph.tenant(tenant).inputs}
        self._used = set(graph.tensors) | {op.name for op in graph.ops}

    # ------------------------------------------------------------------ names
    def fresh(self, base: str) -> str:
        """An unused graph-wide name from ``base`` (model-local), ``tenant/base[_k]``."""
        name, k = f"{self.tenant}{SEP}{base}", 1
        while name in self._used:
            name, k = f"{self.tenant}{SEP}{base}_{k}", k + 1
        self._used.add(name)
        return name

    def activation(self, base: str, shape: Iterable[int], dtype: str) -> str:
        name = self.fresh(base)
        self.tensors[name] = TensorInfo(name, tuple(int(d) for d in shape), dtype, self.tenant, "activation")
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.constants[name] = value
        self.tensors[name] = TensorInfo(name, tuple(value.shape), value.dtype.name, self.tenant, "constant")
        return name

    def slice(self, name: str, axis: int, start: int, stop: int) -> str:
        """Weight or constant ``name``'s part ``start:stop`` on ``axis``, as a new weight/constant."""
        info = self.tensors[name]
        if (start, stop) == (0, info.shape[axis]):
            return name
        key = (name, axis, start, stop)
        if key in self._slices:
            return self._slices[key]
        shape = list(info.shape)
        shape[axis] = stop - start
        if info.kind == "constant":
            index = [slice(None)] * len(shape)
            index[axis] = slice(start, stop)
            sliced = self.constant(f"{short(name)}.{start}_{stop}", np.ascontiguousarray(self.constants[name][tuple(index)]))
        else:
            ref = self.weights[name]
            if ref.slice is not None:  # a slice of a slice: offsets add up on the same axis
                if ref.slice[0] != axis:
                    raise ConfigError(f"tenant {self.tenant!r}: weight {name!r} is already sliced on axis "
                                      f"{ref.slice[0]} and cannot be sliced again on axis {axis}")
                start, stop = ref.slice[1] + start, ref.slice[1] + stop
            sliced = self.fresh(f"{short(name)}.{start}_{stop}")
            self.weights[sliced] = WeightRef(ref.tenant, ref.initializer, (axis, start, stop))
            self.tensors[sliced] = TensorInfo(sliced, tuple(shape), info.dtype, self.tenant, "weight")
        self._slices[key] = sliced
        return sliced

    # -------------------------------------------------------------- placement
    def home(self, name: str) -> int | None:
        """The shard ``name`` lives on: its producer's, slot 0 for a graph input, None for
        weights and constants (they are wherever they are read)."""
        if name in self._home:
            return self._home[name]
        return 0 if name in self._inputs else None

    def place(self, op: Op, shard: int) -> Op:
        """Append ``op`` on ``shard``, its inputs from other shards moved there first."""
        inputs = tuple(self.move(name, shard) if name else name for name in op.inputs)
        placed = op.replace(inputs=inputs, shard=shard, cost=None)
        self.ops.append(placed)
        for out in op.outputs:
            if out:
                self._home[out] = shard
        return placed

    def move(self, name: str, dst: int) -> str:
        """``name`` on shard ``dst``: itself if it is there, else a Transfer's output (one per pair)."""
        src = self.home(name)
        if src is None or src == dst:
            return name
        if (name, dst) not in self._moved:
            info = self.tensors[name]
            moved = self.activation(f"{short(name)}@{dst}", info.shape, info.dtype)
            self.ops.append(Op(self.fresh(f"Transfer_{short(name)}_to{dst}"), "Transfer", self.tenant, (name,),
                               (moved,), frozen_mapping({"src": src, "dst": dst}), COMM_DOMAIN, COMM_OPSET,
                               shard=dst))
            self._home[moved] = dst
            self._moved[(name, dst)] = moved
        return self._moved[(name, dst)]

    def collective(self, op_type: str, inputs: list[str], output: str, group: str,
                   attrs: Mapping[str, Any] | None = None) -> list[str]:
        """The ``world`` rank ops of one collective over ``inputs`` (one per rank, each on its
        shard). Rank 0 writes ``output`` (an existing tensor name); the others write copies."""
        info = self.tensors[output]
        world = len(inputs)
        outs = [output] + [self.activation(f"{short(output)}@{r}", info.shape, info.dtype) for r in range(1, world)]
        group_name = self.fresh(group)
        for r, out in enumerate(outs):
            self.ops.append(Op(self.fresh(f"{op_type}_{short(output)}_r{r}"), op_type, self.tenant, tuple(inputs),
                               (out,), frozen_mapping({"group": group_name, "rank": r, "world": world, **(attrs or {})}),
                               COMM_DOMAIN, COMM_OPSET, shard=r))
            self._home[out] = r
        return outs

    # ------------------------------------------------------------------ result
    def finish(self) -> Graph:
        """The new graph: this tenant's ops where its first op was, one task per op."""
        graph = self.graph
        first = next(i for i, op in enumerate(graph.ops) if op.tenant == self.tenant)
        others = [op for op in graph.ops if op.tenant != self.tenant]
        ops = tuple(others[:first] + self.ops + others[first:])
        touched = {n for op in ops for n in (*op.inputs, *op.outputs) if n}
        touched |= {n for t in graph.tenants for _, n in (*t.inputs, *t.outputs)}
        tensors = {n: t for n, t in self.tensors.items() if t.tenant != self.tenant or n in touched}
        return graph.replace(
            ops=ops,
            tensors=frozen_mapping(tensors),
            weights=frozen_mapping((n, w) for n, w in self.weights.items() if n in tensors),
            constants=frozen_mapping((n, c) for n, c in self.constants.items() if n in tensors),
            tasks=tuple(Task(i, op.tenant, (op.name,), op.name, op.shard) for i, op in enumerate(ops)),
        )
