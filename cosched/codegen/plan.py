"""Plan directories: the only module that reads or writes plan files.

A :class:`Plan` is everything the runtime needs to execute a schedule except the weights,
which come from the referenced ONNX files. A plan directory holds::

    plan.json        the plan's JSON document (checked against plan.schema.json on load)
    plan_module.py   the generated straight-line Python program (see cosched.codegen.emit)
    models/          copies of the source ONNX files, unless the plan was saved with
                     copy_models=False; then plan.json references the original absolute paths

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
from pathlib import Path
from typing import Any

from cosched.codegen.plancheck import check_plan
from cosched.codegen.planformat import (
    PROVIDERS,
    SCHEMA_VERSION,
    Binding,
    Buffer,
    Event,
    ImportOptions,
    Instruction,
    ModelRef,
    Plan,
    StreamPlan,
    TaskSpec,
    plan_from_json,
    plan_schema,
    plan_to_json,
)
from cosched.errors import ConfigError, DeviceError, PlanError
from cosched.paths import check_writable_parent

__all__ = [
    "PLAN_FILE",
    "PROVIDERS",
    "SCHEMA_VERSION",
    "Binding",
    "Buffer",
    "Event",
    "ImportOptions",
    "Instruction",
    "ModelRef",
    "Plan",
    "StreamPlan",
    "TaskSpec",
    "check_plan_dir",
    "load_plan",
    "plan_from_json",
    "plan_schema",
    "plan_to_json",
    "save_plan",
    "sha256_of",
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
              module_source: str | None = None, extra_files: Mapping[str, str] | None = None) -> Path:
    """Write ``plan`` as the directory ``directory``; returns the path of plan.json.

    With ``copy_models`` the source ONNX files are copied to ``models/<tenant>.onnx`` and
    referenced relatively, so the directory is self-contained; otherwise plan.json keeps
    absolute paths. ``module_source`` (from :func:`cosched.codegen.emit_python`) is written
    as plan_module.py, ``extra_files`` (name -> text) beside it.

    Everything is written to a temporary directory beside ``directory`` that then replaces
    it whole, so a plan directory is complete or absent, never half-written (a full disk
    leaves the old one, if any), and holds no stale files of an earlier plan. An existing
    ``directory`` must be empty or a plan directory (see :func:`check_plan_dir`).
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
    return plan


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
