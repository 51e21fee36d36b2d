"""Shared test fixtures and helpers: a private dataset cache, small synthetic datasets written by the tests,
and a small network with a score for the tests of the automatic choices."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from deepcompress import models
from deepcompress.runtime import simd


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep each test's dataset cache private and torch deterministic and light on threads."""
    monkeypatch.setenv("DEEPCOMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "dc-cache"))
    monkeypatch.delenv("DEEPCOMPRESS_DATA_DIR", raising=False)
    torch.manual_seed(0)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file, optionally gzip-compressed."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_dir(directory: Path, n_train: int = 60_000, n_test: int = 10_000, compress: bool = True) -> Path:
    """A directory of IDX files with the official split sizes and a learnable pattern."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        images[np.arange(n), 2 * labels + 3, 5:20] = 255  # one bright row whose height encodes the label
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return directory


@pytest.fixture
def eager_pool() -> Iterator[None]:
    """Let every product large enough for the extension's pool wake its workers (they otherwise stay
    asleep below ~4M multiply-adds, so tests would never leave the calling thread); restore the pool's
    size and that threshold after the test."""
    before_threads = simd.num_threads()
    before_wake = simd.LIB.set_wake_min_work(0)
    yield
    simd.LIB.set_wake_min_work(before_wake)
    simd.set_num_threads(before_threads)


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("idx"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only with ``DC_SLOW=1`` (``make test-all``)."""
    import os

    if os.environ.get("DC_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: run with DC_SLOW=1 (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# A small network and a score of it, for the automatic choices (tests of prune/auto.py, quantize/auto.py).
_G = torch.Generator().manual_seed(5)
_X = torch.randn(512, 8, generator=_G)


def two_layer_net() -> nn.Sequential:
    """The same freshly initialised 8-64-4 network on every call."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))


with torch.no_grad():
    _TARGET = two_layer_net()(_X).argmax(1)


def agreement(m: nn.Module) -> float:
    """Share of inputs where ``m`` predicts what the unpruned network predicts (an accuracy in [0, 1])."""
    with torch.no_grad():
        return float((m(_X).argmax(1) == _TARGET).float().mean())


@pytest.fixture
def registry() -> Iterator[dict[str, Any]]:
    """The model registry, restored in place afterwards (other modules hold the same dict)."""
    saved = dict(models.MODELS)
    yield models.MODELS
    models.MODELS.clear()
    models.MODELS.update(saved)
