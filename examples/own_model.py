"""Compress your own network from Python: train it, ``compress`` it into a ``.dcz`` file, load it back.

``MyNet`` is an ordinary ``nn.Module`` defined here and registered nowhere: two convolutions (one
with BatchNorm, stored exactly) and two Linear layers. The whole Deep Compression pipeline is the
one ``dc.compress`` call; ``dc.load(path, model=MyNet())`` fills a module you build with the file's
weights, and ``dc.evaluate`` scores it.

    python examples/own_model.py                       # a real small run on MNIST, files in build/
    python examples/own_model.py --tiny --out /tmp/x   # 600 + 1000 images, one epoch each: a smoke test

Measured here (default mode, 2 shared CPU cores, 59-98 s depending on other load): the trained network
scores 99.19% on the 10,000 MNIST test images; the file is 4,586 bytes, 32.9x smaller than the 150,704
bytes of float32 weights, biases and BatchNorm state, keeps 10.9% of the weights and scores 98.76%.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import deepcompress as dc
from deepcompress.datasets import resolve_dataset


class MyNet(nn.Module):
    """A small convolutional network for 28x28 digits (about 38,000 weights, 150 KB as float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.bn = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.bn(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="600 training and 1000 test images, one epoch per stage (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("build"), help="directory for my_net.dcz (default: build)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "my_net.dcz"
    epochs = 1 if args.tiny else 3

    # 1. Your model and data: (images, labels) tensors here; Datasets and DataLoaders work too.
    torch.manual_seed(0)
    train, test = resolve_dataset("mnist", train_limit=600 if args.tiny else None, test_limit=1000 if args.tiny else None)
    model = MyNet()
    dc.fit(model, train, dc.TrainConfig(epochs=epochs, lr=0.05, augment=False), progress=not args.quiet)
    dense_accuracy = dc.evaluate(model, test)["accuracy"]

    # 2. Compress: prune (iteratively, retraining in between), share weights by k-means (4 bits in the
    #    convolutions, 3 in the Linear layers), fine-tune the codebooks, entropy-code into one file.
    config = dc.PipelineConfig(
        train=dc.TrainConfig(lr=0.05, augment=False),  # retraining uses lr x prune.lr_factor
        prune=dc.PruneConfig(method="sparsity", sparsity={"conv*": 0.6, "fc*": 0.92}, lr_factor=0.2,
                             rounds=1 if args.tiny else 4, epochs_per_round=1 if args.tiny else 2),
        quantize=dc.QuantizeConfig(bits={"conv*": 4, "fc*": 3}, epochs=1 if args.tiny else 2, lr=1e-3),
    )
    result = dc.compress(model, config, out=path, train=train, test=test, progress=not args.quiet,
                         log=(lambda line: None) if args.quiet else print)

    # 3. Read the file back into a module you build, and score it.
    loaded = dc.load(path, model=MyNet())
    file_accuracy = dc.evaluate(loaded, test)["accuracy"]
    dense_bytes = sum(t.numel() * t.element_size() for t in MyNet().state_dict().values())
    summary = {
        "path": path, "file_bytes": path.stat().st_size, "dense_bytes": dense_bytes,
        "dense_accuracy": dense_accuracy, "reported_file_accuracy": result.stages[-1].accuracy,
        "file_accuracy": file_accuracy, "seconds": time.perf_counter() - started,
    }
    print(f"{path}: {summary['file_bytes']:,} bytes ({dense_bytes / summary['file_bytes']:.1f}x smaller than "
          f"{dense_bytes:,} dense); test accuracy {100 * file_accuracy:.2f}% (dense {100 * dense_accuracy:.2f}%), "
          f"{summary['seconds']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
