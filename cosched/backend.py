"""Deprecated: the ONNX test backend is :mod:`cosched.onnx_backend` (beside the runtime's
``Backend``s this name did not say which backend it was). Importing this module warns."""

from __future__ import annotations

import warnings

from cosched.onnx_backend import (
    CoschedBackend,
    CoschedRep,
    is_compatible,
    prepare,
    run_model,
    run_node,
    supports_device,
)

__all__ = ["CoschedBackend", "CoschedRep", "is_compatible", "prepare", "run_model", "run_node", "supports_device"]

warnings.warn("cosched.backend is deprecated; import cosched.onnx_backend", DeprecationWarning, stacklevel=2)
