"""Render docs/RESULTS.md from the JSON results under experiments/results/, so no number is typed by hand.

Each section quotes one JSON file (written by ``deepcompress compress`` or an experiment script), the
command that reproduces it and its wall time; a result whose JSON is missing is listed as not run.
Run: ``python experiments/results_md.py`` (``--check`` exits 1 if docs/RESULTS.md is out of date).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deepcompress.atomic import atomic_write_text
from deepcompress.report import format_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOC = ROOT / "docs" / "RESULTS.md"

# Paper Table 1 (ICLR 2016): error before -> after and the rate, for the rows we reproduce.
PAPER_TABLE1 = {"lenet300_mnist": "1.64% -> 1.58%, 40x", "lenet5_mnist": "0.80% -> 0.74%, 39x"}
PIPELINE_RUNS = ("lenet300_mnist", "lenet5_mnist", "lenet300_fashion", "lenet5_fashion")
NAMES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5", "mnist": "MNIST", "fashion": "Fashion-MNIST"}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def run_note(result: dict[str, Any]) -> str:
    return f"Reproduce: `cd experiments && {result['command']}` ({result['wall_seconds']} s wall on 2 shared cores)."


def missing(name: str) -> list[str]:
    return [f"Not run yet: `experiments/results/{name}.json` does not exist.", ""]


def table1() -> list[str]:
    lines = [
        "## Table 1: compression without accuracy loss (MNIST and Fashion-MNIST)",
        "",
        "Size and ratio from the real `.dcz` bytes (biases and header included; dense = fp32 weights + biases);",
        "accuracy measured on the 10,000 test images after decoding the written file.",
        "",
        "| network | dataset | reference acc | file acc | change (points) | kept | file bytes | ratio | paper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    details = []
    for name in PIPELINE_RUNS:
        result = load(name)
        model, dataset = name.split("_")
        if result is None:
            lines.append(f"| {NAMES[model]} | {NAMES[dataset]} | not run | | | | | | |")
            continue
        stages = {s["stage"]: s for s in result["stages"]}
        report = result["report"]
        ref, final = stages["reference"]["accuracy"], stages["file"]["accuracy"]
        lines.append(
            f"| {NAMES[model]} | {NAMES[dataset]} | {pct(ref)} | {pct(final)} | {100 * (final - ref):+.2f} | "
            f"{report['total']['kept_pct']:.2f}% | {report['file_bytes']:,} | **{report['ratio']:.1f}x** | "
            f"{PAPER_TABLE1.get(name, 'not in the paper')} |"
        )
        details += [
            f"### {NAMES[model]} / {NAMES[dataset]}",
            "",
            (f"Reproduce: `deepcompress compress --config experiments/configs/{name}.toml --out experiments/results/{name}.dcz`"
            f" ({sum(s.get('seconds', 0) for s in result['stages']):.0f} s of stages)."),
            "",
            "```",
            format_table(report),
            "```",
            "",
        ]
    return lines + [""] + details


def mean_bits(stats: dict[str, list[int]]) -> float:
    counts, bits = stats["counts"], stats["huffman_bits"]
    return sum(c * b for c, b in zip(counts, bits)) / max(1, sum(counts))


def distributions() -> list[str]:
    name = "distributions_lenet300_fc2"
    lines = ["## Figures 4-5: weight and index distributions (LeNet-300-100 fc2, MNIST)", ""]
    result = load(name)
    if result is None:
        return lines + missing(name)
    fixed_index = max(1, (len(result["gap_symbols"]["counts"]) - 1).bit_length())
    fixed_code = max(1, (len(result["cluster_index"]["counts"]) - 1).bit_length())
    return lines + [
        f"![distributions](../experiments/results/{name}.png)",
        "",
        (f"{result['kept']:,} of {result['weights']:,} weights kept, {len(result['codebook'])} centroids. "
        f"Huffman code lengths of the real streams average {mean_bits(result['cluster_index']):.2f} bits per "
        f"cluster index (fixed: {fixed_code}) and {mean_bits(result['gap_symbols']):.2f} bits per relative-index "
        f"symbol (fixed: {fixed_index})."),
        "",
        run_note(result),
        "",
    ]


def sensitivity() -> list[str]:
    name = "sensitivity_mnist"
    lines = ["## Pruning sensitivity per layer (Han et al. 2015, Fig. 6), MNIST, no retraining", ""]
    result = load(name)
    if result is None:
        return lines + missing(name)
    for model in ("lenet300", "lenet5"):
        scan = result[model]
        lines += [f"![{model}](../experiments/results/sensitivity_{model}_mnist.png)", "",
                  f"{NAMES[model]}: test accuracy with one layer pruned to each fraction (baseline {pct(scan['baseline'])}).", "",
                  "| layer | " + " | ".join(f"{round(100 * f)}%" for f in scan["fractions"]) + " |",
                  "|---" * (len(scan["fractions"]) + 1) + "|"]
        lines += [f"| {layer} | " + " | ".join(f"{100 * a:.2f}" for a in row["accuracy"]) + " |" for layer, row in scan["layers"].items()]
        lines.append("")
    return lines + [run_note(result), ""]


def sweep_table(header: str, columns: list[Any], rows: dict[str, list[float]]) -> list[str]:
    lines = [f"| {header} | " + " | ".join(str(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return lines + [f"| {key} | " + " | ".join(f"{100 * v:.2f}" for v in values) + " |" for key, values in rows.items()]


def init_figure() -> list[str]:
    name = "init_vs_bits_lenet300"
    lines = ["## Figure 8: centroid initialisation vs bits (pruned LeNet-300-100, MNIST)", ""]
    result = load(name)
    if result is None:
        return lines + missing(name)
    return lines + [
        f"![init](../experiments/results/{name}.png)", "",
        (f"Test accuracy (%) after weight sharing every layer and {result['finetune_epochs']} epoch(s) of centroid "
        f"fine-tuning; pruned to {result['sparsity']} without retraining (pruned accuracy {pct(result['pruned_accuracy'])})."),
        "",
        *sweep_table("init \\ bits", result["bits"], result["accuracy"]), "", run_note(result), "",
    ]


def tradeoff() -> list[str]:
    name = "tradeoff_lenet300"
    lines = ["## Figure 6: accuracy loss vs compression rate (LeNet-300-100, MNIST, no retraining)", ""]
    result = load(name)
    if result is None:
        return lines + missing(name)
    lines += [f"![tradeoff](../experiments/results/{name}.png)", "",
              (f"Reference accuracy {pct(result['reference_accuracy'])}; rate = compressed weight bytes / "
              f"{result['dense_weight_bytes']:,} dense fp32 weight bytes."), "",
              "| method | knob | rate | accuracy loss (points) |", "|---|---|---|---|"]
    for method, points in result["curves"].items():
        lines += [f"| {method} | {p['knob']} | {p['rate_pct']:.2f}% | {p['accuracy_loss_pct']:.2f} |" for p in points]
    return lines + ["", run_note(result), ""]


def bits_figure() -> list[str]:
    name = "bits_lenet5"
    lines = ["## Figure 7: conv vs fc bits (LeNet-5, MNIST, no retraining)", ""]
    result = load(name)
    if result is None:
        return lines + missing(name)
    return lines + [
        f"![bits](../experiments/results/{name}.png)", "",
        (f"Test accuracy (%) with only the named layers weight-shared; reference {pct(result['reference_accuracy'])}, "
        f"pruned to {result['pruned_sparsity']} {pct(result['pruned_accuracy'])}."), "",
        *sweep_table("layers \\ bits", result["bits"], result["accuracy"]), "", run_note(result), "",
    ]


def render() -> str:
    lines = [
        "# Results",
        "",
        "Generated by `python experiments/results_md.py` from the JSON files under experiments/results/; every",
        "number below is read from those files. Paper numbers: Han, Mao, Dally, ICLR 2016 (Deep Compression) and",
        "Han et al., NIPS 2015 (pruning). All runs on CPU, seeded.",
        "",
    ]
    for section in (table1, distributions, sensitivity, init_figure, tradeoff, bits_figure):
        lines += section()
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/RESULTS.md differs from the JSON files")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            sys.exit("docs/RESULTS.md is out of date: run python experiments/results_md.py")
        return
    atomic_write_text(DOC, text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
