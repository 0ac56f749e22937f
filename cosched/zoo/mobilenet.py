"""MobileNetV2 (Sandler et al., 2018), torchvision's layout.

full: width 1.0, the paper's seven inverted-residual stages (t, c, n, s), 1280-channel head,
224x224 input, 1000 classes; 3,504,872 parameters, as torchvision's ``mobilenet_v2``.
tiny: width 0.25 (channels rounded to multiples of 8), 1-2 blocks per stage so that
residual adds remain, 128-channel head, 32x32 input, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosched.zoo._layers import conv_bn, small_gamma
from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "MobileNetV2Config"]

# Expansion t, output channels c, repeats n, first stride s: Table 2 of the paper.
PAPER_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetV2Config:
    width: float
    repeats: tuple[int, ...]
    last_channel: int
    image: int
    num_classes: int


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never 10% below ``v``."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if self.use_residual:
            small_gamma(layers[-1])  # type: ignore[arg-type]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        cin = make_divisible(32 * config.width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, stride=2, padding=1, act=nn.ReLU6)]
        for (t, c, _, s), n in zip(PAPER_STAGES, config.repeats, strict=True):
            cout = make_divisible(c * config.width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn(cin, config.last_channel, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(config.last_channel, config.num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _inputs(config: MobileNetV2Config) -> tuple[InputSpec, ...]:
    return (InputSpec("input", (3, config.image, config.image), "float32"),)


SPEC = ModelSpec(
    name="mobilenet_v2",
    summary="MobileNetV2 image classifier (inverted residuals, depthwise conv, ReLU6)",
    configs=(
        (
            "tiny",
            MobileNetV2Config(
                width=0.25,
                repeats=(1, 2, 1, 2, 1, 1, 1),
                last_channel=128,
                image=32,
                num_classes=10,
            ),
        ),
        (
            "full",
            MobileNetV2Config(
                width=1.0,
                repeats=tuple(n for _, _, n, _ in PAPER_STAGES),
                last_channel=1280,
                image=224,
                num_classes=1000,
            ),
        ),
    ),
    make=MobileNetV2,
    inputs=_inputs,
    output_names=("logits",),
)
