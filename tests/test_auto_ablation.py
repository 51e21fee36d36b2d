"""experiments/auto_ablation.py runs its ladder of variants end to end in tiny mode, and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
VARIANTS = ["paper", "hand-tuned", "cubic", "auto-sparsity", "auto-sparsity-and-bits"]


def run(out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "auto_ablation.py"), "--model", "lenet300", "--tiny", "--out", str(out)],
        check=True, capture_output=True, text=True, cwd=EXPERIMENTS,
    )
    return done.stdout


def test_ablation_ladder_writes_real_files_and_reuses_finished_variants(tmp_path: Path) -> None:
    run(tmp_path)
    result = json.loads((tmp_path / "ablation_lenet300_mnist.json").read_text())
    rows = result["variants"]
    assert [row["variant"] for row in rows] == VARIANTS
    for row in rows:
        dcz = tmp_path / "ablation" / f"lenet300_mnist_{row['variant']}.dcz"
        assert row["file_bytes"] == dcz.stat().st_size
        assert 0 <= row["error"] <= 1 and row["ratio"] > 1
    by_name = {row["variant"]: row for row in rows}
    assert by_name["paper"]["bits"] == {"fc1": 6, "fc2": 6, "fc3": 6}
    assert by_name["paper"]["kept_pct"] == {"fc1": 8.0, "fc2": 9.0, "fc3": 26.0}
    assert all(2 <= b <= 8 for b in by_name["auto-sparsity-and-bits"]["bits"].values())
    assert (tmp_path / "ablation_lenet300_mnist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run(tmp_path)
    assert all(f"{name}: reusing" in again for name in VARIANTS)
    assert json.loads((tmp_path / "ablation_lenet300_mnist.json").read_text())["variants"] == rows


def test_frontier_ladder_turns_one_option_on_per_rung_and_shares_pruning(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "auto_ablation.py"), "--model", "lenet300", "--ladder", "frontier", "--tiny",
         "--out", str(tmp_path)], check=True, capture_output=True, text=True, cwd=EXPERIMENTS,
    )
    rows = json.loads((tmp_path / "ablation_lenet300_mnist_frontier.json").read_text())["variants"]
    names = [row["variant"] for row in rows]
    assert names == ["honest-auto", "recovery", "distill", "shared-biases", "dead-units (not kept)", "joint-bits (not kept)",
                     "optimal-init (not kept)"]
    files = {name: tmp_path / "ablation" / f"lenet300_mnist_frontier_{name.replace(' (not kept)', '-not-kept')}.json" for name in names}
    configs = {name: json.loads(path.read_text())["config"] for name, path in files.items()}
    assert "distill" not in configs["recovery"] and configs["distill"]["distill"]["temperature"] > 0
    assert configs["honest-auto"]["prune"]["recovery"] == 1.0 and configs["recovery"]["prune"]["recovery"] > 1.0
    assert "bias_bits" not in configs["distill"]["encode"] and configs["shared-biases"]["encode"]["bias_bits"] == 5
    assert configs["dead-units (not kept)"]["prune"]["remove_dead"] and "remove_dead" not in configs["shared-biases"]["prune"]
    assert configs["joint-bits (not kept)"]["quantize"]["bits_plan"] == "joint"
    assert configs["joint-bits (not kept)"]["prune"] == configs["shared-biases"]["prune"]  # on top of the config itself
    assert configs["optimal-init (not kept)"]["quantize"]["init"] == "optimal"
    assert "shared-biases: [prune] reused from" in done.stdout  # differs from the distill rung only in [encode]
    assert "joint-bits (not kept): [prune] reused from" in done.stdout
    for row in rows:
        assert row["file_bytes"] == files[row["variant"]].with_suffix(".dcz").stat().st_size
    plot = subprocess.run([sys.executable, str(EXPERIMENTS / "fig_frontier.py"), "--results", str(tmp_path), "--out", str(tmp_path)],
                          check=True, capture_output=True, text=True, cwd=EXPERIMENTS)
    assert "frontier.json" in plot.stdout
    points = json.loads((tmp_path / "frontier.json").read_text())
    assert [p["variant"] for p in points["ours"]["lenet300"]] == names
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
