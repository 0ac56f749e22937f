"""ResNet-50 (He et al., 2016), torchvision's v1.5 layout: stride on the 3x3 of a bottleneck.

full: stages of 3, 4, 6, 3 bottlenecks, widths 64..512 (x4 expansion), 224x224 input,
1000 classes; 25,557,032 parameters, as torchvision's ``resnet50``.
tiny: one bottleneck per stage (first of each with a projection shortcut), width 8,
32x32 input, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosched.zoo._layers import conv_bn, small_gamma
from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "ResNetConfig"]

EXPANSION = 4


@dataclass(frozen=True)
class ResNetConfig:
    layers: tuple[int, int, int, int]
    width: int
    image: int
    num_classes: int


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * EXPANSION
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = small_gamma(nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()
        self.downsample = (
            conv_bn(cin, cout, 1, stride=stride, act=None) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        w = config.width
        self.stem = conv_bn(3, w, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Module] = []
        cin = w
        for i, blocks in enumerate(config.layers):
            planes = w * 2**i
            stride = 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(cin, planes, stride if b == 0 else 1))
                cin = planes * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.maxpool(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _inputs(config: ResNetConfig) -> tuple[InputSpec, ...]:
    return (InputSpec("input", (3, config.image, config.image), "float32"),)


SPEC = ModelSpec(
    name="resnet50",
    summary="ResNet-50 v1.5 image classifier (bottleneck residual blocks, BatchNorm)",
    configs=(
        ("tiny", ResNetConfig(layers=(1, 1, 1, 1), width=8, image=32, num_classes=10)),
        ("full", ResNetConfig(layers=(3, 4, 6, 3), width=64, image=224, num_classes=1000)),
    ),
    make=ResNet,
    inputs=_inputs,
    output_names=("logits",),
)
