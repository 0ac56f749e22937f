"""The plan value and its JSON form: the only module that reads or writes plan JSON.

A :class:`Plan` is everything the runtime needs to execute a schedule except the weights,
which come from the referenced ONNX files. A plan directory holds::

    plan.json        this document (validated against plan.schema.json on load)
    plan_module.py   the generated straight-line Python program (see cosched.codegen.emit)
    models/          copies of the source ONNX files, unless the plan was saved with
                     copy_models=False; then plan.json references the original absolute paths

Model files are bound by sha256: :func:`load_plan` refuses a plan whose models changed. It
also refuses a plan whose fields disagree with one another (:func:`cosched.codegen.plancheck.check_plan`): an id that
names no task, event or tenant, an event recorded elsewhere than it says, a stream order that
races or deadlocks. What needs the models themselves (bindings and buffers against the
re-imported graph) is checked by :func:`cosched.codegen.rebuild.graph_for_plan`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

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
    "plan_schema",
    "save_plan",
    "sha256_of",
]

SCHEMA_VERSION = 1

PROVIDERS = ("torch", "ort")
"""Who runs a task's ops: cosched's torch kernels, or onnxruntime."""
PLAN_FILE = "plan.json"
MODELS_DIR = "models"

InstructionOp = Literal["run", "record", "wait"]


@dataclass(frozen=True)
class Instruction:
    """``run`` a task, ``record`` an event after the previous run, or ``wait`` for one."""

    op: InstructionOp
    task: int | None = None
    event: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "task": self.task} if self.op == "run" else {"op": self.op, "event": self.event}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Instruction:
        return Instruction(d["op"], d.get("task"), d.get("event"))


@dataclass(frozen=True)
class StreamPlan:
    """One stream of one device: its instruction list, in program order.

    ``priority`` follows CUDA: 0 is normal, negative is more urgent (latency-critical tenants).
    """

    id: int
    device: int
    instructions: tuple[Instruction, ...]
    priority: int = 0

    @property
    def tasks(self) -> tuple[int, ...]:
        return tuple(i.task for i in self.instructions if i.op == "run")  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "priority": self.priority,
            "instructions": [i.to_dict() for i in self.instructions],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> StreamPlan:
        instructions = tuple(Instruction.from_dict(i) for i in d["instructions"])
        return StreamPlan(d["id"], d["device"], instructions, d.get("priority", 0))


@dataclass(frozen=True)
class Event:
    """An event recorded on ``stream`` right after ``after_task``; waited on by ``waiters``."""

    id: int
    stream: int
    after_task: int
    waiters: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "after_task": self.after_task, "waiters": list(self.waiters)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Event:
        return Event(d["id"], d["stream"], d["after_task"], tuple(d.get("waiters", ())))


@dataclass(frozen=True)
class TaskSpec:
    """The task partition, stored so a re-imported graph is re-fused identically, and the
    provider that runs the task (``PROVIDERS``: ``"torch"``, cosched's own kernels, or
    ``"ort"``, onnxruntime; see :mod:`cosched.execution.ort`)."""

    id: int
    tenant: str
    name: str
    ops: tuple[str, ...]
    provider: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "ops": list(self.ops),
                "provider": self.provider}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> TaskSpec:
        return TaskSpec(d["id"], d["tenant"], d.get("name", ""), tuple(d["ops"]), d.get("provider", "torch"))


@dataclass(frozen=True)
class Buffer:
    """Lifetime of one activation tensor.

    ``def_task`` writes it; ``use_tasks`` read it; ``free_after`` is a task after which the
    tensor is dead on every stream (every reader happens before or is that task), or None
    when no single reader is ordered after all the others (then it is freed at the end of
    the run). Graph outputs have ``free_after`` None.
    """

    tensor: str
    tenant: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    def_task: int
    use_tasks: tuple[int, ...]
    free_after: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor, "tenant": self.tenant, "shape": list(self.shape),
            "dtype": self.dtype, "nbytes": self.nbytes, "def_task": self.def_task,
            "use_tasks": list(self.use_tasks), "free_after": self.free_after,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Buffer:
        return Buffer(
            d["tensor"], d["tenant"], tuple(d["shape"]), d["dtype"], d["nbytes"],
            d["def_task"], tuple(d["use_tasks"]), d.get("free_after"),
        )


@dataclass(frozen=True)
class Binding:
    """A tenant's model input or output: the model's own name and the graph-wide tensor."""

    tenant: str
    name: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "name": self.name, "tensor": self.tensor,
                "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Binding:
        return Binding(d["tenant"], d["name"], d["tensor"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class ModelRef:
    """A source model: ``path`` is relative to the plan directory when copied, else absolute."""

    tenant: str
    path: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "path": self.path, "sha256": self.sha256}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ModelRef:
        return ModelRef(d["tenant"], d["path"], d["sha256"])


@dataclass(frozen=True)
class ImportOptions:
    """The importer options the graph was built with, passed again on re-import."""

    batch: int | None = None
    input_shapes: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "input_shapes": _plain(self.input_shapes)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ImportOptions:
        return ImportOptions(d.get("batch"), d.get("input_shapes"))


@dataclass(frozen=True)
class Plan:
    """A lowered schedule. ``timeline`` maps task id -> predicted (start_ms, end_ms).

    ``issue_order`` lists every task in the order one host thread should issue them
    (interleaved across streams by predicted start). ``base_dir`` is where the plan was
    loaded from (not serialised); model paths resolve against it.
    """

    device: Mapping[str, Any]
    models: tuple[ModelRef, ...]
    import_options: ImportOptions
    tasks: tuple[TaskSpec, ...]
    streams: tuple[StreamPlan, ...]
    events: tuple[Event, ...]
    buffers: tuple[Buffer, ...]
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    issue_order: tuple[int, ...]
    timeline: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    predicted_ms: Mapping[str, float] = field(default_factory=dict)
    schedule_method: str = ""
    base_dir: str | None = field(default=None, compare=False)

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(m.tenant for m in self.models)

    @property
    def device_kind(self) -> str:
        return str(self.device.get("kind", ""))

    def stream_of_task(self) -> dict[int, int]:
        return {t: s.id for s in self.streams for t in s.tasks}

    def task_spec(self, task_id: int) -> TaskSpec:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise PlanError(f"plan has no task {task_id}")

    def model_path(self, ref: ModelRef) -> Path:
        path = Path(ref.path)
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        return path

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "device": _plain(self.device),
            "models": [m.to_dict() for m in self.models],
            "import_options": self.import_options.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "streams": [s.to_dict() for s in self.streams],
            "events": [e.to_dict() for e in self.events],
            "buffers": [b.to_dict() for b in self.buffers],
            "inputs": [b.to_dict() for b in self.inputs],
            "outputs": [b.to_dict() for b in self.outputs],
            "issue_order": list(self.issue_order),
            "timeline": [{"task": t, "start_ms": s, "end_ms": e} for t, (s, e) in sorted(self.timeline.items())],
            "predicted_ms": dict(self.predicted_ms),
            "schedule_method": self.schedule_method,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], base_dir: str | None = None) -> Plan:
        """Build a plan from a dict already validated against the schema."""
        return Plan(
            device=dict(d["device"]),
            models=tuple(ModelRef.from_dict(m) for m in d["models"]),
            import_options=ImportOptions.from_dict(d["import_options"]),
            tasks=tuple(TaskSpec.from_dict(t) for t in d["tasks"]),
            streams=tuple(StreamPlan.from_dict(s) for s in d["streams"]),
            events=tuple(Event.from_dict(e) for e in d["events"]),
            buffers=tuple(Buffer.from_dict(b) for b in d["buffers"]),
            inputs=tuple(Binding.from_dict(b) for b in d["inputs"]),
            outputs=tuple(Binding.from_dict(b) for b in d["outputs"]),
            issue_order=tuple(d["issue_order"]),
            timeline={e["task"]: (float(e["start_ms"]), float(e["end_ms"])) for e in d.get("timeline", ())},
            predicted_ms={k: float(v) for k, v in d.get("predicted_ms", {}).items()},
            schedule_method=d.get("schedule_method", ""),
            base_dir=base_dir,
        )

    def replace(self, **changes: Any) -> Plan:
        return replace(self, **changes)


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy of mappings and sequences (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -------------------------------------------------------------------- files
def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def plan_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every plan.json must satisfy."""
    text = resources.files("cosched.codegen").joinpath("plan.schema.json").read_text("utf-8")
    return json.loads(text)


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
        _validate(data, out / PLAN_FILE)
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
    data = plan.replace(models=tuple(refs)).to_dict()
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
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise PlanError(
            f"{path}: schema_version is {version!r}, this cosched reads version {SCHEMA_VERSION}; "
            "recompile the plan with this version"
        )
    _validate(data, path)
    from cosched.codegen.plancheck import check_plan  # it imports this module

    plan = check_plan(Plan.from_dict(data, base_dir=str(path.parent.resolve())), path)
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


def _validate(data: Mapping[str, Any], where: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(plan_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PlanError(f"{where}: plan does not match plan.schema.json at {at}: {first.message}{more}")
