"""ONNX op -> torch implementations, one registry used by every executor.

Importing the package fills the registry: :mod:`cosched.ops.implementations` registers its
kernels with :func:`register` as it is imported. The registry module does not import the
implementations (they import it), so the two do not import each other.

Layering: beside :mod:`cosched.ir` at the bottom; imports only :mod:`cosched.errors`.
"""

from __future__ import annotations

from cosched.ops import implementations  # noqa: F401  (registers every kernel)
from cosched.ops.registry import OpContext, is_supported, lookup, register, run_op, supported_ops

__all__ = ["OpContext", "is_supported", "lookup", "register", "run_op", "supported_ops"]
