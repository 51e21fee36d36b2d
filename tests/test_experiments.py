"""Every experiment script runs end to end in its tiny mode, so none of them can rot; sweeps resume."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PNG = b"\x89PNG\r\n\x1a\n"
RUNS = {  # (script, flags) -> (result JSON, one figure it writes)
    ("fig_distributions.py",): ("distributions_lenet300_fc2.json", "distributions_lenet300_fc2.png"),
    ("fig_sensitivity.py",): ("sensitivity_mnist.json", "sensitivity_lenet300_mnist.png"),
    ("fig_tradeoff.py",): ("tradeoff_lenet300.json", "tradeoff_lenet300.png"),
    ("fig_bits.py",): ("bits_lenet5.json", "bits_lenet5.png"),
    ("fig_bits.py", "--retrain"): ("bits_lenet5_retrained.json", "bits_lenet5_retrained.png"),
    ("fig_init.py",): ("init_vs_bits_lenet300.json", "init_vs_bits_lenet300.png"),
    ("fig_init.py", "--retrain"): ("init_vs_bits_lenet300_retrained.json", "init_vs_bits_lenet300_retrained.png"),
}
INITS = {"random", "density", "linear", "kmeans++"}


def run_tiny(command: tuple[str, ...], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXPERIMENTS / command[0]), *command[1:], "--tiny", "--out", str(out), *extra],
                          check=False, capture_output=True, text=True, cwd=EXPERIMENTS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, ...]], dict[str, Any]]:
    """Runs each command of RUNS once per module (uninterrupted) and returns its result JSON."""
    results: dict[tuple[str, ...], dict[str, Any]] = {}

    def get(command: tuple[str, ...]) -> dict[str, Any]:
        if command not in results:
            out = tmp_path_factory.mktemp("tiny")
            done = run_tiny(command, out)
            assert done.returncode == 0, done.stderr
            result_json, figure = RUNS[command]
            assert (out / figure).read_bytes()[:8] == PNG
            assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "partial files left behind"
            results[command] = json.loads((out / result_json).read_text())
        return results[command]

    return get


def without_run_info(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("wall_seconds", "command")}


@pytest.mark.parametrize("command", sorted(RUNS), ids=" ".join)
def test_experiment_runs_in_tiny_mode(command: tuple[str, ...], tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    result = tiny(command)
    assert result["wall_seconds"] >= 0 and "--tiny" in result["command"] and all(flag in result["command"] for flag in command[1:])


def test_tradeoff_covers_every_method(tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    curves = tiny(("fig_tradeoff.py",))["curves"]
    assert list(curves) == ["pruning", "quantization", "pruning+quantization", "svd"]
    assert all(len(points) == 2 and all(0 < p["rate_pct"] < 100 for p in points) for points in curves.values())


def test_init_covers_every_init_and_width(tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    init = tiny(("fig_init.py",))
    assert set(init["accuracy"]) == INITS
    assert all(len(values) == len(init["bits"]) and all(0 <= v <= 1 for v in values) for values in init["accuracy"].values())


def test_init_on_retrained_model_reaches_the_paper_densities(tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    """fig_init.py --retrain: pruned and retrained to Table 2's 8% / 9% / 26% kept, every init at every bit width."""
    result = tiny(("fig_init.py", "--retrain"))
    assert {row["layer"]: row["kept_pct"] for row in result["sparsity"] if row["layer"] != "total"} == {"fc1": 8.0, "fc2": 9.0, "fc3": 26.0}
    for key in ("accuracy_kmeans", "accuracy_finetuned"):
        assert set(result[key]) == INITS
        assert all(len(values) == len(result["bits"]) and all(0 <= v <= 1 for v in values) for values in result[key].values())


def test_bits_on_retrained_lenet5_reaches_the_paper_densities(tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    """fig_bits.py --retrain: Table 3's 66% / 12% / 8% / 19% kept, conv and fc swept at every bit width."""
    result = tiny(("fig_bits.py", "--retrain"))
    assert {row["layer"]: row["kept_pct"] for row in result["sparsity"] if row["layer"] != "total"} == {"conv1": 66.0, "conv2": 12.0, "fc1": 8.0, "fc2": 19.0}
    assert list(result["accuracy"]) == ["conv (dense)", "fc (dense)", "conv (pruned + retrained)", "fc (pruned + retrained)"]
    assert all(len(values) == len(result["bits"]) and all(0 <= v <= 1 for v in values) for values in result["accuracy"].values())


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path: Path, tiny: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
    """Stopped after 3 of 8 points, a rerun reuses them and the retrained model, and writes the same JSON."""
    command = ("fig_init.py", "--retrain")
    stopped = run_tiny(command, tmp_path, "--stop-after", "3")
    assert stopped.returncode == 1 and "stopped after 3 points" in stopped.stderr
    partial = json.loads((tmp_path / ".init_vs_bits_lenet300_retrained.partial.json").read_text())
    assert partial["arguments"] == {"retrain": True, "tiny": True} and len(partial["points"]) == 3
    assert (tmp_path / ".init_vs_bits_lenet300_retrained.pruned.safetensors").is_file()
    assert not (tmp_path / "init_vs_bits_lenet300_retrained.json").exists()

    resumed = run_tiny(command, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused 3 of 8 points" in resumed.stderr and "reused pruned model" in resumed.stderr
    result = json.loads((tmp_path / "init_vs_bits_lenet300_retrained.json").read_text())
    assert without_run_info(result) == without_run_info(tiny(command))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init_vs_bits_lenet300_retrained.json", "init_vs_bits_lenet300_retrained.png"]


def load_common() -> Any:
    spec = importlib.util.spec_from_file_location("experiments_common", EXPERIMENTS / "common.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_partial_from_other_arguments_is_not_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A full run's partial file (with a made-up point) is discarded by a --tiny sweep, which says so."""
    common = load_common()
    (tmp_path / ".demo.partial.json").write_text(json.dumps({"arguments": {"tiny": False}, "seconds": 100.0, "points": {"a": "made up"}}))
    (tmp_path / ".demo.pruned.safetensors").write_bytes(b"from the full run")
    sweep = common.Sweep(argparse.Namespace(tiny=True, config=Path("x.toml"), out=tmp_path), "demo")
    assert sweep.run(["a"], str.upper) == {"a": "A"}
    err = capsys.readouterr().err
    assert "made with other arguments" in err and "starting over" in err and "reused" not in err
    assert not (tmp_path / ".demo.pruned.safetensors").exists()
    saved = json.loads((tmp_path / ".demo.partial.json").read_text())
    assert saved["arguments"] == {"config": "x.toml", "tiny": True} and saved["points"] == {"a": "A"} and saved["seconds"] < 100


def test_sweep_rejects_duplicate_keys_and_skips_an_unreadable_partial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = load_common()
    (tmp_path / ".demo.partial.json").write_text("{not json")
    sweep = common.Sweep(argparse.Namespace(tiny=True, out=tmp_path, stop_after=None), "demo")
    assert "ignoring unreadable" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"expected distinct point keys, got \['a', 'a'\]"):
        sweep.run(["a", "a"], str.upper)
    assert sweep.run(["a", "b"], str.upper) == {"a": "A", "b": "B"}
    assert json.loads((tmp_path / ".demo.partial.json").read_text())["points"] == {"a": "A", "b": "B"}


def test_prepared_model_from_other_arguments_is_rebuilt(tmp_path: Path) -> None:
    """A checkpointed preparation is reused only by a sweep with the same arguments; masks survive the trip."""
    import torch

    from deepcompress.models import build_model
    from deepcompress.prune import PruneConfig, get_masks, prune_

    common = load_common()
    built: list[int] = []

    def build() -> torch.nn.Module:
        built.append(1)
        torch.manual_seed(len(built))
        return prune_(build_model("lenet300"), PruneConfig(method="sparsity", sparsity=0.5))

    def prepared(tiny: bool) -> torch.nn.Module:
        return common.Sweep(argparse.Namespace(tiny=tiny, out=tmp_path, stop_after=None), "demo").prepared("pruned", "lenet300", build)

    first = prepared(True)
    again = prepared(True)
    assert len(built) == 1 and torch.equal(first.fc1.weight, again.fc1.weight)
    assert all(torch.equal(get_masks(first)[n], m) for n, m in get_masks(again).items())
    other = prepared(False)
    assert len(built) == 2 and not torch.equal(first.fc1.weight, other.fc1.weight)


def test_results_doc_is_rendered_from_the_committed_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/RESULTS.md is exactly what experiments/summarize.py renders from experiments/results/*.json."""
    spec = importlib.util.spec_from_file_location("summarize", EXPERIMENTS / "summarize.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    committed = module.DOC.read_text()
    monkeypatch.setattr(module, "DOC", tmp_path / "RESULTS.md")
    module.main()
    assert (tmp_path / "RESULTS.md").read_text() == committed
