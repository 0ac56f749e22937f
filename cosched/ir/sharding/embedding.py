"""Embedding-table sharding of Gathers on weight tables (axis 0).

* **row** (``options["mode"] = "row"``, the default): shard r holds rows ``[start, stop)``
  of the table. On its shard it normalises the indices (``Mod(idx, rows)``: ONNX counts a
  negative index from the end), shifts them by ``start``, clamps them into its rows
  (``Clip``), looks them up, and zeroes the rows it does not own (``Where`` on
  ``Equal(shifted, clamped)``); an ``AllReduce`` sums the shards' lookups into the
  original output.
* **table** (``"table"``): whole tables go to different slots, largest first onto the slot
  holding the fewest table bytes so far (as DLRM places its tables); the Gather runs there,
  with the ops that read only its result after it (a bag's pooling), and the indices and the
  pooled result move by ``Transfer``. World must be at most the number of tables.

Every other op runs on slot 0. ``options["ops"]`` names the Gathers to shard; without it
every Gather on a weight table along axis 0 with at least ``world`` rows is.
"""

from __future__ import annotations

import numpy as np

from cosched.errors import ConfigError, UnsupportedOpError
from cosched.ir.graph import Graph, Op, frozen_mapping
from cosched.ir.sharding._rewrite import Rewriter, bounds, local_ops, short
from cosched.ir.sharding._spec import SplitSpec

__all__ = ["embedding_tables", "split_embedding"]

_OPTIONS = frozenset({"mode", "ops"})
MIN_OPSET = 11  # Clip with min/max inputs


def _table(graph: Graph, op: Op) -> str | None:
    """Why ``op`` is not a Gather on a weight table along axis 0, or None if it is."""
    if op.domain not in ("", "ai.onnx") or op.op_type != "Gather":
        return f"it is a {op.op_type}; the embedding split takes Gather"
    data = graph.tensor(op.inputs[0])
    if data.kind != "weight" or not data.shape:
        return f"its data {op.inputs[0]!r} is not a weight table (kind {data.kind}, shape {data.shape})"
    if int(op.attr("axis", 0)) % len(data.shape) != 0:
        return f"it gathers along axis {op.attr('axis')}; only axis 0 (rows) is sharded"
    return None


def embedding_tables(graph: Graph, tenant: str, world: int) -> list[Op]:
    """The Gathers of ``tenant`` sharded by default (see the module docstring)."""
    return [op for op in graph.ops if op.tenant == tenant and _table(graph, op) is None
            and graph.tensor(op.inputs[0]).shape[0] >= world]


def _gathers(graph: Graph, spec: SplitSpec) -> tuple[list[Op], str]:
    what = f"embedding split of tenant {spec.tenant!r}"
    unknown = sorted(set(spec.options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
    mode = spec.options.get("mode", "row")
    if mode not in ("row", "table"):
        raise ConfigError(f"{what}: mode must be 'row' or 'table', got {mode!r}")
    if "ops" in spec.options:
        gathers = local_ops(graph, spec.tenant, spec.options["ops"], "embedding")
        for op in gathers:
            why = _table(graph, op)
            if why is not None:
                raise UnsupportedOpError(f"{what}: op {op.name!r} cannot be sharded: {why}")
    else:
        gathers = embedding_tables(graph, spec.tenant, 1 if mode == "table" else spec.world)
    if not gathers:
        raise UnsupportedOpError(f"{what}: the tenant has no Gather on a weight table (axis 0) to shard")
    if mode == "table" and len(gathers) < spec.world:
        raise ConfigError(f"{what}: table-wise sharding places whole tables and the tenant has {len(gathers)}, "
                          f"so world must be at most {len(gathers)}, got {spec.world}")
    if mode == "row":
        for op in gathers:
            rows = graph.tensor(op.inputs[0]).shape[0]
            if rows < spec.world:
                raise ConfigError(f"{what}: op {op.name!r} reads a table of {rows} rows, fewer than "
                                  f"world={spec.world}; use a world of at most {rows}")
            if op.opset < MIN_OPSET:
                raise UnsupportedOpError(f"{what}: op {op.name!r} is at opset {op.opset}; row sharding needs "
                                         f"opset >= {MIN_OPSET}")
    return gathers, mode


def _table_slots(graph: Graph, gathers: list[Op], world: int) -> dict[str, int]:
    load = [0] * world
    slots = {}
    for op in sorted(gathers, key=lambda o: -graph.tensor(o.inputs[0]).nbytes):
        slot = min(range(world), key=lambda s: (load[s], s))
        slots[op.name] = slot
        load[slot] += graph.tensor(op.inputs[0]).nbytes
        slots.update(dict.fromkeys(_followers(graph, op), slot))
    return slots


def _followers(graph: Graph, op: Op) -> list[str]:
    """The ops after a lookup that read only its result (and weights or constants), one
    after another: a bag's pooling (ReduceSum) and reshapes run beside the table, so only
    their smaller result moves."""
    outputs = {n for t in graph.tenants for _, n in t.outputs}
    found: list[str] = []
    t = op.outputs[0]
    while t not in outputs and len(readers := graph.consumers(t)) == 1:
        nxt = readers[0]
        reads = [i for i in nxt.inputs if i]
        if any(i != t and graph.tensor(i).kind not in ("weight", "constant") for i in reads) or len(nxt.outputs) != 1:
            break
        found.append(nxt.name)
        t = nxt.outputs[0]
    return found


def _row_shard(rw: Rewriter, op: Op, r: int, start: int, stop: int) -> str:
    graph = rw.graph
    table, idx, out = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    itype = np.dtype(idx.dtype)
    tag = f"{short(op.name)}.s{r}"

    def const(name: str, value: object, dtype: np.dtype | type | str) -> str:
        return rw.constant(f"{tag}.{name}", np.asarray(value, dtype=dtype))

    def step(op_type: str, inputs: tuple[str, ...], shape: tuple[int, ...], dtype: str, name: str) -> str:
        result = rw.activation(f"{tag}.{name}", shape, dtype)
        rw.place(Op(rw.fresh(f"{tag}.{op_type}"), op_type, rw.tenant, inputs, (result,), opset=op.opset), r)
        return result

    rows = table.shape[0]
    normal = step("Mod", (op.inputs[1], const("rows", rows, itype)), idx.shape, idx.dtype, "index")
    local = step("Sub", (normal, const("start", start, itype)), idx.shape, idx.dtype, "local")
    clamped = step("Clip", (local, const("low", 0, itype), const("high", stop - start - 1, itype)),
                   idx.shape, idx.dtype, "clamped")
    part = rw.activation(f"{tag}.rows", out.shape, out.dtype)
    rw.place(op.replace(name=rw.fresh(tag), inputs=(rw.slice(op.inputs[0], 0, start, stop), clamped),
                        outputs=(part,), attrs=frozen_mapping({**op.attrs, "axis": 0})), r)
    owned = step("Equal", (local, clamped), idx.shape, "bool", "owned")
    mask_shape = (*idx.shape, *([1] * (len(table.shape) - 1)))
    mask = step("Reshape", (owned, const("mask_shape", mask_shape, np.int64)), mask_shape, "bool", "mask")
    return step("Where", (mask, part, const("zero", 0, table.dtype)), out.shape, out.dtype, "lookup")


def split_embedding(graph: Graph, spec: SplitSpec) -> Graph:
    """``graph`` with tenant ``spec.tenant``'s embedding Gathers sharded over ``spec.world``."""
    gathers, mode = _gathers(graph, spec)
    rw = Rewriter(graph, spec.tenant)
    if mode == "table":
        slots = _table_slots(graph, gathers, spec.world)
        for op in graph.ops:
            if op.tenant == spec.tenant:
                rw.place(op, slots.get(op.name, 0))
        return rw.finish()
    chosen = {op.name for op in gathers}
    for op in graph.ops:
        if op.tenant != spec.tenant:
            continue
        if op.name not in chosen:
            rw.place(op, 0)
            continue
        parts = [_row_shard(rw, op, r, a, b) for r, (a, b) in enumerate(bounds(graph.tensor(op.inputs[0]).shape[0],
                                                                                spec.world))]
        rw.collective("AllReduce", parts, op.outputs[0], f"reduce_{short(op.name)}")
    return rw.finish()
