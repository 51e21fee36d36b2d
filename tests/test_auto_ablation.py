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
