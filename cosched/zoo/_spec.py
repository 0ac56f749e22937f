"""What the zoo knows about a model: its sizes, inputs, outputs, and how to build it seeded.

A :class:`ModelSpec` is plain data plus two functions: ``make(config)`` constructs the
``torch.nn.Module`` (weights left uninitialised) and ``inputs(config)`` describes its inputs.
:meth:`ModelSpec.build` constructs the module on the meta device, materialises it on the CPU and
draws every parameter and buffer from a private ``torch.Generator``, so builds are reproducible
and never touch torch's global random state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from cosched.errors import ConfigError
from cosched.zoo._init import init_seeded

__all__ = ["DEFAULT_SEED", "SIZES", "InputSpec", "ModelSpec"]

# Every model offers both sizes: `full` follows the published architecture, `tiny` keeps its
# topology (every block type, residuals, concats) but is narrow, shallow and small-input.
SIZES = ("tiny", "full")
DEFAULT_SEED = 0

InputKind = Literal["dense", "index", "mask"]


@dataclass(frozen=True)
class InputSpec:
    """One model input; ``shape`` excludes the leading batch dimension (always axis 0).

    ``kind`` says how example values are drawn: ``dense`` standard normal floats, ``index``
    integers in ``[0, high)``, ``mask`` a 0/1 attention mask whose rows are a run of ones
    followed by zero padding. ``high`` holds one exclusive bound, or one bound per position of
    the first non-batch axis (DLRM: one per embedding table).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: InputKind = "dense"
    high: tuple[int, ...] = ()

    def batched(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model: its configurations by size and the functions that build and describe it."""

    name: str
    summary: str
    configs: tuple[tuple[str, Any], ...]
    make: Callable[[Any], nn.Module]
    inputs: Callable[[Any], tuple[InputSpec, ...]]
    output_names: tuple[str, ...]

    @property
    def sizes(self) -> tuple[str, ...]:
        return tuple(size for size, _ in self.configs)

    def config(self, size: str) -> Any:
        for known, config in self.configs:
            if known == size:
                return config
        raise ConfigError(
            f"zoo model {self.name!r} has no size {size!r}; expected one of {', '.join(self.sizes)}"
        )

    def input_specs(self, size: str) -> tuple[InputSpec, ...]:
        return self.inputs(self.config(size))

    def input_names(self, size: str) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.input_specs(size))

    def dynamic_axes(self, size: str) -> dict[str, dict[int, str]]:
        """Axis 0 of every input and output is the batch, named ``batch``."""
        names = (*self.input_names(size), *self.output_names)
        return {name: {0: "batch"} for name in names}

    def build(self, size: str, *, seed: int = DEFAULT_SEED) -> nn.Module:
        """The model in eval mode with weights drawn from ``seed``; same seed, same weights."""
        config = self.config(size)
        with torch.device("meta"):
            module = self.make(config)
        module = module.to_empty(device="cpu")
        init_seeded(module, seed)
        return module.eval()

    def param_count(self, size: str) -> int:
        """Number of parameters (buffers excluded), counted without allocating weights."""
        with torch.device("meta"):
            module = self.make(self.config(size))
        return sum(p.numel() for p in module.parameters())
