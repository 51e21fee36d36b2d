"""A user's network in a file of its own, as ``examples/own_model.toml`` names it (``model = "my_net.py:build"``).

Nothing here knows about deepcompress except the optional training helper: the config needs only
``build()`` returning the ``nn.Module`` and a plain ``.pt`` state dict of it, the checkpoint most
users already have. To make one and compress it:

    python examples/my_net.py --out examples/my_net.pt      # trains 3 epochs on MNIST, torch.save(state_dict)
    deepcompress compress --config examples/own_model.toml --out build/my_net.dcz
    deepcompress evaluate build/my_net.dcz --trust-code     # --trust-code: the file names build() to rebuild it

``--limit N --epochs E`` train for E epochs on the first N training images and score on the first N test
images (the test suite's tiny run).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch
from torch import nn


class MyNet(nn.Module):
    """Two convolutions (the second with BatchNorm) and two Linear layers for 28x28 digits."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.bn = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.bn(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def build(hidden: int = 128) -> MyNet:
    """The factory the config names; its keyword arguments come from the config's ``model_args``."""
    return MyNet(hidden)


def main(argv: Sequence[str] | None = None) -> Path:
    """Train ``build()`` on MNIST and ``torch.save`` its state dict to ``--out``."""
    import deepcompress as dc
    from deepcompress.datasets import resolve_dataset

    parser = argparse.ArgumentParser(description="train MyNet on MNIST and save its state dict (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="state dict to write, e.g. examples/my_net.pt")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use the first N training and test images only")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    train, test = resolve_dataset("mnist", train_limit=args.limit, test_limit=args.limit)
    model = build()
    dc.fit(model, train, dc.TrainConfig(epochs=args.epochs, lr=0.05, augment=False), progress=not args.quiet)
    accuracy = dc.evaluate(model, test)["accuracy"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.cpu().state_dict(), args.out)
    print(f"{args.out}: test accuracy {100 * accuracy:.2f}%")
    return args.out


if __name__ == "__main__":
    main()
