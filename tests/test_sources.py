from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from deepcompress import models
from deepcompress.errors import ConfigError
from deepcompress.models import LeNet5
from deepcompress.sources import ArchRecord, build_model_ref, parse_model_ref, record_for

NETS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(3, width)

    def forward(self, x):
        return self.fc(x)


def make(width: int = 4) -> Tiny:
    return Tiny(width)


def broken():
    raise RuntimeError("no GPU here")


def not_a_module():
    return 42
'''


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    """A user's model file in its own directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "nets.py").write_text(NETS)
    return directory


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a directory that holds no model file, as a user loading a file from anywhere would."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- import references -----------------------------------------------------------------------------

def test_file_reference_is_resolved_against_base_dir_and_called_with_kwargs(nets: Path, elsewhere: Path) -> None:
    model, record = build_model_ref("nets.py:make", {"width": 3}, base_dir=nets)
    assert type(model).__name__ == "Tiny" and model.fc.out_features == 3
    assert record == ArchRecord("import", "nets.py:make", {"width": 3})


def test_two_files_with_the_same_name_stay_separate_modules(tmp_path: Path, nets: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "nets.py").write_text("from torch import nn\n\ndef make(width=4):\n    return nn.Linear(1, 1)\n")
    first, _ = build_model_ref(f"{nets / 'nets.py'}:make")
    second, _ = build_model_ref(f"{other / 'nets.py'}:make")
    assert type(first).__name__ == "Tiny" and isinstance(second, torch.nn.Linear)


def test_package_module_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "dc_user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "arch.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dc_user_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "dc_user_pkg.arch", raising=False)
    model, record = build_model_ref("dc_user_pkg.arch:Tiny", {"width": 5})
    assert model.fc.out_features == 5
    assert record.to_dict() == {"source": "import", "name": "dc_user_pkg.arch:Tiny", "kwargs": {"width": 5}}


def test_missing_module() -> None:
    with pytest.raises(ConfigError, match=r"^model 'dc_no_such_module:make': no module named 'dc_no_such_module'; install it or put its directory on sys.path$"):
        build_model_ref("dc_no_such_module:make")


def test_missing_file_names_where_it_looked(nets: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'gone.py:make': file gone.py not found \(looked for \['.*project/gone.py'\]\)$"):
        build_model_ref("gone.py:make", base_dir=nets)


def test_missing_attribute_lists_the_callables(nets: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'nets.py:mak': file nets.py has no attribute 'mak'; its callables: \['Tiny', 'broken', 'make', 'not_a_module'\]$"):
        build_model_ref("nets.py:mak", base_dir=nets)


def test_factory_that_raises(nets: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'nets.py:broken': the factory raised RuntimeError: no GPU here$"):
        build_model_ref("nets.py:broken", base_dir=nets)


def test_factory_with_a_wrong_keyword(nets: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'nets.py:make': the factory raised TypeError: .*unexpected keyword argument 'depth'"):
        build_model_ref("nets.py:make", {"depth": 2}, base_dir=nets)


def test_factory_that_returns_no_module(nets: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'nets.py:not_a_module': expected the factory to return a torch.nn.Module, got int$"):
        build_model_ref("nets.py:not_a_module", base_dir=nets)


def test_file_that_fails_to_run(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("x = 1 / 0\n")
    with pytest.raises(ConfigError, match=r"^model 'bad.py:make': running .*bad.py failed: ZeroDivisionError: division by zero$"):
        build_model_ref("bad.py:make", base_dir=tmp_path)


@pytest.mark.parametrize("ref", ["pkg:", ":make", "pkg.mod:1make"])
def test_malformed_import_reference(ref: str) -> None:
    with pytest.raises(ConfigError, match=r"expected an import reference 'pkg.module:function' or 'path/to/file.py:function'$"):
        parse_model_ref(ref)


def test_model_args_must_be_json() -> None:
    with pytest.raises(ConfigError, match=r"^model_args of 'lenet5': expected JSON values .*: Object of type set is not JSON serializable$"):
        parse_model_ref("lenet5", {"num_classes": {1, 2}})


# --- records ---------------------------------------------------------------------------------------

def test_import_record_round_trips_and_rebuilds_from_the_files_directory(nets: Path, elsewhere: Path) -> None:
    model, record = build_model_ref("nets.py:make", {"width": 6}, base_dir=nets)
    again = ArchRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    rebuilt = again.build(trust_code=True, base_dir=nets)
    assert shapes(rebuilt) == shapes(model) == {"fc.weight": (6, 3), "fc.bias": (6,)}


def test_import_record_prefers_the_file_directory_then_the_current_one(
    nets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "nets.py").write_text("from torch import nn\n\ndef make(width=4):\n    return nn.Linear(2, 2)\n")
    monkeypatch.chdir(local)
    assert not isinstance(ArchRecord("import", "nets.py:make", {}).build(trust_code=True, base_dir=nets), torch.nn.Linear)
    rebuilt = ArchRecord("import", "nets.py:make", {}).build(trust_code=True, base_dir=tmp_path / "elsewhere")
    assert isinstance(rebuilt, torch.nn.Linear)


def test_relative_to_moves_a_file_reference_from_the_config_to_the_compressed_file(tmp_path: Path) -> None:
    record = ArchRecord("import", "nets/my.py:build", {"width": 2})
    moved = record.relative_to(tmp_path / "configs", tmp_path / "out" / "run1")
    assert moved.name == "../../configs/nets/my.py:build" and moved.kwargs == {"width": 2}
    assert ArchRecord("import", "pkg.mod:build", {}).relative_to(tmp_path, tmp_path / "x").name == "pkg.mod:build"


def test_import_record_needs_trust(nets: Path) -> None:
    record = ArchRecord("import", "nets.py:make", {"width": 2})
    with pytest.raises(ConfigError, match=r"^the file's architecture record names import reference 'nets.py:make'; running it needs trust_code=True \(CLI --trust-code\), or pass the module: deepcompress.load\(path, model=my_module\)$"):
        record.build(base_dir=nets)
    assert record.build(trust_code=True, base_dir=nets).fc.out_features == 2


def test_builtin_record_builds_without_trust() -> None:
    record = parse_model_ref("lenet5", {"num_classes": 3})
    assert record == ArchRecord("builtin", "lenet5", {"num_classes": 3})
    assert record.build().fc2.out_features == 3


def test_unknown_builtin_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"^unknown model 'resnet'; expected one of \['alexnet', 'lenet300', 'lenet5', 'vgg16'\], a name added with deepcompress.register_model, or a reference: "):
        parse_model_ref("resnet")
    with pytest.raises(ConfigError, match=r"^unknown model 'resnet'"):
        ArchRecord("builtin", "resnet", {}).build()


@pytest.mark.parametrize(
    "data, message",
    [
        ([], r"^architecture record: expected a JSON object, got list$"),
        ({"source": "builtin", "name": "lenet5"}, r"^architecture record: missing field 'kwargs'$"),
        ({"source": "builtin", "name": "lenet5", "kwargs": {}, "extra": 1}, r"^architecture record: unknown field 'extra'; expected fields \['source', 'name', 'kwargs', 'config'\]$"),
        ({"source": "pip", "name": "x", "kwargs": {}}, r"^architecture record: source: expected one of \['builtin', 'torchvision', 'hf', 'import'\], got 'pip'$"),
        ({"source": "builtin", "name": "", "kwargs": {}}, r"^architecture record: name: expected a non-empty string, got ''$"),
        ({"source": "builtin", "name": "lenet5", "kwargs": [1]}, r"^kwargs: expected a table of JSON values, got list$"),
        ({"source": "builtin", "name": "lenet5", "kwargs": {}, "config": {}}, r"^architecture record: config: expected None for source 'builtin', got a dict$"),
        ({"source": "import", "name": "nets.py", "kwargs": {}}, r"^model 'nets.py': expected an import reference 'pkg.module:function' or 'path/to/file.py:function'$"),
        ({"source": "hf", "name": "BertModel", "kwargs": {}}, r"^architecture record: config: expected the Hugging Face config as a JSON object, got None$"),
    ],
)
def test_record_from_dict_is_strict(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ArchRecord.from_dict(data)


def test_record_for_builtin_models() -> None:
    assert record_for(LeNet5()) == ArchRecord("builtin", "lenet5", {})
    assert record_for(LeNet5(num_classes=3)) is None  # the defaults would rebuild another shape
    assert record_for(torch.nn.Linear(2, 2)) is None


# --- registered models -----------------------------------------------------------------------------

def test_registered_model_is_a_builtin_record(registry: dict[str, Any]) -> None:
    class Net(torch.nn.Module):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, width)

    models.register_model("my_net", Net)
    model, record = build_model_ref("my_net", {"width": 7})
    assert record == ArchRecord("builtin", "my_net", {"width": 7})
    assert model.fc.out_features == 7
    assert record_for(Net()) == ArchRecord("builtin", "my_net", {})


# --- torchvision -----------------------------------------------------------------------------------

def test_torchvision_builder() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # its CUDA wheels fail to import against a CPU torch
        pytest.skip(f"torchvision cannot be imported here: {type(exc).__name__}: {exc}")
    model, record = build_model_ref("torchvision:resnet18", {"num_classes": 10})
    assert record == ArchRecord("torchvision", "resnet18", {"num_classes": 10})
    assert model.fc.out_features == 10
    assert shapes(record.build()) == shapes(model)


def test_torchvision_that_cannot_be_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(ConfigError, match=rf"^model 'torchvision:resnet18': torchvision could not be imported \(RuntimeError: operator torchvision::nms does not exist\); install the torchvision build matching torch {re.escape(torch.__version__)}, or build the model yourself and pass the model object$"):
        build_model_ref("torchvision:resnet18")


def test_torchvision_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^model 'torchvision:resnet18': model_args weights = 'DEFAULT' would download weights at run time; leave weights out and give the trained weights as the checkpoint$"):
        parse_model_ref("torchvision:resnet18", {"weights": "DEFAULT"})


# --- Hugging Face ----------------------------------------------------------------------------------

@pytest.fixture
def bert_dir(tmp_path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32
    )
    directory = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(directory)
    return directory


def test_hf_directory_loads_weights_and_its_record_rebuilds_from_config(bert_dir: Path, elsewhere: Path) -> None:
    model, record = build_model_ref("hf:bert", base_dir=bert_dir.parent)
    assert (record.source, record.name, record.kwargs) == ("hf", "BertModel", {})
    assert record.config is not None and record.config["hidden_size"] == 16 and "_name_or_path" not in record.config
    from safetensors.torch import load_file

    saved = load_file(bert_dir / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    again = ArchRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert shapes(again.build()) == shapes(model)
    assert record_for(model) == record


def test_hf_reference_prefix_form(bert_dir: Path) -> None:
    model, record = build_model_ref(f"hf:{bert_dir}")
    assert type(model).__name__ == record.name == "BertModel"


def test_hf_auto_class_override(bert_dir: Path) -> None:
    record = parse_model_ref(f"hf:{bert_dir}", {"auto_class": "AutoModelForSequenceClassification"})
    assert record.name == "BertForSequenceClassification"


def test_hf_errors(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model 'hf:nowhere': expected a local Hugging Face directory, but .*nowhere is not a directory$"):
        parse_model_ref("hf:nowhere", base_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^model 'hf:empty': .*empty has no config.json; save the model there with save_pretrained$"):
        parse_model_ref("hf:empty", base_dir=tmp_path)
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"^model 'hf:no_weights': BertModel.from_pretrained\('.*no_weights'\) failed: OSError: [^\n]*$"):
        build_model_ref("hf:no_weights", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^model 'hf:bert': unknown model_args \['num_labels'\]; expected only \['auto_class'\]$"):
        parse_model_ref("hf:bert", {"num_labels": 3}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^model 'hf:bert': auto_class: expected a transformers Auto class or model class, got 'Nope'$"):
        parse_model_ref("hf:bert", {"auto_class": "Nope"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^hf class NotAModel: expected a model class exported by transformers .*, found none; pass the model object instead$"):
        ArchRecord("hf", "NotAModel", {}, {}).build()


def test_hf_without_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ConfigError, match=r"^model 'hf:x' needs transformers, which is not installed; install the hf extra: pip install 'deepcompress\[hf\]'$"):
        parse_model_ref("hf:x")
