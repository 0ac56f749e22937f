"""Annotations the plan format's dataclasses share (:mod:`cosched.codegen.planformat`).

Kept apart so the parts of the format live in modules of a readable size; only the plan
format modules import these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ConfigDict, Field, GetCoreSchemaHandler, Strict
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["CLOSED", "EXTRA", "Id", "Ms", "Sha", "StoredAs", "not_stored"]

Id = Annotated[int, Strict(), Field(ge=0)]
"""An id, a size or a dimension: a JSON integer >= 0."""
Ms = Annotated[float, Strict(), Field(ge=0)]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
CLOSED = ConfigDict(extra="forbid")
"""Every object of the format is closed: a key it does not define is an error."""


@dataclass(frozen=True)
class StoredAs:
    """``Annotated`` metadata: the value is stored in JSON as ``form``, a type pydantic checks
    the JSON against and describes in the schema; ``load`` turns the checked JSON into the
    value, ``dump`` the value into JSON."""

    form: Any
    load: Callable[[Any], Any]
    dump: Callable[[Any], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            self._validate, handler.generate_schema(self.form),
            serialization=core_schema.plain_serializer_function_ser_schema(self.dump),
        )

    def _validate(self, value: Any, check: Callable[[Any], Any]) -> Any:
        check(value)
        return self.load(value)  # the JSON as read: a checked TypedDict would reorder its keys


EXTRA = "Extra inputs are not permitted"
"""pydantic's message for an unknown key of a TypedDict, used for every unknown key."""


def not_stored(value: Any) -> Any:
    raise PydanticCustomError("extra_forbidden", EXTRA)
