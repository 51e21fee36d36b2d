from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcompress.cli import main


def test_train_then_evaluate_json(idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.safetensors"
    code = main(["train", "lenet300", "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "1", "--limit", "1000", "--quiet"])
    assert code == 0 and out.is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(idx_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"accuracy", "error", "n"} and result["n"] == 10_000


def test_unknown_model_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "resnet50", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet50'; expected one of ['alexnet', 'lenet300', 'lenet5', 'vgg16']" in err
    assert "Traceback" not in err


def test_missing_data_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "lenet300", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.safetensors")])
    assert code == 1
    assert "missing train-images-idx3-ubyte[.gz] in" in capsys.readouterr().err


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nope.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
