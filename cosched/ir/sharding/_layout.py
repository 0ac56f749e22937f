"""How a split axis travels through shape-changing ops (for the tensor-parallel pass).

A tensor split into parts ``[start, stop)`` along one axis stays split along one axis of a
reshaped or transposed view when the parts cover whole blocks of it: reshaping
``(B, S, 64)`` split on axis 2 in parts of 32 to ``(B, S, 4, 16)`` splits axis 2 (heads)
into parts of 2, and the reverse reshape merges them back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Bounds", "reshape_axis", "scale_bounds", "transpose_axis"]

Bounds = tuple[tuple[int, int], ...]


def reshape_axis(src: Sequence[int], dst: Sequence[int], axis: int) -> tuple[int, int, int] | None:
    """``(dst_axis, mul, div)``: part ``[s, e)`` of ``src``'s ``axis`` is part
    ``[s * mul / div, e * mul / div)`` of ``dst``'s ``dst_axis`` (s and e multiples of div),
    or None when a reshape from ``src`` to ``dst`` scatters the axis."""
    n, pre, post = src[axis], math.prod(src[:axis]), math.prod(src[axis + 1:])
    acc, b = 1, None
    for i, d in enumerate(dst):
        if acc == pre and d != 1:
            b = i
            break
        acc *= d
        if acc > pre:
            return None
    if b is None:
        return None
    d, rest = dst[b], math.prod(dst[b + 1:])
    if d == n and rest == post:
        return b, 1, 1
    if d < n and n % d == 0 and rest == (n // d) * post:
        return b, 1, n // d
    if d > n and d % n == 0 and post == (d // n) * rest:
        return b, d // n, 1
    return None


def scale_bounds(bounds: Bounds, mul: int, div: int) -> Bounds | None:
    """``bounds`` scaled by ``mul / div``; None if a bound is not a multiple of ``div``."""
    if any(s % div or e % div for s, e in bounds):
        return None
    return tuple((s * mul // div, e * mul // div) for s, e in bounds)


def transpose_axis(perm: Sequence[int] | None, rank: int, axis: int) -> int:
    """Where ``axis`` of the input is in the output of a Transpose with ``perm``."""
    order = list(perm) if perm else list(range(rank))[::-1]
    return order.index(axis)
