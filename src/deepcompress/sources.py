"""Where an architecture comes from, as a small JSON record that can rebuild it.

A model reference (``model = ...`` in a config, with ``model_args = {...}``) is one of:

- ``"lenet5"``: a built-in name, or one added with :func:`deepcompress.models.register_model`;
- ``"torchvision:resnet18"``: a torchvision builder, randomly initialised (``weights`` are refused:
  they would be downloaded);
- ``"hf:DIR"``: a local Hugging Face directory, loaded with its weights and never downloaded;
  the class is the config's ``architectures[0]`` when transformers has it, else ``AutoModel``, and
  ``model_args = {auto_class = "AutoModelForSequenceClassification"}`` (or a model class name) overrides it;
- ``"pkg.module:factory"`` or ``"path/to/file.py:factory"``: the user's own code, imported and called
  with ``model_args``.

:class:`ArchRecord` is what a compressed file stores so ``load(path)`` can rebuild the module without
the caller. Built-in, torchvision and Hugging Face records rebuild without running any code from the
file; an import record runs the user's code and therefore needs ``trust_code=True``.
"""

from __future__ import annotations

import hashlib
import os
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from deepcompress import models
from deepcompress.errors import ConfigError

SOURCES = ("builtin", "torchvision", "hf", "import")
_RECORD_FIELDS = ("source", "name", "kwargs", "config")
_HF_PREFIX = "hf:"
_TORCHVISION_PREFIX = "torchvision:"
_HF_ARGS = frozenset({"auto_class"})
#: Hugging Face config entries that describe the local machine, not the architecture.
_HF_LOCAL_KEYS = ("_name_or_path",)


@dataclass(frozen=True)
class ArchRecord:
    """An architecture as plain data: ``source`` (one of :data:`SOURCES`), ``name`` (built-in name,
    torchvision builder, transformers class name, or import reference), ``kwargs`` for the factory
    and, for Hugging Face only, the model's ``config`` (the contents of its ``config.json``)."""

    source: str
    name: str
    kwargs: dict[str, Any]
    config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"architecture record: source: expected one of {list(SOURCES)}, got {self.source!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"architecture record: name: expected a non-empty string, got {self.name!r}")
        if self.source == "import":
            _split_import(self.name)
        object.__setattr__(self, "kwargs", _json_object("kwargs", self.kwargs))
        if self.source == "hf":
            if self.config is None:
                raise ConfigError("architecture record: config: expected the Hugging Face config as a JSON object, got None")
            object.__setattr__(self, "config", _json_object("config", self.config))
        elif self.config is not None:
            raise ConfigError(f"architecture record: config: expected None for source {self.source!r}, got a {type(self.config).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values; ``config`` appears only for Hugging Face records."""
        out: dict[str, Any] = {"source": self.source, "name": self.name, "kwargs": self.kwargs}
        if self.config is not None:
            out["config"] = self.config
        return out

    @classmethod
    def from_dict(cls, data: Any) -> ArchRecord:
        """Inverse of :meth:`to_dict`; rejects unknown or missing fields, naming them."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"architecture record: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_RECORD_FIELDS))
        if unknown:
            raise ConfigError(f"architecture record: unknown field {unknown[0]!r}; expected fields {list(_RECORD_FIELDS)}")
        for key in ("source", "name", "kwargs"):
            if key not in data:
                raise ConfigError(f"architecture record: missing field {key!r}")
        return cls(source=data["source"], name=data["name"], kwargs=data["kwargs"], config=data.get("config"))

    def build(self, *, trust_code: bool = False, base_dir: Path | None = None) -> nn.Module:
        """A fresh, randomly initialised module of this architecture.

        Built-in, torchvision and Hugging Face records run no code named by the record (a Hugging Face
        model is rebuilt from its config alone, no files needed). An import record runs the user's code,
        so it is refused unless ``trust_code`` is true; a relative file path in it is looked up in
        ``base_dir`` (the compressed file's directory, which :meth:`relative_to` makes it relative to),
        then in the current directory.
        """
        if self.source == "import":
            if not trust_code:
                raise ConfigError(
                    f"the file's architecture record names import reference {self.name!r}; running it needs "
                    "trust_code=True (CLI --trust-code), or pass the module: deepcompress.load(path, model=my_module)"
                )
            dirs = ([Path(base_dir)] if base_dir is not None else []) + [Path.cwd()]
            return _build_import(self.name, self.kwargs, dirs)
        if self.source == "hf":
            assert self.config is not None  # checked in __post_init__
            return _build_hf_from_config(self.name, self.config)
        if self.source == "torchvision":
            return _build_torchvision(self.name, self.kwargs)
        return _build_builtin(self.name, self.kwargs)


    def relative_to(self, source_dir: Path, file_dir: Path) -> "ArchRecord":
        """This record with a file path that was relative to ``source_dir`` (a config's directory) made
        relative to ``file_dir`` (the compressed file's), so the record finds the model file from
        wherever the pair is read; other records are returned unchanged."""
        if self.source != "import":
            return self
        target, attr = _split_import(self.name)
        if not _is_file(target) or Path(target).is_absolute():
            return self
        moved = os.path.relpath((Path(source_dir) / target).resolve(), Path(file_dir).resolve())
        return replace(self, name=f"{Path(moved).as_posix()}:{attr}")


def parse_model_ref(ref: str, kwargs: Mapping[str, Any] | None = None, base_dir: Path | None = None) -> ArchRecord:
    """The record a model reference stands for, without building the model.

    Checks the reference's syntax, that a bare name is known, and for ``hf:DIR`` reads the directory's
    ``config.json`` (a relative ``DIR`` is resolved against ``base_dir``, the config file's directory).
    Imported code is neither located nor run here; :func:`build_model_ref` does that.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"model: expected a model name or reference such as 'lenet5' or 'pkg.module:factory', got {ref!r}")
    args = _json_object(f"model_args of {ref!r}", {} if kwargs is None else kwargs)
    if ref.startswith(_HF_PREFIX):
        cls, _, config = _hf_resolve(ref, args, base_dir)
        return ArchRecord("hf", cls.__name__, {}, _hf_config_dict(config))
    if ref.startswith(_TORCHVISION_PREFIX):
        name = ref[len(_TORCHVISION_PREFIX):]
        if not name.isidentifier():
            raise ConfigError(f"model {ref!r}: expected 'torchvision:BUILDER' such as 'torchvision:resnet18'")
        if args.get("weights") is not None:
            raise ConfigError(
                f"model {ref!r}: model_args weights = {args['weights']!r} would download weights at run time; "
                "leave weights out and give the trained weights as the checkpoint"
            )
        return ArchRecord("torchvision", name, args)
    if ":" in ref:
        _split_import(ref)
        return ArchRecord("import", ref, args)
    if ref not in models.MODELS:
        raise ConfigError(_unknown_builtin(ref))
    return ArchRecord("builtin", ref, args)


def build_model_ref(
    ref: str, kwargs: Mapping[str, Any] | None = None, base_dir: Path | None = None
) -> tuple[nn.Module, ArchRecord]:
    """Build the model a reference names, and its record.

    ``hf:DIR`` returns the pretrained model (weights included) and a record of its config; every other
    source returns a randomly initialised module. A relative path (``hf:DIR`` or an import's file) is
    resolved against ``base_dir`` (the config file's directory), else the current directory. Import
    references run the user's code: naming them in one's own config is the consent.
    """
    if isinstance(ref, str) and ref.startswith(_HF_PREFIX):
        model = _load_hf_pretrained(ref, _json_object(f"model_args of {ref!r}", kwargs or {}), base_dir)
        return model, ArchRecord("hf", type(model).__name__, {}, _hf_config_dict(model.config))
    record = parse_model_ref(ref, kwargs, base_dir)
    if record.source == "import":
        return _build_import(record.name, record.kwargs, [Path(base_dir) if base_dir is not None else Path.cwd()]), record
    return record.build(), record


def record_for(model: nn.Module) -> ArchRecord | None:
    """The record that rebuilds ``model``'s architecture, or None when none is known.

    A Hugging Face model whose class transformers exports gives an ``hf`` record with its config. A
    model whose class is a registered factory gives a ``builtin`` record, but only if that factory's
    default arguments reproduce the model's tensor names and shapes (checked on the meta device, so
    nothing is allocated). Anything else (a function factory, an import reference) returns None: the
    caller knows the reference and should keep the record :func:`build_model_ref` returned.
    """
    transformers = sys.modules.get("transformers")  # a PreTrainedModel exists only once it is imported
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        name = type(model).__name__
        if getattr(transformers, name, None) is type(model):
            return ArchRecord("hf", name, {}, _hf_config_dict(model.config))
        return None
    shapes = _shapes(model)
    for name, factory in models.MODELS.items():
        if factory is type(model) and _default_shapes(factory) == shapes:
            return ArchRecord("builtin", name, {})
    return None


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _default_shapes(factory: Callable[..., nn.Module]) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of ``factory()`` built on the meta device; None if it cannot be built there."""
    try:
        with torch.device("meta"):
            return _shapes(factory())
    except Exception:  # a user factory needing arguments or real memory: no record, not an error
        return None


def _json_object(what: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``value`` as JSON data; ConfigError unless it is an object of JSON values."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what}: expected a table of JSON values, got {type(value).__name__}")
    try:
        copied = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected JSON values (strings, numbers, booleans, lists, tables): {exc}") from None
    return copied


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: library errors often span many lines."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _call_factory(ref: str, factory: Any, kwargs: Mapping[str, Any]) -> nn.Module:
    """``factory(**kwargs)``, with one-line errors naming ``ref`` if it fails or returns a non-module."""
    if not callable(factory):
        raise ConfigError(f"model {ref!r}: expected a callable factory, got {type(factory).__name__}")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(f"model {ref!r}: the factory raised {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {ref!r}: expected the factory to return a torch.nn.Module, got {type(model).__name__}")
    return model


def _unknown_builtin(name: str) -> str:
    return (
        f"unknown model {name!r}; expected one of {sorted(models.MODELS)}, a name added with "
        "deepcompress.register_model, or a reference: 'torchvision:NAME', 'hf:DIR', 'pkg.module:factory', 'file.py:factory'"
    )


def _build_builtin(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    if name not in models.MODELS:
        raise ConfigError(_unknown_builtin(name))
    return _call_factory(name, models.MODELS[name], kwargs)


# --- torchvision -----------------------------------------------------------------------------------

def _build_torchvision(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    ref = _TORCHVISION_PREFIX + name
    try:
        import torchvision
    except Exception as exc:  # a CUDA wheel against a CPU torch fails with RuntimeError, not ImportError
        raise ConfigError(
            f"model {ref!r}: torchvision could not be imported ({_one_line(exc)}); install the torchvision "
            f"build matching torch {torch.__version__}, or build the model yourself and pass the model object"
        ) from None
    known = torchvision.models.list_models()
    if name not in known:
        raise ConfigError(f"model {ref!r}: torchvision has no model {name!r}; expected one of {sorted(known)}")
    return _call_factory(ref, torchvision.models.get_model_builder(name), kwargs)


# --- Hugging Face ----------------------------------------------------------------------------------

def _import_transformers(ref: str) -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"model {ref!r} needs transformers, which is not installed; install the hf extra: pip install 'deepcompress[hf]'"
        ) from None
    return transformers


def _hf_dir(ref: str, base_dir: Path | None) -> Path:
    directory = Path(ref[len(_HF_PREFIX):])
    if not directory.is_absolute() and base_dir is not None:
        directory = Path(base_dir) / directory
    if not directory.is_dir():
        raise ConfigError(f"model {ref!r}: expected a local Hugging Face directory, but {directory} is not a directory")
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model {ref!r}: {directory} has no config.json; save the model there with save_pretrained")
    return directory


def _hf_config_dict(config: Any) -> dict[str, Any]:
    """The full config as JSON data (``to_json_string`` turns dtypes and the like into JSON values)."""
    data = json.loads(config.to_json_string(use_diff=False))
    for key in _HF_LOCAL_KEYS:
        data.pop(key, None)
    return data


def _hf_class(transformers: ModuleType, ref: str, config: Any, args: Mapping[str, Any]) -> type:
    """The model class to load: ``auto_class`` if given, else ``architectures[0]``, else AutoModel's."""
    unknown = sorted(set(args) - _HF_ARGS)
    if unknown:
        raise ConfigError(f"model {ref!r}: unknown model_args {unknown}; expected only {sorted(_HF_ARGS)}")
    chosen = args.get("auto_class")
    if chosen is None:
        architectures = getattr(config, "architectures", None) or []
        found = getattr(transformers, architectures[0], None) if architectures else None
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
        chosen = "AutoModel"
    found = getattr(transformers, chosen, None) if isinstance(chosen, str) else None
    if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
        return found
    mapping = getattr(found, "_model_mapping", None)  # every Auto class maps config classes to model classes
    if mapping is None:
        raise ConfigError(f"model {ref!r}: auto_class: expected a transformers Auto class or model class, got {chosen!r}")
    try:
        cls = mapping[type(config)]
    except KeyError:
        raise ConfigError(f"model {ref!r}: {chosen} has no model class for {type(config).__name__}") from None
    return cls[0] if isinstance(cls, (list, tuple)) else cls


def _hf_resolve(ref: str, args: Mapping[str, Any], base_dir: Path | None) -> tuple[type, Path, Any]:
    """The model class to load, the directory and its config, for ``hf:DIR`` with ``model_args``."""
    transformers = _import_transformers(ref)
    directory = _hf_dir(ref, base_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"model {ref!r}: reading {directory / 'config.json'} failed: {_one_line(exc)}") from exc
    return _hf_class(transformers, ref, config, args), directory, config


def _load_hf_pretrained(ref: str, args: Mapping[str, Any], base_dir: Path | None) -> nn.Module:
    cls, directory, _ = _hf_resolve(ref, args, base_dir)
    try:
        return cls.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"model {ref!r}: {cls.__name__}.from_pretrained({str(directory)!r}) failed: {_one_line(exc)}") from exc


def _build_hf_from_config(name: str, config: Mapping[str, Any]) -> nn.Module:
    ref = f"hf class {name}"
    transformers = _import_transformers(ref)
    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ConfigError(
            f"{ref}: expected a model class exported by transformers {transformers.__version__}, "
            "found none; pass the model object instead"
        )
    try:
        return cls(cls.config_class.from_dict(dict(config)))
    except Exception as exc:
        raise ConfigError(f"{ref}: building it from the stored config failed: {_one_line(exc)}") from exc


# --- import references -----------------------------------------------------------------------------

def _split_import(ref: str, what: str = "model") -> tuple[str, str]:
    """``(module or file, attribute)`` of ``"target:attribute"`` (the last ':' splits, for Windows drives)."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr.isidentifier():
        raise ConfigError(f"{what} {ref!r}: expected an import reference 'pkg.module:function' or 'path/to/file.py:function'")
    return target, attr


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _build_import(ref: str, kwargs: Mapping[str, Any], dirs: Sequence[Path]) -> nn.Module:
    return _call_factory(ref, import_reference(ref, dirs, "model"), kwargs)


def import_reference(ref: str, dirs: Sequence[Path], what: str) -> Any:
    """The object ``"pkg.mod:name"`` or ``"path/file.py:name"`` names (a relative file is looked up in
    ``dirs``); this runs the module's code. ``what`` names the setting in every error
    (``"model"``, ``"dataset"``, ``"loss"``, ...)."""
    target, attr = _split_import(ref, what)
    module = _load_file(ref, target, dirs, what) if _is_file(target) else _import_module(ref, target, what)
    if not hasattr(module, attr):
        callables = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        where = f"file {target}" if _is_file(target) else f"module {target!r}"
        raise ConfigError(f"{what} {ref!r}: {where} has no attribute {attr!r}; its callables: {callables}")
    return getattr(module, attr)


def resolve_callable(ref: str, base_dir: Path | None, what: str) -> Callable[..., Any]:
    """The function a config names (``loss``, ``metric``, ``train_step``): relative files resolve against
    ``base_dir`` (the config's directory), then the current directory."""
    dirs = [d for d in (base_dir, Path.cwd()) if d is not None]
    function = import_reference(ref, dirs, what)
    if not callable(function):
        raise ConfigError(f"{what} {ref!r}: expected a function, got {type(function).__name__}")
    return function


def _import_module(ref: str, name: str, what: str = "model") -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(f"{what} {ref!r}: no module named {name!r}; install it or put its directory on sys.path") from None
        raise ConfigError(f"{what} {ref!r}: importing module {name!r} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise ConfigError(f"{what} {ref!r}: importing module {name!r} failed: {_one_line(exc)}") from exc


def _load_file(ref: str, target: str, dirs: Sequence[Path], what: str = "model") -> ModuleType:
    """Execute the Python file ``target`` (looked up in ``dirs`` when relative) as a fresh module.

    The module name is derived from the file's absolute path, so two files named ``model.py`` never
    share a module; it is entered in ``sys.modules`` while it runs (dataclasses and pickling need that).
    """
    path = Path(target)
    candidates = [path] if path.is_absolute() else [d / path for d in dirs]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"{what} {ref!r}: file {target} not found (looked for {[str(c) for c in candidates]})")
    found = found.resolve()
    name = "_deepcompress_model_" + hashlib.sha256(str(found).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, found)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} {ref!r}: expected a Python source file (.py), got {found}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{what} {ref!r}: running {found} failed: {_one_line(exc)}") from exc
    return module
