"""ONNX op -> torch implementations, one registry used by every executor.

Layering: beside :mod:`cosched.ir` at the bottom; imports only :mod:`cosched.errors`."""

from __future__ import annotations

from cosched.ops.registry import OpContext, is_supported, lookup, register, run_op, supported_ops

__all__ = ["OpContext", "is_supported", "lookup", "register", "run_op", "supported_ops"]
