from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deepcompress.checkpoint import load_state_into, read_state_dict, save_checkpoint
from deepcompress.errors import CheckpointError
from deepcompress.models import LeNet300


@pytest.fixture
def model() -> LeNet300:
    return LeNet300()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def roundtrip(path: Path, model: torch.nn.Module, **options: object) -> dict[str, object]:
    """Read ``path`` into a fresh LeNet300 and check it holds ``model``'s weights; returns the metadata."""
    tensors, metadata = read_state_dict(path, **options)  # type: ignore[arg-type]
    fresh = LeNet300()
    load_state_into(fresh, tensors, str(path))
    assert_same_weights(fresh, model)
    return metadata


def test_deepcompress_checkpoint_keeps_its_metadata(tmp_path: Path, model: LeNet300) -> None:
    save_checkpoint(model, tmp_path / "m.safetensors", {"model": "lenet300", "seed": 1})
    assert roundtrip(tmp_path / "m.safetensors", model) == {"model": "lenet300", "seed": 1}


def test_plain_safetensors_has_empty_metadata(tmp_path: Path, model: LeNet300) -> None:
    save_file(model.state_dict(), tmp_path / "plain.safetensors")
    assert roundtrip(tmp_path / "plain.safetensors", model) == {}


@pytest.mark.parametrize("name", ["m.pt", "m.pth", "pytorch_model.bin", "no_suffix"])
def test_torch_save_state_dict(tmp_path: Path, model: LeNet300, name: str) -> None:
    torch.save(model.state_dict(), tmp_path / name)
    assert roundtrip(tmp_path / name, model) == {}


def test_legacy_torch_save_format(tmp_path: Path, model: LeNet300) -> None:
    torch.save(model.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    roundtrip(tmp_path / "old.pt", model)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict_is_unwrapped(tmp_path: Path, model: LeNet300, key: str) -> None:
    torch.save({key: model.state_dict(), "epoch": 7, "best_accuracy": 0.98}, tmp_path / "ckpt.pt")
    roundtrip(tmp_path / "ckpt.pt", model)


def test_dataparallel_prefix_is_named_then_stripped(tmp_path: Path, model: LeNet300) -> None:
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")
    tensors, _ = read_state_dict(tmp_path / "dp.pt")
    with pytest.raises(CheckpointError, match=r"^.*dp.pt: missing tensor 'fc1.weight' expected by LeNet300; closest in the checkpoint: 'module.fc1.weight'; every checkpoint name starts with 'module.': set strip_prefix = \"module.\"$"):
        load_state_into(LeNet300(), tensors, str(tmp_path / "dp.pt"))
    roundtrip(tmp_path / "dp.pt", model, strip_prefix="module.")


def test_nested_prefix_suggests_the_one_that_matches(tmp_path: Path, model: LeNet300) -> None:
    tensors = {f"model.net.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"every checkpoint name starts with 'model.net.': set strip_prefix = \"model.net.\"$"):
        load_state_into(LeNet300(), tensors, "ckpt")


def test_rename_replaces_prefixes_longest_first(tmp_path: Path, model: LeNet300) -> None:
    state = model.state_dict()
    renamed = {"encoder.hidden1.weight": state["fc1.weight"], "encoder.hidden1.bias": state["fc1.bias"]}
    renamed.update({f"encoder.{k}": v for k, v in state.items() if not k.startswith("fc1.")})
    save_file(renamed, tmp_path / "enc.safetensors")
    roundtrip(tmp_path / "enc.safetensors", model, rename={"encoder.": "", "encoder.hidden1.": "fc1."})


def test_strip_prefix_then_rename(tmp_path: Path, model: LeNet300) -> None:
    torch.save({f"module.body.{k}": v for k, v in model.state_dict().items()}, tmp_path / "x.pt")
    roundtrip(tmp_path / "x.pt", model, strip_prefix="module.", rename={"body.": ""})


def test_prefix_that_matches_nothing(tmp_path: Path, model: LeNet300) -> None:
    torch.save(model.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"m.pt: strip_prefix matches no tensor name; the names start like 'fc1.bias', 'fc1.weight', 'fc2.bias'$"):
        read_state_dict(tmp_path / "m.pt", strip_prefix="module.")
    with pytest.raises(CheckpointError, match=r"m.pt: rename 'enc.' matches no tensor name"):
        read_state_dict(tmp_path / "m.pt", rename={"enc.": ""})


def test_rename_collision(tmp_path: Path) -> None:
    torch.save({"a.w": torch.zeros(1), "b.w": torch.zeros(1)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c.pt: tensors 'a.w' and 'b.w' would both be named 'w' after renaming$"):
        read_state_dict(tmp_path / "c.pt", rename={"a.": "", "b.": ""})


def test_pickled_module_is_refused(tmp_path: Path, model: LeNet300) -> None:
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"whole.pt holds a pickled object, not a state dict \(it refers to deepcompress.models.LeNet300\); save `model.state_dict\(\)` with torch.save \(weights_only loading never runs pickled code\)$"):
        read_state_dict(tmp_path / "whole.pt")


def test_non_tensor_entry_is_named(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2), "note": "trained on Tuesday"}, tmp_path / "n.pt")
    with pytest.raises(CheckpointError, match=r"n.pt: entry 'note' is a str, expected a tensor \(a wrapped state dict must sit under one of \['state_dict', 'model'\]\)$"):
        read_state_dict(tmp_path / "n.pt")


def test_not_a_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match=r"l.pt: expected a non-empty dict of tensors \(a state dict\), got a list$"):
        read_state_dict(tmp_path / "l.pt")


def test_unrecognised_and_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"hello world")
    with pytest.raises(CheckpointError, match=r"junk.pt is neither a safetensors file nor a torch.save file; it starts with b'hello wor'$"):
        read_state_dict(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"cut.pt is not a readable torch.save file: PytorchStreamReader failed reading zip archive"):
        read_state_dict(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint .*absent.pt does not exist$"):
        read_state_dict(tmp_path / "absent.pt")


def test_missing_tensor_names_the_closest(model: LeNet300) -> None:
    state = model.state_dict()
    state["fc1.weights"] = state.pop("fc1.weight")
    with pytest.raises(CheckpointError, match=r"^src: missing tensor 'fc1.weight' expected by LeNet300; closest in the checkpoint: 'fc1.weights'$"):
        load_state_into(LeNet300(), state, "src")


def test_unexpected_tensor_names_the_closest(model: LeNet300) -> None:
    state = {**model.state_dict(), "fc3.weight_orig": torch.zeros(10, 100)}
    with pytest.raises(CheckpointError, match=r"^src: unexpected tensor 'fc3.weight_orig' for LeNet300; closest LeNet300 tensor: 'fc3.weight'$"):
        load_state_into(LeNet300(), state, "src")


def test_misshaped_tensor_names_the_one_with_that_shape(model: LeNet300) -> None:
    state = model.state_dict()
    state["fc2.weight"], state["fc3.weight"] = state["fc3.weight"], state["fc2.weight"]
    with pytest.raises(CheckpointError, match=r"^src: tensor 'fc2.weight' has shape \(10, 100\), LeNet300 expects \(100, 300\); checkpoint tensor with that shape: 'fc3.weight'$"):
        load_state_into(LeNet300(), state, "src")


def test_floating_dtypes_are_cast_and_others_refused(model: LeNet300) -> None:
    half = {k: v.half() for k, v in model.state_dict().items()}
    fresh = LeNet300()
    load_state_into(fresh, half, "src")
    assert fresh.fc1.weight.dtype == torch.float32
    assert torch.equal(fresh.fc1.weight, half["fc1.weight"].float())
    ints = {**model.state_dict(), "fc1.bias": torch.zeros(300, dtype=torch.int64)}
    with pytest.raises(CheckpointError, match=r"^src: tensor 'fc1.bias' has dtype torch.int64, LeNet300 expects torch.float32$"):
        load_state_into(LeNet300(), ints, "src")
