"""Sentence embeddings from one ``.dcz`` file: the encoder, its tokenizer and its pooling together.

A sentence-transformers model is a transformer plus files that say how to use it: ``tokenizer.json``
(and its config), ``1_Pooling/config.json`` (mean, CLS or max pooling), ``modules.json`` (whether the
embedding is normalised) and ``sentence_bert_config.json`` (the longest input). :func:`attach` stores
those files in a compressed file as named attachments (docs/FORMAT.md), counted in its bytes, so the
file alone turns sentences into embeddings::

    deepcompress.sentences.attach("minilm.dcz", "all-MiniLM-L6-v2/")    # once, after compress
    vectors = deepcompress.sentences.encode("minilm.dcz", ["A sentence.", "Another one."])

:func:`load` returns a :class:`SentenceModel` (the Hugging Face encoder, decoded dense or on the sparse
runtime, and its tokenizer); tokenization uses the ``tokenizers`` library (the hf extra).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepcompress.atomic import atomic_write_bytes
from deepcompress.compressed import CompressedModel
from deepcompress.distill import hidden_states, mean_pool
from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed, with_attachments

TOKENIZER = "tokenizer.json"
POOLING = "1_Pooling/config.json"
MODULES = "modules.json"
SENTENCE_CONFIG = "sentence_bert_config.json"
SENTENCE_FILES = (TOKENIZER, "tokenizer_config.json", "special_tokens_map.json", MODULES, SENTENCE_CONFIG, POOLING)
"""The files of a sentence-transformers directory that :func:`attach` stores (``tokenizer.json`` is
required, the others are stored when present); their relative paths are the attachment names."""
POOLING_MODES = ("mean", "cls", "max")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
DEFAULT_MAX_LENGTH = 512


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("sentence embeddings need the tokenizers package, which is not installed; "
                          "install the hf extra: pip install 'deepcompress[hf]'") from None
    return tokenizers


def sentence_files(model_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """The :data:`SENTENCE_FILES` present in a sentence-transformers directory, as attachments."""
    directory = Path(model_dir)
    if not (directory / TOKENIZER).is_file():
        raise ConfigError(f"expected a sentence-transformers directory with {TOKENIZER}, got {directory} without one; "
                          "save the tokenizer there (tokenizer.save_pretrained) first")
    return {name: (directory / name).read_bytes() for name in SENTENCE_FILES if (directory / name).is_file()}


def attach(path: str | os.PathLike[str], model_dir: str | os.PathLike[str] | None = None, *,
           files: Mapping[str, bytes] | None = None) -> int:
    """Store the tokenizer and pooling files in the compressed file ``path``; return its new size.

    Either ``model_dir`` (a sentence-transformers directory, see :func:`sentence_files`) or ``files``
    (attachment name -> bytes). The tensors are not re-encoded (only the header and attachments are
    rewritten, :func:`deepcompress.format.with_attachments`); the file is replaced atomically.
    """
    if (model_dir is None) == (files is None):
        raise ConfigError("attach: expected exactly one of model_dir or files")
    blobs = sentence_files(model_dir) if model_dir is not None else dict(files or {})
    if TOKENIZER not in blobs:
        raise ConfigError(f"attach: expected a {TOKENIZER!r} attachment, got only {sorted(blobs)}")
    data = with_attachments(Path(path).read_bytes(), blobs)
    atomic_write_bytes(path, data)
    return len(data)


def _json(files: Mapping[str, bytes], name: str, kind: type = dict) -> Any:
    """The attachment ``name`` parsed as JSON of type ``kind`` (an empty one when it is absent)."""
    if name not in files:
        return kind()
    try:
        value = json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"attachment {name!r}: expected JSON, got {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"attachment {name!r}: expected a JSON {'object' if kind is dict else 'array'}, "
                          f"got {type(value).__name__}")
    return value


class SentenceTokenizer:
    """Sentences -> the encoder's padded inputs (``input_ids``, ``attention_mask``, ``token_type_ids``),
    from a ``tokenizer.json`` (the ``tokenizers`` library), truncated to ``max_length`` tokens."""

    def __init__(self, tokenizer_json: bytes, max_length: int, pad_token: str = "[PAD]") -> None:
        if max_length < 2:
            raise ConfigError(f"max_length: expected at least 2 tokens, got {max_length}")
        tokenizer = _tokenizers().Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ConfigError(f"tokenizer: expected the padding token {pad_token!r} in its vocabulary, found none")
        self.tokenizer, self.max_length, self.pad_id = tokenizer, max_length, pad_id

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], max_length: int | None = None) -> "SentenceTokenizer":
        """From the attachments: ``max_length`` defaults to ``sentence_bert_config.json``'s
        ``max_seq_length``, else the tokenizer config's ``model_max_length``, else 512."""
        if TOKENIZER not in files:
            raise ConfigError(f"expected a {TOKENIZER!r} attachment, got {sorted(files) or 'none'}; "
                              "add it with deepcompress.sentences.attach(path, model_dir)")
        config = _json(files, "tokenizer_config.json")
        if max_length is None:
            max_length = _json(files, SENTENCE_CONFIG).get("max_seq_length") or config.get("model_max_length")
            max_length = int(max_length) if isinstance(max_length, int) and max_length > 0 else DEFAULT_MAX_LENGTH
            max_length = min(max_length, DEFAULT_MAX_LENGTH)
        pad = config.get("pad_token") or _json(files, "special_tokens_map.json").get("pad_token") or "[PAD]"
        pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else pad
        return cls(files[TOKENIZER], max_length, pad)

    def __call__(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("expected a list of sentences (strings), got " + type(sentences).__name__)
        encodings = self.tokenizer.encode_batch(list(sentences))
        width = max((len(e.ids) for e in encodings), default=0)
        ids = torch.full((len(encodings), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), width), dtype=torch.long)
        types = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = torch.tensor(encoding.ids)
            mask[row, :n] = 1
            types[row, :n] = torch.tensor(encoding.type_ids)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def pooling_of(files: Mapping[str, bytes]) -> tuple[str, bool]:
    """``(mode, normalize)`` from the attachments: the pooling mode set in ``1_Pooling/config.json``
    (default mean) and whether ``modules.json`` ends the model with a Normalize module."""
    modes = [mode for key, mode in _POOLING_KEYS.items() if _json(files, POOLING).get(key)] or ["mean"]
    others = [k for k, v in _json(files, POOLING).items() if k.startswith("pooling_mode") and v and k not in _POOLING_KEYS]
    if len(modes) != 1 or others:
        raise ConfigError(f"attachment {POOLING!r}: expected exactly one of {list(POOLING_MODES)} pooling, "
                          f"got {modes + others}")
    modules = _json(files, MODULES, list)
    normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize") for m in modules)
    return modes[0], normalize


def pool(states: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per sentence from its token states: ``mean`` over real tokens, the ``cls`` (first)
    token's, or the elementwise ``max`` over real tokens."""
    if mode == "mean":
        return mean_pool(states, attention_mask)
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return states.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf")).amax(dim=1)
    raise ConfigError(f"pooling: expected one of {list(POOLING_MODES)}, got {mode!r}")


@dataclass
class SentenceModel:
    """An encoder with its tokenizer and pooling: :meth:`encode` turns sentences into embeddings."""

    model: nn.Module
    tokenizer: SentenceTokenizer
    pooling: str = "mean"
    normalize: bool = False

    def inputs(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tokenized batch, keeping only the inputs the model's ``forward`` takes."""
        batch = self.tokenizer(sentences)
        accepted = inspect.signature(self.model.forward).parameters
        return {k: v for k, v in batch.items() if k in accepted or k == "input_ids"}

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """``(len(sentences), dim)`` float32 embeddings, batch by batch, in the input order."""
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {batch_size}")
        self.model.eval()
        rows = []
        for start in range(0, len(sentences), batch_size):
            batch = self.inputs(sentences[start : start + batch_size])
            vectors = pool(hidden_states(self.model(**batch)), batch["attention_mask"], self.pooling).float()
            rows.append(F.normalize(vectors, dim=-1) if self.normalize else vectors)
        return torch.cat(rows).numpy() if rows else np.zeros((0, 0), dtype=np.float32)


def from_compressed(cm: CompressedModel, *, runtime: str = "dense", model: nn.Module | None = None,
                    max_length: int | None = None, base_dir: Path | None = None, **runtime_options: Any) -> SentenceModel:
    """A :class:`SentenceModel` from a compressed model that carries its sentence files (see :func:`attach`)."""
    from deepcompress.runtime import to_dense_module, to_sparse_module

    tokenizer = SentenceTokenizer.from_files(cm.attachments, max_length)
    mode, normalize = pooling_of(cm.attachments)
    if runtime == "sparse":
        module = to_sparse_module(cm, model=model, base_dir=base_dir, **runtime_options)
    elif runtime == "dense":
        if runtime_options:
            raise ConfigError(f"options {sorted(runtime_options)} apply to runtime='sparse' only")
        module = to_dense_module(cm, model, base_dir=base_dir).eval()
    else:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of ['dense', 'sparse']")
    return SentenceModel(module, tokenizer, mode, normalize)


def load(path: str | os.PathLike[str], *, runtime: str = "dense", model: nn.Module | None = None,
         max_length: int | None = None, max_elements: int | None = None, **runtime_options: Any) -> SentenceModel:
    """Read ``path`` once and return its :class:`SentenceModel` (encoder on ``runtime``, ``"dense"`` or
    ``"sparse"``; ``model`` to fill instead of the file's architecture record)."""
    cm = load_compressed(path, max_elements=max_elements)
    return from_compressed(cm, runtime=runtime, model=model, max_length=max_length,
                           base_dir=Path(path).resolve().parent, **runtime_options)


def encode(source: str | os.PathLike[str] | SentenceModel, sentences: Sequence[str], *, batch_size: int = 32,
           runtime: str = "dense") -> np.ndarray:
    """Embeddings of ``sentences`` from a file (loaded with ``runtime``) or an already loaded model."""
    loaded = source if isinstance(source, SentenceModel) else load(source, runtime=runtime)
    return loaded.encode(sentences, batch_size=batch_size)


__all__ = ["SENTENCE_FILES", "SentenceModel", "SentenceTokenizer", "attach", "encode", "from_compressed", "load",
           "pool", "pooling_of", "sentence_files"]
