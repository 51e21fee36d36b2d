"""The paper's networks, exactly as in Caffe, and a registry by name that users can extend.

LeNet-300-100 and LeNet-5 follow Caffe's MNIST examples (LeNet-5 has no activation after its
convolutions); AlexNet and VGG-16 have ImageNet shapes and serve the scale work (paper Tables 4-5).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from deepcompress.errors import ConfigError


class LeNet300(nn.Module):
    """LeNet-300-100: fc 784->300, ReLU, fc 300->100, ReLU, fc 100->10 (266,610 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv 20 5x5, pool, conv 50 5x5, pool, fc 800->500, ReLU, fc 500->10 (431,080)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(-1, 1, 28, 28)
        x = nn.functional.max_pool2d(self.conv1(x), 2, 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2, 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class AlexNet(nn.Module):
    """AlexNet with ImageNet shapes (Caffe's single-tower layout, 61M parameters), dropout 0.5 on fc6/fc7."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, int(width), 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(width)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG-16 (configuration D) with ImageNet shapes, 138M parameters, dropout 0.5 on fc6/fc7."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "alexnet": AlexNet,
    "vgg16": VGG16,
}

#: The names shipped with deepcompress; ``register_model`` may not replace them.
BUILTIN_MODELS = frozenset(MODELS)


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` buildable by ``name`` in this process (``model = "name"`` in a config).

    For architectures defined in the caller's own code: a registered name is stored in a compressed
    file like a built-in one, so a later process must register it again before rebuilding from the file.
    Registering a name again replaces the earlier factory; built-in names cannot be replaced.
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ConfigError(f"register_model: expected a non-empty name without ':' or surrounding spaces, got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_model: expected a callable returning an nn.Module, got {type(factory).__name__}")
    if name in BUILTIN_MODELS:
        raise ConfigError(f"register_model: {name!r} is a built-in model; register yours under another name")
    MODELS[name] = factory


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the registered architecture ``name``; unknown names list the known ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    return factory(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters())
