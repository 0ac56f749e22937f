"""GoogLeNet / Inception-v1 (Szegedy et al., 2015) with BatchNorm, without auxiliary heads.

full: the paper's Table 1: 7x7/2 stem, nine Inception modules (3a-3b, 4a-4e, 5a-5b) with
their published channel counts, the 5x5 branch as in the paper, 224x224 input, 1000 classes.
Every conv is followed by BatchNorm (eps 1e-3) as in torchvision's ``googlenet``; torchvision
uses a 3x3 where the paper has 5x5, so its parameter count (6,624,904 without aux heads) is
380,928 lower than this model's 7,005,832.
tiny: channel counts divided by 8, modules 3a, 4a, 4e and 5b (one or two per stage), 64x64
input, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosched.zoo._layers import conv_bn
from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "GoogLeNetConfig"]

# 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection: Table 1 of the paper.
ModuleSpec = tuple[int, int, int, int, int, int]
PAPER_MODULES: dict[str, ModuleSpec] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


@dataclass(frozen=True)
class GoogLeNetConfig:
    divisor: int
    stages: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    image: int
    num_classes: int


def _conv(cin: int, cout: int, kernel: int, **kw: object) -> nn.Sequential:
    return conv_bn(cin, cout, kernel, eps=1e-3, **kw)  # type: ignore[arg-type]


class Inception(nn.Module):
    def __init__(self, cin: int, spec: ModuleSpec) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, pool = spec
        self.branch1 = _conv(cin, c1, 1)
        self.branch2 = nn.Sequential(_conv(cin, c3r, 1), _conv(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(_conv(cin, c5r, 1), _conv(c5r, c5, 5, padding=2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), _conv(cin, pool, 1)
        )
        self.out_channels = c1 + c3 + c5 + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, config: GoogLeNetConfig) -> None:
        super().__init__()
        d = config.divisor
        self.stem = nn.Sequential(
            _conv(3, 64 // d, 7, stride=2, padding=3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            _conv(64 // d, 64 // d, 1),
            _conv(64 // d, 192 // d, 3, padding=1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        layers: list[nn.Module] = []
        cin = 192 // d
        for i, stage in enumerate(config.stages):
            if i == 1:
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
            if i == 2:
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            for key in stage:
                module = Inception(cin, tuple(c // d for c in PAPER_MODULES[key]))  # type: ignore[arg-type]
                layers.append(module)
                cin = module.out_channels
        self.inception = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.inception(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def _inputs(config: GoogLeNetConfig) -> tuple[InputSpec, ...]:
    return (InputSpec("input", (3, config.image, config.image), "float32"),)


SPEC = ModelSpec(
    name="googlenet",
    summary="GoogLeNet (Inception-v1) image classifier (four-branch Inception modules, BatchNorm)",
    configs=(
        (
            "tiny",
            GoogLeNetConfig(
                divisor=8, stages=(("3a",), ("4a", "4e"), ("5b",)), image=64, num_classes=10
            ),
        ),
        (
            "full",
            GoogLeNetConfig(
                divisor=1,
                stages=(("3a", "3b"), ("4a", "4b", "4c", "4d", "4e"), ("5a", "5b")),
                image=224,
                num_classes=1000,
            ),
        ),
    ),
    make=GoogLeNet,
    inputs=_inputs,
    output_names=("logits",),
)
