"""Weight and index distributions of a compressed layer (paper Figs. 4-5).

From the committed LeNet-300-100 file and its reference: the layer's dense reference weights; the
weights the file stores (after pruning, retraining and weight sharing) with the centroids marked; and
the distributions of the cluster indices and of the relative-index gap symbols, each with the Huffman
code length of every symbol. A single sweep point (the layer), so it shares the other scripts' arguments
and progress (see common.Sweep). Run: ``python experiments/fig_distributions.py``.
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from common import RESULTS, Sweep, parse_args, reference

from deepcompress.coding import encode_positions
from deepcompress.coding.huffman import code_lengths
from deepcompress.format import load_compressed


def symbol_stats(symbols: np.ndarray, alphabet: int) -> dict[str, list[int]]:
    counts = np.bincount(symbols, minlength=alphabet)
    return {"counts": counts.tolist(), "huffman_bits": code_lengths(counts).tolist()}


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    sweep = Sweep(args, "distributions_lenet300_fc2")
    layer_name = "fc2"
    layer = load_compressed(RESULTS / "lenet300_mnist.dcz").layer(layer_name)
    dense = reference("lenet300").get_submodule(layer_name).weight.detach().numpy().ravel()
    shared = layer.codebook[layer.codes]

    def compute(_: str) -> dict[str, Any]:
        gap_symbols = encode_positions(layer.positions, layer.index_bits).astype(np.int64)
        return {"cluster_index": symbol_stats(layer.codes, layer.codebook.size), "gap_symbols": symbol_stats(gap_symbols, 2**layer.index_bits)}

    stats = sweep.run([layer_name], compute)[layer_name]
    indices, gaps = stats["cluster_index"], stats["gap_symbols"]

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    bins = np.linspace(dense.min(), dense.max(), 120)
    axes[0, 0].hist(dense, bins=bins, color="tab:blue")
    axes[0, 0].set_title(f"{layer_name}: reference weights ({dense.size:,})")
    axes[0, 1].hist(shared, bins=bins, color="tab:green")
    for c in layer.codebook:
        axes[0, 1].axvline(c, color="tab:red", lw=0.8)
    axes[0, 1].set_title(f"after pruning + quantization: {layer.nnz:,} weights, {layer.codebook.size} centroids (red)")
    for ax, stats, title in ((axes[1, 0], indices, "cluster index"), (axes[1, 1], gaps, f"relative index ({layer.index_bits}-bit gap symbol)")):
        ax.bar(range(len(stats["counts"])), stats["counts"], color="tab:gray")
        twin = ax.twinx()
        present = np.array(stats["counts"]) > 0  # absent symbols have no code
        twin.plot(np.flatnonzero(present), np.array(stats["huffman_bits"])[present], "o-", color="tab:orange")
        twin.set_ylabel("Huffman code length (bits)")
        ax.set_xlabel(title)
        ax.set_ylabel("count")
    fig.suptitle("LeNet-300-100 " + layer_name + " (paper Figs. 4-5)")
    fig.tight_layout()
    fig.savefig(args.out / "distributions_lenet300_fc2.png", dpi=110)
    sweep.finish(
        args.out / "distributions_lenet300_fc2.json",
        {"layer": layer_name, "weights": int(dense.size), "kept": layer.nnz, "codebook": layer.codebook.tolist(), "cluster_index": indices, "gap_symbols": gaps},
        started,
    )


if __name__ == "__main__":
    main()
