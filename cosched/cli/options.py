"""Command-line options shared by every verb that takes models: paths, ``--batch``, ``--shape``.

``add_model_options(parser)`` adds them; ``parse_model_options(args)`` turns them into the
keyword arguments of :func:`cosched.ir.load_models`::

    graph = load_models(args.models, **parse_model_options(args))

``--batch 4`` fixes every tenant's batch; ``--batch bert=4`` one tenant's (repeatable; the
two forms do not mix). ``--shape bert:input_ids=1x128`` fixes an input's full shape
(repeatable). Where concrete inputs are at hand, :func:`shapes_from_inputs` gives the same
``input_shapes`` from their arrays.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np

from cosched.errors import ConfigError

__all__ = ["add_model_options", "parse_batch", "parse_model_options", "parse_shape", "shapes_from_inputs"]


def add_model_options(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """Add ``MODEL.onnx ...`` (unless ``models`` is false), ``--batch`` and ``--shape``."""
    if models:
        parser.add_argument(
            "models", nargs="+", metavar="MODEL.onnx",
            help="ONNX model files, one per tenant; the tenant is named after the file stem",
        )  # fmt: skip
    parser.add_argument(
        "--batch", action="append", default=[], metavar="N|TENANT=N",
        help="fix the symbolic batch dim: N for every tenant, or TENANT=N for one (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--shape", action="append", default=[], metavar="TENANT:INPUT=DxDx...",
        help="fix an input's full shape, e.g. bert:input_ids=1x128 (repeatable)",
    )  # fmt: skip


def _positive(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{what}: batch must be >= 1, got {text!r}")
    return value


def parse_batch(values: list[str]) -> int | dict[str, int] | None:
    """``--batch`` values: one ``N`` for all tenants, or ``TENANT=N`` entries."""
    if not values:
        return None
    per_tenant: dict[str, int] = {}
    global_values = []
    for value in values:
        if "=" in value:
            tenant, _, number = value.partition("=")
            if not tenant:
                raise ConfigError(f"--batch {value!r}: expected TENANT=N, the tenant is empty")
            if tenant in per_tenant:
                raise ConfigError(f"--batch {value!r}: tenant {tenant!r} is given a batch twice")
            per_tenant[tenant] = _positive(number, f"--batch {value!r}")
        else:
            global_values.append(_positive(value, f"--batch {value!r}"))
    if global_values and per_tenant:
        raise ConfigError(
            f"--batch {values!r}: give either one batch for all tenants (--batch N) or one per "
            "tenant (--batch TENANT=N), not both"
        )
    if len(global_values) > 1:
        raise ConfigError(f"--batch {values!r}: more than one batch for all tenants")
    return global_values[0] if global_values else per_tenant


def parse_shape(value: str) -> tuple[str, str, tuple[int, ...]]:
    """One ``--shape`` value ``TENANT:INPUT=DxD...`` as (tenant, input, dims)."""
    head, eq, dims_text = value.rpartition("=")
    tenant, colon, name = head.partition(":")
    if not eq or not colon or not tenant or not name:
        raise ConfigError(f"--shape {value!r}: expected TENANT:INPUT=DxDx..., e.g. bert:input_ids=1x128")
    try:
        dims = tuple(int(d) for d in dims_text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--shape {value!r}: dims {dims_text!r} must be integers joined by 'x', e.g. 1x128") from None
    if any(d < 0 for d in dims):
        raise ConfigError(f"--shape {value!r}: dims must be >= 0")
    return tenant, name, dims


def parse_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """``batch`` and ``input_shapes`` keyword arguments for :func:`cosched.ir.load_models`."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for value in getattr(args, "shape", None) or []:
        tenant, name, dims = parse_shape(value)
        if name in shapes.get(tenant, {}):
            raise ConfigError(f"--shape {value!r}: input {tenant}:{name} is given a shape twice")
        shapes.setdefault(tenant, {})[name] = dims
    return {"batch": parse_batch(getattr(args, "batch", None) or []), "input_shapes": shapes or None}


def shapes_from_inputs(inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """``input_shapes`` (tenant -> input -> shape) taken from concrete input arrays."""
    return {
        tenant: {name: tuple(int(d) for d in np.shape(array)) for name, array in per_input.items()}
        for tenant, per_input in inputs.items()
    }
