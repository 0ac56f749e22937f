"""The plan value and its JSON form.

:class:`Plan` and its parts are frozen dataclasses; :func:`plan_to_json` turns a plan into
plan.json's document and :func:`plan_from_json` checks a document against plan.schema.json
and turns it back into a plan. Reading and writing plan directories is
:mod:`cosched.codegen.plan`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from cosched.errors import PlanError

__all__ = [
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
    "plan_from_json",
    "plan_schema",
    "plan_to_json",
]

SCHEMA_VERSION = 1

PROVIDERS = ("torch", "ort")
"""Who runs a task's ops: cosched's torch kernels, or onnxruntime."""

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
    ``"ort"``, onnxruntime; see :mod:`cosched.runtime.ort`)."""

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


# ------------------------------------------------------------------ JSON
@cache
def plan_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every plan.json must satisfy."""
    text = resources.files("cosched.codegen").joinpath("plan.schema.json").read_text("utf-8")
    return json.loads(text)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plan.json's document: JSON-ready dicts and lists, ``schema_version`` first."""
    return plan.to_dict()


def plan_from_json(data: Any, where: str | Path = "plan", *, base_dir: str | None = None) -> Plan:
    """The plan in plan.json's document ``data`` (as :func:`json.loads` returns it).

    Raises :class:`PlanError`, starting with ``where``, if ``data`` has another
    ``schema_version`` or does not match the schema. ``base_dir`` is where the plan was
    loaded from.
    """
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise PlanError(
            f"{where}: schema_version is {version!r}, this cosched reads version {SCHEMA_VERSION}; "
            "recompile the plan with this version"
        )
    _validate(data, where)
    return Plan.from_dict(data, base_dir=base_dir)


def _validate(data: Mapping[str, Any], where: str | Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(plan_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PlanError(f"{where}: plan does not match plan.schema.json at {at}: {first.message}{more}")
