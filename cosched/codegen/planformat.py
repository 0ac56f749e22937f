"""The plan value and its JSON form, both derived from the dataclasses below.

:class:`Plan` and its parts are frozen dataclasses, and they are the one description of the
plan format: pydantic derives from them the conversion to JSON (:func:`plan_to_json`), the
checked conversion back (:func:`plan_from_json`) and the JSON Schema (:func:`plan_schema`),
so adding a field is one edit. What the types alone do not say (ids are >= 0, a sha256 is 64
hex digits) sits beside them in ``Annotated[..., Field(...)]``; a part whose JSON form differs
from the dataclass (an instruction names a task or an event, the timeline is a list of
records) says so with :class:`_StoredAs`. Numbers are :class:`~pydantic.Strict`: a JSON
``"3"`` or ``true`` is not an id.

``plan.schema.json`` beside this module is generated from them, for tools outside cosched; a
test fails when it is stale. Regenerate it with::

    python -c "from cosched.codegen.planformat import schema_text; print(schema_text(), end='')" > cosched/codegen/plan.schema.json

A one-device plan is written as ``schema_version`` 1, exactly as before multi-device plans
existed; a plan over several devices (or one whose tenants are split,
:mod:`cosched.ir.sharding`) is version 2 (:data:`SCHEMA_VERSION`), which adds three fields to
version 1: ``devices`` (one :class:`DeviceEntry` per rank: which device, its memory cap, the
weights it holds and their shard file), ``comms`` (one :class:`CommTask` per communication
task, with its peers) and ``splits`` (the split specs applied to the imported graph), plus
the ``send`` instruction. ``device`` stays in version 2 as the spec of the hardware kind every
rank is (what the cost model and the device fingerprint bind the plan to); the entries say
which device each rank is. A version 1 document loads with those fields empty, and may not
have them.

A field added within a version has a default, and a plan written before the field existed
loads with it (tasks without ``provider`` run on ``"torch"``). A change that old plans cannot
meet by defaults bumps the version and adds, in :func:`plan_from_json`, an upgrade of the
previous version's document run before validation, so every earlier version keeps loading.

Reading and writing plan directories is :mod:`cosched.codegen.plan`'s.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, get_args

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    model_serializer,
)
from pydantic.json_schema import GenerateJsonSchema, SkipJsonSchema
from pydantic_core import PydanticSerializationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from cosched.codegen.planfields import CLOSED as _CLOSED
from cosched.codegen.planfields import EXTRA as _EXTRA
from cosched.codegen.planfields import Id as _Id
from cosched.codegen.planfields import Ms as _Ms
from cosched.codegen.planfields import Sha as _Sha
from cosched.codegen.planfields import StoredAs as _StoredAs
from cosched.codegen.planfields import not_stored as _not_stored
from cosched.codegen.planmulti import CommTask, DeviceEntry, WeightSpec
from cosched.errors import PlanError

__all__ = [
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
    "plan_from_json",
    "plan_schema",
    "plan_to_json",
    "schema_text",
]

SCHEMA_VERSION = 2
"""The newest version: what a multi-device plan is written as."""
ONE_DEVICE_VERSION = 1
"""What a one-device plan without splits is written as (unchanged since version 1)."""
READABLE_VERSIONS = (1, 2)
_V2_FIELDS = ("devices", "comms", "splits")
"""The fields version 2 adds; a version 1 document has none of them."""

Provider = Literal["torch", "ort"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
"""Who runs a task's ops: cosched's torch kernels, or onnxruntime."""

InstructionOp = Literal["run", "record", "wait", "send"]

# ----------------------------------------------------------- JSON-only forms
class _RunInstruction(TypedDict):
    """Run a task."""

    __pydantic_config__ = ConfigDict(extra="forbid", title="RunInstruction")  # type: ignore[misc]
    op: Literal["run"]
    task: _Id


class _SyncInstruction(TypedDict):
    """Record an event after the previous run, or wait for one."""

    __pydantic_config__ = ConfigDict(extra="forbid", title="SyncInstruction")  # type: ignore[misc]
    op: Literal["record", "wait"]
    event: _Id


class _SendInstruction(TypedDict):
    """Post the send of a Transfer task's input to its peer device (version 2)."""

    __pydantic_config__ = ConfigDict(extra="forbid", title="SendInstruction")  # type: ignore[misc]
    op: Literal["send"]
    task: _Id
    peer: _Id


class _TimelineEntry(TypedDict):
    """A task's predicted start and end."""

    __pydantic_config__ = ConfigDict(extra="forbid", title="TimelineEntry")  # type: ignore[misc]
    task: _Id
    start_ms: _Ms
    end_ms: _Ms


class _Device(TypedDict):
    """The device spec the plan was compiled for; keys beyond these are kept as they are."""

    __pydantic_config__ = ConfigDict(extra="allow", title="Device")  # type: ignore[misc]
    kind: Literal["cpu", "cuda"]
    name: NotRequired[str]


# ------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Instruction:
    """``run`` a task, ``record`` an event after the previous run, or ``wait`` for one; in a
    multi-device plan also ``send``: post the input of Transfer task ``task`` to device
    ``peer`` (the rank that runs the task), without waiting for it to be received.

    Stored as a ``run`` object naming a task, a ``record``/``wait`` one naming an event, or
    a ``send`` one naming a task and its peer.
    """

    op: InstructionOp
    task: int | None = None
    event: int | None = None
    peer: int | None = None


def _instruction_json(i: Instruction) -> dict[str, Any]:
    if i.op == "send":
        return {"op": i.op, "task": i.task, "peer": i.peer}
    return {"op": i.op, "task": i.task} if i.op == "run" else {"op": i.op, "event": i.event}


_StoredInstruction = Annotated[Instruction, _StoredAs(
    Annotated[_RunInstruction | _SyncInstruction | _SendInstruction, Field(discriminator="op")],
    lambda d: Instruction(**d), _instruction_json,
)]


@dataclass(frozen=True)
class StreamPlan:
    """One stream of one device: its instruction list, in program order.

    ``priority`` follows CUDA: 0 is normal, negative is more urgent (latency-critical tenants).
    """

    __pydantic_config__ = _CLOSED

    id: _Id
    device: _Id
    instructions: tuple[_StoredInstruction, ...]
    priority: Annotated[int, Strict(), Field(le=0)] = 0

    @property
    def tasks(self) -> tuple[int, ...]:
        return tuple(i.task for i in self.instructions if i.op == "run")  # type: ignore[misc]

    @model_serializer(mode="wrap")
    def _instructions_last(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A stream's own fields come before its long instruction list."""
        data = dump(self)
        data["instructions"] = data.pop("instructions")
        return data


@dataclass(frozen=True)
class Event:
    """An event recorded on ``stream`` right after ``after_task``; waited on by ``waiters``."""

    __pydantic_config__ = _CLOSED

    id: _Id
    stream: _Id
    after_task: _Id
    waiters: tuple[_Id, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """The task partition, stored so a re-imported graph is re-fused identically, and the
    provider that runs the task (``PROVIDERS``: ``"torch"``, cosched's own kernels, or
    ``"ort"``, onnxruntime; see :mod:`cosched.execution.ort`)."""

    __pydantic_config__ = _CLOSED

    id: _Id
    tenant: str
    name: Annotated[str, Field(default="")]  # may be absent from JSON, not from the constructor
    ops: Annotated[tuple[str, ...], Field(min_length=1)]
    provider: Provider = "torch"


@dataclass(frozen=True)
class Buffer:
    """Lifetime of one activation tensor.

    ``def_task`` writes it; ``use_tasks`` read it; ``free_after`` is a task after which the
    tensor is dead on every stream (every reader happens before or is that task), or None
    when no single reader is ordered after all the others (then it is freed at the end of
    the run). Graph outputs have ``free_after`` None.
    """

    __pydantic_config__ = _CLOSED

    tensor: str
    tenant: str
    shape: tuple[_Id, ...]
    dtype: str
    nbytes: _Id
    def_task: _Id
    use_tasks: tuple[_Id, ...]
    free_after: _Id | None


@dataclass(frozen=True)
class Binding:
    """A tenant's model input or output: the model's own name and the graph-wide tensor."""

    __pydantic_config__ = _CLOSED

    tenant: str
    name: str
    tensor: str
    shape: tuple[_Id, ...]
    dtype: str


@dataclass(frozen=True)
class ModelRef:
    """A source model: ``path`` is relative to the plan directory when copied, else absolute."""

    __pydantic_config__ = _CLOSED

    tenant: Annotated[str, Field(min_length=1)]
    path: Annotated[str, Field(min_length=1)]
    sha256: _Sha


@dataclass(frozen=True)
class ImportOptions:
    """The importer options the graph was built with, passed again on re-import."""

    __pydantic_config__ = _CLOSED

    batch: Annotated[int, Strict(), Field(ge=1)] | None = None
    input_shapes: Mapping[str, Any] | None = None


def _timeline_json(timeline: Mapping[int, tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"task": t, "start_ms": s, "end_ms": e} for t, (s, e) in sorted(timeline.items())]


def _timeline(entries: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    return {e["task"]: (float(e["start_ms"]), float(e["end_ms"])) for e in entries}


@dataclass(frozen=True)
class Plan:
    """A lowered schedule. ``timeline`` maps task id -> predicted (start_ms, end_ms).

    ``issue_order`` lists every task in the order one host thread should issue them
    (interleaved across streams by predicted start). ``base_dir`` is where the plan was
    loaded from (not serialised); model paths resolve against it.
    """

    __pydantic_config__ = _CLOSED

    device: Annotated[Mapping[str, Any], _StoredAs(_Device, dict, dict)]
    models: Annotated[tuple[ModelRef, ...], Field(min_length=1)]
    import_options: ImportOptions
    tasks: tuple[TaskSpec, ...]
    streams: Annotated[tuple[StreamPlan, ...], Field(min_length=1)]
    events: tuple[Event, ...]
    buffers: tuple[Buffer, ...]
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    issue_order: tuple[_Id, ...]
    timeline: Annotated[
        Mapping[int, tuple[float, float]], _StoredAs(list[_TimelineEntry], _timeline, _timeline_json)
    ] = field(default_factory=dict)
    predicted_ms: Mapping[str, _Ms] = field(default_factory=dict)
    schedule_method: str = ""
    devices: tuple[DeviceEntry, ...] = ()
    comms: tuple[CommTask, ...] = ()
    splits: tuple[Mapping[str, Any], ...] = ()
    base_dir: Annotated[
        str | None, Field(exclude=True), SkipJsonSchema(), BeforeValidator(_not_stored)
    ] = field(default=None, compare=False)

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(m.tenant for m in self.models)

    @property
    def device_kind(self) -> str:
        return str(self.device.get("kind", ""))

    @property
    def schema_version(self) -> int:
        """What the plan is written as: 2 when it spans devices or applies splits, else 1."""
        return SCHEMA_VERSION if (self.devices or self.comms or self.splits) else ONE_DEVICE_VERSION

    def device_of_task(self) -> dict[int, int]:
        """Task id -> the device (rank) of the stream that runs it."""
        return {t: s.device for s in self.streams for t in s.tasks}

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

    def replace(self, **changes: Any) -> Plan:
        return replace(self, **changes)


# ------------------------------------------------------------------ JSON
@cache
def _adapter() -> TypeAdapter[Plan]:
    return TypeAdapter(Plan)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plan.json's document: JSON-ready dicts and lists, ``schema_version`` first
    (1 for a one-device plan, which then has no version 2 fields)."""
    try:
        body = _adapter().dump_python(plan, mode="json", warnings=False)
    except PydanticSerializationError as exc:
        raise PlanError(f"plan cannot be written as JSON: {exc}") from None
    version = plan.schema_version
    if version == ONE_DEVICE_VERSION:
        body = {k: v for k, v in body.items() if k not in _V2_FIELDS}
    return {"schema_version": version, **body}


def plan_from_json(data: Any, where: str | Path = "plan", *, base_dir: str | None = None) -> Plan:
    """The plan in plan.json's document ``data`` (as :func:`json.loads` returns it).

    Raises :class:`PlanError`, starting with ``where``, if ``data`` has a ``schema_version``
    this cosched does not read or does not match the schema; the message names the first
    field that does not, as a path like ``streams/0/instructions/3/op``. ``base_dir`` is where
    the plan was loaded from.
    """
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise PlanError(
            f"{where}: schema_version is {version!r}, this cosched reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; recompile the plan with this version"
        )
    _check_version_fields(data, version, where)
    body = {k: v for k, v in data.items() if k != "schema_version"}
    try:
        plan = _adapter().validate_python(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        message = _EXTRA if first["type"] == "unexpected_keyword_argument" else first["msg"]
        got = "" if first["type"] == "missing" else f" (got {reprlib.repr(first['input'])})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PlanError(f"{where}: plan does not match plan.schema.json at {_path(first['loc'], body)}: "
                        f"{message}{got}{more}") from None
    return replace(plan, base_dir=base_dir)


def _check_version_fields(data: dict[str, Any], version: int, where: str | Path) -> None:
    if version == ONE_DEVICE_VERSION:
        extra = [k for k in _V2_FIELDS if k in data]
        if extra:
            raise PlanError(f"{where}: a schema_version 1 plan has {', '.join(extra)}, which version 2 "
                            "introduced; write it as version 2")
        if any(i.get("op") == "send" for s in data.get("streams") or () if isinstance(s, dict)
               for i in s.get("instructions") or () if isinstance(i, dict)):
            raise PlanError(f"{where}: a schema_version 1 plan has a send instruction, which version 2 "
                            "introduced for multi-device plans")
    elif not data.get("devices"):
        raise PlanError(f"{where}: a schema_version 2 plan must list its devices (at least one); "
                        "a one-device plan is written as version 1")


def _path(loc: tuple[int | str, ...], data: Any) -> str:
    """``loc`` as a path into ``data``, without the tag pydantic puts in it for a union member."""
    parts, node = [], data
    for n, key in enumerate(loc):
        inside = (isinstance(node, Mapping) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node))
        if not inside and n < len(loc) - 1:
            continue
        parts.append(str(key))
        node = node[key] if inside else None  # type: ignore[index]
    return "/".join(parts) or "(top level)"


class _Schema(GenerateJsonSchema):
    """Field names say what a property is, so no titles for them; definitions are named like
    their titles, without the underscore of the JSON-only forms' private classes."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(name).lstrip("_")


@cache
def plan_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every plan.json must satisfy, derived from :class:`Plan`."""
    body = _adapter().json_schema(schema_generator=_Schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://cosched.dev/schemas/plan-v{SCHEMA_VERSION}.json",
        "title": "cosched plan",
        "description": "A lowered multi-stream schedule of several ONNX models (tenants), on one device "
                       "(schema_version 1: weights stay in the referenced model files) or several "
                       "(schema_version 2: each device's weights in its own safetensors shard).",
        "type": "object",
        "required": ["schema_version", *body["required"]],
        "additionalProperties": False,
        "properties": {"schema_version": {"enum": list(READABLE_VERSIONS)}, **body["properties"]},
        "if": {"properties": {"schema_version": {"const": ONE_DEVICE_VERSION}}},
        "then": {"not": {"anyOf": [{"required": [name]} for name in _V2_FIELDS]}},
        "else": {"required": ["devices"], "properties": {"devices": {"minItems": 1}}},
        "$defs": body["$defs"],
    }


def schema_text() -> str:
    """:func:`plan_schema` as the text of the shipped plan.schema.json."""
    return json.dumps(plan_schema(), indent=2) + "\n"
