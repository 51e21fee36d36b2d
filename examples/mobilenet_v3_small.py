"""torchvision's MobileNetV3-Small, with torchvision's module layout and parameter names, as a user's model file.

Like examples/resnet18.py, this stands in for ``torchvision.models.mobilenet_v3_small(num_classes=10)``
because torchvision's PyPI wheels do not import against the CPU torch used here: the same blocks
(Howard et al. 2019, Table 2: depthwise convolutions, squeeze-and-excitation, hard-swish), the same
state-dict names and shapes, the same initialisation. deepcompress reads it as a model reference:
``model = "mobilenet_v3_small.py:build"``.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

# input channels, kernel, expanded channels, output channels, squeeze-excitation, activation, stride
SMALL_BLOCKS = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` not below 90% of ``value`` (the MobileNet channel rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormActivation(nn.Sequential):
    """Convolution, BatchNorm, optional activation: indices 0, 1, 2 as in torchvision's Conv2dNormActivation."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            BatchNorm(outputs),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: global average, 1x1 squeeze with ReLU, 1x1 excite, hard-sigmoid scale."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (k x k), optional squeeze-excitation, project (1x1); residual when shapes allow."""

    def __init__(self, inputs: int, kernel: int, expanded: int, outputs: int, use_se: bool, activation: str,
                 stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(ConvNormActivation(inputs, expanded, 1, activation=act))
        layers.append(ConvNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvNormActivation(expanded, outputs, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inputs == outputs

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    """MobileNetV3 with torchvision's ``features`` / ``avgpool`` / ``classifier`` layout."""

    def __init__(self, blocks: tuple = SMALL_BLOCKS, last_channel: int = 1024, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, blocks[0][0], 3, 2, activation=nn.Hardswish)]
        layers += [InvertedResidual(*block) for block in blocks]
        last_conv = 6 * blocks[-1][3]
        layers.append(ConvNormActivation(blocks[-1][3], last_conv, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last_channel), nn.Hardswish(inplace=True), nn.Dropout(dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def build(num_classes: int = 10) -> MobileNetV3:
    """MobileNetV3-Small as ``torchvision.models.mobilenet_v3_small(num_classes=num_classes)`` builds it."""
    return MobileNetV3(num_classes=num_classes)
