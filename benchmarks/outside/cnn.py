"""Four convolutional networks of different families, written from their papers.

Each class follows its paper's published configuration for ImageNet (224 x 224 RGB input,
1000 classes); its docstring names the paper, the configuration and the parameter count,
which ``tests/benchmarks/test_outside.py`` checks against the paper's number. Written
independently of :mod:`cosched.zoo`, the way a user would write a model for cosched.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseNet121", "EfficientNetB0", "ResNeXt50", "ShuffleNetV2"]


def conv_bn(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Convolution (no bias, "same" padding), BatchNorm, then ``act`` unless it is None."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# ShuffleNet V2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet V2 unit: Fig. 3(c) (stride 1, channel split) or Fig. 3(d) (stride 2)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.left: nn.Module = nn.Sequential(
                conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1)
            )
            right_in = cin
        else:
            self.left = nn.Identity()
            right_in = half
        self.right = nn.Sequential(
            conv_bn(right_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        else:
            keep, branch = x.chunk(2, dim=1)
            out = torch.cat((keep, self.right(branch)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 1.0x: Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design", ECCV 2018.

    Table 5, 1x column: conv1 3x3/2 (24) and max pool 3x3/2; stages 2-4 of 4, 8 and 4 units
    with 116, 232 and 464 output channels, the first unit of each stage downsampling
    (Fig. 3d), the others splitting channels in half (Fig. 3c); channel shuffle with 2
    groups after every unit; conv5 1x1 (1024); global average pool; FC 1000.
    Parameters: 2,278,604 (the paper's Table 5: 2.3M weights; 146M FLOPs).
    """

    PAPER_PARAMS = 2.3e6

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        stages = ((116, 4), (232, 8), (464, 4))
        self.stem = nn.Sequential(conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
        units: list[nn.Module] = []
        cin = 24
        for cout, repeats in stages:
            units += [ShuffleUnit(cin if i == 0 else cout, cout, 2 if i == 0 else 1)
                      for i in range(repeats)]  # fmt: skip
            cin = cout
        self.stages = nn.Sequential(*units)
        self.conv5 = conv_bn(cin, 1024, 1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stages(self.stem(image)))
        return self.fc(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# EfficientNet-B0


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with SiLU, as in EfficientNet's MBConv."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) with squeeze-excitation, ratio 0.25
    of the block's input channels; identity skip when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, mid, 1, act=nn.SiLU))
        layers += [
            conv_bn(mid, mid, kernel, stride, groups=mid, act=nn.SiLU),
            SqueezeExcite(mid, max(1, cin // 4)),
            conv_bn(mid, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.skip else out


class EfficientNetB0(nn.Module):
    """EfficientNet-B0: Tan, Le, "EfficientNet: Rethinking Model Scaling for Convolutional
    Neural Networks", ICML 2019.

    Table 1: stem conv 3x3/2 (32); MBConv1 k3 16 x1; MBConv6 k3 24 x2 /2; MBConv6 k5 40 x2
    /2; MBConv6 k3 80 x3 /2; MBConv6 k5 112 x3; MBConv6 k5 192 x4 /2; MBConv6 k3 320 x1;
    conv 1x1 (1280), pool, FC 1000. SiLU (swish) activations, squeeze-excitation ratio 0.25,
    symmetric padding; dropout is the identity at inference and omitted.
    Parameters: 5,288,548 (the paper's Table 2: 5.3M; 0.39B FLOPs).
    """

    PAPER_PARAMS = 5.3e6
    STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.SiLU)]
        cin = 32
        for expand, kernel, stride, cout, repeats in self.STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        blocks.append(conv_bn(cin, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(image).mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# DenseNet-121


def bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    """DenseNet's pre-activation composite function H: BN, ReLU, conv."""
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False)
    )


class DenseBlock(nn.Module):
    """``layers`` bottleneck layers (BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k)), each fed the
    concatenation of the block input and every earlier layer's output."""

    def __init__(self, cin: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(bn_relu_conv(cin + i * growth, 4 * growth, 1),
                          bn_relu_conv(4 * growth, growth, 3))
            for i in range(layers)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class DenseNet121(nn.Module):
    """DenseNet-121 (DenseNet-BC, k = 32): Huang, Liu, van der Maaten, Weinberger, "Densely
    Connected Convolutional Networks", CVPR 2017.

    Table 1: conv 7x7/2 (2k = 64), max pool 3x3/2; dense blocks of 6, 12, 24 and 16
    bottleneck layers, growth rate 32; transitions BN-ReLU-conv1x1 halving the channels
    (compression 0.5) and 2x2 average pool; final BN-ReLU, global average pool, FC 1000.
    Parameters: 7,978,856 (the paper's Fig. 3 and the authors' released model: 8.0M).
    """

    PAPER_PARAMS = 8.0e6

    def __init__(self, num_classes: int = 1000, growth: int = 32) -> None:
        super().__init__()
        parts: list[nn.Module] = [
            nn.Conv2d(3, 2 * growth, 7, 2, 3, bias=False), nn.BatchNorm2d(2 * growth),
            nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        ]  # fmt: skip
        channels = 2 * growth
        for i, layers in enumerate((6, 12, 24, 16)):
            parts.append(DenseBlock(channels, layers, growth))
            channels += layers * growth
            if i < 3:
                parts += [bn_relu_conv(channels, channels // 2, 1), nn.AvgPool2d(2, 2)]
                channels //= 2
        parts += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*parts)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(image).mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# ResNeXt-50 (32x4d)


class ResNeXtBlock(nn.Module):
    """Aggregated residual transformation, form (c) of Fig. 3: 1x1, grouped 3x3 (stride
    here), 1x1; a projection shortcut where the shape changes."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, cardinality: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, width, 1),
            conv_bn(width, width, 3, stride, groups=cardinality),
            conv_bn(width, cout, 1, act=None),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNeXt50(nn.Module):
    """ResNeXt-50 (32x4d): Xie, Girshick, Dollar, Tu, He, "Aggregated Residual
    Transformations for Deep Neural Networks", CVPR 2017.

    Table 1: conv1 7x7/2 (64), max pool 3x3/2; stages of 3, 4, 6 and 3 blocks with grouped
    width 128, 256, 512, 1024 (cardinality 32) and outputs 256, 512, 1024, 2048, the first
    block of stages 3-5 downsampling in its 3x3 conv; global average pool, FC 1000.
    Parameters: 25,028,904 (the paper's Table 1: 25.0M; 4.2 GFLOPs).
    """

    PAPER_PARAMS = 25.0e6

    def __init__(self, num_classes: int = 1000, cardinality: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = 64
        for stage, repeats in enumerate((3, 4, 6, 3)):
            width, cout = 128 << stage, 256 << stage
            for i in range(repeats):
                stride = 2 if i == 0 and stage > 0 else 1
                blocks.append(ResNeXtBlock(cin, width, cout, stride, cardinality))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(image)).mean(dim=(2, 3)))
