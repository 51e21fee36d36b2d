"""Every experiment script runs end to end in its tiny mode, so none of them can rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPTS = {
    "fig_distributions.py": ("distributions_lenet300_fc2.json", "distributions_lenet300_fc2.png"),
    "fig_sensitivity.py": ("sensitivity_mnist.json", "sensitivity_lenet300_mnist.png"),
    "fig_init.py": ("init_vs_bits_lenet300.json", "init_vs_bits_lenet300.png"),
    "fig_tradeoff.py": ("tradeoff_lenet300.json", "tradeoff_lenet300.png"),
    "fig_bits.py": ("bits_lenet5.json", "bits_lenet5.png"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_experiment_runs_in_tiny_mode(script: str, tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXPERIMENTS / script), "--tiny", "--out", str(tmp_path)], check=True, capture_output=True, cwd=EXPERIMENTS)
    result_json, figure = SCRIPTS[script]
    result = json.loads((tmp_path / result_json).read_text())
    assert result["wall_seconds"] >= 0 and "--tiny" in result["command"]
    assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tradeoff_and_init_results_cover_every_method(tmp_path: Path) -> None:
    for script in ("fig_tradeoff.py", "fig_init.py"):
        subprocess.run([sys.executable, str(EXPERIMENTS / script), "--tiny", "--out", str(tmp_path)], check=True, capture_output=True, cwd=EXPERIMENTS)
    curves = json.loads((tmp_path / "tradeoff_lenet300.json").read_text())["curves"]
    assert set(curves) == {"pruning", "quantization", "pruning+quantization", "svd"}
    assert all(len(points) == 2 and all(0 < p["rate_pct"] < 100 for p in points) for points in curves.values())
    init = json.loads((tmp_path / "init_vs_bits_lenet300.json").read_text())
    assert set(init["accuracy"]) == {"random", "density", "linear", "kmeans++"}
    assert all(len(values) == len(init["bits"]) and all(0 <= v <= 1 for v in values) for values in init["accuracy"].values())


def test_results_doc_is_rendered_from_the_committed_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/RESULTS.md is exactly what experiments/summarize.py renders from experiments/results/*.json."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("summarize", EXPERIMENTS / "summarize.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    committed = module.DOC.read_text()
    monkeypatch.setattr(module, "DOC", tmp_path / "RESULTS.md")
    module.main()
    assert (tmp_path / "RESULTS.md").read_text() == committed


def test_init_on_retrained_model_reaches_the_paper_densities(tmp_path: Path) -> None:
    """fig_init_retrained.py: pruned and retrained to Table 2's 8% / 9% / 26% kept, every init at every bit width."""
    script = "fig_init_retrained.py"
    subprocess.run([sys.executable, str(EXPERIMENTS / script), "--tiny", "--out", str(tmp_path)], check=True, capture_output=True, cwd=EXPERIMENTS)
    result = json.loads((tmp_path / "init_vs_bits_lenet300_retrained.json").read_text())
    assert "--tiny" in result["command"] and result["wall_seconds"] >= 0
    assert {row["layer"]: row["kept_pct"] for row in result["sparsity"] if row["layer"] != "total"} == {"fc1": 8.0, "fc2": 9.0, "fc3": 26.0}
    for key in ("accuracy_kmeans", "accuracy_finetuned"):
        assert set(result[key]) == {"random", "density", "linear", "kmeans++"}
        assert all(len(values) == len(result["bits"]) and all(0 <= v <= 1 for v in values) for values in result[key].values())
    assert (tmp_path / "init_vs_bits_lenet300_retrained.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bits_on_retrained_lenet5_reaches_the_paper_densities(tmp_path: Path) -> None:
    """fig_bits_retrained.py: Table 3's 66% / 12% / 8% / 19% kept, conv and fc swept at every bit width."""
    subprocess.run([sys.executable, str(EXPERIMENTS / "fig_bits_retrained.py"), "--tiny", "--out", str(tmp_path)], check=True, capture_output=True, cwd=EXPERIMENTS)
    result = json.loads((tmp_path / "bits_lenet5_retrained.json").read_text())
    assert "--tiny" in result["command"] and result["wall_seconds"] >= 0
    assert {row["layer"]: row["kept_pct"] for row in result["sparsity"] if row["layer"] != "total"} == {"conv1": 66.0, "conv2": 12.0, "fc1": 8.0, "fc2": 19.0}
    assert set(result["accuracy"]) == {"conv (dense)", "fc (dense)", "conv (pruned + retrained)", "fc (pruned + retrained)"}
    assert all(len(values) == len(result["bits"]) and all(0 <= v <= 1 for v in values) for values in result["accuracy"].values())
    assert (tmp_path / "bits_lenet5_retrained.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
