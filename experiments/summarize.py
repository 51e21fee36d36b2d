"""Render docs/RESULTS.md from experiments/results/*.json (never from memory).

Run ``python experiments/summarize.py`` after any experiment; tests/test_experiments.py checks the
committed docs/RESULTS.md equals what this renders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deepcompress.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOC = ROOT.parent / "docs" / "RESULTS.md"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def table1() -> list[str]:
    lines = [
        "## Table 1: compression without (much) accuracy loss",
        "",
        "Sizes are file bytes; dense = fp32 weights and biases; accuracy of the network decoded from the file",
        "on the full test set. Command: `deepcompress compress --config experiments/configs/NAME.toml --out",
        "experiments/results/NAME.dcz` (writes NAME.json with every stage).",
        "",
        "| name | reference accuracy | compressed accuracy | change (points) | dense -> file | ratio | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("lenet300_mnist", "lenet5_mnist", "lenet300_fashion", "lenet5_fashion"):
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            lines.append(f"| {name} | not run | | | | | |")
            continue
        run = json.loads(path.read_text())
        stages = {s["stage"]: s for s in run["stages"]}
        ref, final = stages["reference"]["accuracy"], stages["file"]["accuracy"]
        seconds = sum(s["seconds"] for s in run["stages"])
        lines.append(
            f"| {name} | {100 * ref:.2f}% | {100 * final:.2f}% | {100 * (final - ref):+.2f} | "
            f"{run['report']['dense_bytes']:,} B -> {run['report']['file_bytes']:,} B | {run['report']['ratio']:.1f}x | {seconds:.0f} s |"
        )
    for attempt in ("try1", "try2"):
        earlier = load(f"lenet5_fashion_{attempt}.json")
        stages = {s["stage"]: s for s in earlier["stages"]}
        prune = earlier["config"]["prune"]
        kept = ", ".join(f"{k} {100 * (1 - v):.0f}%" for k, v in prune["sparsity"].items())
        lines += [
            "",
            (f"lenet5_fashion, earlier {attempt} (kept {kept}; {prune['epochs_per_round']} epochs per round at lr x "
             f"{prune['lr_factor']}; experiments/results/lenet5_fashion_{attempt}.json): "
             f"{100 * stages['file']['accuracy']:.2f}% ({100 * (stages['file']['accuracy'] - stages['reference']['accuracy']):+.2f} points), "
             f"{earlier['report']['file_bytes']:,} B, {earlier['report']['ratio']:.1f}x."),
        ]
    return lines


def bits_table(label: str, bits: list[int], rows: dict[str, list[str]]) -> list[str]:
    """A Markdown table with one column per bit width and one row per entry of ``rows`` (cells formatted)."""
    return [
        f"| {label} | " + " | ".join(f"{b} bits" for b in bits) + " |",
        "|---|" + "---|" * len(bits),
        *(f"| {key} | " + " | ".join(cells) + " |" for key, cells in rows.items()),
    ]


def kept_per_layer(sparsity: list[dict]) -> str:
    """A ``sparsity_report`` as "fc1 8%, fc2 9%, ..." (the total row left out)."""
    return ", ".join(f"{row['layer']} {row['kept_pct']:.0f}%" for row in sparsity if row["layer"] != "total")


def pct_cells(values: list[float]) -> list[str]:
    return [f"{100 * v:.2f}" for v in values]


def figures() -> list[str]:
    lines = [
        "",
        "## Figures",
        "",
        "Each script is seeded, takes `--tiny` (the test suite's smoke run) and resumes a killed run: finished sweep",
        "points (and a retrained model) are kept in hidden `.NAME.partial.json` / `.NAME.*.safetensors` files next to",
        "the results until the final JSON is written; a rerun with the same arguments reuses them.",
        "",
    ]
    tradeoff = load("tradeoff_lenet300.json")
    lines += [
        "### Fig. 6: accuracy loss vs compressed size (LeNet-300-100, no retraining)",
        "",
        f"`python experiments/fig_tradeoff.py` ({tradeoff['wall_seconds']:.0f} s) -> `experiments/results/tradeoff_lenet300.png`.",
        "Smallest size reached by each method at <= 0.5 points of accuracy loss:",
        "",
        "| method | size (% of dense weights) | loss (points) | knob |",
        "|---|---|---|---|",
    ]
    for method, points in tradeoff["curves"].items():
        ok = [p for p in points if p["accuracy_loss_pct"] <= 0.5]
        if ok:
            best = min(ok, key=lambda p: p["rate_pct"])
            lines.append(f"| {method} | {best['rate_pct']:.2f}% | {best['accuracy_loss_pct']:.2f} | {best['knob']} |")
        else:
            lines.append(f"| {method} | none within 0.5 points | | |")
    bits = load("bits_lenet5.json")
    lines += [
        "",
        "### Fig. 7: conv vs fc bit widths (LeNet-5, no retraining)",
        "",
        f"`python experiments/fig_bits.py` ({bits['wall_seconds']:.0f} s) -> `experiments/results/bits_lenet5.png`. Accuracy (%):",
        "",
        *bits_table("layers quantized", bits["bits"], {k: pct_cells(v) for k, v in bits["accuracy"].items()}),
    ]
    retrained = load("bits_lenet5_retrained.json")
    kept = kept_per_layer(retrained["sparsity"])
    lines += [
        "",
        (f"Same sweep with the pruned model retrained ({retrained['prune_rounds']} prune rounds x "
        f"{retrained['epochs_per_round']} epoch; kept {kept}; {100 * retrained['pruned_accuracy']:.2f}% before "
        f"quantization): `python experiments/fig_bits.py --retrain` ({retrained['wall_seconds']:.0f} s) -> "
        "`experiments/results/bits_lenet5_retrained.png`. Accuracy (%):"),
        "",
        *bits_table("layers quantized", retrained["bits"], {k: pct_cells(v) for k, v in retrained["accuracy"].items()}),
    ]
    init = load("init_vs_bits_lenet300.json")
    lines += [
        "",
        "### Fig. 8: centroid initialisation vs bits (LeNet-300-100 pruned to 8%, one fine-tuning epoch)",
        "",
        (f"`python experiments/fig_init.py` ({init['wall_seconds']:.0f} s) -> `experiments/results/init_vs_bits_lenet300.png`. "
        f"Pruned, unquantized: {100 * init['pruned_accuracy']:.2f}%. Accuracy (%):"),
        "",
        *bits_table("init", init["bits"], {k: pct_cells(v) for k, v in init["accuracy"].items()}),
    ]
    retrained = load("init_vs_bits_lenet300_retrained.json")
    kept = kept_per_layer(retrained["sparsity"])
    lines += [
        "",
        (f"Same sweep on a pruned and retrained model (kept {kept}; {retrained['prune_rounds']} prune rounds x "
        f"{retrained['epochs_per_round']} retraining epochs, then {100 * retrained['pruned_accuracy']:.2f}%): "
        f"`python experiments/fig_init.py --retrain` ({retrained['wall_seconds']:.0f} s) -> "
        "`experiments/results/init_vs_bits_lenet300_retrained.png`. Accuracy (%) right after k-means / after one "
        "epoch of centroid fine-tuning:"),
        "",
        *bits_table("init", retrained["bits"], {
            name: [f"{100 * a:.2f} / {100 * b:.2f}" for a, b in zip(values, retrained["accuracy_finetuned"][name])]
            for name, values in retrained["accuracy_kmeans"].items()
        }),
    ]
    dist = load("distributions_lenet300_fc2.json")
    sens = load("sensitivity_mnist.json")
    lines += [
        "",
        "### Figs. 4-5: distributions; Han 2015 Fig. 6: sensitivity",
        "",
        (f"`python experiments/fig_distributions.py` -> `experiments/results/distributions_lenet300_fc2.png`: fc2's "
        f"{dist['weights']:,} reference weights, the {dist['kept']:,} stored ones with the {len(dist['codebook'])} centroids, "
        "and the cluster-index and gap-symbol histograms with their Huffman code lengths."),
        "",
        (f"`python experiments/fig_sensitivity.py` ({sens['wall_seconds']:.0f} s) -> `experiments/results/sensitivity_lenet300_mnist.png`, "
        "`sensitivity_lenet5_mnist.png`: accuracy with one layer pruned, no retraining. Largest fraction each layer "
        "tolerates within 0.5 points:"),
        "",
        "| model | layer | fraction |",
        "|---|---|---|",
    ]
    for model in ("lenet300", "lenet5"):
        scan = sens[model]
        for layer, row in scan["layers"].items():
            ok = [f for f, a in zip(scan["fractions"], row["accuracy"]) if scan["baseline"] - a <= 0.005]
            lines.append(f"| {model} | {layer} | {max(ok):.2f} |")
    return lines


def ablation() -> list[str]:
    """Issue 7's "beyond the paper's schedule": one ladder of real compress runs per network."""
    lines = [
        "",
        "## Beyond the paper's schedule: what each change bought",
        "",
        ("`python experiments/auto_ablation.py --model NAME` runs the ladder below from the committed config, each "
         "row a real `compress` run whose file is in `experiments/results/ablation/`. `auto` rows set no per-layer "
         "number: sparsity is planned every round from a sensitivity scan on 5,000 held-out training images under "
         "a per-round budget and an overall tolerance, bits from a bits scan under a budget (README, Configuration). "
         "The reference was trained on those images, so its accuracy on them is optimistic and the tolerance has "
         "to cover that gap as well."),
    ]
    for model in ("lenet300", "lenet5"):
        path = RESULTS / f"ablation_{model}_mnist.json"
        if not path.is_file():
            continue
        run = load(path.name)
        lines += [
            "",
            (f"### {model} / MNIST (`{run['command']}`, budget {run['prune_budget']:g} per round, tolerance "
             f"{run['tolerance']:g}, bits budget {run['bits_budget']:g}; paper's reference error "
             f"{100 * run['paper_reference_error']:.2f}%) -> `experiments/results/ablation_{model}_mnist.png`"),
            "",
            *ladder_table(run),
        ]
        for extra in sorted((RESULTS / "ablation").glob(f"{model}_mnist_*-tolerance*.json")):
            report = json.loads(extra.read_text())
            stages = {s["stage"]: s for s in report["stages"]}
            kept = ", ".join(f"{row['name']} {row['kept_pct']:.1f}%" for row in report["report"]["layers"])
            lines += [
                "",
                (f"Also run: `{extra.stem}` (`{extra.name}`, prune tolerance {report['config']['prune']['tolerance']:g}): "
                 f"kept {kept}; {report['report']['file_bytes']:,} B, {report['report']['ratio']:.1f}x at "
                 f"{100 * stages['file']['error']:.2f}% test error."),
            ]
    return lines


#: Issue 17's targets: name -> (floor, target ratio, error bound), the bound an absolute test error for MNIST
#: (the paper's reference error) or None for "at most 0.1 points under the network's own reference".
FRONTIER = {
    "lenet300_mnist_frontier": (150, 200, 0.0164),
    "lenet5_mnist_frontier": (200, 300, 0.0080),
    "lenet300_fashion_frontier": (60, 100, None),
    "lenet5_fashion_frontier": (60, 100, None),
}


def ladder_table(run: dict) -> list[str]:
    """One ablation ladder's rows: what changed, per-layer kept and bits, bytes, ratio, change, error."""
    lines = [
        "| variant | what changed | kept per layer | bits per layer | file | ratio | vs row above | test error | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for row in run["variants"]:
        kept = ", ".join(f"{k} {v:.1f}%" for k, v in row["kept_pct"].items())
        bits = ", ".join(f"{k} {v}" for k, v in row["bits"].items())
        versus = f"{row['ratio'] / previous['ratio']:.2f}x, {100 * (row['error'] - previous['error']):+.2f} pt" if previous else ""
        seconds = f"{row['wall_seconds']:.0f} s" if row.get("wall_seconds") is not None else ""
        lines.append(
            f"| {row['variant']} | {row['change']} | {kept} | {bits} | {row['file_bytes']:,} B | {row['ratio']:.1f}x | "
            f"{versus} | {100 * row['error']:.2f}% | {seconds} |"
        )
        if not row["variant"].endswith("(not kept)"):  # options left out are each compared with the config itself
            previous = row
    return lines


def frontier() -> list[str]:
    """Issue 17: the frontier on the paper's own networks, with references that never saw the validation images."""
    lines = [
        "",
        "## The frontier on the paper's networks (references trained on 55,000 images)",
        "",
        ("References trained on the first 55,000 training images only (`deepcompress train NAME --dataset D --limit 55000`), "
         "so the last 5,000, on which every automatic choice is made, are images they never saw. Each ladder starts from "
         "the frontier config with every new option off and turns one more on per row, the last of these being the "
         "config file; rows marked `(not kept)` try an option the config leaves off, on top of the config. "
         "Ratios from the files' bytes, errors on the full 10,000-image test set. "
         "Plot (ours beside the published points): `python experiments/fig_frontier.py` -> `experiments/results/frontier.png`."),
        "",
        "| run | reference error | file error | bound | dense -> file | ratio | floor / target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (floor, target, bound) in FRONTIER.items():
        row = run_row(name)
        if row is None:
            lines.append(f"| {name} | not run | | | | | {floor}x / {target}x | |")
            continue
        error, reference = 1 - row["file"], 1 - row["reference"]
        limit = bound if bound is not None else reference + 0.001
        within = error <= limit + 1e-12
        ratio = row["report"]["ratio"]
        met = ("target" if ratio >= target else "floor" if ratio >= floor else "short") if within else "error over the bound"
        bound_text = f"paper's {100 * bound:.2f}%" if bound is not None else f"reference + 0.1 pt = {100 * limit:.2f}%"
        lines.append(
            f"| `{name}` | {100 * reference:.2f}% | {100 * error:.2f}% | {bound_text} | {row['report']['dense_bytes']:,} B -> "
            f"{row['report']['file_bytes']:,} B | {ratio:.1f}x | {floor}x / {target}x | {met} |"
        )
    for name in FRONTIER:
        for attempt in sorted(RESULTS.glob(f"{name}_try*.json")):
            tried = json.loads(attempt.read_text())
            stages = {s["stage"]: s for s in tried["stages"]}
            prune = tried["config"]["prune"]
            lines += ["", (f"Also tried for `{name}` (`{attempt.name}`, {pruning(prune)}): {tried['report']['file_bytes']:,} B, "
                           f"{tried['report']['ratio']:.1f}x at {100 * stages['file']['accuracy']:.2f}% accuracy "
                           f"(reference {100 * stages['reference']['accuracy']:.2f}%).")]
    for model in ("lenet300", "lenet5"):
        path = RESULTS / f"ablation_{model}_mnist_frontier.json"
        if path.is_file():
            run = load(path.name)
            lines += ["", (f"### {model} / MNIST frontier ladder (`{run['command']}`; paper's reference error "
                           f"{100 * run['paper_reference_error']:.2f}%) -> `experiments/results/ablation_{model}_mnist_frontier.png`"),
                      "", *ladder_table(run)]
    for name in FRONTIER:
        lines += layer_table(name)
    return lines


OWN_NETWORKS = {  # name -> (what it is, floor and target ratio, accuracy bound in points)
    "resnet18_fashion": ("ResNet-18 (torchvision's architecture) / Fashion-MNIST", 50, 150, 0.3),
    "mobilenet_v3_small_fashion": ("MobileNetV3-Small (torchvision's architecture) / Fashion-MNIST", 10, 25, 0.5),
}
README_NETWORKS = ("lenet300_mnist", "lenet5_mnist", "lenet300_mnist_frontier", "lenet5_mnist_frontier", "lenet300_fashion_frontier",
                   "lenet5_fashion_frontier", "resnet18_fashion", "resnet18_fashion_s98", "mobilenet_v3_small_fashion")


def run_row(name: str) -> dict | None:
    """The reference and file accuracy, sizes and wall time of ``NAME.json``, or None if not run."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    stages = {s["stage"]: s for s in run["stages"]}
    return {
        "reference": stages["reference"]["accuracy"], "file": stages["file"]["accuracy"], "report": run["report"],
        "seconds": sum(s["seconds"] for s in run["stages"]), "stages": stages, "config": run["config"],
    }


def readme_networks() -> list[str]:
    """The README's table of every network compressed here, from the committed reports."""
    lines = [
        "| network | dense accuracy | compressed accuracy | dense -> file | ratio | wall time here | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in README_NETWORKS:
        row = run_row(name)
        if row is None:
            continue
        command = f"`deepcompress compress --config experiments/configs/{name}.toml --out experiments/results/{name}.dcz`"
        lines.append(
            f"| {name} | {100 * row['reference']:.2f}% | {100 * row['file']:.2f}% | {row['report']['dense_bytes']:,} B -> "
            f"{row['report']['file_bytes']:,} B | {row['report']['ratio']:.1f}x | {row['seconds'] / 60:.0f} min | {command} |"
        )
    return lines


def own_networks() -> list[str]:
    """Issue 14: networks users bring, compressed from a TOML file naming a model file, retrained and not."""
    lines = [
        "",
        "## Networks users bring: ResNet-18 and MobileNetV3-Small",
        "",
        ("Each model is a user's model file under `examples/` (torchvision's architecture, names and initialisation), "
         "trained here on the first 58,000 Fashion-MNIST training images replicated to 3 channels at 28 px; the last "
         "2,000 are held out for the automatic choices (`auto` sparsity: planned every round from a sensitivity scan "
         "under the tolerance; bits: from a bits scan). `global`: one magnitude threshold across all layers, hand-set "
         "(the config says why). Dense size counts every tensor the file replaces (weights, biases, BatchNorm "
         "parameters and statistics). `post-training` re-applies the retrained run's final per-layer sparsity and "
         "bits with no retraining and no fine-tuning (`python experiments/post_training.py NAME`)."),
        "",
        "| network | run | pruning | reference accuracy | compressed accuracy | change (points) | dense -> file | ratio | floor / target | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (what, floor, target, bound) in OWN_NETWORKS.items():
        for variant, suffix in (("retrained", ""), ("retrained", "_s98"), ("post-training", "_posttraining")):
            row = run_row(name + suffix)
            if row is None:
                if suffix != "_s98":
                    lines.append(f"| {what} | {variant} | | not run | | | | | | |")
                continue
            change = 100 * (row["file"] - row["reference"])
            verdict = "within" if change >= -bound else "outside"
            lines.append(
                f"| {what} | {variant} (`{name + suffix}`) | {pruning(row['config']['prune'])} | {100 * row['reference']:.2f}% | "
                f"{100 * row['file']:.2f}% | {change:+.2f} "
                f"({verdict} the {bound:g}-point bound) | {row['report']['dense_bytes']:,} B -> {row['report']['file_bytes']:,} B | "
                f"{row['report']['ratio']:.1f}x | {floor}x / {target}x | {row['seconds'] / 60:.0f} min |"
            )
    for name in (*OWN_NETWORKS, "resnet18_fashion_s98"):
        lines += layer_table(name)
    return lines


def pruning(prune: dict) -> str:
    """How a run chose its sparsity, in a few words."""
    if prune["method"] == "auto":
        return f"auto, tolerance {100 * prune['tolerance']:g} points, {prune['rounds']} rounds"
    if prune["method"] == "global":
        return f"global {100 * prune['sparsity']:g}%, {prune['rounds']} rounds"
    if prune["epochs_per_round"] == 0:
        return "the retrained run's, in one shot"
    return f"{prune['method']}, {prune['rounds']} rounds"


def layer_table(name: str) -> list[str]:
    """The paper's per-layer table (Tables 4-5 form) of a run's file, and where its bytes went."""
    row = run_row(name)
    if row is None:
        return []
    report = row["report"]
    layers = sorted(report["layers"], key=lambda layer: layer["kept_pct"])
    hardest = ", ".join(f"{layer['name']} ({layer['kept_pct']:.1f}% kept)" for layer in layers[:5])
    by_bytes = sorted(report["layers"], key=lambda layer: -layer["bytes"])
    file_bytes = report["file_bytes"]
    heaviest = ", ".join(f"{layer['name']} {100 * layer['bytes'] / file_bytes:.0f}%" for layer in by_bytes[:5])
    lines = [
        "",
        f"### {name}: per layer (`deepcompress inspect experiments/results/{name}.dcz`)",
        "",
        (f"Pruned hardest ({pruning(row['config']['prune'])}): {hardest}. Where the {file_bytes:,} file bytes go: {heaviest}; "
         f"uncompressed tensors (BatchNorm, biases) {100 * report['extras_bytes'] / file_bytes:.0f}%, header "
         f"{100 * report['header_bytes'] / file_bytes:.0f}%."),
        "",
        "| layer | kind | weights | kept | weight bits (P+Q / +H) | index bits (P+Q / +H) | rate P+Q+H | bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in report["layers"]:
        lines.append(
            f"| {layer['name']} | {layer['kind']} | {layer['weights']:,} | {layer['kept_pct']:.1f}% | "
            f"{layer['weight_bits_pq']} / {layer['weight_bits_pqh']:.2f} | {layer['index_bits_pq']} / {layer['index_bits_pqh']:.2f} | "
            f"{layer['rate_pqh_pct']:.2f}% | {layer['bytes']:,} |"
        )
    return lines


def main() -> None:
    text = "\n".join(["# Experiments: the paper's tables and figures, measured here", "", *table1(), *figures(), *ablation(),
                      *frontier(), *own_networks()]) + "\n"
    atomic_write_text(DOC, text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        print("\n".join(readme_networks()))
    else:
        main()
