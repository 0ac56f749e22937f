"""The one registry from ONNX op types to torch implementations.

An implementation is registered for an op type over a range of opset versions whose
semantics it follows. Every executor of ops (the sequential executor, the plan runtime, the
profiler, the ONNX backend) looks implementations up here, so an op behaves the same
everywhere.

An implementation is called as ``fn(ctx, *inputs)``: ``ctx`` is an :class:`OpContext` (the
node's attributes, the opset, the number of outputs wanted), ``inputs`` are torch tensors,
or None for an omitted optional input. It returns one tensor or a tuple of tensors.

This module knows no implementation: they import :func:`register` from here, and the
:mod:`cosched.ops` package imports them, so any import of ``cosched.ops.registry`` (which
runs the package first) finds the registry filled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cosched.errors import UnsupportedOpError

__all__ = [
    "OpContext",
    "OpImpl",
    "is_supported",
    "lookup",
    "register",
    "run_op",
    "supported_ops",
]

#: Lowest and highest opset versions the registry claims at all. MAX_OPSET is the newest
#: opset of the onnx release cosched is tested against (onnx 1.23 defines 1..28); raising it
#: claims the new opset for every op registered up to MAX_OPSET, so first check each op's
#: changes in that opset (onnx's Changelog) and register a new implementation where one changed.
MIN_OPSET = 1
MAX_OPSET = 28


@dataclass(frozen=True)
class OpContext:
    """What an implementation may know about the node besides its input tensors."""

    op_type: str
    opset: int
    attrs: Mapping[str, Any] = field(default_factory=dict)
    num_outputs: int = 1
    name: str = ""
    #: Where tensors the op creates from nothing (Shape, Constant, Range, ...) go; None: CPU.
    device: torch.device | None = None

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


OpImpl = Callable[..., "torch.Tensor | tuple[torch.Tensor | None, ...]"]


@dataclass(frozen=True)
class _Entry:
    op_type: str
    domain: str
    since: int
    until: int
    fn: OpImpl


_REGISTRY: dict[tuple[str, str], list[_Entry]] = {}


def register(
    op_type: str, since: int = MIN_OPSET, until: int = MAX_OPSET, domain: str = ""
) -> Callable[[OpImpl], OpImpl]:
    """Decorator: ``fn`` implements ``op_type`` for opsets ``since..until`` (inclusive)."""
    if since > until:
        raise ValueError(f"`since <= until` must hold, but got (since={since}, until={until}) for {op_type}")

    def decorate(fn: OpImpl) -> OpImpl:
        entries = _REGISTRY.setdefault((domain, op_type), [])
        for e in entries:
            if e.since <= until and since <= e.until:
                raise ValueError(
                    f"{op_type}: opset range {since}..{until} overlaps {e.since}..{e.until} "
                    f"already registered by {e.fn.__qualname__}"
                )
        entries.append(_Entry(op_type, domain, since, until, fn))
        entries.sort(key=lambda e: e.since)
        return fn

    return decorate


def _entry(op_type: str, opset: int, domain: str) -> _Entry | None:
    for e in _REGISTRY.get((_norm(domain), op_type), ()):
        if e.since <= opset <= e.until:
            return e
    return None


def _norm(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def is_supported(op_type: str, opset: int, domain: str = "") -> bool:
    return _entry(op_type, opset, domain) is not None


def lookup(op_type: str, opset: int, domain: str = "") -> OpImpl:
    """The implementation of ``op_type`` at ``opset``; :class:`UnsupportedOpError` if none."""
    entry = _entry(op_type, opset, domain)
    if entry is None:
        ranges = [f"{e.since}..{e.until}" for e in _REGISTRY.get((_norm(domain), op_type), ())]
        where = f"domain {domain!r} " if domain else ""
        claimed = f"; supported opsets: {', '.join(ranges)}" if ranges else ""
        raise UnsupportedOpError(f"op {where}{op_type} at opset {opset} is not supported{claimed}")
    return entry.fn


def supported_ops() -> list[tuple[str, tuple[int, int]]]:
    """Every (op_type, (first opset, last opset)) the registry implements, sorted."""
    return sorted(
        (e.op_type if not e.domain else f"{e.domain}.{e.op_type}", (e.since, e.until))
        for entries in _REGISTRY.values()
        for e in entries
    )


def run_op(
    op_type: str,
    opset: int,
    inputs: Sequence[torch.Tensor | None],
    attrs: Mapping[str, Any] | None = None,
    num_outputs: int = 1,
    name: str = "",
    domain: str = "",
) -> tuple[torch.Tensor | None, ...]:
    """Run one op through the registry and return its outputs as a tuple."""
    fn = lookup(op_type, opset, domain)
    ctx = OpContext(op_type, opset, attrs or {}, num_outputs, name)
    result = fn(ctx, *inputs)
    return result if isinstance(result, tuple) else (result,)
