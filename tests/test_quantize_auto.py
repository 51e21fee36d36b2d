"""Automatic bit widths (quantize/auto.py): per-layer scans that restore the model, the plan that narrows
the cheap layers, and ``choose_bits`` resolving ``bits="auto"`` for ``quantize_``."""

from __future__ import annotations

import pytest
import torch

from conftest import agreement, two_layer_net
from deepcompress.errors import ConfigError
from deepcompress.quantize import QuantizeConfig, bits_scan, choose_bits, plan_bits, quantization_report, quantize_


def test_bits_scan_restores_the_model_and_plan_narrows_the_cheap_layer() -> None:
    net = two_layer_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = QuantizeConfig(bits="auto", min_bits=1, max_bits=4, budget=0.02)
    scan = bits_scan(net, agreement, cfg)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert scan["bits"] == [1, 2, 3, 4] and set(scan["layers"]) == {"0", "2"}
    assert scan["layers"]["0"]["nnz"] == 8 * 64 and all(0 <= a <= 1 for a in scan["layers"]["0"]["accuracy"])
    synthetic = {
        "bits": [2, 3, 4],
        "baseline": 1.0,
        "layers": {"wide": {"nnz": 1000, "accuracy": [0.999, 1.0, 1.0]}, "touchy": {"nnz": 1000, "accuracy": [0.5, 0.9, 1.0]}},
    }
    assert plan_bits(synthetic, budget=0.001) == {"wide": 2, "touchy": 4}
    assert plan_bits(synthetic, budget=0.0) == {"wide": 3, "touchy": 4}


def test_choose_bits_resolves_auto_for_quantize() -> None:
    net = two_layer_net()
    cfg = QuantizeConfig(bits="auto", min_bits=2, max_bits=5, budget=0.01)
    with pytest.raises(ConfigError, match="bits 'auto' must first be resolved"):
        quantize_(two_layer_net(), cfg)
    resolved, scan = choose_bits(net, cfg, agreement)
    assert set(resolved.bits) == {"0", "2"} and all(2 <= b <= 5 for b in resolved.bits.values())
    quantize_(net, resolved)
    report = {row["layer"]: row for row in quantization_report(net)}
    assert {name: report[name]["bits"] for name in resolved.bits} == dict(resolved.bits)
    with pytest.raises(ConfigError, match="expected min_bits <= max_bits"):
        QuantizeConfig(bits="auto", min_bits=5, max_bits=3)
    with pytest.raises(ConfigError, match="'auto', got 'best'"):
        QuantizeConfig(bits="best")


def test_coded_bits_is_the_entropy_of_the_cluster_sizes() -> None:
    import numpy as np

    from deepcompress.quantize.auto import coded_bits

    assert coded_bits(np.array([0, 1, 2, 3] * 4)) == pytest.approx(16 * 2.0)
    assert coded_bits(np.zeros(10, dtype=np.int64)) == 0.0
    assert coded_bits(np.array([], dtype=np.int64)) == 0.0


def test_joint_plan_narrows_within_the_budget_measured_with_every_layer_quantized() -> None:
    from deepcompress.quantize.auto import joint_bits

    net = two_layer_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = QuantizeConfig(bits="auto", min_bits=2, max_bits=8, budget=0.1, bits_plan="joint")
    plan = joint_bits(net, agreement, cfg)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert set(plan["bits"]) == {"0", "2"} and all(2 <= b <= 8 for b in plan["bits"].values())
    assert plan["steps"] and all(step["accuracy"] >= plan["floor"] for step in plan["steps"])
    assert [step["bits"] for step in plan["steps"] if step["layer"] == "0"] == list(range(7, plan["bits"]["0"] - 1, -1))
    resolved, _ = choose_bits(net, cfg, agreement)
    assert dict(resolved.bits) == plan["bits"]
    quantize_(net, resolved)
    assert agreement(net) >= plan["floor"] - 1e-9  # what was measured is what quantize_ builds
    none_allowed = joint_bits(two_layer_net(), agreement, QuantizeConfig(bits="auto", min_bits=1, max_bits=5, budget=0.0,
                                                                         bits_plan="joint"))
    assert all(step["accuracy"] >= none_allowed["baseline"] for step in none_allowed["steps"])
    with pytest.raises(ConfigError, match=r"quantize.bits_plan: expected one of \['independent', 'joint'\]"):
        QuantizeConfig(bits_plan="both")
