"""Beyond the paper's schedule: what a gradual ramp, automatic sparsity and automatic bits each buy.

Starting from one network's committed config (experiments/configs/<model>_<dataset>.toml), the
pipeline is run in a ladder of variants, each a real ``compress`` run that writes a real file:

1. ``paper``: the paper's per-layer densities (Tables 2-3) and weight bits, our geometric ramp;
2. ``hand-tuned``: the committed config (per-layer sparsity and bits set by hand from the sensitivity
   scans of fig_sensitivity.py);
3. ``cubic``: the same targets reached by the gradual cubic ramp of Zhu & Gupta (2017), in 3x as many
   shorter rounds (same epochs in total);
4. ``auto-sparsity``: no per-layer numbers: every round's sparsity planned from a sensitivity scan on
   held-out training images under a per-round accuracy budget, until the validation accuracy has
   fallen by the tolerance (``prune.method = "auto"``), same epochs in total, hand-set bits;
5. ``auto-sparsity-and-bits``: and each layer's bits chosen by a bits scan under an accuracy budget
   (``quantize.bits = "auto"``).

``--ladder frontier`` climbs from a frontier config instead (experiments/configs/<model>_<dataset>_frontier.toml,
whose reference was trained on the first 55,000 training images only, so the 5,000 held out for every
automatic choice are images it never saw). Its first rung is that config with every option below turned
off (automatic sparsity and bits as in rung 5 above); each later rung turns one more on, and the last is the
config file itself:

6. ``recovery``: a round may spend ``prune.recovery`` times the tolerance left (retraining wins back most of
   a one-shot drop);
7. ``distill``: retraining and centroid fine-tuning learn the dense reference's softened scores too;
8. ``shared-biases``: each layer's biases weight-shared into a few float16 values (``encode.bias_bits``);
9. ``dead-units``: units pruning emptied are removed every round (their constant output folded into the
   next layer), and units with fewer than ``prune.min_unit_weights`` weights emptied before retraining;
10. ``joint-bits``: bits narrowed one at a time, measured with every layer quantized;
11. ``optimal-init``: globally optimal 1-D k-means (dynamic programming) instead of linear initialisation.

An option the frontier config leaves off is still measured, on top of the config (``NAME (not kept)``
rows): that is how an option shows it did not earn its place.

Each row reports file bytes, ratio and test error, and the change against the row before, against
the paper's reference error. Resumable: a finished variant whose recorded config matches is reused,
an interrupted one resumes inside the pipeline, and variants that differ only in quantization share
one pruning run (``compress(stage_cache=...)``). Run: ``python experiments/auto_ablation.py --model lenet300``
(``--ladder frontier`` for the frontier ladder).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import write_json  # noqa: E402

from deepcompress.config import PipelineConfig, tomllib  # noqa: E402
from deepcompress.pipeline import compress_config  # noqa: E402

ROOT = Path(__file__).resolve().parent
# The paper's per-layer densities and weight bits (Tables 2-3; PAPER_FACTS.md) and reference errors.
PAPER = {
    "lenet300": {"sparsity": {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}, "bits": 6, "error": 0.0164},
    "lenet5": {"sparsity": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}, "bits": {"conv*": 8, "fc*": 5}, "error": 0.0080},
}


def variants(
    base: dict[str, Any], model: str, prune_budget: float, tolerance: float, bits_budget: float
) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (what changed, config dict)}``, each built from the one before it."""
    rounds, epochs = base["prune"]["rounds"], base["prune"]["epochs_per_round"]
    out: dict[str, tuple[str, dict[str, Any]]] = {}

    paper = copy.deepcopy(base)
    paper["prune"]["sparsity"] = PAPER[model]["sparsity"]
    paper["quantize"]["bits"] = PAPER[model]["bits"]
    out["paper"] = ("the paper's per-layer densities and bits", paper)
    out["hand-tuned"] = ("per-layer sparsity and bits set by hand from sensitivity scans (the committed config)", copy.deepcopy(base))

    cubic = copy.deepcopy(base)
    cubic["prune"].update(ramp="cubic", rounds=3 * rounds, epochs_per_round=max(1, epochs // 3))
    out["cubic"] = (f"gradual cubic ramp, {3 * rounds} rounds x {max(1, epochs // 3)} epochs", cubic)

    auto = copy.deepcopy(cubic)
    auto["prune"] = {k: v for k, v in auto["prune"].items() if k != "sparsity"}
    auto["prune"].update(method="auto", budget=prune_budget, tolerance=tolerance, ramp="geometric")
    out["auto-sparsity"] = (
        f"sparsity planned every round from a sensitivity scan, budget {prune_budget:g} per round, "
        f"tolerance {tolerance:g} overall", auto)

    both = copy.deepcopy(auto)
    both["quantize"].update(bits="auto", budget=bits_budget, min_bits=2, max_bits=8)
    out["auto-sparsity-and-bits"] = (f"and bits per layer from a bits scan, budget {bits_budget:g}", both)
    return out


#: The frontier ladder's options, in the order they are turned on: (name, what it does, how to turn it off,
#: how to turn it on where the frontier config leaves it off).
FRONTIER: list[tuple[str, str, Any, Any]] = [
    ("recovery", "a round may spend prune.recovery x the tolerance left", lambda c: c["prune"].pop("recovery", None),
     lambda c: c["prune"].update(recovery=4.0)),
    ("distill", "knowledge distillation from the dense reference while retraining", lambda c: c.pop("distill", None),
     lambda c: c.update(distill={"temperature": 4.0, "alpha": 0.7})),
    ("shared-biases", "biases weight-shared too (encode.bias_bits)", lambda c: c["encode"].pop("bias_bits", None),
     lambda c: c["encode"].update(bias_bits=5)),
    ("dead-units", "emptied units removed every round, units under prune.min_unit_weights emptied",
     lambda c: [c["prune"].pop(key, None) for key in ("remove_dead", "min_unit_weights")],
     lambda c: c["prune"].update(remove_dead=True, min_unit_weights=4)),
    ("joint-bits", "bits narrowed one at a time with every layer quantized", lambda c: c["quantize"].pop("bits_plan", None),
     lambda c: c["quantize"].update(bits_plan="joint")),
    ("optimal-init", "optimal 1-D k-means (dynamic programming) instead of linear init",
     lambda c: c["quantize"].update(init="linear"), lambda c: c["quantize"].update(init="optimal")),
]


def frontier_variants(frontier: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (what changed, config dict)}``: the frontier config with every option off, then one more on
    per rung, the last rung being the config itself; then each option the config leaves off, tried on top
    of it (``"NAME (not kept)"``: options that did not earn their place in the config)."""
    used, unused = [], []
    for option in FRONTIER:
        probe = copy.deepcopy(frontier)
        option[2](probe)
        (used if probe != frontier else unused).append(option)
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for rung in range(len(used) + 1):
        data = copy.deepcopy(frontier)
        for option in used[rung:]:
            option[2](data)
        name, what = ("honest-auto", "automatic sparsity and bits, reference and choices on separate images") if rung == 0 \
            else used[rung - 1][:2]
        out[name] = (what, data)
    for name, what, _, turn_on in unused:
        data = copy.deepcopy(frontier)
        turn_on(data)
        out[f"{name} (not kept)"] = (f"{what}, on top of the row above the first 'not kept' row", data)
    return out


def run_variant(name: str, data: dict[str, Any], out_dir: Path, stem: str, progress: bool) -> dict[str, Any]:
    """Compress one variant (or reuse its finished report when the config matches)."""
    out = out_dir / f"{stem}.dcz"
    cfg = PipelineConfig.from_dict(data, base_dir=ROOT / "configs")
    report_path = out.with_suffix(".json")
    if out.is_file() and report_path.is_file():
        report = json.loads(report_path.read_text())
        if report.get("config") == cfg.to_dict():
            print(f"{name}: reusing {out.name}")
            return report
    started = time.perf_counter()
    result = compress_config(cfg, out, progress=progress, log=lambda line: print(f"{name}: {line}", flush=True),
                             stage_cache=out_dir / ".stages")
    write_json(report_path, result.to_dict(), started)
    return json.loads(report_path.read_text())


def summarize(name: str, what: str, report: dict[str, Any]) -> dict[str, Any]:
    stages = {s["stage"]: s for s in report["stages"]}
    layers = report["report"]["layers"]
    return {
        "variant": name,
        "change": what,
        "file_bytes": report["report"]["file_bytes"],
        "ratio": report["report"]["ratio"],
        "error": stages["file"]["error"],
        "reference_error": stages["reference"]["error"],
        "kept_pct": {row["name"]: row["kept_pct"] for row in layers},
        "bits": {row["name"]: row["weight_bits_pq"] for row in layers},
        "wall_seconds": report.get("wall_seconds"),
    }


def plot(rows: list[dict[str, Any]], paper_error: float, title: str, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [r["variant"] for r in rows]
    left.bar(names, [r["ratio"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        left.text(i, r["ratio"], f"{r['ratio']:.0f}x", ha="center", va="bottom")
    left.set_ylabel("compression ratio (dense fp32 bytes / file bytes)")
    right.bar(names, [100 * r["error"] for r in rows], color="tab:orange")
    right.axhline(100 * paper_error, color="k", ls="--", label="paper's reference error")
    right.axhline(100 * rows[0]["reference_error"], color="gray", ls=":", label="our dense reference")
    right.set_ylabel("test error (%)")
    right.legend()
    for axes in (left, right):
        axes.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PAPER), default="lenet300")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--prune-budget", type=float, default=0.01, help="accuracy drop per round the sparsity plan may spend")
    parser.add_argument("--tolerance", type=float, default=0.012, help="validation accuracy the whole pruning run may lose")
    parser.add_argument("--bits-budget", type=float, default=0.003, help="accuracy drop the bits choice may spend")
    parser.add_argument("--ladder", choices=("paper", "frontier"), default="paper",
                        help="paper: from the committed config; frontier: from <model>_<dataset>_frontier.toml")
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--tiny", action="store_true", help="a few hundred images, 1-epoch rounds (smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config_stem = f"{args.model}_{args.dataset}" + ("_frontier" if args.ladder == "frontier" else "")
    stem = f"ablation_{config_stem}"
    base = tomllib.loads((ROOT / "configs" / f"{config_stem}.toml").read_text())
    if args.tiny:
        base.update(train_limit=800, test_limit=300, validation_images=200)
        base["prune"].update(rounds=1, epochs_per_round=3)
        base["quantize"].update(epochs=1, max_bits=min(5, base["quantize"].get("max_bits", 8)))
    ladder = frontier_variants(base) if args.ladder == "frontier" else \
        variants(base, args.model, args.prune_budget, args.tolerance, args.bits_budget)
    runs_dir = args.out / "ablation"
    runs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (what, data) in ladder.items():
        if args.only and name not in args.only:
            continue
        file_stem = f"{config_stem}_{name.replace(' (not kept)', '-not-kept')}"
        rows.append(summarize(name, what, run_variant(name, data, runs_dir, file_stem, not args.tiny)))
        previous = rows[-2] if len(rows) > 1 else None
        bought = f", {rows[-1]['ratio'] / previous['ratio']:.2f}x the ratio of {previous['variant']}" if previous else ""
        print(f"{name}: {rows[-1]['file_bytes']} B, {rows[-1]['ratio']:.1f}x, error {100 * rows[-1]['error']:.2f}%{bought}")
    paper_error = PAPER[args.model]["error"]
    result = {"model": args.model, "dataset": args.dataset, "ladder": args.ladder, "paper_reference_error": paper_error,
              "variants": rows}
    if args.ladder == "paper":
        result.update(prune_budget=args.prune_budget, tolerance=args.tolerance, bits_budget=args.bits_budget)
    write_json(args.out / f"{stem}.json", result, started)
    plot(rows, paper_error, f"{args.model} / {args.dataset}: what each change bought", args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
