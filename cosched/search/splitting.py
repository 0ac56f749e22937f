"""Which tenants a multi-device plan splits, and how.

A tenant that fits no device whole (its footprint, :func:`~cosched.search.placement.footprints`,
is larger than the largest cap) must be split. :func:`split_choices` lists, for each such
tenant, every split of :func:`cosched.ir.sharding.split_options` whose every shard fits the
largest cap, over the smallest number of shards at which one fits and one more (more shards
only add communication); the search picks among them (see
:func:`cosched.search.multidevice.optimize_splits`). Tenants that fit whole are placed
whole: splitting them would only add communication, unless the user asks for a split
(:func:`forced_split`: a tensor-parallel tenant, for one, finishes sooner).
"""

from __future__ import annotations

from collections.abc import Sequence

from cosched.errors import ConfigError
from cosched.ir.graph import Graph
from cosched.ir.sharding import SplitSpec, apply_splits, split_options
from cosched.search.placement import footprints
from cosched.sizes import format_bytes

__all__ = ["forced_split", "split_choices"]


def split_choices(graph: Graph, caps: Sequence[int], names: Sequence[str]) -> dict[str, list[SplitSpec]]:
    """Tenant -> the splits that make it fit (see the module docstring), smallest world first;
    :class:`ConfigError` naming the tenant, its bytes and the caps when none does. ``graph``
    is imported and unfused."""
    largest = max(caps)
    whole = footprints(graph)
    out: dict[str, list[SplitSpec]] = {}
    for (tenant, _), fp in whole.items():
        if fp.total_bytes <= largest:
            continue
        fitting, smallest, first_world = [], fp.total_bytes, None
        for world in range(2, len(caps) + 1):
            if first_world is not None and world > first_world + 1:
                break  # more shards than the smallest that fit, plus one, only add communication
            for spec in split_options(graph, tenant, world):
                shards = [p for (t, _), p in footprints(apply_splits(graph, [spec])).items() if t == tenant]
                biggest = max(p.total_bytes for p in shards)
                smallest = min(smallest, biggest)
                if biggest <= largest:
                    fitting.append(spec)
                    first_world = first_world or world
        if not fitting:
            caps_text = ", ".join(f"{n} {format_bytes(c)}" for n, c in zip(names, caps, strict=True))
            raise ConfigError(
                f"tenant {tenant!r} needs {format_bytes(fp.total_bytes)} ({format_bytes(fp.weight_bytes)} of "
                f"weights), more than any device may hold (caps {caps_text}), and no split over up to "
                f"{len(caps)} devices fits: its largest shard is at least {format_bytes(smallest)}; raise the caps, "
                "add devices or lower the batch")
        out[tenant] = fitting
    return out


def forced_split(graph: Graph, tenant: str, kind: str, world: int) -> SplitSpec:
    """The split of ``tenant`` over ``world`` shards of ``kind`` (``"tensor"``,
    ``"pipeline"``, ``"embedding-row"``, ``"embedding-table"``); :class:`ConfigError` naming
    the tenant and the kinds it can take when it cannot be split so."""
    if tenant not in graph.tenant_names:
        raise ConfigError(f"splits: unknown tenant {tenant!r}; tenants are {list(graph.tenant_names)}")
    options = split_options(graph, tenant, world)
    names = {(s.kind if s.kind != "embedding" else f"embedding-{s.options.get('mode')}"): s for s in options}
    if kind not in names:
        raise ConfigError(f"splits: tenant {tenant!r} cannot be split {kind!r} over {world} devices; it can be "
                          f"split {', '.join(names) or 'no way'}")
    return names[kind]
