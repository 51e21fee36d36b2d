"""End to end: a tiny reference model through prune, quantize, encode, file, decode, and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepcompress.checkpoint import save_checkpoint
from deepcompress.cli import main
from deepcompress.config import load_config
from deepcompress.data import load_split
from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed
from deepcompress.models import build_model
from deepcompress.pipeline import compress_config, write_report
from deepcompress.resume import state_dir_for
from deepcompress.train import TrainConfig, fit

CONFIG = """
model = "lenet300"
dataset = "mnist"
checkpoint = "ref.safetensors"
seed = 1
train_limit = {train_limit}
test_limit = 500

[train]
epochs = 1
lr = 0.05
batch_size = 64

[prune]
method = "sparsity"
sparsity = {{ "fc3" = 0.5, "*" = 0.9 }}
rounds = {rounds}
epochs_per_round = {epochs}
lr_factor = 0.2

[quantize]
bits = 3
epochs = {epochs}
lr = 0.001

[encode]
index_bits = "auto"
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, idx_dir: Path) -> Path:
    """A directory with a briefly trained reference checkpoint on the synthetic data."""
    directory = tmp_path_factory.mktemp("pipeline")
    model = build_model("lenet300")
    fit(model, load_split("mnist", "train", idx_dir).tensors(1000), TrainConfig(epochs=1, augment=False), progress=False)
    save_checkpoint(model, directory / "ref.safetensors", {"model": "lenet300", "dataset": "mnist"})
    return directory


def write_config(directory: Path, name: str, train_limit: int = 600, rounds: int = 2, epochs: int = 1) -> Path:
    path = directory / name
    path.write_text(CONFIG.format(train_limit=train_limit, rounds=rounds, epochs=epochs))
    return path


def test_compress_writes_a_file_that_decodes_to_the_quantized_model(workdir: Path, idx_dir: Path) -> None:
    cfg = load_config(write_config(workdir, "tiny.toml"))
    out = workdir / "tiny.dcz"
    result = compress_config(cfg, out, data_dir=str(idx_dir), progress=False, log=lambda _: None)
    stages = [s.stage for s in result.stages]
    assert stages == ["reference", "prune", "quantize", "fine-tune", "file"]
    assert result.report["file_bytes"] == out.stat().st_size
    assert result.stages[-1].accuracy == result.stages[-2].accuracy  # the file is the fine-tuned model
    compressed = load_compressed(out)
    kept = sum(layer.nnz for layer in compressed.layers) / sum(layer.numel for layer in compressed.layers)
    assert 0.09 < kept < 0.11
    for layer in compressed.layers:
        assert len(np.unique(layer.codebook[layer.codes])) <= 2**3
    assert not state_dir_for(out).exists()


def test_cli_compress_inspect_decompress_evaluate(workdir: Path, idx_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(workdir, "cli.toml")
    out = workdir / "cli.dcz"
    assert main(["compress", "--config", str(config), "--out", str(out), "--data-dir", str(idx_dir), "--quiet"]) == 0
    assert (workdir / "cli.json").is_file()
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file_bytes"] == out.stat().st_size
    assert report["ratio"] == pytest.approx(report["dense_bytes"] / report["file_bytes"])
    assert [row["name"] for row in report["layers"]] == ["fc1", "fc2", "fc3"]
    ckpt = workdir / "decoded.safetensors"
    assert main(["decompress", str(out), "--out", str(ckpt)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "--data-dir", str(idx_dir), "--json"]) == 0
    from_ckpt = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(out), "--data-dir", str(idx_dir), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_ckpt == from_file


def test_config_errors_name_the_key(workdir: Path) -> None:
    bad = workdir / "bad.toml"
    bad.write_text('model = "lenet300"\ncheckpoint = "x"\n[quantize]\nbits = 20\n')
    with pytest.raises(ConfigError, match=r"bad.toml: quantize.bits: expected an integer in 1..16, got 20"):
        load_config(bad)
    bad.write_text('model = "lenet300"\ncheckpoint = "x"\n[prune]\nsparsty = 0.5\n')
    with pytest.raises(ConfigError, match=r"unknown keys \['sparsty'\]"):
        load_config(bad)
    bad.write_text('checkpoint = "x"\n')
    with pytest.raises(ConfigError, match="missing required key 'model'"):
        load_config(bad)


def test_killed_run_resumes_and_writes_the_same_file(workdir: Path, idx_dir: Path) -> None:
    config = write_config(workdir, "resume.toml", train_limit=3000, rounds=3, epochs=3)
    reference = workdir / "uninterrupted.dcz"
    command = [sys.executable, "-m", "deepcompress.cli", "compress", "--config", str(config), "--data-dir", str(idx_dir), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--out", str(reference)], check=True, env=env, capture_output=True)

    out = workdir / "resumed.dcz"
    state_file = state_dir_for(out) / "state.json"
    process = subprocess.Popen([*command, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.is_file() and '"round1"' in state_file.read_text():
            break  # killed during the second pruning round
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state_file.is_file() and not out.exists(), "the run must be killed mid-way for this test to mean anything"

    resumed = subprocess.run([*command, "--out", str(out)], check=True, env=env, capture_output=True, text=True)
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not state_dir_for(out).exists()


AUTO_CONFIG = """
model = "lenet300"
dataset = "mnist"
checkpoint = "ref.safetensors"
train_limit = 700
test_limit = 300
validation_images = {validation}

[train]
epochs = 1
lr = 0.05
batch_size = 64

[prune]
method = "auto"
budget = 0.05
rounds = 2
epochs_per_round = 1

[quantize]
bits = "auto"
min_bits = 2
max_bits = 5
budget = 0.02
epochs = 1
"""


def test_automatic_sparsity_and_bits_are_chosen_on_held_out_training_images(workdir: Path, idx_dir: Path) -> None:
    path = workdir / "auto.toml"
    path.write_text(AUTO_CONFIG.format(validation=200))
    out = workdir / "auto.dcz"
    result = compress_config(load_config(path), out, data_dir=str(idx_dir), progress=False, log=lambda _: None)
    stages = {s.stage: s for s in result.stages}
    rounds = stages["prune"].details["rounds"]
    assert len(rounds) == 2 and all(set(r["target"]) == {"fc1", "fc2", "fc3"} for r in rounds)
    assert all(rounds[1]["target"][n] >= rounds[0]["target"][n] for n in ("fc1", "fc2", "fc3"))
    chosen = stages["quantize"].details["bits"]
    assert set(chosen) == {"fc1", "fc2", "fc3"} and all(2 <= b <= 5 for b in chosen.values())
    assert stages["quantize"].details["bits_scan"]["bits"] == [2, 3, 4, 5]
    compressed = load_compressed(out)
    assert {layer.name: layer.weight_bits for layer in compressed.layers} == chosen
    for layer in compressed.layers:
        kept = layer.nnz / layer.numel
        assert kept == pytest.approx(1 - rounds[-1]["target"][layer.name], abs=1 / layer.numel)

    path.write_text(AUTO_CONFIG.format(validation=700))
    with pytest.raises(ConfigError, match="validation_images: 700 held out .* leaves no training images out of 700"):
        compress_config(load_config(path), workdir / "auto2.dcz", data_dir=str(idx_dir), progress=False, log=lambda _: None)


def test_post_training_reapplies_a_runs_sparsity_and_bits_without_any_training(workdir: Path, idx_dir: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("post_training", Path(__file__).resolve().parents[1] / "experiments" / "post_training.py")
    post_training = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(post_training)
    out = workdir / "run.dcz"
    write_report(compress_config(load_config(write_config(workdir, "run.toml")), out, data_dir=str(idx_dir),
                                 progress=False, log=lambda _: None), out)
    assert post_training.main(["run", "--results", str(workdir), "--configs", str(workdir), "--data-dir", str(idx_dir)]) == 0
    again = json.loads((workdir / "run_posttraining.json").read_text())
    assert [s["stage"] for s in again["stages"]] == ["reference", "prune", "quantize", "file"]
    assert again["config"]["prune"]["epochs_per_round"] == 0 and again["config"]["quantize"]["epochs"] == 0
    original, repeated = load_compressed(out), load_compressed(workdir / "run_posttraining.dcz")
    assert [(l.name, l.nnz, l.weight_bits) for l in repeated.layers] == [(l.name, l.nnz, l.weight_bits) for l in original.layers]


def test_distillation_retrains_from_the_dense_reference_and_is_recorded(workdir: Path, idx_dir: Path) -> None:
    path = write_config(workdir, "distill.toml")
    path.write_text(path.read_text() + "\n[distill]\ntemperature = 3.0\nalpha = 0.5\n")
    cfg = load_config(path)
    assert cfg.distill is not None and cfg.distill.temperature == 3.0 and cfg.to_dict()["distill"] == {"temperature": 3.0, "alpha": 0.5}
    out = workdir / "distill.dcz"
    result = compress_config(cfg, out, data_dir=str(idx_dir), progress=False, log=lambda _: None)
    assert result.config["distill"] == {"temperature": 3.0, "alpha": 0.5}
    assert result.report["file_bytes"] == out.stat().st_size
    plain = compress_config(load_config(write_config(workdir, "plain.toml")), workdir / "plain.dcz", data_dir=str(idx_dir),
                            progress=False, log=lambda _: None)
    assert out.read_bytes() != (workdir / "plain.dcz").read_bytes()  # the teacher changed what retraining learnt
    assert result.stages[0].accuracy == plain.stages[0].accuracy  # the same reference


def test_runs_that_differ_only_in_quantization_share_the_pruning_stage(workdir: Path, idx_dir: Path) -> None:
    cache = workdir / "stages"
    lines: list[str] = []
    first = compress_config(load_config(write_config(workdir, "share1.toml")), workdir / "share1.dcz", data_dir=str(idx_dir),
                            progress=False, log=lines.append, stage_cache=cache)
    assert not any("reused" in line for line in lines) and len(list(cache.glob("prune-*.safetensors"))) == 1
    path = write_config(workdir, "share2.toml")
    path.write_text(path.read_text().replace("bits = 3", "bits = 2"))
    lines.clear()
    second = compress_config(load_config(path), workdir / "share2.dcz", data_dir=str(idx_dir), progress=False,
                             log=lines.append, stage_cache=cache)
    assert any(line.startswith("[prune] reused from") for line in lines)
    assert [asdict_stage(s) for s in second.stages[:2]] == [asdict_stage(s) for s in first.stages[:2]]
    pruned = [(layer.name, layer.positions.tolist()) for layer in load_compressed(workdir / "share1.dcz").layers]
    assert [(layer.name, layer.positions.tolist()) for layer in load_compressed(workdir / "share2.dcz").layers] == pruned
    assert {layer.weight_bits for layer in load_compressed(workdir / "share2.dcz").layers} == {2}
    lines.clear()  # a different pruning setting is not shared
    path.write_text(path.read_text().replace("lr_factor = 0.2", "lr_factor = 0.3"))
    compress_config(load_config(path), workdir / "share3.dcz", data_dir=str(idx_dir), progress=False, log=lines.append,
                    stage_cache=cache)
    assert not any("reused" in line for line in lines) and len(list(cache.glob("prune-*.safetensors"))) == 2


def asdict_stage(stage: object) -> tuple[object, ...]:
    return (stage.stage, stage.accuracy, stage.details)  # type: ignore[attr-defined]


def test_shared_biases_take_fewer_bytes_and_decode_exactly(workdir: Path, idx_dir: Path) -> None:
    path = write_config(workdir, "bias.toml")
    path.write_text(path.read_text() + "bias_bits = 3\n")  # appended to the [encode] table, the config's last
    cfg = load_config(path)
    assert cfg.encode.bias_bits == 3 and cfg.to_dict()["encode"]["bias_bits"] == 3
    out = workdir / "bias.dcz"
    result = compress_config(cfg, out, data_dir=str(idx_dir), progress=False, log=lambda _: None)
    layers = load_compressed(out).layers
    assert all(layer.bias_dtype == "codebook" and np.unique(layer.bias).size <= 8 for layer in layers)
    plain = compress_config(load_config(write_config(workdir, "bias_plain.toml")), workdir / "bias_plain.dcz",
                            data_dir=str(idx_dir), progress=False, log=lambda _: None)
    saved = plain.report["file_bytes"] - result.report["file_bytes"]
    assert saved > 2 * (300 + 100 + 10) - (3 * 410 / 8 + 3 * 16) - 64  # float16 biases -> 3-bit indices + values
    assert "bias_bits" not in load_config(write_config(workdir, "plain_again.toml")).to_dict()["encode"]
    with pytest.raises(ConfigError, match="encode.bias_bits: expected an integer in 1..8 or none, got 9"):
        path.write_text(path.read_text().replace("bias_bits = 3", "bias_bits = 9"))
        load_config(path)


def test_remove_dead_cleans_up_emptied_units_and_is_recorded(workdir: Path, idx_dir: Path) -> None:
    path = write_config(workdir, "dead.toml")
    path.write_text(path.read_text().replace("lr_factor = 0.2", "lr_factor = 0.2\nremove_dead = true\nmin_unit_weights = 20"))
    cfg = load_config(path)
    assert cfg.prune.remove_dead and cfg.to_dict()["prune"]["min_unit_weights"] == 20
    assert "remove_dead" not in load_config(write_config(workdir, "alive.toml")).to_dict()["prune"]
    out = workdir / "dead.dcz"
    result = compress_config(cfg, out, data_dir=str(idx_dir), progress=False, log=lambda _: None)
    prune = {s.stage: s for s in result.stages}["prune"].details
    assert all("dead_units" in r for r in prune["rounds"]) and set(prune["dead_units"]["skipped"]) == {"fc3"}  # the output layer
    assert sum(r["dead_units"]["weights_freed"] for r in prune["rounds"]) > 0  # fc2 units under 20 weights (of 300 inputs at 10%)
    fc1 = {layer.name: layer for layer in load_compressed(out).layers}["fc1"].dense_weight().reshape(300, 784)
    fc2 = {layer.name: layer for layer in load_compressed(out).layers}["fc2"].dense_weight().reshape(100, 300)
    unread = ~(fc2 != 0).any(axis=0)
    assert not (fc1[unread] != 0).any()  # no weight is kept in a unit nothing reads
    with pytest.raises(ConfigError, match="prune.min_unit_weights: expected remove_dead = true"):
        path.write_text(path.read_text().replace("remove_dead = true\n", ""))
        load_config(path)
