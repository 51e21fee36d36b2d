"""The distill objective: a tiny BERT (random weights, tiny vocabulary, a tokenizer built here) is
pruned, quantized and fine-tuned to reproduce its dense teacher's pooled embeddings, written to a file
with its tokenizer, and read back dense and on the sparse runtime, matching the quantized model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import deepcompress as dc
from deepcompress import sentences
from deepcompress.distill import (
    Objective,
    distill_batches,
    distill_loss,
    distill_metric,
    embedding_quality,
    mean_pool,
    pooled_embeddings,
    spearman,
    teacher_token_states,
    token_batches,
)
from deepcompress.errors import ConfigError

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ("the a of to and is in it that for on with as be this by an are from or at not file data "
         "value list name read write return open close line text string number object class").split()
SENTENCES = [
    "Return the value of the name.", "Open the file and read a line.", "Write the data to the file.",
    "This is a list of text.", "Close the file object.", "The number is not a string.",
    "Read the text from an object.", "Return a list of names and values.", "A class is an object.",
    "Write a line of text to it.", "The data are in the list.", "Return the number of lines.",
]


def tiny_files() -> dict[str, bytes]:
    """A WordLevel tokenizer over ``WORDS`` with BERT's special tokens, and mean pooling + Normalize."""
    from tokenizers import models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    pooling = {"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    modules = [{"idx": 0, "type": "sentence_transformers.models.Transformer"},
               {"idx": 2, "type": "sentence_transformers.models.Normalize"}]
    return {"tokenizer.json": tok.to_str().encode(), "1_Pooling/config.json": json.dumps(pooling).encode(),
            "modules.json": json.dumps(modules).encode(), "sentence_bert_config.json": b'{"max_seq_length": 24}'}


def tiny_bert(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config).eval()


def tiny_config() -> dc.PipelineConfig:
    return dc.PipelineConfig(
        seed=0, dataset=None,
        train=dc.TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, batch_size=4, augment=False),
        prune=dc.PruneConfig(method="sparsity", sparsity={"embeddings.word_embeddings": 0.7, "*": 0.5}, rounds=1,
                             epochs_per_round=1, lr_factor=1.0, weight_decay=0.0, adjust_dropout=False),
        quantize=dc.QuantizeConfig(bits=4, epochs=1, lr=1e-3),
        encode=dc.EncodeConfig(extras_dtype="float16"),
    )


def test_tiny_bert_distilled_to_a_file_with_its_tokenizer(tmp_path: Path) -> None:
    files = tiny_files()
    teacher = tiny_bert()
    tokenize = sentences.SentenceTokenizer.from_files(files)
    batches = token_batches(tokenize, SENTENCES, 4)
    data = distill_batches(batches, pooled_embeddings(teacher, batches, len(SENTENCES)))
    student = copy.deepcopy(teacher)
    out = tmp_path / "bert.dcz"
    result = dc.compress(student, tiny_config(), out=out, train=data, test=data, loss_fn=distill_loss("cosine"),
                         metric=distill_metric, progress=False, log=lambda _: None)
    assert [s["stage"] for s in result.to_dict()["stages"]] == ["reference", "prune", "quantize", "fine-tune", "file"]
    assert result.stages[0].accuracy == pytest.approx(1.0)  # the student starts as the teacher

    size = sentences.attach(out, files=files)
    assert size == out.stat().st_size
    cm = dc.load_compressed(out)
    assert cm.attachments == files  # the tokenizer and pooling files round-trip byte for byte
    kinds = {layer.name: layer.kind for layer in cm.layers}
    assert kinds["embeddings.word_embeddings"] == kinds["embeddings.position_embeddings"] == "embedding"
    assert kinds["embeddings.token_type_embeddings"] == "embedding"
    assert sum(kind == "linear" for kind in kinds.values()) == 2 * 6 + 1  # Q K V O, 2 FFN per layer; the pooler
    assert {a.dtype for a in cm.extras.values()} == {np.dtype("float32")}  # read back widened from float16
    assert dc.inspect_file(out)["attachments_bytes"] > 0

    student.eval()
    with torch.no_grad():
        inputs = tokenize(SENTENCES)
        expected = torch.nn.functional.normalize(mean_pool(student(**inputs).last_hidden_state, inputs["attention_mask"]))
    dense = sentences.load(out)
    assert isinstance(dense.model, transformers.BertModel)
    torch.testing.assert_close(torch.from_numpy(dense.encode(SENTENCES, batch_size=5)), expected, rtol=0, atol=1e-6)
    sparse = sentences.load(out, runtime="sparse")
    assert isinstance(sparse.model.embeddings.word_embeddings, dc.runtime.SparseCodebookEmbedding)
    assert isinstance(sparse.model.encoder.layer[0].attention.self.query, dc.runtime.SparseCodebookLinear)
    torch.testing.assert_close(torch.from_numpy(sentences.encode(sparse, SENTENCES)), expected, rtol=1e-4, atol=1e-5)

    loaded = dc.load(out)  # the plain Hugging Face model from the file alone
    assert isinstance(loaded, transformers.BertModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).last_hidden_state, student(**inputs).last_hidden_state, rtol=0, atol=1e-6)


def test_distill_loss_is_zero_at_the_teacher_and_objectives_differ() -> None:
    states = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    target = mean_pool(states, mask)
    assert torch.equal(target[2], states[2, 0])
    outputs = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=states)
    targets = {"embedding": target, "attention_mask": mask}
    for objective in ("cosine", "mse"):
        assert float(distill_loss(objective)(outputs, targets)) == pytest.approx(0.0, abs=1e-6)
    doubled = {"embedding": 2 * target, "attention_mask": mask}
    assert float(distill_loss(Objective.COSINE)(outputs, doubled)) == pytest.approx(0.0, abs=1e-6)  # blind to length
    assert float(distill_loss("mse")(outputs, doubled)) == pytest.approx(float((target**2).mean()), rel=1e-5)
    assert distill_metric(outputs, targets) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"objective: expected one of \['cosine', 'mse', 'tokens'\], got 'kl'"):
        distill_loss("kl")


def test_tokens_objective_adds_every_real_tokens_distance_and_ignores_padding() -> None:
    torch.manual_seed(0)
    states = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    outputs = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=states)
    targets = {"embedding": mean_pool(states, mask), "attention_mask": mask, "token_states": states.clone()}
    tokens = distill_loss("tokens")
    assert float(tokens(outputs, targets)) == pytest.approx(0.0, abs=1e-6)
    padded_only = dict(targets, token_states=targets["token_states"].clone())
    padded_only["token_states"][0, 3] = -states[0, 3]  # a padding position: must not count
    assert float(tokens(outputs, padded_only)) == pytest.approx(0.0, abs=1e-6)
    flipped = dict(targets, token_states=targets["token_states"].clone())
    flipped["token_states"][1, 0] = -states[1, 0]  # one real token of seven pointing the other way: distance 2
    assert float(tokens(outputs, flipped)) == pytest.approx(2.0 / 7, rel=1e-5)
    with pytest.raises(ValueError, match="needs the teacher's token states"):
        tokens(outputs, {"embedding": targets["embedding"], "attention_mask": mask})


def test_token_state_targets_travel_with_their_batch() -> None:
    teacher = tiny_bert()
    tokenize = sentences.SentenceTokenizer.from_files(tiny_files())
    batches = token_batches(tokenize, SENTENCES, 5)
    states = teacher_token_states(teacher, batches)
    data = list(distill_batches(batches, pooled_embeddings(teacher, batches, len(SENTENCES)), states))
    for (inputs, wanted), expected in zip(data, states):
        assert wanted["token_states"].shape == (*inputs["input_ids"].shape, 16)
        assert torch.equal(wanted["token_states"], expected)
        assert float(distill_loss("tokens")(teacher(**inputs), wanted)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="one token-state tensor per batch"):
        distill_batches(batches, pooled_embeddings(teacher, batches, len(SENTENCES)), states[:1])


def test_token_batches_pad_each_batch_to_its_own_longest_and_are_deterministic() -> None:
    tokenize = sentences.SentenceTokenizer.from_files(tiny_files())
    first = token_batches(tokenize, SENTENCES, 5, seed=3)
    again = token_batches(tokenize, SENTENCES, 5, seed=3)
    assert [ids for ids, _ in first] == [ids for ids, _ in again]
    assert sorted(i for ids, _ in first for i in ids) == list(range(len(SENTENCES)))
    for ids, inputs in first:
        assert inputs["attention_mask"].sum(dim=1).max() == inputs["input_ids"].shape[1]
    with pytest.raises(ValueError, match="expected batch_size >= 1, got 0"):
        token_batches(tokenize, SENTENCES, 0)


def test_embedding_quality_against_references() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(40, 8))
    perfect = embedding_quality(3 * teacher, teacher, k=5)
    assert perfect == pytest.approx({"mean_cosine": 1.0, "spearman": 1.0, "top5_overlap": 1.0})
    noisy = teacher + 0.3 * rng.normal(size=teacher.shape)
    quality = embedding_quality(noisy, teacher, k=5)
    assert 0.5 < quality["mean_cosine"] < 1.0 and 0.0 < quality["top5_overlap"] < 1.0
    a, b = rng.integers(0, 5, 200).astype(float), rng.normal(size=200)  # ties: average ranks
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    with pytest.raises(ValueError, match=r"expected 1 <= k < n = 40, got k = 40"):
        embedding_quality(teacher, teacher, k=40)


def test_pairwise_term_compares_the_batchs_similarity_matrices_only() -> None:
    torch.manual_seed(1)
    states = torch.randn(3, 4, 8)
    mask = torch.ones(3, 4, dtype=torch.long)
    outputs = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=states)
    pooled = mean_pool(states, mask)
    targets = {"embedding": pooled, "attention_mask": mask}
    relational = distill_loss("cosine", pairwise=10.0)
    assert float(relational(outputs, targets)) == pytest.approx(0.0, abs=1e-6)
    assert float(relational(outputs, dict(targets, embedding=3 * pooled))) == pytest.approx(0.0, abs=1e-6)  # lengths
    other = dict(targets, embedding=torch.randn(3, 8))
    s, t = torch.nn.functional.normalize(pooled, dim=-1), torch.nn.functional.normalize(other["embedding"], dim=-1)
    expected = float(distill_loss("cosine")(outputs, other)) + 10.0 * float(((s @ s.T - t @ t.T) ** 2).mean())
    assert float(relational(outputs, other)) == pytest.approx(expected, rel=1e-5)
    assert relational.__name__ == "distill_cosine_pairwise10"
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="pairwise: expected a finite number >= 0"):
            distill_loss("cosine", pairwise=bad)
