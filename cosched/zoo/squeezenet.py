"""SqueezeNet 1.1 (Iandola et al., 2016; the 1.1 revision from the SqueezeNet repository).

full: 3x3/2 stem of 64 channels, eight Fire modules in three stages separated by ceil-mode
max-pools, 1x1 conv classifier, 224x224 input, 1000 classes; 1,235,496 parameters, as
torchvision's ``squeezenet1_1``. No BatchNorm (the published net has none).
tiny: stem of 16, four Fire modules (1, 1, 2 per stage), 64x64 input, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "SqueezeNetConfig"]

FireSpec = tuple[int, int, int]  # squeeze, expand 1x1, expand 3x3 channels


@dataclass(frozen=True)
class SqueezeNetConfig:
    stem: int
    stages: tuple[tuple[FireSpec, ...], ...]
    image: int
    num_classes: int


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(s)), self.relu(self.expand3x3(s))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, config: SqueezeNetConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, config.stem, 3, stride=2), nn.ReLU()]
        cin = config.stem
        for stage in config.stages:
            layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
            for squeeze, e1, e3 in stage:
                layers.append(Fire(cin, squeeze, e1, e3))
                cin = e1 + e3
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Conv2d(cin, config.num_classes, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def _inputs(config: SqueezeNetConfig) -> tuple[InputSpec, ...]:
    return (InputSpec("input", (3, config.image, config.image), "float32"),)


SPEC = ModelSpec(
    name="squeezenet1_1",
    summary="SqueezeNet 1.1 image classifier (Fire modules, concat, no BatchNorm)",
    configs=(
        (
            "tiny",
            SqueezeNetConfig(
                stem=16,
                stages=(((4, 8, 8),), ((8, 16, 16),), ((8, 24, 24), (12, 32, 32))),
                image=64,
                num_classes=10,
            ),
        ),
        (
            "full",
            SqueezeNetConfig(
                stem=64,
                stages=(
                    ((16, 64, 64), (16, 64, 64)),
                    ((32, 128, 128), (32, 128, 128)),
                    ((48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)),
                ),
                image=224,
                num_classes=1000,
            ),
        ),
    ),
    make=SqueezeNet,
    inputs=_inputs,
    output_names=("logits",),
)
