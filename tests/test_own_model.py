"""A user's own network, defined here and registered nowhere, through the whole library and the CLI.

The network mixes every kind the handlers cover that a small model can hold: Linear, a subclass of
Linear, Conv2d and a grouped Conv2d with BatchNorm, Conv1d, an Embedding whose weight is tied to an
output Linear. It is compressed from Python and from a TOML file naming it by file path, and read
back with ``load(path, model=...)``, ``load_state_dict`` and ``runtime="sparse"``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import deepcompress as dc
from deepcompress.cli import main
from deepcompress.errors import ConfigError

NET_SOURCE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Head(nn.Linear):
        """A subclass of nn.Linear: the Linear handler takes it (isinstance)."""


    class MixedNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.bn = nn.BatchNorm2d(8)
            self.conv1d = nn.Conv1d(8, 8, 3, padding=1)
            self.embed = nn.Embedding(12, 8)
            self.head = Head(64, 10)
            self.out = nn.Linear(8, 12, bias=False)
            self.out.weight = self.embed.weight  # tied

        def forward(self, x):
            h = torch.relu(self.bn(self.grouped(torch.relu(self.conv(x)))))
            h = torch.relu(self.conv1d(h.mean(dim=3)))  # (N, 8, 8)
            tokens = self.embed(torch.arange(8, device=x.device))  # (8, 8)
            h = h + tokens.t()
            return self.head(h.flatten(1)) + self.out(h.mean(dim=2))[:, :10]


    def build():
        return MixedNet()


    def data(n, seed):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 1, 8, 8, generator=generator)
        y = (x[:, 0, :4].sum(dim=(1, 2)) > 0).long() + 2 * (x[:, 0, 4:].sum(dim=(1, 2)) > 0).long()
        return x, y


    def loaders():
        return data(96, 0), data(48, 1)
    '''
)


@pytest.fixture()
def net_module(tmp_path: Path):
    path = tmp_path / "my_net.py"
    path.write_text(NET_SOURCE)
    from deepcompress.sources import import_reference

    return import_reference(f"{path}:build", [tmp_path], "model").__globals__


def tiny_config(**overrides) -> dc.PipelineConfig:
    settings = dict(
        seed=0,
        train=dc.TrainConfig(epochs=1, lr=0.05, batch_size=16, augment=False),
        prune=dc.PruneConfig(method="sparsity", sparsity=0.5, rounds=1, epochs_per_round=1),
        quantize=dc.QuantizeConfig(bits=4, epochs=1, lr=1e-3),
    )
    settings.update(overrides)
    return dc.PipelineConfig(**settings)


def test_own_network_from_python(net_module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = net_module["build"]()
    train, test = net_module["loaders"]()
    out = tmp_path / "mixed.dcz"
    result = dc.compress(model, tiny_config(), out=out, train=train, test=test, progress=False, log=lambda _: None)
    model.eval()
    with torch.no_grad():
        expected = model(test[0])

    compressed = dc.load_compressed(out)
    kinds = {layer.name: layer.kind for layer in compressed.layers}
    assert kinds == {"conv": "conv2d", "grouped": "conv2d", "conv1d": "conv1d", "embed": "embedding", "head": "linear"}
    assert compressed.layer("grouped").attrs["groups"] == 4
    assert compressed.tied == {"out.weight": "embed.weight"}
    assert compressed.extras["bn.num_batches_tracked"].dtype == "int64"

    stored = {row["tensor"]: row["reason"] for row in result.report["stored_as_is"]}
    assert set(stored) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert stored["bn.running_var"] == "not a weight layer (BatchNorm2d.running_var)"

    loaded = dc.load(out, model=net_module["build"]())
    assert loaded.out.weight is loaded.embed.weight
    with torch.no_grad():
        assert torch.equal(loaded(test[0]), expected)

    fresh = net_module["build"]()
    fresh.load_state_dict(dc.load_state_dict(out))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(test[0]), expected)

    sparse = dc.load(out, model=net_module["build"](), runtime="sparse")
    assert isinstance(sparse.head, dc.runtime.SparseCodebookLinear)
    with torch.no_grad():
        torch.testing.assert_close(sparse(test[0]), expected, rtol=1e-5, atol=1e-5)

    with pytest.raises(ConfigError, match=r"the file records no architecture for 'MixedNet'; build the module "
                                          r"yourself and pass it: deepcompress.load\(path, model=my_module\)"):
        dc.load(out)


def test_filter_fn_and_ignore_leave_layers_uncompressed_with_a_reason(net_module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = net_module["build"]()
    train, test = net_module["loaders"]()
    result = dc.compress(model, tiny_config(ignore=("conv1d",)), out=tmp_path / "f.dcz", train=train, test=test,
                         filter_fn=lambda module, name: name != "head", progress=False, log=lambda _: None)
    names = {layer.name for layer in dc.load_compressed(tmp_path / "f.dcz").layers}
    assert names == {"conv", "grouped", "embed"}
    stored = {row["tensor"]: row["reason"] for row in result.report["stored_as_is"]}
    assert stored["head.weight"] == "Head not selected for compression (types / patterns / ignore / filter_fn)"
    assert stored["conv1d.bias"].startswith("bias of a Conv1d not selected")


def test_own_network_from_toml_and_cli(net_module, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    torch.save({"module." + k: v for k, v in net_module["build"]().state_dict().items()}, tmp_path / "ref.pt")
    config = tmp_path / "own.toml"
    config.write_text(textwrap.dedent(
        """
        model = "my_net.py:build"
        checkpoint = "ref.pt"
        strip_prefix = "module."
        dataset = "my_net.py:loaders"
        [train]
        epochs = 1
        batch_size = 16
        augment = false
        [prune]
        method = "sparsity"
        sparsity = 0.5
        epochs_per_round = 1
        [quantize]
        bits = 4
        epochs = 1
        """
    ))
    out = tmp_path / "written" / "own.dcz"  # elsewhere than the model file: the record points back to it
    out.parent.mkdir()
    assert main(["compress", "--config", str(config), "--out", str(out), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    file_accuracy = report["stages"][-1]["accuracy"]
    assert dc.load_compressed(out).arch == {"source": "import", "name": "../my_net.py:build", "kwargs": {}}

    dataset = f"{tmp_path / 'my_net.py'}:loaders"
    assert main(["evaluate", str(out), "--dataset", dataset, "--json"]) == 2
    assert "running it needs trust_code=True (CLI --trust-code)" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--dataset", dataset, "--json", "--trust-code"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == file_accuracy
    dense = tmp_path / "dense.safetensors"
    assert main(["decompress", str(out), "--out", str(dense), "--trust-code"]) == 0
    tensors, _ = dc.checkpoint.read_state_dict(dense)
    assert torch.equal(tensors["head.weight"], dc.load_state_dict(out)["head.weight"])


def test_checkpoint_with_a_prefix_suggests_strip_prefix(net_module, tmp_path: Path, capsys) -> None:
    torch.save({"module." + k: v for k, v in net_module["build"]().state_dict().items()}, tmp_path / "ref.pt")
    config = tmp_path / "c.toml"
    config.write_text('model = "my_net.py:build"\ncheckpoint = "ref.pt"\ndataset = "my_net.py:loaders"\n[quantize]\nbits = 4\n')
    assert main(["compress", "--config", str(config), "--out", str(tmp_path / "c.dcz"), "--quiet"]) == 1
    assert 'strip_prefix = "module."' in capsys.readouterr().err


def test_tiny_bert_round_trips_with_its_architecture_record(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    post_training = dc.PipelineConfig(
        prune=dc.PruneConfig(method="sparsity", sparsity=0.5, epochs_per_round=0),
        quantize=dc.QuantizeConfig(bits=4, epochs=0),
        encode=dc.EncodeConfig(value_dtype="float32"),
    )
    out = tmp_path / "bert.dcz"
    result = dc.compress(bert, post_training, out=out, progress=False, log=lambda _: None)
    assert result.stages[-1].accuracy is None and set(result.stages[-1].details["weight_error"]) == {
        layer.name for layer in dc.load_compressed(out).layers
    }
    tokens = torch.tensor([[1, 5, 7, 2, 0]])
    with torch.no_grad():
        expected = bert(tokens).last_hidden_state
    loaded = dc.load(out)  # rebuilt from the Hugging Face record: no code of ours or the user's runs
    assert type(loaded).__name__ == "BertModel"
    kinds = {layer.kind for layer in dc.load_compressed(out).layers}
    assert kinds == {"linear", "embedding"}
    with torch.no_grad():
        assert torch.equal(loaded(tokens).last_hidden_state, expected)
        sparse = dc.load(out, runtime="sparse")
        torch.testing.assert_close(sparse(tokens).last_hidden_state, expected, rtol=1e-4, atol=1e-5)


def test_torchvision_resnet18_round_trips_where_torchvision_imports(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401  (only whether it imports)
    except Exception as exc:  # PyPI's torchvision wheels are CUDA builds that fail against this CPU torch
        pytest.skip(f"torchvision does not import here ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    from deepcompress.sources import build_model_ref

    model, record = build_model_ref("torchvision:resnet18", {"num_classes": 10})
    post_training = dc.PipelineConfig(prune=dc.PruneConfig(method="sparsity", sparsity=0.5, epochs_per_round=0),
                                      quantize=dc.QuantizeConfig(bits=4, epochs=0))
    out = tmp_path / "resnet18.dcz"
    dc.compress(model, post_training, out=out, arch=record.to_dict(), progress=False, log=lambda _: None)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dc.load(out)(images), model.eval()(images))


def test_automatic_pruning_scans_only_the_configured_fractions(net_module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = net_module["build"]()
    train, test = net_module["loaders"]()
    auto = dc.PruneConfig(method="auto", scan_fractions=[0.5], rounds=1, epochs_per_round=1, budget=0.5, tolerance=0.5)
    result = dc.compress(model, tiny_config(prune=auto, validation_images=32), out=tmp_path / "a.dcz", train=train,
                         test=test, progress=False, log=lambda _: None)
    targets = result.stages[1].details["rounds"][0]["plan"]["targets"]
    assert set(targets) == {"conv", "grouped", "conv1d", "embed", "head"}
    assert set(targets.values()) <= {0.0, 0.5} and 0.5 in targets.values()


def test_float16_extras_halve_the_batchnorm_bytes_and_the_file_scores_what_it_decodes_to(net_module, tmp_path: Path) -> None:
    train, test = net_module["loaders"]()
    sizes = {}
    for dtype in ("float32", "float16"):
        torch.manual_seed(0)
        model = net_module["build"]()
        config = tiny_config(encode=dc.EncodeConfig(extras_dtype=dtype))
        result = dc.compress(model, config, out=tmp_path / f"{dtype}.dcz", train=train, test=test, progress=False,
                             log=lambda _: None)
        extras = {e["name"]: e for e in result.report["extras"]}
        sizes[dtype] = sum(e["bytes"] for e in extras.values())
        assert extras["bn.running_var"]["dtype"] == ("f2" if dtype == "float16" else "f4")
        assert extras["bn.num_batches_tracked"]["dtype"] == "i8"
        with torch.no_grad():
            expected = model.eval()(test[0])
            assert torch.equal(dc.load(tmp_path / f"{dtype}.dcz", model=net_module["build"]())(test[0]), expected)
    assert sizes["float16"] < sizes["float32"]
