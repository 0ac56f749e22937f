"""Modules that register op implementations into :mod:`cosched.ops.registry` on import."""

from __future__ import annotations

from cosched.ops.implementations import elementwise, nn, tensor  # noqa: F401
