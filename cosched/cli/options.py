"""Command-line options shared by every verb that takes models: paths, ``--batch``, ``--shape``.

``add_model_options(parser)`` adds them; ``parse_model_options(args)`` turns them into the
keyword arguments of :func:`cosched.ir.load_models`::

    graph = load_models(args.models, **parse_model_options(args))

Tenants are named after the file stems, or by ``--name`` (one per model, in order).
``--batch 4`` fixes every tenant's batch; ``--batch bert=4`` one tenant's (repeatable; the
two forms do not mix). ``--shape bert:input_ids=1x128`` fixes an input's full shape
(repeatable). Where concrete inputs are at hand, :func:`shapes_from_inputs` gives the same
``input_shapes`` from their arrays. Everything is checked here, before any import, and
errors name the flag: a tenant name that ``--slo``, ``--inputs`` or ``--shape`` could not
address (it holds ``=`` or ``:``) is refused with a hint to pass ``--name``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosched.errors import ConfigError

__all__ = [
    "add_model_options",
    "check_model_file",
    "parse_batch",
    "parse_model_options",
    "parse_shape",
    "shapes_from_inputs",
    "tenant_names",
]

#: The largest dim an ONNX shape (int64) can hold.
MAX_DIM = 2**63 - 1
#: Characters that --slo TENANT=MS, --inputs TENANT=FILE and --shape TENANT:INPUT=... split on.
RESERVED = ("=", ":")


def add_model_options(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """Add ``MODEL.onnx ...`` (unless ``models`` is false), ``--batch`` and ``--shape``."""
    if models:
        parser.add_argument(
            "models", nargs="+", metavar="MODEL.onnx",
            help="ONNX model files, one per tenant; the tenant is named after the file stem",
        )  # fmt: skip
        parser.add_argument(
            "--name", action="append", default=[], metavar="TENANT",
            help="name the tenants instead: one --name per model, in the order of the models",
        )  # fmt: skip
    parser.add_argument(
        "--batch", action="append", default=[], metavar="N|TENANT=N",
        help="fix the symbolic batch dim: N for every tenant, or TENANT=N for one (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--shape", action="append", default=[], metavar="TENANT:INPUT=DxDx...",
        help="fix an input's full shape, e.g. bert:input_ids=1x128 (repeatable)",
    )  # fmt: skip


def check_model_file(path: str) -> Path:
    """``path`` if it is a readable file; else :class:`ConfigError` saying what it is instead."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"model file {file} is a directory; give one ONNX file per tenant")
    if not file.exists():
        raise ConfigError(f"model file {file} does not exist")
    if not file.is_file():
        raise ConfigError(f"model file {file} is not a regular file")
    return file


def tenant_names(args: argparse.Namespace) -> list[str]:
    """The tenants of ``args.models``: ``--name`` values, else the file stems; checked to be
    unique and addressable by ``--slo``, ``--inputs`` and ``--shape``."""
    names = list(getattr(args, "name", None) or [])
    models = list(args.models)
    if names and len(names) != len(models):
        raise ConfigError(f"--name is given {len(names)} time(s) for {len(models)} model(s); give one "
                          "--name per model, in the order of the models")
    tenants = names or [Path(m).stem for m in models]
    seen: dict[str, str] = {}
    for tenant, model in zip(tenants, models, strict=True):
        origin = f"--name {tenant!r}" if names else f"the file stem of {model}"
        if not tenant or "/" in tenant:
            raise ConfigError(f"tenant name {tenant!r} ({origin}) must be non-empty and hold no '/'")
        bad = [c for c in RESERVED if c in tenant]
        if bad:
            raise ConfigError(
                f"tenant name {tenant!r} ({origin}) holds {bad[0]!r}, so --slo, --inputs and --shape "
                "could not address it; name the tenants with --name (one per model)"
            )
        if tenant in seen:
            raise ConfigError(f"tenant name {tenant!r} is used twice ({seen[tenant]} and {model}); name the "
                              "tenants with --name (one per model)")
        seen[tenant] = model
    return tenants


def _positive(text: str, what: str, noun: str = "batch") -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{what}: {noun} must be >= 1, got {text!r}")
    if value > MAX_DIM:
        raise ConfigError(f"{what}: {noun} {value} is larger than any ONNX dim can be (2**63 - 1)")
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
    texts = dims_text.lower().split("x") if dims_text else []
    if not texts or not all(t.strip().lstrip("+-").isdigit() for t in texts):
        raise ConfigError(f"--shape {value!r}: dims {dims_text!r} must be integers joined by 'x', e.g. 1x128")
    dims = tuple(_positive(t, f"--shape {value!r}", "every dim") for t in texts)
    return tenant, name, dims


def parse_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """``names``, ``batch`` and ``input_shapes`` keyword arguments for
    :func:`cosched.ir.load_models`; tenants that ``--batch`` or ``--shape`` name must exist."""
    tenants = tenant_names(args)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for value in getattr(args, "shape", None) or []:
        tenant, name, dims = parse_shape(value)
        _known(tenant, tenants, f"--shape {value!r}")
        if name in shapes.get(tenant, {}):
            raise ConfigError(f"--shape {value!r}: input {tenant}:{name} is given a shape twice")
        shapes.setdefault(tenant, {})[name] = dims
    batch = parse_batch(getattr(args, "batch", None) or [])
    for tenant in batch if isinstance(batch, dict) else ():
        _known(tenant, tenants, f"--batch {tenant}=")
    return {"names": tenants, "batch": batch, "input_shapes": shapes or None}


def _known(tenant: str, tenants: Sequence[str], what: str) -> None:
    if tenant not in tenants:
        raise ConfigError(f"{what}: unknown tenant {tenant!r}; tenants are {list(tenants)}")


def shapes_from_inputs(inputs: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """``input_shapes`` (tenant -> input -> shape) taken from concrete input arrays."""
    return {
        tenant: {name: tuple(int(d) for d in np.shape(array)) for name, array in per_input.items()}
        for tenant, per_input in inputs.items()
    }
