"""Sensitivity scan: per-layer curves, bit-exact restore, table and PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from deepcompress.errors import ConfigError
from deepcompress.prune import PruneConfig, format_sensitivity, plot_sensitivity, prune_, sensitivity_scan

X = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(16, 4),
    )


def agreement_with(reference: nn.Module):  # accuracy against the unpruned model's own predictions
    with torch.no_grad():
        labels = reference.eval()(X).argmax(1)
    calls = []

    def evaluate(model: nn.Module) -> float:
        model.eval()
        calls.append(1)
        with torch.no_grad():
            return float((model(X).argmax(1) == labels).float().mean())

    return evaluate, calls


def bits(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


def test_scan_restores_the_model_bit_exactly() -> None:
    model = net()
    evaluate, calls = agreement_with(model)
    model.train()
    before = bits(model)
    fractions = (0.0, 0.5, 0.9)
    result = sensitivity_scan(model, evaluate, fractions=fractions, progress=False)
    assert bits(model) == before
    assert all(m.training for m in model.modules())
    assert result["fractions"] == [0.0, 0.5, 0.9]
    assert result["baseline"] == 1.0
    assert list(result["layers"]) == ["0", "3", "6"]
    assert [r["kind"] for r in result["layers"].values()] == ["conv2d", "linear", "linear"]
    for row in result["layers"].values():
        assert row["accuracy"][0] == 1.0
        assert row["accuracy"][-1] < 1.0  # 90% of one layer gone changes some predictions
    assert len(calls) == 1 + 3 * 2  # fraction 0 reuses the baseline


def test_scan_on_a_pruned_model_counts_existing_pruning_and_keeps_masks() -> None:
    model = prune_(net(), PruneConfig(method="sparsity", sparsity=0.5, adjust_dropout=False))
    evaluate, _ = agreement_with(model)
    before = bits(model)
    result = sensitivity_scan(model, evaluate, fractions=(0.0, 0.3, 0.5, 0.8), patterns=("6",), progress=False)
    assert bits(model) == before
    assert result["layers"]["6"]["accuracy"][:3] == [1.0, 1.0, 1.0]  # at or below the existing 50%


def test_scan_restores_even_when_evaluate_fails() -> None:
    model = net()
    before = bits(model)
    seen = []

    def flaky(m: nn.Module) -> float:
        seen.append(1)
        if len(seen) == 3:
            raise RuntimeError("evaluation crashed")
        return 0.5

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        sensitivity_scan(model, flaky, fractions=(0.2, 0.4), progress=False)
    assert bits(model) == before


def test_table_and_png(tmp_path: Path) -> None:
    model = net()
    evaluate, _ = agreement_with(model)
    result = sensitivity_scan(model, evaluate, fractions=(0.0, 0.5), progress=False)
    table = format_sensitivity(result).splitlines()
    assert table[0] == "baseline accuracy 100.00%"
    assert table[1].split() == ["layer", "kind", "0%", "50%"]
    assert table[3].split()[:3] == ["0", "conv2d", "100.00"]
    path = plot_sensitivity(result, tmp_path / "sensitivity.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bad_input() -> None:
    model = net()
    with pytest.raises(ValueError, match=r"expected fractions in \[0, 1\), got \[0.5, 1.0\]"):
        sensitivity_scan(model, lambda m: 1.0, fractions=(0.5, 1.0), progress=False)
    with pytest.raises(ValueError, match=r"evaluate must return an accuracy in \[0, 1\], got 98.5"):
        sensitivity_scan(model, lambda m: 98.5, progress=False)
    with pytest.raises(ConfigError, match="layer pattern 'fc' matches no weight layer"):
        sensitivity_scan(model, lambda m: 1.0, patterns=("fc",), progress=False)
