"""The zoo's registry: model name -> :class:`ModelSpec`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from cosched.errors import ConfigError
from cosched.zoo import bert, dlrm, googlenet, inception, mobilenet, resnet, squeezenet
from cosched.zoo._spec import ModelSpec

__all__ = ["ZOO", "names", "spec"]

ZOO: Mapping[str, ModelSpec] = MappingProxyType(
    {
        module.SPEC.name: module.SPEC
        for module in (resnet, inception, googlenet, mobilenet, squeezenet, bert, dlrm)
    }
)


def names() -> tuple[str, ...]:
    """Names of the zoo's models, in registry order."""
    return tuple(ZOO)


def spec(name: str) -> ModelSpec:
    """The spec of zoo model ``name``; :class:`ConfigError` listing the valid names if unknown."""
    try:
        return ZOO[name]
    except KeyError:
        raise ConfigError(f"unknown zoo model {name!r}; expected one of {', '.join(ZOO)}") from None
