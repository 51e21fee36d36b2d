"""Retraining without labels: a student reproduces a dense teacher's pooled sentence embeddings.

Deep Compression retrains after pruning (section 2) and fine-tunes the shared centroids (section 3.3)
on the task's labelled data. A pretrained sentence encoder usually comes without any; what it must
keep is its output, so the objective here is the teacher's own embedding of each sentence
(knowledge distillation, Hinton et al. 2015, applied to the pooled embedding): the student -- the
model being pruned and quantized -- is trained to give the same mean-pooled embedding as the dense
teacher, by cosine distance (direction only, what similarity search uses) or mean squared error.

Everything plugs into :func:`deepcompress.compress` through its hooks: :func:`distill_loss` is its
``loss_fn``, :func:`distill_metric` its ``metric``, and :func:`distill_batches` builds the
``(inputs, targets)`` batches (the teacher's embeddings are computed once, up front, as targets).
:func:`embedding_quality` compares two sets of embeddings the way a user of them would notice.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepcompress.choices import Choice
from deepcompress.errors import ConfigError


class Objective(Choice):
    """How the student's embedding is compared with the teacher's: ``cosine`` (1 - cosine similarity,
    blind to the embedding's length, as a normalised sentence embedding is used) or ``mse``."""

    COSINE = "cosine"
    MSE = "mse"
    TOKENS = "tokens"
    """The pooled cosine distance plus the mean cosine distance of every real token's last hidden
    state to the teacher's (needs ``token_states`` targets, see :func:`distill_batches`): a sentence
    then gives one training signal per token instead of one in all, the intermediate-representation
    matching of TinyBERT-style distillation applied to the output layer."""


def hidden_states(outputs: Any) -> torch.Tensor:
    """The token states of a Hugging Face encoder's outputs (``last_hidden_state``), or the first
    element of a tuple, or the tensor itself."""
    state = getattr(outputs, "last_hidden_state", None)
    if isinstance(state, torch.Tensor):
        return state
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    if isinstance(outputs, torch.Tensor):
        return outputs
    raise TypeError(f"expected encoder outputs with .last_hidden_state, a tuple or a tensor, got {type(outputs).__name__}")


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the real (unpadded) tokens: sentence-transformers' mean pooling."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def distill_loss(objective: str | Objective = Objective.COSINE, *,
                 pairwise: float = 0.0) -> Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]:
    """``loss_fn(outputs, targets)`` for :func:`deepcompress.compress`: the student's mean-pooled
    embedding against ``targets["embedding"]`` (the teacher's), pooled over ``targets["attention_mask"]``.

    ``pairwise`` > 0 adds that many times the mean squared difference between the student's and the
    teacher's cosine-similarity matrices over the sentences of a batch (relational distillation, Park
    et al. 2019): what a similarity search ranks by, and what the Spearman figure of
    :func:`embedding_quality` measures, rather than each embedding alone.
    """
    chosen = Objective.parse(objective, "objective")
    if not (isinstance(pairwise, (int, float)) and not isinstance(pairwise, bool) and pairwise >= 0 and pairwise < float("inf")):
        raise ConfigError(f"pairwise: expected a finite number >= 0, got {pairwise!r}")

    def embedding_loss(states: torch.Tensor, student: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        if chosen is Objective.MSE:
            return F.mse_loss(student, targets["embedding"])
        pooled = (1.0 - F.cosine_similarity(student, targets["embedding"], dim=-1)).mean()
        if chosen is Objective.COSINE:
            return pooled
        if "token_states" not in targets:
            raise ValueError("the 'tokens' objective needs the teacher's token states: "
                             "build the data with distill_batches(..., token_states=teacher_token_states(...))")
        mask = targets["attention_mask"].to(states.dtype)
        per_token = 1.0 - F.cosine_similarity(states, targets["token_states"], dim=-1)
        return pooled + (per_token * mask).sum() / mask.sum().clamp(min=1.0)

    def loss(outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        states = hidden_states(outputs)
        student = mean_pool(states, targets["attention_mask"])
        total = embedding_loss(states, student, targets)
        if pairwise:
            s, t = F.normalize(student, dim=-1), F.normalize(targets["embedding"], dim=-1)
            total = total + pairwise * F.mse_loss(s @ s.T, t @ t.T)
        return total

    loss.__name__ = f"distill_{chosen.value}" + (f"_pairwise{pairwise:g}" if pairwise else "")
    return loss


def distill_metric(outputs: Any, targets: dict[str, torch.Tensor]) -> float:
    """Mean cosine similarity of the student's pooled embeddings to the teacher's (higher is better):
    the ``metric`` the pipeline reports at every stage."""
    student = mean_pool(hidden_states(outputs), targets["attention_mask"])
    return float(F.cosine_similarity(student, targets["embedding"], dim=-1).mean())


class _Batches(Dataset):
    """Pre-built batches, one per item (a DataLoader with ``batch_size=None`` yields them as they are)."""

    def __init__(self, batches: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return self.batches[index]


def token_batches(encode: Callable[[Sequence[str]], dict[str, torch.Tensor]], sentences: Sequence[str],
                  batch_size: int, *, seed: int | None = 0) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """Sentences grouped into batches of similar length, each padded only to its own longest one.

    Padding every sentence to the longest would multiply the retraining cost on short text (a CPU
    budget matter); sorting by length first keeps each batch tight. ``encode(list of sentences)``
    returns the model's inputs (``input_ids``, ``attention_mask``, ...). The batches' order is then
    shuffled once with ``seed`` (``None``: kept sorted), so training sees lengths mixed; the result
    is the same on every call. Returns ``(sentence indices, inputs)`` per batch.
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    lengths = [int(n) for n in encode(list(sentences))["attention_mask"].sum(dim=1)]
    order = sorted(range(len(sentences)), key=lambda i: (lengths[i], i))
    groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if seed is not None:
        random.Random(seed).shuffle(groups)
    return [(group, encode([sentences[i] for i in group])) for group in groups]


@torch.no_grad()
def pooled_embeddings(model: nn.Module, batches: Sequence[tuple[list[int], dict[str, torch.Tensor]]],
                      count: int) -> torch.Tensor:
    """Mean-pooled embeddings of ``model`` (in eval mode) for the sentences of ``batches``, in
    sentence order: a ``(count, dim)`` float32 tensor."""
    model.eval()
    out: torch.Tensor | None = None
    for indices, inputs in batches:
        pooled = mean_pool(hidden_states(model(**inputs)), inputs["attention_mask"]).float()
        if out is None:
            out = torch.zeros(count, pooled.shape[-1])
        out[indices] = pooled
    if out is None:
        raise ValueError("expected at least one batch of sentences, got none")
    return out


@torch.no_grad()
def teacher_token_states(model: nn.Module, batches: Sequence[tuple[list[int], dict[str, torch.Tensor]]]) -> list[torch.Tensor]:
    """The last hidden state of every token of ``model`` (in eval mode), one float32 ``(batch, tokens,
    dim)`` tensor per batch of ``batches``: the targets of the ``tokens`` objective."""
    model.eval()
    return [hidden_states(model(**inputs)).float() for _, inputs in batches]


def distill_batches(batches: Sequence[tuple[list[int], dict[str, torch.Tensor]]],
                    targets: torch.Tensor, token_states: Sequence[torch.Tensor] | None = None) -> DataLoader:
    """The ``(inputs, targets)`` data for :func:`deepcompress.compress`: each batch's inputs and, as
    targets, the teacher's embeddings of its sentences (``targets[indices]``) and its attention mask,
    and, given ``token_states`` (:func:`teacher_token_states` of the same batches), each batch's
    teacher token states for the ``tokens`` objective.

    A DataLoader over fixed batches: every epoch sees the same batches in the same order, so a
    resumed run trains exactly as an uninterrupted one.
    """
    if token_states is not None and len(token_states) != len(batches):
        raise ValueError(f"expected one token-state tensor per batch ({len(batches)}), got {len(token_states)}")
    built = [(inputs, {"embedding": targets[indices], "attention_mask": inputs["attention_mask"]})
             for indices, inputs in batches]
    for (_, wanted), states in zip(built, token_states or ()):
        wanted["token_states"] = states
    return DataLoader(_Batches(built), batch_size=None, shuffle=False)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` (1-based), ties given their average rank, as Spearman's rho needs."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0  # average of the 1-based ranks first+1 .. first+counts
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(average, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays (Pearson correlation of their ranks)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 0.0


def embedding_quality(student: np.ndarray | torch.Tensor, teacher: np.ndarray | torch.Tensor, *,
                      k: int = 10) -> dict[str, float]:
    """How closely ``student`` embeddings follow ``teacher`` ones for the same ``n`` sentences.

    ``mean_cosine``: mean cosine similarity of each sentence's two embeddings. ``spearman``: Spearman
    correlation between the two models' pairwise cosine similarities (the ``n (n - 1) / 2`` pairs above
    the diagonal), i.e. whether they rank sentence pairs alike. ``top{k}_overlap``: for each sentence,
    the fraction of its ``k`` nearest neighbours (cosine, itself excluded) that both models agree on.
    """
    s = F.normalize(torch.as_tensor(np.asarray(student), dtype=torch.float64), dim=1)
    t = F.normalize(torch.as_tensor(np.asarray(teacher), dtype=torch.float64), dim=1)
    if s.shape != t.shape or s.dim() != 2:
        raise ValueError(f"expected two (n, dim) arrays of the same shape, got {tuple(s.shape)} and {tuple(t.shape)}")
    n = s.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"expected 1 <= k < n = {n}, got k = {k}")
    sim_s, sim_t = s @ s.T, t @ t.T
    upper = torch.triu_indices(n, n, offset=1)
    rho = spearman(sim_s[upper[0], upper[1]].numpy(), sim_t[upper[0], upper[1]].numpy())
    eye = torch.eye(n, dtype=torch.bool)
    near_s = sim_s.masked_fill(eye, -2.0).topk(k, dim=1).indices
    near_t = sim_t.masked_fill(eye, -2.0).topk(k, dim=1).indices
    agree = (near_s.unsqueeze(2) == near_t.unsqueeze(1)).any(dim=2).sum(dim=1).double() / k
    return {"mean_cosine": float((s * t).sum(dim=1).mean()), "spearman": rho, f"top{k}_overlap": float(agree.mean())}


__all__ = [
    "Objective",
    "distill_batches",
    "distill_loss",
    "distill_metric",
    "embedding_quality",
    "hidden_states",
    "mean_pool",
    "pooled_embeddings",
    "spearman",
    "teacher_token_states",
    "token_batches",
]
