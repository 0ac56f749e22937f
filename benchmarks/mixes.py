"""The benchmark's tenant mixes: which models, from where, at which size, run together.

From the reference zoo (:mod:`cosched.zoo`, written by the cosched team):

- ``tiny``: resnet50, bert, mobilenet_v2 and dlrm, tiny configurations (CI size).
- ``vision``: resnet50, inception_v3, mobilenet_v2 and squeezenet1_1, full size.
- ``mixed``: the vision mix plus bert and dlrm, full size.
- ``demo``: what ``cosched demo`` compiles: mobilenet_v2, squeezenet1_1 and googlenet, full
  size.

From outside the zoo (:mod:`benchmarks.outside`, written from the papers, so that a speed
claim is not a claim about the zoo alone), full size, batch 1:

- ``outside-cnn``: shufflenet_v2_x1_0, efficientnet_b0, densenet121 and resnext50_32x4d.
- ``outside-mixed``: the outside-cnn mix plus vit_s16 and pythia_70m.

Tenants are named after their model, so a mix never holds the same model twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import outside
from cosched import zoo
from cosched.cli.demo import DEMO_SIZE, DEMO_TENANTS
from cosched.errors import ConfigError

__all__ = ["MIXES", "SOURCES", "Mix", "get_mix"]

_VISION = ("resnet50", "inception_v3", "mobilenet_v2", "squeezenet1_1")
_OUTSIDE_CNN = ("shufflenet_v2_x1_0", "efficientnet_b0", "densenet121", "resnext50_32x4d")
SOURCES = ("zoo", "outside")


@dataclass(frozen=True)
class Mix:
    """A named set of tenants at one size and batch, from the zoo or from outside it.

    ``source`` is ``"zoo"`` (:mod:`cosched.zoo`, at ``size``) or ``"outside"``
    (:mod:`benchmarks.outside`, which has only the published size, ``"full"``).
    """

    name: str
    models: tuple[str, ...]
    size: str
    batch: int = 1
    source: str = "zoo"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(
                f"mix {self.name!r}: source must be one of {', '.join(SOURCES)}, got {self.source!r}"
            )
        if self.source == "outside" and self.size != "full":
            raise ConfigError(f"mix {self.name!r}: outside models come in size 'full' only, "
                              f"got {self.size!r}")  # fmt: skip

    def export(self) -> list[Path]:
        """ONNX files of the tenants, in mix order (exported once, then cached)."""
        if self.source == "outside":
            return [outside.export(m, batch=self.batch) for m in self.models]
        return [zoo.export(m, size=self.size, batch=self.batch) for m in self.models]

    def inputs(self) -> dict[str, dict[str, np.ndarray]]:
        """Deterministic example inputs of the tenants, keyed by tenant then input name."""
        if self.source == "outside":
            return {m: outside.example_inputs(m, self.batch) for m in self.models}
        return {m: zoo.example_inputs(m, self.size, self.batch) for m in self.models}


MIXES: dict[str, Mix] = {
    "tiny": Mix("tiny", ("resnet50", "bert", "mobilenet_v2", "dlrm"), "tiny"),
    "vision": Mix("vision", _VISION, "full"),
    "mixed": Mix("mixed", (*_VISION, "bert", "dlrm"), "full"),
    "demo": Mix("demo", DEMO_TENANTS, DEMO_SIZE),
    "outside-cnn": Mix("outside-cnn", _OUTSIDE_CNN, "full", source="outside"),
    "outside-mixed": Mix(
        "outside-mixed", (*_OUTSIDE_CNN, "vit_s16", "pythia_70m"), "full", source="outside"
    ),
}


def get_mix(name: str) -> Mix:
    """The mix called ``name``; a :class:`ConfigError` listing the mixes if there is none."""
    try:
        return MIXES[name]
    except KeyError:
        raise ConfigError(f"unknown mix {name!r}; expected one of {', '.join(MIXES)}") from None
