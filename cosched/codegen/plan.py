"""Plan directories: the only module that reads or writes plan files.

A :class:`Plan` is everything the runtime needs to execute a schedule except the weights,
which come from the referenced ONNX files. A plan directory holds::

    plan.json        the plan's JSON document (checked against plan.schema.json on load)
    plan_module.py   the generated straight-line Python program (see cosched.codegen.emit)
    models/          copies of the source ONNX files, unless the plan was saved with
                     copy_models=False; then plan.json references the original absolute paths
    weights/         a multi-device plan only: device<rank>.safetensors per device, exactly
                     the weights that device's tasks read (slices of the initializers for a
                     split tenant), bound by sha256 like the models

The shards are safetensors files: memory-mapped, no pickle, readable from torch and numpy
alike, so a rank loads its own weights and nothing else (:func:`load_device_weights`).

The plan value, its JSON form and the schema are :mod:`cosched.codegen.planformat`'s; this
module re-exports them, so ``cosched.codegen.plan`` stays the one place to import the plan
from. Model files are bound by sha256: :func:`load_plan` refuses a plan whose models
changed. It also refuses a plan whose fields disagree with one another
(:func:`cosched.codegen.plancheck.check_plan`): an id that names no task, event or tenant, an
event recorded elsewhere than it says, a stream order that races or deadlocks. What needs the
models themselves (bindings and buffers against the re-imported graph) is checked by
:func:`cosched.codegen.rebuild.graph_for_plan`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cosched.codegen.plancheck import check_plan
from cosched.codegen.planformat import (
    PROVIDERS,
    SCHEMA_VERSION,
    Binding,
    Buffer,
    CommTask,
    DeviceEntry,
    Event,
    ImportOptions,
    Instruction,
    ModelRef,
    Plan,
    StreamPlan,
    TaskSpec,
    WeightSpec,
    plan_from_json,
    plan_schema,
    plan_to_json,
)
from cosched.codegen.planmulti import SHARD_FILE
from cosched.errors import ConfigError, DeviceError, PlanError
from cosched.ir.graph import Graph
from cosched.paths import check_writable_parent

__all__ = [
    "PLAN_FILE",
    "PROVIDERS",
    "SCHEMA_VERSION",
    "Binding",
    "Buffer",
    "CommTask",
    "DeviceEntry",
    "Event",
    "ImportOptions",
    "Instruction",
    "ModelRef",
    "Plan",
    "StreamPlan",
    "TaskSpec",
    "WeightSpec",
    "check_plan_dir",
    "load_device_weights",
    "load_plan",
    "plan_from_json",
    "plan_schema",
    "plan_to_json",
    "save_plan",
    "sha256_of",
    "shard_path",
]

PLAN_FILE = "plan.json"
MODELS_DIR = "models"


# -------------------------------------------------------------------- files
def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_plan(plan: Plan, directory: str | Path, *, copy_models: bool = True,
              module_source: str | None = None, extra_files: Mapping[str, str] | None = None,
              graph: Graph | None = None) -> Path:
    """Write ``plan`` as the directory ``directory``; returns the path of plan.json.

    With ``copy_models`` the source ONNX files are copied to ``models/<tenant>.onnx`` and
    referenced relatively, so the directory is self-contained; otherwise plan.json keeps
    absolute paths. ``module_source`` (from :func:`cosched.codegen.emit_python`) is written
    as plan_module.py, ``extra_files`` (name -> text) beside it.

    Everything is written to a temporary directory beside ``directory`` that then replaces
    it whole, so a plan directory is complete or absent, never half-written (a full disk
    leaves the old one, if any), and holds no stale files of an earlier plan. An existing
    ``directory`` must be empty or a plan directory (see :func:`check_plan_dir`).

    A multi-device plan also gets ``weights/device<rank>.safetensors`` per device holding
    weights, read from ``graph`` (the graph the plan was lowered from, required then), and
    plan.json records each shard's path and sha256.
    """
    out = check_plan_dir(directory)
    sources = []
    for ref in plan.models:
        source = plan.model_path(ref).resolve()
        if not source.is_file():
            raise PlanError(f"tenant {ref.tenant!r}: model file {source} does not exist; cannot save the plan")
        sources.append((ref, source))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise PlanError(f"plan directory {out}: cannot write there ({_reason(exc)})") from None
    try:
        if plan.devices:
            plan = _write_shards(plan, staging, graph)
        data = _write_plan_files(plan, staging, sources, copy_models, module_source, extra_files or {})
        plan_from_json(data, out / PLAN_FILE)  # what cannot be loaded back is not saved
        _swap(staging, out)
    except OSError as exc:
        raise PlanError(f"plan directory {out}: writing failed ({_reason(exc)}); nothing was changed "
                        "there") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / PLAN_FILE


def check_plan_dir(directory: str | Path, label: str = "plan directory") -> Path:
    """``directory`` as a Path, if a plan can be saved there; else :class:`ConfigError`.

    It may be absent (its nearest existing parent must be a writable directory), an empty
    directory, or a plan directory (it holds plan.json), which saving replaces whole; any
    other directory is refused, so saving never deletes files it did not write. ``label``
    starts the message (the CLI passes its flag).
    """
    out = Path(directory)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError(f"{label} {out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / PLAN_FILE).is_file():
            raise ConfigError(
                f"{label} {out}: is a directory that holds files but no {PLAN_FILE}; saving replaces the "
                "whole directory, so give a new or empty one"
            )
    check_writable_parent(out, label)
    return out


def _write_plan_files(plan: Plan, out: Path, sources: list[tuple[ModelRef, Path]], copy_models: bool,
                      module_source: str | None, extra_files: Mapping[str, str]) -> dict[str, Any]:
    refs = []
    for ref, source in sources:
        if copy_models:
            target = out / MODELS_DIR / f"{ref.tenant}.onnx"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)
            refs.append(ModelRef(ref.tenant, f"{MODELS_DIR}/{target.name}", sha256_of(target)))
        else:
            refs.append(ModelRef(ref.tenant, str(source), ref.sha256))
    data = plan_to_json(plan.replace(models=tuple(refs)))
    (out / PLAN_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if module_source is not None:
        (out / "plan_module.py").write_text(module_source, encoding="utf-8")
    for name, text in extra_files.items():
        (out / name).write_text(text, encoding="utf-8")
    return data


def _write_shards(plan: Plan, out: Path, graph: Graph | None) -> Plan:
    """Each device's weights as ``weights/device<rank>.safetensors``; the plan naming them."""
    from safetensors.numpy import save_file

    from cosched.ir.onnx_import import read_weights

    if graph is None and any(d.weights for d in plan.devices):
        raise PlanError("saving a multi-device plan writes each device's weights, read through the graph it "
                        "was lowered from: pass graph= (cosched.codegen.graph_for_plan(plan) rebuilds it)")
    cache: dict[str, dict[str, Any]] = {}
    entries = []
    for d in plan.devices:
        if not d.weights:
            entries.append(replace(d, weights_file=None, weights_sha256=None))
            continue
        assert graph is not None
        tenants = {graph.tensor(w.tensor).tenant for w in d.weights}
        cache = {t: v for t, v in cache.items() if t in tenants}  # one device's tenants in memory at most
        tensors = {}
        for w in d.weights:
            tenant = graph.tensor(w.tensor).tenant
            if tenant not in cache:
                cache[tenant] = read_weights(graph, tenant)
            value = cache[tenant].get(w.tensor)
            if value is None or tuple(value.shape) != tuple(w.shape) or value.dtype.name != w.dtype:
                got = "nothing" if value is None else f"{list(value.shape)} {value.dtype.name}"
                raise PlanError(f"device {d.label}: weight {w.tensor!r} of tenant {tenant!r} should be "
                                f"{list(w.shape)} {w.dtype}, but the model holds {got}; recompile the plan")
            tensors[w.tensor] = value if value.flags.c_contiguous else value.copy(order="C")
        name = SHARD_FILE.format(rank=d.rank)
        path = out / name
        path.parent.mkdir(exist_ok=True)
        save_file(tensors, str(path), metadata={"cosched_rank": str(d.rank), "device": d.label})
        entries.append(replace(d, weights_file=name, weights_sha256=sha256_of(path)))
    return plan.replace(devices=tuple(entries))


def load_device_weights(plan: Plan, rank: int) -> dict[str, Any]:
    """The weights device ``rank`` of a saved multi-device plan holds (tensor name -> numpy
    array), read from its shard alone; :class:`PlanError` if the shard is missing, changed or
    holds other tensors than the plan lists."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not 0 <= rank < len(plan.devices):
        raise PlanError(f"the plan has no device of rank {rank} (ranks 0..{len(plan.devices) - 1})")
    entry = plan.devices[rank]
    if not entry.weights:
        return {}
    path = shard_path(plan, rank)
    try:
        values = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise PlanError(f"device {entry.label}: weight shard {path} cannot be read ({exc})") from None
    want = {w.tensor: w for w in entry.weights}
    if set(values) != set(want):
        raise PlanError(f"device {entry.label}: weight shard {path} holds {sorted(values)[:5]}, the plan lists "
                        f"{sorted(want)[:5]}; recompile the plan")
    for name, value in values.items():
        if tuple(value.shape) != tuple(want[name].shape) or value.dtype.name != want[name].dtype:
            raise PlanError(f"device {entry.label}: weight {name!r} in {path} is {list(value.shape)} "
                            f"{value.dtype.name}, the plan says {list(want[name].shape)} {want[name].dtype}")
    return values


def shard_path(plan: Plan, rank: int) -> Path:
    """Where the weight shard of device ``rank`` of a saved plan is; :class:`PlanError` if
    the plan names none (it was never saved)."""
    entry = plan.devices[rank]
    if entry.weights_file is None:
        raise PlanError(f"device {entry.label} holds {len(entry.weights)} weight(s) but the plan names no "
                        "weight shard: save the plan (cosched.codegen.save_plan) before loading its weights")
    path = Path(entry.weights_file)
    if not path.is_absolute() and plan.base_dir is not None:
        path = Path(plan.base_dir) / path
    return path


def _swap(staging: Path, out: Path) -> None:
    """Put ``staging`` where ``out`` is, by renames: the old directory moves aside first and
    comes back if the second rename fails."""
    if not out.exists():
        staging.rename(out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    aside.rmdir()
    out.rename(aside)
    try:
        staging.rename(out)
    except OSError:
        aside.rename(out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _reason(exc: OSError) -> str:
    return f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)


def load_plan(directory: str | Path, *, device_kind: str | None = None) -> Plan:
    """Read and check a plan directory (or a plan.json path).

    Raises :class:`PlanError` if plan.json is missing, not JSON, fails the schema or
    :func:`~cosched.codegen.plancheck.check_plan`, or a model file is missing or has another sha256 than the plan
    recorded; raises
    :class:`DeviceError` if ``device_kind`` is given and the plan was made for another kind.
    """
    path = Path(directory)
    if path.is_dir():
        path = path / PLAN_FILE
    if not path.is_file():
        raise PlanError(f"{path}: no plan file; a plan directory must hold {PLAN_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable JSON plan ({exc})") from None
    plan = check_plan(plan_from_json(data, path, base_dir=str(path.parent.resolve())), path)
    if device_kind is not None and plan.device_kind != device_kind:
        raise DeviceError(
            f"{path}: plan was compiled for a {plan.device_kind!r} device "
            f"({plan.device.get('name', '?')}), but this runtime targets {device_kind!r}; "
            f"recompile with --device {device_kind}"
        )
    for ref in plan.models:
        _check_model(plan, ref, path)
    for d in plan.devices:
        if d.weights:
            _check_shard(plan, d.rank, path)
    return plan


def _check_shard(plan: Plan, rank: int, plan_path: Path) -> None:
    shard = shard_path(plan, rank)
    label = plan.devices[rank].label
    if not shard.is_file():
        raise PlanError(f"{plan_path}: weight shard of device {label} not found at {shard}")
    found = sha256_of(shard)
    if found != plan.devices[rank].weights_sha256:
        raise PlanError(f"{plan_path}: weight shard {shard} of device {label} has sha256 {found}, but the "
                        f"plan was saved with sha256 {plan.devices[rank].weights_sha256}; recompile the plan")


def _check_model(plan: Plan, ref: ModelRef, plan_path: Path) -> None:
    model = plan.model_path(ref)
    if not model.is_file():
        raise PlanError(f"{plan_path}: model of tenant {ref.tenant!r} not found at {model}")
    found = sha256_of(model)
    if found != ref.sha256:
        raise PlanError(
            f"{plan_path}: model file {model} of tenant {ref.tenant!r} has sha256 {found}, "
            f"but the plan was compiled for sha256 {ref.sha256}; recompile the plan"
        )
