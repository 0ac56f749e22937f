"""Seeded weight initialisation for zoo models.

Every parameter and buffer is drawn from one private ``torch.Generator``, module by module in
registration order, so a seed fixes the weights bit for bit. Values are chosen to keep
activations of order one through deep nets (so float32 comparisons against onnxruntime stay
meaningful) and to be non-trivial everywhere: biases, BatchNorm statistics and LayerNorm affine
parameters are random, not zeros and ones, so an executor that drops one of them is caught.

A BatchNorm may carry an ``init_gamma`` attribute, a ``(low, high)`` range for its scale; the
residual branches of ResNet and MobileNetV2 use a small range (as torchvision's
``zero_init_residual`` does with zero) so activations do not double at every residual add.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ["init_seeded"]

BIAS_RANGE = (-0.1, 0.1)


def _uniform(t: torch.Tensor, g: torch.Generator, low: float, high: float) -> None:
    t.uniform_(low, high, generator=g)


def _init_conv(m: nn.Conv2d, g: torch.Generator) -> None:
    fan_in = m.weight[0].numel()
    m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=g)  # He: keeps E[x^2] under ReLU
    if m.bias is not None:
        _uniform(m.bias, g, *BIAS_RANGE)


def _init_linear(m: nn.Linear, g: torch.Generator) -> None:
    m.weight.normal_(0.0, math.sqrt(1.0 / m.in_features), generator=g)
    if m.bias is not None:
        _uniform(m.bias, g, *BIAS_RANGE)


def _init_batchnorm(m: nn.BatchNorm2d, g: torch.Generator) -> None:
    low, high = getattr(m, "init_gamma", (0.5, 1.5))
    assert m.weight is not None and m.bias is not None
    assert m.running_mean is not None and m.running_var is not None
    assert m.num_batches_tracked is not None
    _uniform(m.weight, g, low, high)
    _uniform(m.bias, g, *BIAS_RANGE)
    _uniform(m.running_mean, g, -0.1, 0.1)
    _uniform(m.running_var, g, 0.5, 1.5)
    m.num_batches_tracked.zero_()


def _init_layernorm(m: nn.LayerNorm, g: torch.Generator) -> None:
    _uniform(m.weight, g, 0.8, 1.2)
    _uniform(m.bias, g, *BIAS_RANGE)


def _init_embedding(m: nn.Embedding, g: torch.Generator) -> None:
    m.weight.normal_(0.0, 1.0 / math.sqrt(m.embedding_dim), generator=g)


_INITS: tuple[tuple[type[nn.Module], Callable[[Any, torch.Generator], None]], ...] = (
    (nn.Conv2d, _init_conv),
    (nn.Linear, _init_linear),
    (nn.BatchNorm2d, _init_batchnorm),
    (nn.LayerNorm, _init_layernorm),
    (nn.Embedding, _init_embedding),
)


def init_seeded(module: nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer of ``module`` with values drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    done: set[int] = set()
    with torch.no_grad():
        for sub in module.modules():
            for kind, init in _INITS:
                if isinstance(sub, kind):
                    init(sub, g)
                    own = chain(sub.parameters(recurse=False), sub.buffers(recurse=False))
                    done.update(id(t) for t in own)
                    break
    tensors = chain(module.named_parameters(), module.named_buffers())
    missing = [name for name, t in tensors if id(t) not in done]
    if missing:
        raise TypeError(
            f"cosched.zoo: no seeded initialiser covers {', '.join(missing)} of "
            f"{type(module).__name__}; add its module type to cosched/zoo/_init.py"
        )
