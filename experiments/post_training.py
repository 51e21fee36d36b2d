"""What the data buys: a retrained run's final per-layer sparsity and bits, applied with no retraining.

Reads ``experiments/results/NAME.json`` (a finished ``deepcompress compress`` run), takes the kept
fraction and weight bits it reached in every layer, and compresses the same reference again with
exactly those numbers in one shot: no retraining rounds, no centroid fine-tuning (post-training
compression, a user with a checkpoint and no training data). Writes ``NAME_posttraining.dcz`` and
``.json`` beside the original, so the two rows compare one thing only: retraining.

    python experiments/post_training.py resnet18_fashion
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepcompress.config import PipelineConfig
from deepcompress.pipeline import compress_config, write_report
from deepcompress.prune import PruneConfig
from deepcompress.quantize import QuantizeConfig

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parent / "configs"


def post_training_config(run: dict[str, Any], configs: Path = CONFIGS) -> PipelineConfig:
    """The run's config (read relative to ``configs``, the directory of the TOML it came from) with
    its final per-layer sparsity and bits, and no training at all."""
    stages = {s["stage"]: s for s in run["stages"]}
    bits = {row["layer"]: row["bits"] for row in stages["quantize"]["layers"]}  # the compressed layers
    sparsity = {row["layer"]: 1.0 - row["kept"] / row["numel"] for row in stages["prune"]["sparsity"] if row["layer"] in bits}
    cfg = PipelineConfig.from_dict(run["config"], base_dir=configs)
    prune = PruneConfig(method="sparsity", sparsity=sparsity, rounds=1, epochs_per_round=0,
                        patterns=tuple(sparsity), ignore=())
    quantize = replace(cfg.quantize, bits=bits, epochs=0, patterns=tuple(bits), ignore=())
    assert isinstance(quantize, QuantizeConfig)
    return replace(cfg, prune=prune, quantize=quantize)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a finished run: experiments/results/NAME.json")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="directory of the run's TOML config")
    parser.add_argument("--data-dir", default=None, help="directory of IDX files (else the packaged data)")
    args = parser.parse_args(argv)
    run = json.loads((args.results / f"{args.name}.json").read_text())
    out = args.results / f"{args.name}_posttraining.dcz"
    result = compress_config(post_training_config(run, args.configs), out, data_dir=args.data_dir,
                             progress=sys.stderr.isatty(), log=lambda line: print(line, file=sys.stderr))
    path = write_report(result, out)
    file_stage = result.stages[-1]
    print(f"{out}: {result.report['file_bytes']:,} bytes ({result.report['ratio']:.1f}x), "
          f"test accuracy {100 * file_stage.accuracy:.2f}%; report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
