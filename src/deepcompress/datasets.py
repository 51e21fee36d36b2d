"""Training and test data from a reference string: built-in datasets, image folders or the user's code.

:func:`resolve_dataset` turns one of these into ``(train, test)``:

- ``"mnist"`` / ``"fashion"``: the built-in loaders of :mod:`deepcompress.data`, as normalised in-memory
  tensors (N, 1, 28, 28), optionally replicated to 3 channels and resized;
- ``"imagefolder:DIR"``: ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png`` (or ``DIR/<class>/*``,
  split 90/10 per class with a fixed seed), decoded lazily with Pillow; labels are the class folders
  in name order;
- ``"pkg.mod:loaders"`` / ``"path/file.py:loaders"``: a callable of the user's that returns
  ``(train, test)``. This imports and runs that code: use it only with code you trust.

Each side is :data:`Data`: an ``(inputs, targets)`` tensor pair, a ``torch.utils.data.Dataset`` or a
``DataLoader`` -- what :func:`deepcompress.train.fit` and :func:`~deepcompress.train.evaluate` accept.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from deepcompress.data import NORMALIZATION, load_split
from deepcompress.errors import ConfigError, DataError

#: What training and evaluation accept: an (inputs, targets) tensor pair, a Dataset or a DataLoader.
Data = Union[Tuple[torch.Tensor, torch.Tensor], Dataset, DataLoader]

FORMS = "mnist, fashion, imagefolder:DIR, pkg.mod:loaders, file.py:loaders"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")
HOLDOUT_FRACTION = 0.1
SPLIT_SEED = 0
SUBSET_SEED = 0
#: Largest built-in split kept in memory after resizing / channel replication (float32 bytes).
MAX_IN_MEMORY_BYTES = 4 << 30
PILLOW_HINT = "install the images extra: pip install 'deepcompress[images]'"

Size = Tuple[int, int]


def describe(obj: Any) -> str:
    """A short description of ``obj`` for error messages (type, and length or shape where cheap)."""
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)} ({', '.join(type(o).__name__ for o in obj[:4])})"
    return type(obj).__name__


def check_data(obj: Any) -> str:
    """The kind of :data:`Data` ``obj`` is: ``"tensors"``, ``"dataset"`` or ``"loader"``.

    Raises ``TypeError`` for anything else and ``ValueError`` for a tensor pair of unequal lengths.
    """
    if isinstance(obj, DataLoader):
        return "loader"
    if isinstance(obj, IterableDataset):
        raise TypeError("expected a map-style Dataset (with __len__ and __getitem__), got an IterableDataset; "
                        "wrap it in a DataLoader, which is used as it is")
    if isinstance(obj, Dataset):
        return "dataset"
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj):
        if len(obj[0]) != len(obj[1]):
            raise ValueError(f"expected inputs and targets of the same length, got {len(obj[0])} and {len(obj[1])}")
        return "tensors"
    raise TypeError(f"expected an (inputs, targets) tensor pair, a Dataset or a DataLoader, got {describe(obj)}")


def resolve_dataset(
    ref: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    base_dir: Path | None = None,
    image_size: int | Size | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> tuple[Data, Data]:
    """``(train, test)`` for the dataset reference ``ref`` (see the module docstring for the forms).

    ``data_dir`` is where the built-in datasets' files are (see :func:`deepcompress.data.load_split`);
    ``base_dir`` anchors relative ``imagefolder:`` and ``file.py`` paths (default: the working
    directory). ``image_size`` (side or (height, width)) and ``channels`` (1 or 3) reshape images of
    the built-in and image-folder datasets; ``mean``/``std`` (one value, or one per channel; default
    0.5/0.5) normalise image folders (the built-in datasets use their own constants). The limits keep
    the first N built-in samples (those files are already shuffled) or a seeded random N of anything
    else (folders and user datasets are often sorted by class), the same N every time.
    """
    size = check_size(image_size)
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels: expected 1 or 3, got {channels!r}")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"{name}: expected a positive integer, got {limit!r}")
    if ref in NORMALIZATION:
        if mean is not None or std is not None:
            raise ConfigError(f"dataset {ref!r} is normalised with its own constants {NORMALIZATION[ref]}; "
                              f"expected no mean/std, got mean={mean}, std={std}")
        return builtin(ref, data_dir, size, channels, train_limit), builtin(ref, data_dir, size, channels, test_limit, "test")
    if ref.startswith("imagefolder:"):
        if not ref.partition(":")[2]:
            raise ConfigError(f"dataset {ref!r}: expected imagefolder:DIR, got no DIR")
        root = anchored(ref.partition(":")[2], base_dir)
        train, test = image_folder(root, size, channels, mean, std)
        return limited(train, train_limit, ref), limited(test, test_limit, ref)
    if ":" in ref:
        given = [k for k, v in dict(image_size=image_size, channels=channels, mean=mean, std=std).items() if v is not None]
        if given:
            raise ConfigError(f"dataset {ref!r}: {given} apply to built-in and imagefolder datasets; "
                              "a loaders callable prepares its own data, so expected them unset")
        train, test = from_loaders(ref, base_dir)
        return limited(train, train_limit, ref), limited(test, test_limit, ref)
    raise ConfigError(f"unknown dataset {ref!r}; expected one of: {FORMS}")


def check_size(image_size: int | Size | None) -> Size | None:
    """``image_size`` as (height, width), or ``None``."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"image_size: expected a positive integer or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def anchored(path: str, base_dir: Path | None) -> Path:
    """``path`` made absolute against ``base_dir`` (default: the working directory)."""
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else (base_dir or Path.cwd()) / resolved


# --- built-in datasets --------------------------------------------------------------------------------


def builtin(
    name: str, data_dir: Any, size: Size | None, channels: int | None, limit: int | None, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A built-in split as normalised tensors, resized (bilinear) and replicated to ``channels``."""
    images, labels = load_split(name, split, data_dir).tensors(limit)
    height, width = size or images.shape[-2:]
    needed = len(images) * (channels or 1) * height * width * 4
    if needed > MAX_IN_MEMORY_BYTES:
        raise ConfigError(f"{name} {split} at {channels or 1}x{height}x{width}: expected at most "
                          f"{MAX_IN_MEMORY_BYTES >> 30} GiB in memory, got {needed / (1 << 30):.1f} GiB; "
                          "use a smaller image_size or a limit")
    if size is not None and size != tuple(images.shape[-2:]):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    if channels == 3:
        images = images.repeat(1, 3, 1, 1)
    return images, labels


def limited(data: Data, limit: int | None, ref: str) -> Data:
    """A seeded random ``limit`` samples of ``data`` (in their original order), or all of it."""
    if limit is None:
        return data
    if isinstance(data, DataLoader):
        raise ConfigError(f"dataset {ref!r}: expected a Dataset or tensors to take a limit of, got a DataLoader; "
                          "drop the limit or return Datasets")
    count = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    if limit >= count:
        return data
    keep = torch.randperm(count, generator=torch.Generator().manual_seed(SUBSET_SEED))[:limit].sort().values
    if isinstance(data, tuple):
        return data[0][keep], data[1][keep]
    return Subset(data, keep.tolist())


# --- image folders ------------------------------------------------------------------------------------


def import_pillow() -> ModuleType:
    """``PIL.Image``, or a one-line ``ConfigError`` saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(f"imagefolder datasets are read with Pillow, which is not installed; {PILLOW_HINT}") from None
    return Image


class ImageFolder(Dataset):
    """Image files with class labels, decoded on access into normalised float32 (C, H, W) tensors.

    Every image is converted to ``channels`` (1: ``"L"``, 3: ``"RGB"``) and brought to ``size``
    (height, width) with bilinear resampling; with ``resize=False`` a file of another size raises
    ``DataError`` instead (so images are never distorted silently). ``classes[label]`` names a label.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], *, channels: int, size: Size,
                 resize: bool, mean: Sequence[float], std: Sequence[float]) -> None:
        self.samples = samples
        self.classes = classes
        self.channels = channels
        self.size = size
        self.resize = resize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pixels = np.asarray(self.decode(path), dtype=np.float32) / 255.0
        x = torch.from_numpy(pixels.reshape(self.size[0], self.size[1], self.channels)).permute(2, 0, 1)
        return (x - self.mean) / self.std, label

    def decode(self, path: Path) -> Any:
        """The image at ``path`` as a PIL image of this dataset's mode and size."""
        Image = import_pillow()
        try:
            with Image.open(path) as opened:
                image = opened.convert("L" if self.channels == 1 else "RGB")
        except OSError as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from exc
        if image.size == (self.size[1], self.size[0]):
            return image
        if not self.resize:
            raise DataError(f"{path}: expected {self.size[0]}x{self.size[1]} pixels (the size of the first training "
                            f"image), got {image.height}x{image.width}; set image_size to resize every image")
        return image.resize((self.size[1], self.size[0]), Image.BILINEAR)


def image_folder(root: Path, size: Size | None, channels: int | None, mean: Sequence[float] | None,
                 std: Sequence[float] | None) -> tuple[ImageFolder, ImageFolder]:
    """Train and test :class:`ImageFolder` datasets of ``root`` (layout in the module docstring)."""
    layout = f"expected {root}/train/<class>/*.png and {root}/test/<class>/*.png, or {root}/<class>/*.png (split 90/10)"
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a directory; {layout}")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        found, missing = ("train", "test") if has_train else ("test", "train")
        raise DataError(f"imagefolder {root}: found {found}/ but no {missing}/; {layout}")
    if has_train:
        classes = class_folders(root / "train", layout)
        train = list_images(root / "train", classes, layout, require_every_class=True)
        unknown = sorted(set(class_folders(root / "test", layout)) - set(classes))
        if unknown:
            raise DataError(f"imagefolder {root}: test/ has class folders {unknown} that train/ lacks; "
                            "expected the same classes in both")
        test = list_images(root / "test", classes, layout, require_every_class=False)
    else:
        classes = class_folders(root, layout)
        train, test = holdout_split(list_images(root, classes, layout, require_every_class=True))
    Image = import_pillow()
    with Image.open(train[0][0]) as first:
        channels = channels or (1 if first.mode in GRAYSCALE_MODES else 3)
        native = (first.height, first.width)
    mean_t = per_channel("mean", mean, channels, 0.5)
    std_t = per_channel("std", std, channels, 0.5)
    if any(s <= 0 for s in std_t):
        raise ConfigError(f"std: expected positive values, got {list(std_t)}")
    options = dict(channels=channels, size=size or native, resize=size is not None, mean=mean_t, std=std_t)
    return ImageFolder(train, classes, **options), ImageFolder(test, classes, **options)  # type: ignore[arg-type]


def class_folders(directory: Path, layout: str) -> list[str]:
    """The subfolder names of ``directory``, sorted (label ``i`` is the ``i``-th)."""
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder {directory}: no class folders; {layout}")
    return classes


def list_images(directory: Path, classes: list[str], layout: str, *, require_every_class: bool) -> list[tuple[Path, int]]:
    """``(file, label)`` for every image in ``directory/<class>/``, by class then file name."""
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = directory / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files and require_every_class:
            raise DataError(f"imagefolder {folder}: no images ({', '.join(IMAGE_SUFFIXES)}); {layout}")
        samples.extend((f, label) for f in files)
    return samples


def holdout_split(samples: list[tuple[Path, int]]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Per class, a seeded random ``HOLDOUT_FRACTION`` (at least one image of a class with two or more)
    for testing, the rest for training; both keep the file order."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for label in sorted({label for _, label in samples}):
        members = [s for s in samples if s[1] == label]
        held = max(1, round(HOLDOUT_FRACTION * len(members))) if len(members) > 1 else 0
        chosen = set(torch.randperm(len(members), generator=generator)[:held].tolist())
        test.extend(s for i, s in enumerate(members) if i in chosen)
        train.extend(s for i, s in enumerate(members) if i not in chosen)
    return train, test


def per_channel(name: str, values: Sequence[float] | None, channels: int, default: float) -> tuple[float, ...]:
    """``values`` as one float per channel (a single value is used for every channel)."""
    if values is None:
        return (default,) * channels
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(f"{name}: expected 1 or {channels} values (one per channel), got {len(values)}")
    return values


# --- the user's loaders -------------------------------------------------------------------------------


def from_loaders(ref: str, base_dir: Path | None) -> tuple[Data, Data]:
    """Call the ``loaders`` of ``"pkg.mod:loaders"`` or ``"file.py:loaders"``; check it returned (train, test)."""
    from deepcompress.sources import import_reference

    target, _, attr = ref.rpartition(":")
    if not target or not attr.isidentifier():
        raise ConfigError(f"unknown dataset {ref!r}; expected one of: {FORMS}")
    dirs = [d for d in (base_dir, Path.cwd()) if d is not None]
    loaders = import_reference(ref, dirs, "dataset")
    if not callable(loaders):
        raise ConfigError(f"dataset {ref!r}: expected {attr} to be a callable returning (train, test), got {describe(loaders)}")
    return call_loaders(loaders, ref, attr)


def call_loaders(loaders: Callable[[], Any], ref: str, attr: str) -> tuple[Data, Data]:
    """``loaders()``, checked to be ``(train, test)`` with each side :data:`Data`."""
    try:
        result = loaders()
    except Exception as exc:  # the user's code failed: name it and the exception in one line
        raise ConfigError(f"dataset {ref!r}: {attr}() raised {type(exc).__name__}: {exc}") from exc
    expected = f"{attr}() must return (train, test), each a Dataset, a DataLoader or an (inputs, targets) tensor pair"
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ConfigError(f"dataset {ref!r}: {expected}; got {describe(result)}")
    for side, data in zip(("train", "test"), result):
        try:
            check_data(data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"dataset {ref!r}: {expected}; {side}: {exc}") from None
    return tuple(tuple(d) if isinstance(d, list) else d for d in result)  # type: ignore[return-value]
