from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset, TensorDataset

from deepcompress import datasets
from deepcompress.data import load_split
from deepcompress.datasets import ImageFolder, resolve_dataset
from deepcompress.errors import ConfigError, DataError

FORMS = r"expected one of: mnist, fashion, imagefolder:DIR, pkg\.mod:loaders, file\.py:loaders"


def write_images(folder: Path, count: int, value: int | tuple[int, int, int], size: tuple[int, int] = (6, 4),
                 mode: str = "L") -> None:
    """``count`` PNGs of one colour in ``folder``; ``size`` is (width, height) as Pillow takes it."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new(mode, size, value).save(folder / f"{i:03d}.png")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train/ and test/ with two grey-level classes; 'b_white' is created first, 'a_black' sorts first."""
    root = tmp_path / "shapes"
    for split, count in (("train", 3), ("test", 2)):
        write_images(root / split / "b_white", count, 255)
        write_images(root / split / "a_black", count, 0)
    return root


def test_image_folder_labels_follow_the_sorted_class_names(folder: Path) -> None:
    train, test = resolve_dataset(f"imagefolder:{folder}")
    assert isinstance(train, ImageFolder) and train.classes == ["a_black", "b_white"]
    assert len(train) == 6 and len(test) == 4
    x, label = train[0]
    assert label == 0 and x.shape == (1, 4, 6) and x.dtype == torch.float32
    assert torch.all(x == -1.0)  # black: (0 - 0.5) / 0.5
    x, label = test[3]
    assert label == 1 and torch.all(x == 1.0)  # white: (1 - 0.5) / 0.5


def test_image_folder_channels_size_and_normalisation(folder: Path) -> None:
    train, _ = resolve_dataset(f"imagefolder:{folder}", channels=3, image_size=(8, 12), mean=[0.2], std=[0.4])
    x, label = train[5]
    assert label == 1 and x.shape == (3, 8, 12)
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.2) / 0.4))
    batch_x, batch_y = next(iter(DataLoader(train, batch_size=6)))
    assert batch_x.shape == (6, 3, 8, 12) and batch_y.tolist() == [0, 0, 0, 1, 1, 1]


def test_colour_images_keep_their_channels(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_images(tmp_path / split / "red", 1, (255, 0, 51), mode="RGB")
    train, _ = resolve_dataset("imagefolder:.", base_dir=tmp_path, mean=[0, 0, 0], std=[1, 1, 1])
    x, _ = train[0]
    assert x.shape == (3, 4, 6)
    assert x[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    grey, _ = resolve_dataset("imagefolder:.", base_dir=tmp_path, channels=1)[0][0]
    assert grey.shape == (1, 4, 6)


def test_a_flat_folder_is_split_90_10_per_class_the_same_way_every_time(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 10, 0)
    write_images(tmp_path / "dogs", 20, 255)
    train, test = resolve_dataset(f"imagefolder:{tmp_path}")
    assert len(train) == 27 and len(test) == 3
    assert sorted(label for _, label in test.samples) == [0, 1, 1]
    assert set(train.samples).isdisjoint(test.samples)
    again, _ = resolve_dataset(f"imagefolder:{tmp_path}")
    assert again.samples == train.samples


def test_limits_take_the_same_seeded_subset(folder: Path) -> None:
    train, test = resolve_dataset(f"imagefolder:{folder}", train_limit=4, test_limit=100)
    assert isinstance(train, Subset) and len(train) == 4 and len(test) == 4
    assert train.indices == resolve_dataset(f"imagefolder:{folder}", train_limit=4)[0].indices
    assert train.indices == sorted(train.indices)


def test_images_of_another_size_need_image_size(folder: Path) -> None:
    write_images(folder / "test" / "a_black", 1, 0, size=(5, 5))
    _, test = resolve_dataset(f"imagefolder:{folder}")
    with pytest.raises(DataError, match=r"000\.png: expected 4x6 pixels \(the size of the first training image\), "
                                        r"got 5x5; set image_size to resize every image"):
        test[0]
    _, resized = resolve_dataset(f"imagefolder:{folder}", image_size=4)
    assert resized[0][0].shape == (1, 4, 4)


def test_an_undecodable_file_is_named(folder: Path) -> None:
    (folder / "test" / "a_black" / "000.png").write_bytes(b"not a png")
    _, test = resolve_dataset(f"imagefolder:{folder}")
    with pytest.raises(DataError, match=r"000\.png: cannot decode image"):
        test[0]


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda root: None, r"imagefolder: .*missing is not a directory; expected .*/train/<class>/\*\.png"),
        (lambda root: write_images(root / "train" / "a", 1, 0), r"found train/ but no test/; expected"),
        (lambda root: (root / "x.txt").parent.mkdir(parents=True), r"no class folders; expected"),
        (lambda root: (root / "train" / "a").mkdir(parents=True) or (root / "test").mkdir(),
         r"imagefolder .*train/a: no images \(\.png, \.jpg, \.jpeg, \.bmp, \.webp\)"),
        (lambda root: write_images(root / "train" / "a", 1, 0) or write_images(root / "test" / "b", 1, 0),
         r"test/ has class folders \['b'\] that train/ lacks"),
    ],
)
def test_image_folder_layout_errors(tmp_path: Path, arrange, message: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "missing"
    arrange(root)
    with pytest.raises(DataError, match=message):
        resolve_dataset(f"imagefolder:{root}")


def test_missing_pillow_says_how_to_install_it(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ConfigError, match=r"read with Pillow, which is not installed; install the images extra: "
                                          r"pip install 'deepcompress\[images\]'$"):
        resolve_dataset(f"imagefolder:{folder}")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2}, r"channels: expected 1 or 3, got 2"),
        ({"image_size": 0}, r"image_size: expected a positive integer or \(height, width\), got 0"),
        ({"image_size": (4, 5, 6)}, r"image_size: expected a positive integer or \(height, width\)"),
        ({"mean": [0.1, 0.2], "channels": 3}, r"mean: expected 1 or 3 values \(one per channel\), got 2"),
        ({"std": [0.0]}, r"std: expected positive values, got \[0\.0\]"),
        ({"train_limit": 0}, r"train_limit: expected a positive integer, got 0"),
    ],
)
def test_bad_options_are_rejected(folder: Path, options: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        resolve_dataset(f"imagefolder:{folder}", **options)


def test_builtin_datasets_are_todays_tensors(idx_dir: Path) -> None:
    train, test = resolve_dataset("mnist", data_dir=idx_dir, train_limit=10, test_limit=5)
    expected = load_split("mnist", "train", idx_dir).tensors(10)
    assert torch.equal(train[0], expected[0]) and torch.equal(train[1], expected[1])
    assert test[0].shape == (5, 1, 28, 28)


def test_builtin_datasets_resize_and_replicate_channels(idx_dir: Path) -> None:
    (x, y), _ = resolve_dataset("fashion", data_dir=idx_dir, image_size=32, channels=3, train_limit=4, test_limit=2)
    original = load_split("fashion", "train", idx_dir).tensors(4)[0]
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert torch.equal(x[:, 0:1], F.interpolate(original, size=(32, 32), mode="bilinear", align_corners=False))
    assert torch.equal(x[:, 0], x[:, 2])


def test_builtin_datasets_refuse_other_normalisation_and_huge_sizes(idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"dataset 'mnist' is normalised with its own constants \(0\.1307, 0\.3081\); "
                                          r"expected no mean/std, got mean=\[0\.5\], std=None"):
        resolve_dataset("mnist", data_dir=idx_dir, mean=[0.5])
    monkeypatch.setattr(datasets, "MAX_IN_MEMORY_BYTES", 1 << 20)
    with pytest.raises(ConfigError, match=r"mnist train at 3x64x64: expected at most 0 GiB in memory, got 0\.1 GiB; "
                                          r"use a smaller image_size or a limit"):
        resolve_dataset("mnist", data_dir=idx_dir, image_size=64, channels=3, train_limit=2000)


def test_unknown_reference_lists_the_forms() -> None:
    with pytest.raises(ConfigError, match=rf"unknown dataset 'kmnist'; {FORMS}"):
        resolve_dataset("kmnist")
    with pytest.raises(ConfigError, match=rf"unknown dataset 'pkg.mod:'; {FORMS}"):
        resolve_dataset("pkg.mod:")
    with pytest.raises(ConfigError, match=r"dataset 'imagefolder:': expected imagefolder:DIR, got no DIR"):
        resolve_dataset("imagefolder:")


LOADERS = """
import torch
from torch.utils.data import DataLoader, TensorDataset

def loaders():
    x = torch.arange(20, dtype=torch.float32).view(10, 2)
    y = torch.arange(10) % 2
    return TensorDataset(x, y), DataLoader(TensorDataset(x[:4], y[:4]), batch_size=2)

def pairs():
    return [torch.zeros(6, 3), torch.zeros(6, dtype=torch.long)], (torch.ones(2, 3), torch.ones(2, dtype=torch.long))

def boom():
    raise RuntimeError("no data today")

def three():
    return 1, 2, 3

def one_bad():
    return TensorDataset(torch.zeros(2)), "test.csv"

def uneven():
    return (torch.zeros(3, 2), torch.zeros(2)), (torch.zeros(1, 2), torch.zeros(1))

not_callable = 42
"""


def test_a_module_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dc_loaders_module.py").write_text(LOADERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    train, test = resolve_dataset("dc_loaders_module:loaders")
    assert isinstance(train, TensorDataset) and len(train) == 10
    assert isinstance(test, DataLoader) and len(test) == 2
    (x, y), (tx, _) = resolve_dataset("dc_loaders_module:pairs", train_limit=4)
    assert isinstance(x, torch.Tensor) and x.shape == (4, 3) and tx.shape == (2, 3)
    limited, _ = resolve_dataset("dc_loaders_module:loaders", train_limit=3)
    assert isinstance(limited, Subset) and len(limited) == 3


def test_a_file_reference_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_data.py").write_text(LOADERS)
    train, _ = resolve_dataset("code/my_data.py:loaders", base_dir=tmp_path)
    assert len(train) == 10
    absolute, _ = resolve_dataset(f"{tmp_path}/code/my_data.py:loaders")
    assert len(absolute) == 10


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("dc_no_such_module:loaders",
         r"dataset 'dc_no_such_module:loaders': no module named 'dc_no_such_module'; install it or put its directory on sys\.path"),
        ("missing.py:loaders", r"dataset 'missing\.py:loaders': file missing\.py not found \(looked for .*\)"),
        ("data.py:absent", r"data\.py has no attribute 'absent'"),
        ("data.py:not_callable", r"expected not_callable to be a callable returning \(train, test\), got int"),
        ("data.py:boom", r"dataset 'data\.py:boom': boom\(\) raised RuntimeError: no data today$"),
        ("data.py:three", r"three\(\) must return \(train, test\), each a Dataset, a DataLoader or an \(inputs, targets\) "
                          r"tensor pair; got tuple of 3 \(int, int, int\)"),
        ("data.py:one_bad", r"one_bad\(\) must return .*; test: expected an \(inputs, targets\) tensor pair, a Dataset "
                            r"or a DataLoader, got str"),
        ("data.py:uneven", r"train: expected inputs and targets of the same length, got 3 and 2"),
        ("broken.py:loaders", r"dataset 'broken\.py:loaders': running .*broken\.py failed: ZeroDivisionError: division by zero"),
    ],
)
def test_loader_reference_errors(tmp_path: Path, ref: str, message: str) -> None:
    (tmp_path / "data.py").write_text(LOADERS)
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    with pytest.raises(ConfigError, match=message):
        resolve_dataset(ref, base_dir=tmp_path)


def test_a_module_that_fails_to_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dc_broken_module.py").write_text("import dc_really_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"importing module 'dc_broken_module' failed: ModuleNotFoundError: "
                                          r"No module named 'dc_really_absent_dependency'"):
        resolve_dataset("dc_broken_module:loaders")


def test_loader_references_reject_image_options_and_limits_on_loaders(tmp_path: Path) -> None:
    (tmp_path / "data.py").write_text(LOADERS)
    with pytest.raises(ConfigError, match=r"\['image_size', 'channels'\] apply to built-in and imagefolder datasets"):
        resolve_dataset("data.py:loaders", base_dir=tmp_path, image_size=8, channels=3)
    with pytest.raises(ConfigError, match=r"expected a Dataset or tensors to take a limit of, got a DataLoader"):
        resolve_dataset("data.py:loaders", base_dir=tmp_path, test_limit=1)
