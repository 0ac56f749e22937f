"""The benchmark's tenant mixes: which zoo models, at which size, run together.

- ``tiny``: resnet50, bert, mobilenet_v2 and dlrm, tiny configurations (CI size).
- ``vision``: resnet50, inception_v3, mobilenet_v2 and squeezenet1_1, full size.
- ``mixed``: the vision mix plus bert and dlrm, full size.

Tenants are named after their zoo model, so a mix never holds the same model twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosched import zoo
from cosched.errors import ConfigError

__all__ = ["MIXES", "Mix", "get_mix"]

_VISION = ("resnet50", "inception_v3", "mobilenet_v2", "squeezenet1_1")


@dataclass(frozen=True)
class Mix:
    """A named set of zoo tenants at one size and batch."""

    name: str
    models: tuple[str, ...]
    size: str
    batch: int = 1

    def export(self) -> list[Path]:
        """ONNX files of the tenants, in mix order (exported once, then cached by the zoo)."""
        return [zoo.export(m, size=self.size, batch=self.batch) for m in self.models]

    def inputs(self) -> dict[str, dict[str, np.ndarray]]:
        """The zoo's deterministic example inputs, keyed by tenant then input name."""
        return {m: zoo.example_inputs(m, self.size, self.batch) for m in self.models}


MIXES: dict[str, Mix] = {
    "tiny": Mix("tiny", ("resnet50", "bert", "mobilenet_v2", "dlrm"), "tiny"),
    "vision": Mix("vision", _VISION, "full"),
    "mixed": Mix("mixed", (*_VISION, "bert", "dlrm"), "full"),
}


def get_mix(name: str) -> Mix:
    """The mix called ``name``; a :class:`ConfigError` listing the mixes if there is none."""
    try:
        return MIXES[name]
    except KeyError:
        raise ConfigError(f"unknown mix {name!r}; expected one of {', '.join(MIXES)}") from None
