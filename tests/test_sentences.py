"""Sentence embeddings from the file alone: the tokenizer and pooling files travel inside the ``.dcz``."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import deepcompress as dc
from deepcompress import sentences
from deepcompress.errors import ConfigError
from deepcompress.quantize import export_compressed
from deepcompress.sources import record_for

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from test_distill import SENTENCES, tiny_bert, tiny_files  # noqa: E402


def written(tmp_path: Path, files: dict[str, bytes] | None = None) -> Path:
    """A tiny BERT, 4-bit weight-shared without retraining, written with ``files`` attached."""
    model = tiny_bert()
    dc.quantize_(model, dc.QuantizeConfig(bits=4))
    cm = export_compressed(model, "BertModel", arch=record_for(model).to_dict())
    path = tmp_path / "bert.dcz"
    dc.save(cm, path)
    sentences.attach(path, files=tiny_files() if files is None else files)
    return path


def test_a_directory_round_trips_through_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    (directory / "1_Pooling").mkdir(parents=True)
    for name, blob in tiny_files().items():
        (directory / name).write_bytes(blob)
    path = written(tmp_path)
    size = sentences.attach(path, directory)
    assert dc.load_compressed(path).attachments == tiny_files()
    assert size == path.stat().st_size
    assert sentences.attach(path, directory) == size  # attaching again replaces, it does not append
    with pytest.raises(ConfigError, match=r"expected a sentence-transformers directory with tokenizer.json"):
        sentences.attach(path, tmp_path)


def test_encode_from_the_file_alone_normalised_mean_pooling(tmp_path: Path) -> None:
    path = written(tmp_path)
    vectors = sentences.encode(path, SENTENCES)
    assert vectors.shape == (len(SENTENCES), 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)  # modules.json has Normalize
    loaded = sentences.load(path)
    assert loaded.pooling == "mean" and loaded.normalize and loaded.tokenizer.max_length == 24
    np.testing.assert_array_equal(loaded.encode(SENTENCES[:3], batch_size=2), vectors[:3])  # batches are independent
    sparse = sentences.encode(path, SENTENCES, runtime="sparse")
    np.testing.assert_allclose(sparse, vectors, rtol=1e-4, atol=1e-5)


def test_pooling_modes_and_lengths_from_the_attachments() -> None:
    files = tiny_files()
    assert sentences.pooling_of(files) == ("mean", True)
    cls = dict(files, **{"1_Pooling/config.json": b'{"pooling_mode_cls_token": true}', "modules.json": b"[]"})
    assert sentences.pooling_of(cls) == ("cls", False)
    both = dict(files, **{"1_Pooling/config.json": b'{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}'})
    with pytest.raises(ConfigError, match=r"expected exactly one of \['mean', 'cls', 'max'\] pooling, got \['mean', 'cls'\]"):
        sentences.pooling_of(both)
    states = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert sentences.pool(states, mask, "max").tolist() == [[3.0, 5.0]]
    assert sentences.pool(states, mask, "mean").tolist() == [[2.0, 2.0]]
    tokenizer = sentences.SentenceTokenizer.from_files(files, max_length=4)
    batch = tokenizer(["the data of the file is open", "the"])
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(TypeError, match="expected a list of sentences"):
        tokenizer("one sentence")
    with pytest.raises(ConfigError, match=r"expected a 'tokenizer.json' attachment, got none; add it with"):
        sentences.SentenceTokenizer.from_files({})
    with pytest.raises(ConfigError, match=r"attachment 'modules.json': expected a JSON array, got dict"):
        sentences.pooling_of(dict(files, **{"modules.json": b"{}"}))


def test_missing_tokenizers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    files = tiny_files()
    real_import = builtins.__import__

    def no_tokenizers(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "tokenizers":
            raise ImportError("No module named 'tokenizers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tokenizers)
    with pytest.raises(ConfigError) as err:
        sentences.SentenceTokenizer.from_files(files)
    assert str(err.value) == ("sentence embeddings need the tokenizers package, which is not installed; "
                              "install the hf extra: pip install 'deepcompress[hf]'")
    assert "\n" not in str(err.value)


def test_a_pooling_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = written(tmp_path, dict(tiny_files(), **{"1_Pooling/config.json": b"{not json"}))
    with pytest.raises(ConfigError, match=r"attachment '1_Pooling/config.json': expected JSON"):
        sentences.load(path)
    assert json.loads(dc.load_compressed(path).attachments["sentence_bert_config.json"]) == {"max_seq_length": 24}


def test_cli_embed_prints_one_json_line_per_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deepcompress.cli import main

    path = written(tmp_path)
    assert main(["embed", str(path), "Open the file.", "Close it.", "--runtime", "sparse"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["sentence"] for row in rows] == ["Open the file.", "Close it."]
    expected = sentences.encode(path, ["Open the file.", "Close it."])
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected, atol=2e-5)
    assert main(["inspect", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in report["attachments"]} == set(tiny_files())
