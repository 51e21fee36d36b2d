"""The ``deepcompress`` command line: parses arguments into config objects and calls the API.

Exit codes: 0 success, 2 usage error (bad arguments or configuration), 1 any other failure. Errors are
printed to stderr as one message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import os

from deepcompress.malloc import pin_mmap_threshold
from deepcompress.errors import ConfigError, DeepCompressError

USAGE_ERRORS = (ConfigError,)
TRAINING_COMMANDS = ("train", "compress", "sensitivity")


def restart_with_passive_wait() -> None:
    """Run this command again with ``OMP_WAIT_POLICY=PASSIVE``.

    torch's OpenMP threads spin while waiting by default; on a machine shared with other busy processes
    (CI runners, the 2-core boxes we benchmark on) that spinning made training and pruning 5-10x slower,
    while passive waiting costs nothing measurable on an idle machine. OpenMP reads the setting once,
    when torch loads it, which is before any code of ours runs; so the training commands set it and
    start over (the user's own setting wins), and importing the library changes no process setting.
    """
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.execv(sys.executable, [sys.executable, "-m", "deepcompress.cli", *sys.argv[1:]])


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist",
                        help="mnist, fashion, imagefolder:DIR or pkg.mod:loaders / file.py:loaders (default: mnist)")
    parser.add_argument("--data-dir", default=None, help="directory of IDX files (else DEEPCOMPRESS_DATA_DIR, else the packaged sources)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-code", action="store_true",
                        help="run the model factory a file's architecture record names (user code) to rebuild it")


def cmd_train(args: argparse.Namespace) -> int:
    from deepcompress.checkpoint import save_checkpoint
    from deepcompress.datasets import resolve_dataset
    from deepcompress.pipeline import Runner
    from deepcompress.resume import RunState
    from deepcompress.sources import build_model_ref
    from deepcompress.perf.machine import cpu_model
    from deepcompress.train import TrainConfig, Trainer, evaluate, pick_device

    model, record = build_model_ref(args.model, parse_json_object(args.model_args, "--model-args"), Path.cwd())
    cfg = TrainConfig(
        epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size,
        weight_decay=args.weight_decay, augment=not args.no_augment, seed=args.seed, workers=args.workers,
    )
    train, test = resolve_dataset(args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                                  channels=args.channels, train_limit=args.limit)
    out = Path(args.out)
    state = RunState(out, {"command": "train", "model": args.model, "model_args": args.model_args, "dataset": args.dataset,
                           "image_size": args.image_size, "channels": args.channels, "limit": args.limit, "train": cfg.to_dict()})
    if state.resumed:
        print(f"resuming from {state.dir}", file=sys.stderr)
        model.load_state_dict(state.weights())

    def make_trainer() -> Trainer:
        return Trainer(model, train, cfg, dataset=args.dataset, device=args.device, progress=not args.quiet, description=args.model)

    Runner(state, None, print).epochs(model, "train", make_trainer, cfg.epochs)
    seconds = state.get("train", {}).get("seconds", 0.0)
    result = evaluate(model, test, device=args.device)
    metadata = {
        "model": args.model, "arch": record.relative_to(Path.cwd(), out.parent).to_dict(), "dataset": args.dataset, "seed": args.seed, "train": cfg.to_dict(),
        "image_size": args.image_size, "channels": args.channels,
        "test_accuracy": result["accuracy"], "test_error": result["error"], "train_seconds": round(seconds, 1),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "device": str(pick_device(args.device))},
        "command": "deepcompress " + shlex.join(sys.argv[1:]),
    }
    save_checkpoint(model.cpu(), out, metadata)
    state.finish()
    print(f"{args.model} on {args.dataset}: test accuracy {100 * result['accuracy']:.2f}% "
          f"(error {100 * result['error']:.2f}%), trained in {seconds:.0f} s -> {out}")
    return 0


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object given on the command line (``--model-args '{"num_classes": 10}'``)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def load_any_model(path: str, runtime: str = "dense", trust_code: bool = False) -> tuple[Any, dict[str, Any]]:
    """A model from a checkpoint (``.safetensors``) or a compressed file (anything else); user code a
    file's architecture record names runs only with ``trust_code``."""
    from deepcompress.checkpoint import load_checkpoint

    if path.endswith(".safetensors"):
        return load_checkpoint(path, trust_code=trust_code)
    from deepcompress.loading import load_with_metadata

    return load_with_metadata(path, runtime=runtime, trust_code=trust_code)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepcompress.datasets import resolve_dataset
    from deepcompress.train import evaluate

    model, metadata = load_any_model(args.file, runtime=args.runtime, trust_code=args.trust_code)
    if metadata.get("dataset") not in (None, args.dataset):
        print(f"warning: {args.file} was trained on {metadata['dataset']!r}, evaluating on {args.dataset!r}", file=sys.stderr)
    _, test = resolve_dataset(args.dataset, data_dir=args.data_dir)
    result = evaluate(model, test, device=args.device)
    result = {key: result[key] for key in ("accuracy", "error", "n")}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.file}: accuracy {100 * result['accuracy']:.2f}%, error {100 * result['error']:.2f}% on {result['n']} {args.dataset} test images")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from deepcompress.config import load_config
    from deepcompress.pipeline import compress_config, write_report
    from deepcompress.report import format_table

    cfg = load_config(args.config)
    if args.device:
        cfg = replace(cfg, device=args.device)
    out = Path(args.out)
    result = compress_config(cfg, out, data_dir=args.data_dir, progress=not args.quiet)
    report_path = write_report(result, out)
    if args.json:
        print(json.dumps(result.to_dict(), default=float))
    else:
        print(format_table(result.report))
        print(f"report: {report_path}")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from deepcompress.checkpoint import save_checkpoint
    from deepcompress.runtime.dense import to_dense_module
    from deepcompress.format import load_compressed

    compressed = load_compressed(args.file)
    metadata = {
        "model": compressed.model_name,
        "decompressed_from": Path(args.file).name,
        **{k: v for k, v in compressed.metadata.items() if k in ("dataset", "test_accuracy")},
    }
    if compressed.arch is not None:
        metadata["arch"] = compressed.arch
    model = to_dense_module(compressed, trust_code=args.trust_code, base_dir=Path(args.file).resolve().parent)
    save_checkpoint(model, args.out, metadata)
    print(f"{args.file} -> {args.out} (dense {compressed.model_name}, weights bit-identical to the quantized model)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from deepcompress.format.inspect import inspect_file
    from deepcompress.report import format_table

    report = inspect_file(args.file)
    print(json.dumps(report, default=float) if args.json else format_table(report))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from deepcompress import sentences

    texts = list(args.sentences) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    vectors = sentences.encode(args.file, texts, runtime=args.runtime)
    for text, vector in zip(texts, vectors.tolist()):
        print(json.dumps({"sentence": text, "embedding": [round(v, 6) for v in vector]}))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from deepcompress.checkpoint import load_checkpoint
    from deepcompress.data import check_dataset_name, load_split
    from deepcompress.prune.sensitivity import format_sensitivity, plot_sensitivity, sensitivity_scan
    from deepcompress.train import evaluate

    check_dataset_name(args.dataset)
    model, _ = load_checkpoint(args.checkpoint)
    test = load_split(args.dataset, "test", args.data_dir).tensors(args.limit)
    result = sensitivity_scan(model, lambda m: evaluate(m, test, device=args.device)["accuracy"])
    plot_sensitivity(result, args.out)
    print(json.dumps(result, default=float) if args.json else format_sensitivity(result))
    print(f"plot: {args.out}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "fc":
        from deepcompress.perf.fc import run_fc_benchmark

        result = run_fc_benchmark(quick=args.quick)
    elif args.what == "inference":
        from deepcompress.perf.networks import run_inference_benchmark

        result = run_inference_benchmark(Path.cwd(), quick=args.quick)
    else:
        from deepcompress.perf.scale import run_scale_benchmark

        result = run_scale_benchmark(model=args.model, quick=args.quick)
    print(json.dumps(result, default=float, indent=None if args.json else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepcompress", description="Deep Compression: prune, quantize, entropy-code into a small file.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a reference model and save a safetensors checkpoint (resumes if interrupted)")
    p.add_argument("model", help="a model reference: lenet300, lenet5, alexnet, vgg16, path/file.py:build, pkg.mod:build, ...")
    p.add_argument("--model-args", default="{}", help="JSON keyword arguments of the model factory")
    add_data_args(p)
    p.add_argument("--image-size", type=int, default=None, help="resize images to this size (square)")
    p.add_argument("--channels", type=int, default=None, help="1 or 3 (grey images are replicated)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for Dataset inputs")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--no-augment", action="store_true", help="no random shifts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test-set accuracy of a checkpoint or compressed file")
    p.add_argument("file")
    add_data_args(p)
    p.add_argument("--runtime", default="dense", help="for compressed files: dense (decode) or sparse")
    p.add_argument("--json", action="store_true")
    add_trust_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compress", help="prune, quantize and entropy-code a model as a TOML config says")
    p.add_argument("--config", required=True, help="pipeline config (TOML)")
    p.add_argument("--out", required=True, help="compressed file to write (.dcz)")
    p.add_argument("--data-dir", default=None, help="directory of IDX files")
    p.add_argument("--device", default=None, help="cpu or cuda (overrides the config's device)")
    p.add_argument("--json", action="store_true", help="print the stages and report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decode a compressed file into a dense safetensors checkpoint")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    add_trust_arg(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("inspect", help="the paper's per-layer table (Tables 2-5) from a file's real bytes")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("embed", help="sentence embeddings from a file that carries its tokenizer (JSON lines)")
    p.add_argument("file")
    p.add_argument("sentences", nargs="*", help="sentences to embed (default: one per line on stdin)")
    p.add_argument("--runtime", default="dense", choices=["dense", "sparse"])
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("sensitivity", help="accuracy vs fraction pruned, per layer (Han 2015 Fig. 6)")
    p.add_argument("checkpoint")
    add_data_args(p)
    p.add_argument("--out", required=True, help="PNG plot to write")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("bench", help="benchmarks: fc (paper Table 8 layers), inference (fc layers and whole "
                       "networks from the compressed form; run in the repository) or scale (AlexNet/VGG-16 pipeline)")
    p.add_argument("what", choices=["fc", "inference", "scale"])
    p.add_argument("--model", default="vgg16", help="for scale: alexnet or vgg16")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    p.add_argument("--json", action="store_true", help="compact JSON on one line")
    p.set_defaults(func=cmd_bench)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command in TRAINING_COMMANDS and "OMP_WAIT_POLICY" not in os.environ:
        restart_with_passive_wait()
    pin_mmap_threshold()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USAGE_ERRORS as exc:
        if args.debug:
            raise
        print(f"deepcompress: error: {exc}", file=sys.stderr)
        return 2
    except (DeepCompressError, OSError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        print(f"deepcompress: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepcompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
