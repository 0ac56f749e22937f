"""Building blocks shared by the convolutional zoo models."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_bn", "small_gamma"]

# BatchNorm scale range for the last BatchNorm of a residual branch (see _init.py).
RESIDUAL_GAMMA = (0.1, 0.3)


def conv_bn(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    eps: float = 1e-5,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> activation, the unit of ResNet/Inception/MobileNet."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def small_gamma(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """Mark ``bn`` as the last BatchNorm of a residual branch (small seeded scale)."""
    bn.init_gamma = RESIDUAL_GAMMA  # type: ignore[assignment]  # read by _init.py
    return bn
