"""The examples a user copies (examples/), each run end to end in its tiny mode on real MNIST."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch

import deepcompress as dc
from deepcompress.cli import main as cli
from deepcompress.datasets import resolve_dataset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY_IMAGES = 600
TINY_TEST_IMAGES = 1000


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module of its own (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_model_compresses_from_python_and_loads_into_the_users_module(tmp_path: Path) -> None:
    example = load_example("own_model")
    result = example.main(["--tiny", "--quiet", "--out", str(tmp_path)])
    path = tmp_path / "my_net.dcz"
    assert result["path"] == path and path.is_file()
    assert result["file_bytes"] == path.stat().st_size < result["dense_bytes"] / 10
    assert result["file_accuracy"] == result["reported_file_accuracy"]
    assert dc.load_compressed(path).metadata["test_accuracy"] == result["file_accuracy"]
    assert {layer.name for layer in dc.load_compressed(path).layers} == {"conv1", "conv2", "fc1", "fc2"}


def tiny_toml(text: str) -> str:
    """The example config made tiny: a few images, one round and one epoch everywhere."""
    for key in ("rounds", "epochs_per_round", "epochs"):
        text, count = re.subn(rf"^{key} = \d+", f"{key} = 1", text, flags=re.MULTILINE)
        assert count == 1, key
    return f"train_limit = {TINY_IMAGES}\ntest_limit = {TINY_TEST_IMAGES}\n" + text


def test_own_model_from_toml_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLES / "my_net.py", tmp_path / "my_net.py")
    (tmp_path / "own_model.toml").write_text(tiny_toml((EXAMPLES / "own_model.toml").read_text()))
    net = load_example("my_net")
    net.main(["--out", str(tmp_path / "my_net.pt"), "--limit", str(TINY_IMAGES), "--epochs", "1", "--quiet"])
    assert isinstance(torch.load(tmp_path / "my_net.pt", weights_only=True), dict)  # a plain state dict
    capsys.readouterr()

    out = tmp_path / "my_net.dcz"
    assert cli(["compress", "--config", str(tmp_path / "own_model.toml"), "--out", str(out), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.stat().st_size == report["report"]["file_bytes"] < report["report"]["dense_bytes"] / 10
    assert dc.load_compressed(out).arch == {"source": "import", "name": "my_net.py:build", "kwargs": {"hidden": 128}}

    # the file scores on the pipeline's test images as the pipeline reported, and on all of them as the CLI says
    loaded = dc.load(out, model=net.build())
    _, (test_images, test_labels) = resolve_dataset("mnist")
    first = (test_images[:TINY_TEST_IMAGES], test_labels[:TINY_TEST_IMAGES])
    assert dc.evaluate(loaded, first)["accuracy"] == report["stages"][-1]["accuracy"]
    assert cli(["evaluate", str(out), "--json", "--trust-code"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == dc.evaluate(loaded, (test_images, test_labels))["accuracy"]


def test_own_loop_keeps_pruned_weights_zero_and_the_file_scores_as_the_model(tmp_path: Path) -> None:
    example = load_example("own_loop")
    result = example.main(["--tiny", "--out", str(tmp_path)])
    path = tmp_path / "my_loop.dcz"
    assert path.is_file() and result["file_bytes"] == path.stat().st_size < result["dense_bytes"] / 10
    assert result["file_accuracy"] == result["quantized_accuracy"]

    loaded, masks = result["model"], result["masks"]
    assert set(masks) == {"conv1", "conv2", "fc1", "fc2"}
    bits = {"conv1": 4, "conv2": 4, "fc1": 3, "fc2": 3}
    for name, mask in masks.items():
        weight = getattr(loaded, name).weight.detach()
        assert torch.equal(weight[~mask], torch.zeros(int((~mask).sum())))  # +0.0 or -0.0 both compare equal
        expected = 0.6 if name.startswith("conv") else 0.92
        assert abs(1 - mask.float().mean().item() - expected) < 0.01
        assert torch.unique(weight[weight != 0]).numel() <= 2 ** bits[name]

    fresh = load_example("own_loop").MyNet()
    fresh.load_state_dict(dc.load_state_dict(path))
    for name in masks:
        assert torch.equal(getattr(fresh, name).weight, getattr(loaded, name).weight)
