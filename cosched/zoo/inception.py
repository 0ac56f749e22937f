"""Inception-v3 (Szegedy et al., 2016), torchvision's layout without the auxiliary classifier.

full: the stem, three InceptionA (pool features 32, 64, 64), InceptionB, four InceptionC
(7x7 factorised, c7 = 128, 160, 160, 192), InceptionD, two InceptionE, 299x299 input,
1000 classes, BatchNorm eps 1e-3; 23,834,568 parameters, as torchvision's ``inception_v3``
with ``aux_logits=False``.
tiny: every channel count divided by 8, one block of each type (A, B, C, D, E), 75x75 input
(the smallest the stride-2 reductions allow), 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cosched.zoo._layers import conv_bn
from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "InceptionV3Config"]


@dataclass(frozen=True)
class InceptionV3Config:
    scale: float
    a_pool_features: tuple[int, ...]
    c_channels: tuple[int, ...]
    e_blocks: int
    image: int
    num_classes: int


def _conv(cin: int, cout: int, kernel: int | tuple[int, int], **kw: object) -> nn.Sequential:
    return conv_bn(cin, cout, kernel, eps=1e-3, **kw)  # type: ignore[arg-type]


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int, c: _Scale) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, c(64), 1)
        self.branch5x5 = nn.Sequential(_conv(cin, c(48), 1), _conv(c(48), c(64), 5, padding=2))
        self.branch3x3dbl = nn.Sequential(
            _conv(cin, c(64), 1),
            _conv(c(64), c(96), 3, padding=1),
            _conv(c(96), c(96), 3, padding=1),
        )
        self.branch_pool = _conv(cin, pool, 1)
        self.out_channels = c(64) + c(64) + c(96) + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), pool], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int, c: _Scale) -> None:
        super().__init__()
        self.branch3x3 = _conv(cin, c(384), 3, stride=2)
        self.branch3x3dbl = nn.Sequential(
            _conv(cin, c(64), 1),
            _conv(c(64), c(96), 3, padding=1),
            _conv(c(96), c(96), 3, stride=2),
        )
        self.out_channels = c(384) + c(96) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), pool], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int, c: _Scale) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, c(192), 1)
        self.branch7x7 = nn.Sequential(
            _conv(cin, c7, 1),
            _conv(c7, c7, (1, 7), padding=(0, 3)),
            _conv(c7, c(192), (7, 1), padding=(3, 0)),
        )
        self.branch7x7dbl = nn.Sequential(
            _conv(cin, c7, 1),
            _conv(c7, c7, (7, 1), padding=(3, 0)),
            _conv(c7, c7, (1, 7), padding=(0, 3)),
            _conv(c7, c7, (7, 1), padding=(3, 0)),
            _conv(c7, c(192), (1, 7), padding=(0, 3)),
        )
        self.branch_pool = _conv(cin, c(192), 1)
        self.out_channels = 4 * c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), pool], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int, c: _Scale) -> None:
        super().__init__()
        self.branch3x3 = nn.Sequential(_conv(cin, c(192), 1), _conv(c(192), c(320), 3, stride=2))
        self.branch7x7x3 = nn.Sequential(
            _conv(cin, c(192), 1),
            _conv(c(192), c(192), (1, 7), padding=(0, 3)),
            _conv(c(192), c(192), (7, 1), padding=(3, 0)),
            _conv(c(192), c(192), 3, stride=2),
        )
        self.out_channels = c(320) + c(192) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), pool], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, c: _Scale) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, c(320), 1)
        self.branch3x3_1 = _conv(cin, c(384), 1)
        self.branch3x3_2a = _conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = _conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _conv(cin, c(448), 1)
        self.branch3x3dbl_2 = _conv(c(448), c(384), 3, padding=1)
        self.branch3x3dbl_3a = _conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch_pool = _conv(cin, c(192), 1)
        self.out_channels = c(320) + 4 * c(384) + c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3, bd, pool], 1)


@dataclass(frozen=True)
class _Scale:
    factor: float

    def __call__(self, channels: int) -> int:
        return max(1, round(channels * self.factor))


class InceptionV3(nn.Module):
    def __init__(self, config: InceptionV3Config) -> None:
        super().__init__()
        c = _Scale(config.scale)
        self.stem = nn.Sequential(
            _conv(3, c(32), 3, stride=2),
            _conv(c(32), c(32), 3),
            _conv(c(32), c(64), 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            _conv(c(64), c(80), 1),
            _conv(c(80), c(192), 3),
            nn.MaxPool2d(3, stride=2),
        )
        blocks: list[nn.Module] = []
        cin = c(192)
        for pool in config.a_pool_features:
            blocks.append(InceptionA(cin, c(pool), c))
            cin = blocks[-1].out_channels  # type: ignore[assignment]
        blocks.append(InceptionB(cin, c))
        cin = blocks[-1].out_channels  # type: ignore[assignment]
        for c7 in config.c_channels:
            blocks.append(InceptionC(cin, c(c7), c))
            cin = blocks[-1].out_channels  # type: ignore[assignment]
        blocks.append(InceptionD(cin, c))
        cin = blocks[-1].out_channels  # type: ignore[assignment]
        for _ in range(config.e_blocks):
            blocks.append(InceptionE(cin, c))
            cin = blocks[-1].out_channels  # type: ignore[assignment]
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def _inputs(config: InceptionV3Config) -> tuple[InputSpec, ...]:
    return (InputSpec("input", (3, config.image, config.image), "float32"),)


SPEC = ModelSpec(
    name="inception_v3",
    summary="Inception-v3 image classifier (factorised multi-branch blocks, concat, BatchNorm)",
    configs=(
        (
            "tiny",
            InceptionV3Config(
                scale=1 / 8,
                a_pool_features=(32,),
                c_channels=(128,),
                e_blocks=1,
                image=75,
                num_classes=10,
            ),
        ),
        (
            "full",
            InceptionV3Config(
                scale=1.0,
                a_pool_features=(32, 64, 64),
                c_channels=(128, 160, 160, 192),
                e_blocks=2,
                image=299,
                num_classes=1000,
            ),
        ),
    ),
    make=InceptionV3,
    inputs=_inputs,
    output_names=("logits",),
)
