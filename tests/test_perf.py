"""The fc benchmark, whole-model latency and energy estimate: structure and correctness, never speed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepcompress.perf import PAPER_LAYERS, energy_estimate, plot_fc, run_fc_benchmark, whole_model_latency
from deepcompress.perf.fc import INT8, KERNELS, synthetic_layer
from deepcompress.perf.latency import DRAM_READ_PJ, SRAM_READ_PJ
from deepcompress.errors import ConfigError
from deepcompress.runtime import available_backends, simd
from test_runtime import dense_model, random_model


@pytest.fixture(scope="module")
def quick_result() -> dict:
    return run_fc_benchmark(layers=["alexnet_fc8", "vgg16_fc6"], batches=(1, 4), quick=True)


def test_fc_benchmark_structure_and_errors(quick_result: dict, tmp_path) -> None:
    rows = quick_result["results"]
    assert [(r["layer"], r["batch"]) for r in rows] == [
        ("alexnet_fc8", 1), ("alexnet_fc8", 4), ("vgg16_fc6", 1), ("vgg16_fc6", 4)
    ]
    for row in rows:
        for key in ("dense_us", "ours_us", "speedup", "floor_us", "ours_over_floor", "fastest_dense"):
            assert key in row
        int8 = row["batch"] == 1 and simd.int8_missing() is None  # timed at batch 1 where the CPU runs it
        assert set(row["cold_us"]) == set(row["warm_us"]) == set(row["bytes"]) == set(KERNELS) - (set() if int8 else {INT8})
        assert ("int8" in row) == int8
        assert row["backend"] == quick_result["backends_available"][0]  # auto takes the fastest there is
        assert row["bytes"]["ours_csr"] == row["bytes"]["ours_numba"]  # same packed layout
        assert row["format"] in ("csr", "sliced", "sliced/31", "dense") and (row["batch"] == 1 or row["format"] == "csr")
        assert row["speedup"] == pytest.approx(row["dense_us"] / row["ours_us"])
        assert row["bytes"]["ours_csr"] < row["bytes"]["csr_scipy"] < row["bytes"]["dense_numpy"]
        assert row["bytes"]["ours"] < row["bytes"]["dense_numpy"] and 0 < row["ours_bandwidth_fraction"]
        assert max(e for k, e in row["relative_error"].items() if k != INT8) < 1e-5
        if int8:  # lossy: about 1e-2 (tests/test_runtime_int8.py bounds it per output), kept out of the fp32 figure
            assert 1e-5 < row["int8"]["relative_error"] == row["relative_error"][INT8] < 5e-2
            assert row["int8"]["speedup"] == pytest.approx(row["dense_us"] / row["cold_us"][INT8]["median"])
    if simd.int8_missing() is None:
        summary = quick_result["summary"]
        assert summary["max_relative_error"] < 1e-5 < summary["int8_max_relative_error"]
        assert summary["batch1_int8_geomean_speedup"] > 0
    assert min(quick_result["threads"].values()) >= 1 and set(quick_result["load_average_1min"]) == {"before", "after"}
    machine = quick_result["machine"]
    assert machine["cores"] >= 1 and "numpy" in machine["versions"] and machine["threads"]["torch"] >= 1
    assert quick_result["read_bandwidth_gbs"] > 0
    json.dumps(quick_result)  # JSON-ready
    plot_fc(quick_result, str(tmp_path / "fc.png"))
    assert (tmp_path / "fc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fc_benchmark_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"unknown fc layers \['fc9'\]"):
        run_fc_benchmark(layers=["fc9"], quick=True)
    with pytest.raises(ConfigError, match=r"expected batch sizes >= 1, got \[0\]"):
        run_fc_benchmark(batches=(0,), quick=True)


def test_synthetic_layer_density_and_codebook() -> None:
    out, inp, density, _ = PAPER_LAYERS["alexnet_fc8"]
    layer = synthetic_layer("fc8", out // 8, inp // 8, density, np.random.default_rng(0))
    assert layer.nnz == round(density * layer.numel)
    assert layer.codebook.size == 32 and layer.weight_bits == 5
    assert layer.codebook[0] == layer.codebook.min() and np.all(np.diff(layer.codebook) > 0)  # linear


def test_whole_model_latency_lenet300() -> None:
    cm = random_model("lenet300", np.random.default_rng(0))
    x = torch.rand(1, 784)
    result = whole_model_latency(cm, dense_model(cm), x, repeats=5, warmup=1)
    assert result["batch"] == 1 and result["model"] == "lenet300"
    assert result["backends"] == [available_backends()[0]]  # auto picks the first available for every fc layer
    assert result["max_abs_diff"] < 1e-4
    assert result["speedup"] == pytest.approx(result["dense"]["median_us"] / result["sparse"]["median_us"])


def test_energy_estimate_lenet300_and_lenet5() -> None:
    cm = random_model("lenet300", np.random.default_rng(1), density=0.1)
    small = energy_estimate(cm, on_chip_bytes=10**9)
    assert small["dense"]["memory"] == small["compressed"]["memory"] == "SRAM"
    assert small["dense"]["adds"] == 266_200  # one per weight
    assert small["compressed"]["adds"] == sum(l.nnz for l in cm.layers)
    assert small["dense"]["read_pj"] == small["dense"]["reads_32bit"] * SRAM_READ_PJ
    split = energy_estimate(cm, on_chip_bytes=200_000)  # compressed fits, dense (1.07 MB) does not
    assert split["dense"]["memory"] == "DRAM" and split["compressed"]["memory"] == "SRAM"
    assert split["dense"]["read_pj"] == split["dense"]["reads_32bit"] * DRAM_READ_PJ
    assert split["energy_ratio"] > small["energy_ratio"] > 1
    conv = energy_estimate(random_model("lenet5", np.random.default_rng(2)), on_chip_bytes=10**9)
    conv1 = next(l for l in conv["per_layer"] if l["layer"] == "conv1")
    assert conv1["applications"] == 24 * 24
    assert conv["dense"]["adds"] == 500 * 576 + 25000 * 64 + 400000 + 5000


def test_inference_benchmark_structure() -> None:
    """fc layers and whole networks in one run: every variant timed cold and warm, outputs agree."""
    from pathlib import Path

    from deepcompress.perf.networks import VARIANTS, run_inference_benchmark

    root = Path(__file__).resolve().parents[1]
    result = run_inference_benchmark(root, ("lenet300", "vgg16_classifier"), quick=True)
    assert result["machine"]["cpu"] and result["read_bandwidth_gbs"] > 0 and result["fc"]["results"]
    assert [n["network"] for n in result["networks"]] == ["lenet300", "vgg16_classifier"]
    for row in result["networks"]:
        assert set(row["cold_us"]) == set(row["warm_us"]) == set(VARIANTS)
        assert row["speedup_cold"] == pytest.approx(row["cold_us"]["dense"] / row["cold_us"]["ours"])
        assert max(row["max_abs_diff"].values()) < 1e-3
    assert set(result["networks"][0]["formats"]) == {"fc1", "fc2", "fc3"}
    json.dumps(result)
    import runpy

    lines = runpy.run_path(str(root / "benchmarks" / "summarize.py"))["inference_section"](result)
    assert sum(line.startswith("| lenet300 |") or line.startswith("| vgg16_classifier |") for line in lines) == 2
    with pytest.raises(ConfigError, match=r"unknown networks \['alexnet'\]"):
        run_inference_benchmark(root, ("alexnet",), quick=True)
