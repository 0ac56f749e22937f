"""What split to apply to a tenant: :class:`SplitSpec`, a frozen, JSON round-trippable value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from cosched.errors import ConfigError
from cosched.ir.graph import frozen_mapping

__all__ = ["SplitKind", "SplitSpec"]

SplitKind = Literal["pipeline", "tensor", "embedding"]
KINDS: tuple[str, ...] = get_args(SplitKind)


def _frozen(value: Any, where: str) -> Any:
    """``value`` with lists made tuples, checked to be JSON data (str keys, no NaN)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v, where) for v in value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: option keys must be strings, got {list(value)}")
        return frozen_mapping((k, _frozen(v, where)) for k, v in value.items())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{where}: option value {value!r} is not JSON data (str, number, bool, None, lists, dicts)")


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SplitSpec:
    """Split tenant ``tenant`` over ``world`` shard slots in the way ``kind`` names.

    ``options`` depend on the kind (see :func:`cosched.ir.sharding.apply_splits`):
    pipeline ``cuts`` (first op index of stages 1..world-1), tensor ``ops`` (op names to
    split), embedding ``mode`` (``"row"`` or ``"table"``) and ``ops``. Lists are kept as
    tuples so the value stays frozen; :meth:`to_json` gives them back as lists.
    """

    kind: SplitKind
    tenant: str
    world: int
    options: Mapping[str, Any] = field(default_factory=frozen_mapping)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"split kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ConfigError(f"a {self.kind} split needs a tenant name, got {self.tenant!r}")
        if isinstance(self.world, bool) or not isinstance(self.world, int) or self.world < 2:
            raise ConfigError(f"{self.kind} split of tenant {self.tenant!r}: world must be an int >= 2 "
                              f"(shards to split over), got {self.world!r}")
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"{self.kind} split of tenant {self.tenant!r}: options must be a mapping, "
                              f"got {self.options!r}")
        object.__setattr__(self, "options", _frozen(self.options, f"{self.kind} split of tenant {self.tenant!r}"))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` reads it back to an equal spec."""
        return {"kind": self.kind, "tenant": self.tenant, "world": self.world, "options": _thawed(self.options)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitSpec:
        if not isinstance(data, Mapping) or set(data) - {"kind", "tenant", "world", "options"} or not (
                {"kind", "tenant", "world"} <= set(data)):
            raise ConfigError(f"a split spec is an object with kind, tenant, world and options; got {data!r}")
        return cls(cast(SplitKind, data["kind"]), data["tenant"], data["world"], data.get("options", {}))
