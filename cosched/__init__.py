"""cosched: an ahead-of-time compiler for multi-tenant DNN inference.

Public API::

    plan = cosched.compile(["resnet50.onnx", "bert.onnx"], device="cpu", trials=200)
    options = cosched.CompileOptions(device="cpu", trials=200)   # the same options as one value
    plan = cosched.compile(["resnet50.onnx", "bert.onnx"], options, seed=1)  # ... and one changed
    outputs = plan.run(inputs)          # {tenant: {output name: array}}
    plan.save("plan_dir"); plan = cosched.load("plan_dir")

``compile``, ``load``, ``CompileOptions`` and ``CompiledPlan`` are imported on first use, so
``import cosched`` stays cheap (torch, onnx and optuna load only when the pipeline is used).

Layering: lowest first, a package imports only its own and lower layers (checked by
``tests/test_layering.py``): errors, paths, cache, sizes, files -> ir, ops (and zoo, viz) -> execution (how
one task runs) -> costmodel -> search -> codegen -> runtime -> calibration, compiled,
onnx_backend -> options, api (the pipeline wired) -> isolated, cli and this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cosched import errors
from cosched.errors import CoschedError

if TYPE_CHECKING:
    from cosched.api import compile, load
    from cosched.compiled import CompiledPlan
    from cosched.options import CompileOptions

__all__ = ["CompileOptions", "CompiledPlan", "CoschedError", "__version__", "compile", "errors", "load"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("compile", "load"):
        from cosched import api

        return getattr(api, name)
    if name == "CompiledPlan":
        from cosched.compiled import CompiledPlan

        return CompiledPlan
    if name == "CompileOptions":
        from cosched.options import CompileOptions

        return CompileOptions
    raise AttributeError(f"module 'cosched' has no attribute {name!r}")
