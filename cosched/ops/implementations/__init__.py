"""Modules that register op implementations into :mod:`cosched.ops.registry` on import."""

from __future__ import annotations

from cosched.ops.implementations import (  # noqa: F401
    activations,
    comm,
    elementwise,
    indexing,
    nn,
    normalization,
    pooling,
    reduce,
    resize,
    tensor,
)
