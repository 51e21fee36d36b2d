"""Checkpoints of a ``compress`` run, so an interrupted run resumes where it stopped.

The state lives in a hidden directory beside the output file (``.<name>.partial/``): ``state.json``
(which stage, round and epoch are done, the finished stages' results), the model's latest weights
(with pruning masks), the weights at the end of pruning (to rebuild the quantized structure), and the
optimizer state of an unfinished training stage. Every file is written atomically, and the state is
only used when it was made by the same configuration; a finished run removes the directory.
:class:`StageCache` keeps finished stages across runs, for sweeps that share them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from deepcompress.atomic import atomic_write_bytes, atomic_write_text
from deepcompress.checkpoint import storable


def state_dir_for(out: Path) -> Path:
    """The checkpoint directory of a run writing ``out``."""
    return out.parent / f".{out.name}.partial"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, save(storable(tensors)))


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able values."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Rebuild an optimizer state dict written by :func:`optimizer_to_files`."""
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *info["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


class RunState:
    """Progress of one ``compress`` run (see the module docstring)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.dir = state_dir_for(out)
        self.config = config
        self.progress: dict[str, Any] = {}
        state_file = self.dir / "state.json"
        if state_file.is_file():
            saved = json.loads(state_file.read_text())
            if saved.get("config") == config:
                self.progress = saved["progress"]
            else:  # another configuration's leftovers: start over
                shutil.rmtree(self.dir)

    @property
    def resumed(self) -> bool:
        return bool(self.progress)

    def get(self, key: str, default: Any = None) -> Any:
        return self.progress.get(key, default)

    def update(self, model: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
               weights_name: str = "model", **progress: Any) -> None:
        """Record ``progress`` (and the model's weights / optimizer state) atomically; JSON last."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            save_tensors(self.dir / f"{weights_name}.safetensors", model.state_dict())
        if optimizer is not None:
            tensors, info = optimizer_to_files(optimizer)
            save_tensors(self.dir / "optimizer.safetensors", tensors)
            atomic_write_text(self.dir / "optimizer.json", json.dumps(info))
        self.progress.update(progress)
        atomic_write_text(self.dir / "state.json", json.dumps({"config": self.config, "progress": self.progress}, default=float))

    def weights(self, name: str = "model") -> dict[str, torch.Tensor]:
        return load_file(self.dir / f"{name}.safetensors")

    def optimizer_state(self) -> dict[str, Any]:
        info = json.loads((self.dir / "optimizer.json").read_text())
        return optimizer_from_files(load_file(self.dir / "optimizer.safetensors"), info)

    def finish(self) -> None:
        """Remove the checkpoints of a completed run."""
        shutil.rmtree(self.dir, ignore_errors=True)


#: Per cacheable stage, the config tables that only later stages read (left out of its cache key).
LATER_TABLES = {"prune": ("quantize", "encode")}


class StageCache:
    """Finished stages shared between runs (a sweep over quantization settings prunes once).

    A stage's entry is keyed by a hash of the reference weights and of the configuration without the
    tables only later stages read (:data:`LATER_TABLES`): two runs share the ``prune`` stage exactly
    when everything that decides the pruned network -- model, checkpoint contents, data, seeds, the
    ``[train]``, ``[prune]`` and ``[distill]`` tables -- agrees. An entry is the stage's weights (masks
    included) and the stage results up to it; it is written atomically, so a killed run leaves none.
    """

    def __init__(self, directory: Path, config: dict[str, Any], reference: dict[str, torch.Tensor]) -> None:
        self.dir = Path(directory)
        self.config = config
        digest = hashlib.sha256()
        for name in sorted(reference):
            tensor = reference[name].detach().cpu().contiguous()
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
        self.reference = digest.hexdigest()

    def key(self, stage: str) -> str | None:
        """The entry name of ``stage`` for this run, ``None`` for a stage that is not cached."""
        if stage not in LATER_TABLES:
            return None
        kept = {k: v for k, v in self.config.items() if k not in LATER_TABLES[stage]}
        text = json.dumps({"reference": self.reference, "config": kept}, sort_keys=True, default=str)
        return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"

    def load(self, stage: str) -> tuple[list[dict[str, Any]], Path] | None:
        """``(stage results up to stage, path of its weights)`` when an entry exists, else ``None``."""
        key = self.key(stage)
        if key is None or not (self.dir / f"{key}.json").is_file():
            return None
        return json.loads((self.dir / f"{key}.json").read_text())["stages"], self.dir / f"{key}.safetensors"

    def save(self, stage: str, stages: list[dict[str, Any]], model: torch.nn.Module) -> None:
        """Record a finished ``stage`` (weights first, the JSON that makes the entry visible last)."""
        key = self.key(stage)
        if key is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        save_tensors(self.dir / f"{key}.safetensors", model.state_dict())
        atomic_write_text(self.dir / f"{key}.json", json.dumps({"stages": stages}, default=float))
