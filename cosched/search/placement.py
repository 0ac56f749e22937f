"""Where tenants run on a multi-device plan, and the memory that costs each device.

A *unit* is what is placed whole on one device: a tenant, or one shard of a split tenant
(``(tenant, shard)``; see :mod:`cosched.ir.sharding`). A *placement* maps every unit to a
device; the shards of one tenant go to distinct devices.

Memory is accounted per unit by :func:`footprints`: the bytes of the weights and constants
its tasks read, and the peak bytes of activations alive at once when its ops run one after
another in graph order (its inputs and outputs included, tensors freed after their last use
in the unit). A device holds the union of its units' weights and, as a bound, the sum of their
activation peaks (its units may all be at their peak at once). That bound is what the search
checks against the caps, so a placement it accepts never exceeds a cap; the plan's buffer
lifetimes (:func:`cosched.codegen.lower`) give the tighter figure.

Policies: :func:`round_robin` (tenants in order over the devices), :func:`largest_first`
(greedy: the largest unit first, each onto the device with the most memory left) and
:func:`balanced`, the one the search drives with knobs (:class:`PlacementKnobs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cosched.errors import ConfigError
from cosched.ir.graph import Graph, Op
from cosched.sizes import format_bytes

__all__ = ["Footprint", "PlacementKnobs", "Unit", "balanced", "check_fits", "device_bytes", "footprints",
           "largest_first", "round_robin", "task_devices", "unit_of"]

Unit = tuple[str, int | None]


def unit_of(op: Op) -> Unit:
    """The unit an op belongs to: its tenant and, in a split tenant, its shard."""
    return op.tenant, getattr(op, "shard", None)


@dataclass(frozen=True)
class Footprint:
    """What one unit needs on its device (see the module docstring)."""

    unit: Unit
    weights: frozenset[str]
    weight_bytes: int
    activation_bytes: int
    work_ms: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def footprints(graph: Graph, latency: Sequence[float] | None = None) -> dict[Unit, Footprint]:
    """Every unit's footprint, in graph order; ``latency`` (per task) fills ``work_ms``."""
    ops_of: dict[Unit, list[Op]] = {}
    for op in graph.ops:
        ops_of.setdefault(unit_of(op), []).append(op)
    work: dict[Unit, float] = {}
    if latency is not None:
        for task in graph.tasks:
            unit = unit_of(graph.op(task.ops[0]))
            work[unit] = work.get(unit, 0.0) + latency[task.id]
    consumers: dict[str, set[Unit]] = {}
    for unit, ops in ops_of.items():
        for op in ops:
            for name in op.inputs:
                if name:
                    consumers.setdefault(name, set()).add(unit)
    kept = {name for t in graph.tenants for _, name in t.outputs}
    out = {}
    for unit, ops in ops_of.items():
        held = frozenset(n for op in ops for n in op.inputs if n and graph.tensor(n).kind in ("weight", "constant"))
        out[unit] = Footprint(unit, held, sum(graph.tensor(n).nbytes for n in held),
                              _peak_activations(graph, ops, unit, consumers, kept), work.get(unit, 0.0))
    return out


def _peak_activations(graph: Graph, ops: Sequence[Op], unit: Unit, consumers: Mapping[str, set[Unit]],
                      kept: set[str]) -> int:
    """Peak live activation bytes of ``ops`` run in order (see the module docstring)."""
    last: dict[str, int] = {}
    produced: set[str] = set()
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name:
                last[name] = i
        produced.update(n for n in op.outputs if n)

    def activation(name: str) -> bool:
        return graph.tensor(name).kind not in ("weight", "constant")

    # what other units produce never lives here: a transfer or collective that reads it holds
    # only its own output (and a collective rank its own input); graph inputs the unit reads
    # are alive from the start
    remote = {n for n in last if n not in produced and graph.tensor(n).kind != "input"}
    live = sum(graph.tensor(n).nbytes for n in last if n not in produced and n not in remote and activation(n))
    # alive to the end: tenant outputs, and tensors another unit reads
    stays = {n for n in produced if n in kept or consumers.get(n, {unit}) - {unit}}
    peak = live
    for i, op in enumerate(ops):
        live += sum(graph.tensor(n).nbytes for n in op.outputs if n)
        peak = max(peak, live)
        for name in {*op.inputs, *op.outputs}:
            if name and name not in remote and activation(name) and last.get(name, i) == i and name not in stays:
                live -= graph.tensor(name).nbytes
    return peak


def device_bytes(prints: Mapping[Unit, Footprint], placement: Mapping[Unit, int], graph: Graph,
                 devices: int) -> tuple[int, ...]:
    """Each device's bound: the union of its units' weights plus their activation peaks."""
    weights: list[set[str]] = [set() for _ in range(devices)]
    activations = [0] * devices
    for unit, device in placement.items():
        weights[device] |= prints[unit].weights
        activations[device] += prints[unit].activation_bytes
    return tuple(sum(graph.tensor(n).nbytes for n in w) + a for w, a in zip(weights, activations, strict=True))


def task_devices(graph: Graph, placement: Mapping[Unit, int]) -> tuple[int, ...]:
    """Each task's device under ``placement``."""
    return tuple(placement[unit_of(graph.op(task.ops[0]))] for task in graph.tasks)


def check_fits(prints: Mapping[Unit, Footprint], caps: Sequence[int], names: Sequence[str], graph: Graph) -> None:
    """Raise :class:`ConfigError` when a unit is larger than every cap, or all units together
    are larger than all caps together: no placement could fit."""
    largest = max(caps)
    for fp in prints.values():
        if fp.total_bytes > largest:
            tenant, shard = fp.unit
            what = f"tenant {tenant!r}" + (f" (shard {shard})" if shard is not None else "")
            raise ConfigError(
                f"{what} needs {format_bytes(fp.total_bytes)} ({format_bytes(fp.weight_bytes)} of weights, "
                f"{format_bytes(fp.activation_bytes)} of activations at peak), more than any device may hold: "
                f"caps {_caps(caps, names)}; raise the memory cap, lower the batch, or split the tenant")
    weights = set().union(*(fp.weights for fp in prints.values()))
    need = sum(fp.activation_bytes for fp in prints.values()) + sum(graph.tensor(n).nbytes for n in weights)
    if need > sum(caps):
        raise ConfigError(f"the tenants need at least {format_bytes(need)} in all, more than the devices hold "
                          f"together: caps {_caps(caps, names)}")


def _caps(caps: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(f"{n} {format_bytes(c)}" for n, c in zip(names, caps, strict=True))


# ---------------------------------------------------------------------------- policies
def round_robin(prints: Mapping[Unit, Footprint], devices: int) -> dict[Unit, int]:
    """Tenants in graph order over the devices in turn; a split tenant's shards on the next ones."""
    return {unit: turn % devices for turn, unit in enumerate(prints)}


def largest_first(prints: Mapping[Unit, Footprint], caps: Sequence[int], graph: Graph) -> dict[Unit, int] | None:
    """The largest unit first, each onto the device with the most memory left that still fits
    it (shards of one tenant on distinct devices); None if some unit fits nowhere."""
    order = sorted(prints, key=lambda u: (-prints[u].total_bytes, _key(u)))
    return _greedy(order, prints, caps, graph, lambda d, left, load: (-left[d], d))


@dataclass(frozen=True)
class PlacementKnobs:
    """The search's placement parameters: units are placed in order of ``w_memory`` x their
    normalised bytes + (1 - ``w_memory``) x their normalised work + ``tenant_bias``; each goes
    to the fitting device with the least ``balance`` x normalised work already there +
    (1 - ``balance``) x the share of its memory already used."""

    w_memory: float = 0.5
    balance: float = 1.0
    tenant_bias: Mapping[str, float] = field(default_factory=dict)


def balanced(prints: Mapping[Unit, Footprint], caps: Sequence[int], graph: Graph,
             knobs: PlacementKnobs) -> dict[Unit, int] | None:
    """The knob-driven placement (see :class:`PlacementKnobs`); None if some unit fits nowhere."""
    most_bytes = max(fp.total_bytes for fp in prints.values()) or 1
    most_work = max(fp.work_ms for fp in prints.values()) or 1.0
    total_work = sum(fp.work_ms for fp in prints.values()) or 1.0

    def rank(u: Unit) -> tuple[float, tuple[str, int]]:
        fp = prints[u]
        value = (knobs.w_memory * fp.total_bytes / most_bytes + (1 - knobs.w_memory) * fp.work_ms / most_work
                 + knobs.tenant_bias.get(u[0], 0.0))
        return -value, _key(u)

    def score(d: int, left: Sequence[int], load: Sequence[float]) -> tuple[float, int]:
        used = 1.0 - left[d] / caps[d] if caps[d] else 0.0
        return knobs.balance * load[d] / total_work + (1 - knobs.balance) * used, d

    return _greedy(sorted(prints, key=rank), prints, caps, graph, score)


def _greedy(order: Sequence[Unit], prints: Mapping[Unit, Footprint], caps: Sequence[int], graph: Graph,
            score: object) -> dict[Unit, int] | None:
    placed: dict[Unit, int] = {}
    held: list[set[str]] = [set() for _ in caps]
    left = list(caps)
    load = [0.0] * len(caps)
    for unit in order:
        fp = prints[unit]
        taken = {d for u, d in placed.items() if u[0] == unit[0] and u[1] is not None and unit[1] is not None}
        best = None
        for d in range(len(caps)):
            need = fp.activation_bytes + sum(graph.tensor(n).nbytes for n in fp.weights - held[d])
            if d in taken or need > left[d]:
                continue
            key = score(d, left, load)  # type: ignore[operator]
            if best is None or key < best[0]:
                best = (key, d, need)
        if best is None:
            return None
        _, d, need = best
        placed[unit] = d
        held[d] |= fp.weights
        left[d] -= need
        load[d] += fp.work_ms
    return {u: placed[u] for u in prints}


def _key(unit: Unit) -> tuple[str, int]:
    return unit[0], -1 if unit[1] is None else unit[1]

