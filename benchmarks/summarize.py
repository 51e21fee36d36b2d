"""Print the README's benchmark section as Markdown, straight from benchmarks/results/*.json.

Run ``python benchmarks/summarize.py`` after any benchmark and paste its output into the README
(``--inference`` prints the tables of results/inference.json instead);
tests/test_readme.py checks that the README quotes exactly what this prints.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def fc_section() -> list[str]:
    fc = load("fc.json")
    lines = [
        "**Fully connected layers at the paper's densities** (Table 8; synthetic weights, 5-bit codebooks,",
        f"cold cache; `make bench-fc`; {_threads(fc['threads'])} threads; read bandwidth {fc['read_bandwidth_gbs']:.1f} GB/s;",
        f"load average {fc['load_average_1min']['before']:.2f} before, {fc['load_average_1min']['after']:.2f} after). Microseconds per",
        "input; speedup of ours (the backend `auto` picks: `simd` = the AVX-512 C kernel) over the fastest dense",
        "baseline run in the same process; `ours (numba)` is the portable kernel, same run:",
        "",
        "| layer | batch | dense torch | dense numpy | CSR scipy | CSR torch | ours (numba) | ours | backend | speedup | paper (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in fc["results"]:
        cold = {k: v["median"] for k, v in row["cold_us"].items()}
        paper = row.get("paper_cpu_speedup_batch1") if row["batch"] == 1 else None
        lines.append(
            f"| {row['layer']} | {row['batch']} | {cold['dense_torch']:.0f} | {cold['dense_numpy']:.0f} | "
            f"{cold['csr_scipy']:.0f} | {cold['csr_torch']:.0f} | {cold['ours_numba']:.0f} | {cold['ours']:.0f} | "
            f"{row['backend']} | {row['speedup']:.2f}x | "
            f"{f'{paper:.2f}x' if paper else '-'} |"
        )
    summary = fc["summary"]
    lines += [
        "",
        f"Geometric mean at batch 1: **{summary['batch1_geomean_speedup']:.2f}x** (target 8x, paper 3.3x; "
        f"slowest layer {summary['batch1_min_speedup']:.2f}x); at batch 64: {summary['batch64_geomean_speedup']:.2f}x "
        f"(slowest {summary['batch64_min_speedup']:.2f}x). Largest relative error of any kernel against dense: "
        f"{summary['max_relative_error']:.1e}.",
    ]
    return lines


def _threads(threads: int | dict) -> int:
    """Threads of a results file: one number (older files) or per library (the extension's pool first)."""
    return threads if isinstance(threads, int) else threads.get("extension", max(threads.values()))


def inference_section(result: dict | None = None) -> list[str]:
    """The fc layers and whole networks of benchmarks/inference.py (results/inference.json)."""
    result = result or load("inference.json")
    m = result["machine"]
    l3 = max(m["caches_bytes"].values()) >> 20 if m["caches_bytes"] else "?"
    fc = result["fc"]
    lines = [
        f"**Inference from the compressed form** (`python benchmarks/inference.py`; {m['cpu']}, {m['cores']} cores, "
        f"L3 {l3} MiB, {_threads(result['threads'])} threads, read bandwidth {result['read_bandwidth_gbs']:.1f} GB/s, "
        f"load average {fc['load_average_1min']['before']:.2f} before). Cold-cache medians, microseconds per input;",
        "speedups over the fastest dense baseline (torch or numpy) of the same run; `previous` is the packed CSR",
        "kernel (gathers) on the same thread pool; bandwidth = bytes read / time / measured read bandwidth:",
        "",
        "| layer | batch | dense | ours (format) | speedup | warm | paper (CPU) | previous | numba | bandwidth |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in fc["results"]:
        cold = {k: v["median"] for k, v in r["cold_us"].items()}
        prev = f"{r['dense_us'] / cold['ours_csr']:.2f}x" if "ours_csr" in cold else "-"
        numba = f"{r['dense_us'] / cold['ours_numba']:.2f}x" if "ours_numba" in cold else "-"
        paper = f"{r['paper_cpu_speedup_batch1']:.2f}x" if r["batch"] == 1 else "-"
        lines.append(
            f"| {r['layer']} | {r['batch']} | {r['dense_us']:.0f} | {r['ours_us']:.0f} ({r['format']}) | "
            f"{r['speedup']:.2f}x | {r['speedup_warm']:.2f}x | {paper} | {prev} | {numba} | "
            f"{100 * r['ours_bandwidth_fraction']:.0f}% |"
        )
    s = fc["summary"]
    lines += [
        "",
        f"Geometric mean: batch 1 **{s['batch1_geomean_speedup']:.2f}x** (slowest {s['batch1_min_speedup']:.2f}x), "
        f"batch 64 {s['batch64_geomean_speedup']:.2f}x (slowest {s['batch64_min_speedup']:.2f}x).",
        "",
        "| network (batch 1) | dense | torch CSR | ours | speedup cold | warm |",
        "|---|---|---|---|---|---|",
    ]
    for n in result["networks"]:
        c = n["cold_us"]
        lines.append(f"| {n['network']} | {c['dense']:.0f} | {c['csr_torch']:.0f} | {c['ours']:.0f} | "
                     f"{n['speedup_cold']:.2f}x | {n['speedup_warm']:.2f}x |")
    return lines + int8_section(result)


def int8_section(result: dict) -> list[str]:
    """The int8 column as a Markdown table (empty when it was not measured)."""
    rows = [r for r in result["fc"]["results"] if "int8" in r]
    if not rows:
        return []
    lines = [
        "",
        "Opt-in int8 (`format=\"int8\"`, lossy) at batch 1, same run and dense baseline; cold-cache medians,",
        "microseconds per input; relative error against the float64 dense product:",
        "",
        "| layer | dense | ours (format) | int8 | int8 speedup | warm | int8 / ours | rel. error | bandwidth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["int8"]
        lines.append(
            f"| {r['layer']} | {r['dense_us']:.0f} | {r['ours_us']:.0f} ({r['format']}) | {q['us']:.0f} | "
            f"{q['speedup']:.2f}x | {q['speedup_warm']:.2f}x | {q['speedup_over_ours']:.2f}x | "
            f"{q['relative_error']:.1e} | {100 * q['bandwidth_fraction']:.0f}% |"
        )
    return lines


def scale_section() -> list[str]:
    lines = [
        "**Whole-network pipeline at ImageNet scale** (`make bench-scale`; trained-like random weights, the",
        "paper's per-layer densities and bits, no retraining):",
        "",
        "| model | compress (prune + quantize + encode) | read + decode | peak RSS / dense (whole process; above the imports) | dense -> file | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("alexnet", "vgg16"):
        s = load(f"scale_{name}.json")
        lines.append(
            f"| {name} | {s['compress_s']:.1f} s | {s['decode_s']:.2f} s | {s['peak_rss_over_dense']:.2f}x; {s['pipeline_rss_over_dense']:.2f}x | "
            f"{s['dense_bytes'] / 1e6:.1f} MB -> {s['file_bytes'] / 1e6:.2f} MB | {s['ratio']:.1f}x |"
        )
    return lines


def coding_section() -> list[str]:
    c = load("coding.json")
    lines = [
        "",
        "**Entropy coders** (`python benchmarks/coding.py`; 10M-symbol streams; bytes over the empirical",
        "entropy, tables included; decode speed):",
        "",
        "| stream | Huffman | rANS | zstd -19 | decode Huffman / rANS |",
        "|---|---|---|---|---|",
    ]
    for name, s in c["streams"].items():
        lines.append(
            f"| {name} | +{s['huffman']['over_entropy_pct']:.2f}% | +{s['rans']['over_entropy_pct']:.2f}% | "
            f"+{s['zstd19']['over_entropy_pct']:.2f}% | {s['huffman']['decode_msym_per_s']:.0f} / "
            f"{s['rans']['decode_msym_per_s']:.0f} Msym/s |"
        )
    v = c["vgg16_file"]
    lines += [
        "",
        f"A VGG-16-size file ({v['nnz'] / 1e6:.1f}M nonzeros, {v['symbols'] / 1e6:.1f}M symbols) decodes in "
        f"{v['decode']['median_s']:.3f} s ({v['decode_msym_per_s']:.0f} Msym/s for the whole file).",
    ]
    return lines


def kmeans_section() -> list[str]:
    k = load("kmeans.json")
    ours, sk = k["ours_default"], k["sklearn_budget"]
    return [
        "",
        f"**k-means** (`python benchmarks/kmeans.py`): {k['n']:,} weights into {k['k']} clusters in "
        f"{ours['median_s']:.3f} s (median; target {k['target_s']} s); at the same 5-iteration budget "
        f"{k['speedup_same_budget']:.0f}x faster than scikit-learn's KMeans ({sk['median_s']:.1f} s).",
    ]


def latency_section() -> list[str]:
    lat = load("latency.json")
    lines = [
        "",
        "**Whole compressed LeNets at batch 1** (`python benchmarks/latency.py`; the file's network run by dense",
        "layers vs the sparse runtime, interleaved in one process, real MNIST image) and the energy per",
        "inference from memory traffic with the paper's 45 nm figures (32-bit SRAM read 5 pJ, DRAM read",
        "640 pJ, float add 0.9 pJ):",
        "",
        "| model | dense | sparse runtime | speedup | dense bytes -> runtime bytes | energy dense -> compressed | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in lat["models"].items():
        t, e = m["latency"], m["energy"]
        lines.append(
            f"| {name} | {t['dense']['median_us']:.0f} us | {t['sparse']['median_us']:.0f} us | {t['speedup']:.2f}x | "
            f"{e['dense']['bytes']:,} -> {e['compressed']['bytes']:,} | {e['dense']['total_pj'] / 1e3:.0f} nJ -> "
            f"{e['compressed']['total_pj'] / 1e3:.1f} nJ ({e['compressed']['memory']}) | {e['energy_ratio']:.1f}x |"
        )
    lines += [
        "",
        "Both networks fit in this machine's cache dense or compressed, so the sparse runtime saves no memory",
        "traffic here and its speedup is near 1x either way; the energy estimate counts SRAM reads for both. Were",
        "the dense weights in DRAM (a phone's usual case), dense LeNet-300-100 would cost "
        f"{lat['models']['lenet300']['energy']['dense']['total_pj_if_dram'] / 1e6:.0f} uJ per inference.",
    ]
    return lines


def main() -> None:
    import sys

    if sys.argv[1:] == ["--inference"]:
        print("\n".join(inference_section()))
        return
    print("\n".join(fc_section() + [""] + inference_section() + [""] + scale_section() + coding_section() + kmeans_section()
                    + latency_section()))


if __name__ == "__main__":
    main()
