"""``cosched exec``: run ONNX models through cosched's sequential executor and save the outputs.

The reference path, with no cost model or schedule involved: the models are imported as
tenants of one graph and every op runs one after another through ``cosched.ops``. The
outputs, one ``DIR/TENANT.npz`` per tenant keyed by the model's output names, can be compared
with any other runtime (onnxruntime, torch) on the same inputs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosched.cli.options import (
    add_model_options,
    check_model_file,
    parse_model_options,
    shapes_from_inputs,
)
from cosched.errors import ConfigError, InputError
from cosched.files import check_output_dir, load_npz, parse_assignments, save_outputs

__all__ = ["TenantRun", "format_exec", "register"]

EPILOG = """\
examples:
  cosched zoo export bert -o bert.onnx && cosched zoo export dlrm -o dlrm.onnx
  cosched exec bert.onnx dlrm.onnx --save-outputs out/       # writes out/bert.npz, out/dlrm.npz
  cosched exec bert.onnx --inputs bert=bert_in.npz --save-outputs out/
  cosched exec resnet50.onnx --batch 8 --seed 1
tenants are named after the file stems (or --name, one per model). An --inputs file holds one array per model input,
keyed by the ONNX input names (np.savez(FILE, input_ids=..., attention_mask=...)); its arrays'
shapes fix the model's symbolic dims. Tenants without --inputs get seeded random inputs
(--seed): floats ~ N(0, 1), integers in [0, 2) (valid as indices, token ids and masks), so a
model with symbolic dims then needs --batch and/or --shape."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "exec", help="run models through cosched sequentially; save outputs to compare",
        description="Import the models as tenants of one graph, run every op in order through "
                    "cosched's op library on CPU, print each tenant's outputs and time, and with "
                    "--save-outputs write DIR/TENANT.npz keyed by the models' output names.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--inputs", action="extend", nargs="+", default=[], metavar="TENANT=FILE.npz",
                        help="inputs of a tenant, keyed by the model's input names (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--save-outputs", metavar="DIR", help="write DIR/TENANT.npz, keyed by output names")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2) on NaN or inf in an input, or in an output of a tenant "
                             "whose inputs are finite (default: warn)")
    parser.set_defaults(func=_main)


@dataclass(frozen=True)
class TenantRun:
    """One tenant's part of an exec run: where its inputs came from, its outputs and op time."""

    tenant: str
    inputs: str
    outputs: Mapping[str, np.ndarray]
    seconds: float
    ops: int


def _main(args: argparse.Namespace) -> int:
    from cosched.ir import load_models
    from cosched.runtime.memory import check_fits, device_memory

    if args.save_outputs:
        check_output_dir(args.save_outputs, "--save-outputs")
    for model in args.models:
        check_model_file(model)
    options = parse_model_options(args)
    given = _read_input_files(args.inputs, options["names"])
    options["input_shapes"] = _merge_shapes(given, options["input_shapes"], options["batch"])
    graph = load_models(args.models, **options)
    check_fits(graph, device_memory("cpu"), "this machine (cpu)")
    _check_input_names(graph, given)
    runs, total = execute(graph, given, args.seed, strict=args.strict)
    saved = save_outputs({r.tenant: r.outputs for r in runs}, args.save_outputs) if args.save_outputs else []
    if not args.quiet:
        print(format_exec(runs, total, saved))
    return 0


def _read_input_files(specs: Sequence[str], tenants: Sequence[str]) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """``--inputs`` as tenant -> (file, arrays); a tenant that is no model's stem is an error."""
    files = parse_assignments(specs, "--inputs", "bert=bert_inputs.npz")
    unknown = sorted(set(files) - set(tenants))
    if unknown:
        raise ConfigError(f"--inputs names unknown tenant(s) {unknown}; tenants are {list(tenants)}")
    return {tenant: (path, load_npz(path, tenant)) for tenant, path in files.items()}


def _merge_shapes(
    given: Mapping[str, tuple[str, dict[str, np.ndarray]]],
    explicit: Mapping[str, Mapping[str, tuple[int, ...]]] | None,
    batch: int | Mapping[str, int] | None,
) -> dict[str, dict[str, tuple[int, ...]]] | None:
    """Input shapes from ``--inputs`` arrays plus ``--shape``; a disagreement names both."""
    merged = {t: dict(s) for t, s in (explicit or {}).items()}
    from_files = shapes_from_inputs({tenant: arrays for tenant, (_, arrays) in given.items()})
    for tenant, shapes in from_files.items():
        path = given[tenant][0]
        tenant_batch = batch.get(tenant) if isinstance(batch, Mapping) else batch
        for name, shape in shapes.items():
            stated = merged.setdefault(tenant, {}).get(name)
            if stated is not None and tuple(stated) != shape:
                raise ConfigError(
                    f"--inputs {tenant}={path}: input {name!r} has shape {list(shape)}, but --shape "
                    f"{tenant}:{name}= says {list(stated)}"
                )
            if tenant_batch is not None and shape and shape[0] != tenant_batch:
                raise ConfigError(
                    f"--inputs {tenant}={path}: input {name!r} has batch {shape[0]} (shape {list(shape)}), "
                    f"but --batch says {tenant_batch}"
                )
            merged[tenant][name] = shape
    return merged or None


def _check_input_names(graph: Any, given: Mapping[str, tuple[str, Mapping[str, np.ndarray]]]) -> None:
    """Every ``--inputs`` file holds all its model's inputs; the error names the file.

    (A name the model lacks is refused earlier, by the importer, as a shape for an unknown input.)
    """
    for tenant in graph.tenants:
        if tenant.name not in given:
            continue
        path, arrays = given[tenant.name]
        expected = list(tenant.input_names())
        missing = [name for name in expected if name not in arrays]
        if missing:
            raise InputError(
                f"--inputs {tenant.name}={path}: missing input(s) {missing}; the model's inputs are "
                f"{expected}, the file holds {sorted(arrays)}"
            )


def execute(
    graph: Any, given: Mapping[str, tuple[str, Mapping[str, np.ndarray]]], seed: int, *, strict: bool = False
) -> tuple[list[TenantRun], float]:
    """Run ``graph`` once on the given inputs (random ones elsewhere); per-tenant op time.

    Index inputs out of range are refused before the run; NaN or inf in inputs, or in the
    outputs of a tenant whose inputs are finite, are warned about (with ``strict``, refused)."""
    from cosched.execution.bindings import check_finite, check_index_inputs, validate_inputs
    from cosched.runtime import SequentialExecutor, random_inputs

    feeds: dict[str, Mapping[str, np.ndarray]] = dict(random_inputs(graph, seed))
    feeds.update({tenant: arrays for tenant, (_, arrays) in given.items()})
    feeds = validate_inputs(graph, feeds)
    check_index_inputs(graph, feeds)
    nonfinite = check_finite(feeds, "input", strict=strict)
    executor = SequentialExecutor(graph)
    seconds: dict[str, float] = dict.fromkeys(graph.tenant_names, 0.0)
    executor.kernels = [_Timed(kernel, seconds) for kernel in executor.kernels]  # type: ignore[misc]
    start = time.perf_counter()
    outputs = executor.run(feeds)
    total = time.perf_counter() - start
    check_finite(outputs, "output", strict=strict, skip=nonfinite)
    ops = {t: sum(op.tenant == t for op in graph.ops) for t in graph.tenant_names}
    runs = [
        TenantRun(t, f"from {given[t][0]}" if t in given else f"random, seed {seed}",
                  outputs[t], seconds[t], ops[t])
        for t in graph.tenant_names
    ]
    return runs, total


@dataclass(frozen=True)
class _Timed:
    """A kernel that adds its wall time to its tenant's total."""

    kernel: Any
    seconds: MutableMapping[str, float]

    def __call__(self, env: MutableMapping[str, Any]) -> None:
        start = time.perf_counter()
        self.kernel(env)
        self.seconds[self.kernel.op.tenant] += time.perf_counter() - start


def format_exec(runs: Sequence[TenantRun], total: float, saved: Sequence[Path]) -> str:
    lines = [f"exec: {len(runs)} tenant(s), {sum(r.ops for r in runs)} ops, sequential on cpu, "
             f"{total * 1e3:.1f} ms in all"]
    for run in runs:
        lines.append(f"  {run.tenant}: {run.ops} ops, {run.seconds * 1e3:.1f} ms, inputs {run.inputs}")
        for name, value in run.outputs.items():
            lines.append(f"    {name}: {value.dtype}{list(value.shape)}")
    if saved:
        lines.append("saved outputs: " + ", ".join(str(p) for p in saved))
    return "\n".join(lines)
