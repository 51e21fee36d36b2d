"""Masked retraining and centroid fine-tuning with DistributedDataParallel (docs/DISTRIBUTED.md).

Run (2 processes on one machine; gloo on CPU, nccl when CUDA is available):

    torchrun --standalone --nproc_per_node 2 experiments/ddp_retrain.py \
        --checkpoint experiments/results/lenet300_mnist_ref.safetensors --out lenet300.dcz

Plain ``python experiments/ddp_retrain.py ...`` runs the same steps in one process. Masks and k-means
are computed on rank 0 and broadcast (deepcompress.distributed); each optimizer step takes one global
batch of ``--batch-size`` images, split evenly over the ranks, so any world size follows the same
trajectory up to floating-point rounding (models with dropout excepted: each rank draws its own).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import nn

from deepcompress import PruneConfig, QuantizeConfig, export_compressed, save
from deepcompress.atomic import atomic_write_bytes
from deepcompress.checkpoint import load_checkpoint
from deepcompress.data import load_split
from deepcompress.distributed import is_distributed, prune_once_, quantize_once_
from deepcompress.prune.apply import keep_pruned_zero, mask_gradients_


def train(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_optimizer: Callable[[torch.optim.Optimizer], object] | None = None,
) -> nn.Module:
    """``steps`` SGD steps (momentum 0.9) of global batches drawn by ``seed``; DDP when distributed."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    if batch_size % world:
        raise ValueError(f"expected --batch-size divisible by the world size {world}, got {batch_size}")
    device = next(model.parameters()).device
    net = nn.parallel.DistributedDataParallel(model) if is_distributed() else model
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    if on_optimizer is not None:
        on_optimizer(optimizer)
    images, labels = data
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    per_rank = batch_size // world
    net.train()
    for step in range(steps):
        start = (step * batch_size) % max(1, len(images) - batch_size + 1)
        local = order[start + rank * per_rank : start + (rank + 1) * per_rank]
        loss = F.cross_entropy(net(images[local].to(device)), labels[local].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the ranks' gradients: the gradient of the global batch's mean loss
        optimizer.step()
    return model


def prune_and_retrain(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace) -> nn.Module:
    """Prune on rank 0 (masks broadcast), then retrain the survivors with pruned weights held at 0."""
    prune_once_(model, PruneConfig(method="sparsity", sparsity=args.sparsity))
    mask_gradients_(model)
    train(model, data, args.steps, args.batch_size, args.lr, args.seed, lambda opt: keep_pruned_zero(opt, model))
    # prune.apply has no public way to detach mask_gradients_'s hooks; they must go before quantize_,
    # which turns each weight Parameter into the codebook (same object), so the hook would mask it.
    for module in model.modules():
        handle = module.__dict__.pop("_deepcompress_grad_hook", None)
        if handle is not None:
            handle.remove()
    return model


def quantize_and_finetune(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace) -> nn.Module:
    """k-means on rank 0 (codebooks and codes broadcast), then fine-tune the shared centroids."""
    quantize_once_(model, QuantizeConfig(bits=args.bits))
    return train(model, data, args.steps, args.batch_size, args.lr, args.seed + 1)


def dump(model: nn.Module, directory: Path | None, stage: str) -> None:
    """Write this rank's state dict (safetensors) as ``<stage>_rank<r>.safetensors``."""
    if directory is None:
        return
    rank = dist.get_rank() if is_distributed() else 0
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / f"{stage}_rank{rank}.safetensors", safetensors_bytes(tensors))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="trained model (safetensors, from `deepcompress train`)")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion")
    parser.add_argument("--data-dir", default=None, help="directory of IDX files (default: the data cache)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images")
    parser.add_argument("--sparsity", type=float, default=0.92)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--index-bits", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="SGD steps of retraining and of fine-tuning")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, split over the ranks")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help=".dcz file to write (rank 0)")
    parser.add_argument("--states", type=Path, default=None, help="directory for per-rank state dumps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # set by torchrun
    device = torch.device("cpu")
    if launched:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        torch.manual_seed(args.seed)
        model, metadata = load_checkpoint(args.checkpoint)
        model.to(device)
        data = load_split(args.dataset, "train", args.data_dir).tensors(args.limit)
        prune_and_retrain(model, data, args)
        dump(model, args.states, "pruned")
        quantize_and_finetune(model, data, args)
        dump(model, args.states, "quantized")
        if args.out is not None and (not is_distributed() or dist.get_rank() == 0):
            size = save(export_compressed(model, metadata["model"], index_bits=args.index_bits), args.out)
            print(f"wrote {args.out} ({size} bytes)")
    finally:
        if is_distributed():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
