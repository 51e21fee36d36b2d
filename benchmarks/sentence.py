"""Sentence embedding at batch 1 from the compressed all-MiniLM-L6-v2 against the dense and int8 models.

Three models embed the same sentence, cut to exactly 16 and to 128 tokens: the dense fp32 model
(``model.safetensors``), torch's dynamic int8 quantization of its Linear layers, and ours, the
``.dcz`` that ``experiments/minilm.py`` wrote, loaded from the file alone on the sparse runtime
(``deepcompress.sentences.load(path, runtime="sparse")``: Linear layers on the codebook kernels,
embedding rows decoded on lookup).

* cold: each model in a fresh Python process: seconds to load it, and the first embedding's latency
  (what a command-line call or a serverless start pays); resident memory (RSS) added by loading the
  model and by that first call, with the libraries already imported, so it is the model's own memory
  (for ours, the entropy decoders' compiled code is measured apart, as ``rss_decoder_code_bytes``).
* warm: all three models in this one process, interleaved (one call of each in turn, ``--repeats``
  rounds), median, min and max milliseconds per sentence.

Writes benchmarks/results/sentence.json with the machine described. Run:
``python benchmarks/sentence.py`` (after ``python experiments/minilm.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from deepcompress import sentences  # noqa: E402
from deepcompress.atomic import atomic_write_text  # noqa: E402
from deepcompress.format import load_compressed  # noqa: E402
from deepcompress.malloc import pin_mmap_threshold  # noqa: E402
from deepcompress.perf.machine import machine_info, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("dense_fp32", "int8_dynamic", "deepcompress_sparse")
LENGTHS = (16, 128)
TEXT = (
    "The module provides functions for reading and writing files in many formats, for parsing dates and "
    "times in local and universal time, for sending mail through a server, for compressing data with "
    "several algorithms, and for running commands in separate processes whose output can be read line "
    "by line; each function documents its arguments, the values it returns, and the errors it raises "
    "when the input is not what it expects, so that a caller can recover or report the problem clearly "
    "to the user without reading the source code of the library itself or guessing at its behaviour. "
) * 2  # long enough for 128 tokens


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(name: str, model_dir: Path, dcz: Path) -> tuple[torch.nn.Module, dict[str, bytes]]:
    """One of :data:`MODELS` and its tokenizer files (from the ``.dcz`` for ours, else the directory)."""
    if name == "deepcompress_sparse":
        compressed = load_compressed(dcz)  # read once: the model and its tokenizer both come from the file
        loaded = sentences.from_compressed(compressed, runtime="sparse", base_dir=dcz.resolve().parent)
        return loaded.model, compressed.attachments
    import transformers

    model = transformers.BertModel.from_pretrained(model_dir, local_files_only=True).eval()
    if name == "int8_dynamic":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model, sentences.sentence_files(model_dir)


def inputs_of(files: dict[str, bytes], length: int) -> dict[str, torch.Tensor]:
    """:data:`TEXT` tokenized and cut to exactly ``length`` tokens (special tokens included)."""
    batch = sentences.SentenceTokenizer.from_files(files, max_length=length)([TEXT])
    if batch["input_ids"].shape != (1, length):
        raise AssertionError(f"expected {length} tokens, got {tuple(batch['input_ids'].shape)}")
    return batch


def embed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The normalised mean-pooled embedding (all-MiniLM-L6-v2's pipeline)."""
    with torch.no_grad():
        pooled = sentences.pool(model(**batch).last_hidden_state, batch["attention_mask"], "mean")
    return torch.nn.functional.normalize(pooled, dim=-1)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights the loaded module holds: parameters and buffers, the sparse layers' packed
    matrices (``packed.nbytes``) and dynamic int8 Linear layers' packed weights (``weight()``, ``bias()``)."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for module in model.modules():
        packed = getattr(module, "packed", None)
        if packed is not None and hasattr(packed, "nbytes"):
            total += int(packed.nbytes)
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            bias = module.bias()
            total += module.weight().numel() + (bias.numel() * bias.element_size() if bias is not None else 0)
    return total


def cold(name: str, model_dir: Path, dcz: Path, threads: int) -> dict[str, Any]:
    """Run in a fresh process: load time, first-call latency per length and the RSS each adds.

    glibc's mmap threshold is pinned (as the CLI does, :mod:`deepcompress.malloc`) so that memory
    freed while loading goes back to the OS and the RSS is what the model keeps."""
    pin_mmap_threshold()
    set_threads(threads)
    # every library the three models use is imported before the baseline RSS, so each figure is the
    # model's own memory: transformers' BERT code, torch's dynamic quantization, deepcompress's runtime
    import deepcompress.runtime  # noqa: F401
    import torch.ao.nn.quantized.dynamic  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401

    code = {}
    if name == "deepcompress_sparse":
        # the file's entropy decoders are numba functions: loading their compiled code (and LLVM) is a
        # one-time cost of the library, not of this model; it is measured apart, on a tiny file first
        before = rss_bytes()
        load_compressed(ROOT / "experiments/results/lenet300_mnist.dcz")
        code = {"rss_decoder_code_bytes": rss_bytes() - before}
    base = rss_bytes()
    start = time.perf_counter()
    model, files = build(name, model_dir, dcz)
    load_s = time.perf_counter() - start
    loaded = rss_bytes()
    first = {}
    for length in LENGTHS:
        batch = inputs_of(files, length)
        start = time.perf_counter()
        embed(model, batch)
        first[str(length)] = 1000 * (time.perf_counter() - start)
    return {"load_s": load_s, "first_call_ms": first, "weight_bytes": weight_bytes(model), "rss_model_bytes": loaded - base,
            "rss_after_first_calls_bytes": rss_bytes() - base, **code}


def warm(models: dict[str, tuple[torch.nn.Module, dict[str, bytes]]], repeats: int) -> dict[str, Any]:
    """Interleaved batch-1 latency of every model at every length; medians of ``repeats`` rounds."""
    out: dict[str, Any] = {}
    for length in LENGTHS:
        calls: dict[str, Callable[[], torch.Tensor]] = {}
        for name, (model, files) in models.items():
            batch = inputs_of(files, length)
            calls[name] = lambda model=model, batch=batch: embed(model, batch)
        vectors = {name: call() for name, call in calls.items()}  # also warms every path up
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - start))
        reference = vectors["dense_fp32"]
        out[str(length)] = {
            name: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t),
                   "cosine_to_dense": float((vectors[name] * reference).sum())}
            for name, t in times.items()
        }
        base = out[str(length)]["dense_fp32"]["median_ms"]
        for row in out[str(length)].values():
            row["speedup_vs_dense"] = base / row["median_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcz", default=str(ROOT / "experiments/results/minilm.dcz"))
    parser.add_argument("--model-dir", default=str(ROOT / "build/minilm/all-MiniLM-L6-v2"),
                        help="the extracted model (experiments/minilm.py extracts it)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sentence.json"))
    parser.add_argument("--cold", choices=MODELS, help=argparse.SUPPRESS)  # the child process's mode
    args = parser.parse_args()
    model_dir, dcz = Path(args.model_dir), Path(args.dcz)
    if args.cold:
        print(json.dumps(cold(args.cold, model_dir, dcz, args.threads)))
        return
    threads = set_threads(args.threads)
    load_before = os.getloadavg()[0]
    cold_rows = {}
    for name in MODELS:
        child = subprocess.run([sys.executable, __file__, "--cold", name, "--dcz", str(dcz), "--model-dir", str(model_dir),
                                "--threads", str(args.threads)], check=True, capture_output=True, text=True)
        cold_rows[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(name, "cold", cold_rows[name], flush=True)
    models = {name: build(name, model_dir, dcz) for name in MODELS}
    results = {
        "machine": machine_info(threads),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "files": {"dense_fp32": (model_dir / "model.safetensors").stat().st_size, "deepcompress": dcz.stat().st_size},
        "lengths_tokens": list(LENGTHS),
        "cold": cold_rows,
        "warm": warm(models, args.repeats),
        "repeats": args.repeats,
        "command": "python " + " ".join(sys.argv),
    }
    for length, rows in results["warm"].items():
        print(length, "tokens:", {n: f"{r['median_ms']:.2f} ms" for n, r in rows.items()})
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
