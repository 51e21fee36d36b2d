"""Shared plumbing of the experiment scripts: arguments, data, reference models, resumable sweeps, output.

Every script takes ``--tiny`` (a few hundred images, fewer sweep points) so the test suite can run it
end to end in seconds, and ``--out`` (default: experiments/results/). Results are JSON with the wall
time and the command; figures are PNG (matplotlib, Agg backend).

Every script is a sweep over named points (e.g. ``"linear/4bits"``) run through :class:`Sweep`, so a
killed run resumes where it stopped: see its docstring for the files it leaves in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from torch import nn

from deepcompress.atomic import atomic_write_text
from deepcompress.checkpoint import (
    load_checkpoint,
    load_state_into,
    read_checkpoint,
    save_checkpoint,
)
from deepcompress.data import load_split
from deepcompress.errors import CheckpointError
from deepcompress.models import build_model
from deepcompress.progress import log_line, progress
from deepcompress.prune import set_masks_
from deepcompress.train import evaluate

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
UNRECORDED_ARGUMENTS = ("out", "stop_after")  # where results go and the test hook do not change them


def parse_args(description: str, configure: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The common arguments (``--tiny``, ``--out``, ``--stop-after``) plus any ``configure`` adds."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few hundred images and short sweeps (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and PNG results")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="exit (status 1) after computing N sweep points, as if killed there; the next run "
                             "resumes (a test hook for resuming)")
    if configure is not None:
        configure(parser)
    args = parser.parse_args()
    if args.stop_after is not None and args.stop_after < 1:
        parser.error(f"--stop-after: expected a positive number of points, got {args.stop_after}")
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def reference(name: str, dataset: str = "mnist") -> Any:
    """The committed reference model ``experiments/results/<name>_<dataset>_ref.safetensors``."""
    return load_checkpoint(RESULTS / f"{name}_{dataset}_ref.safetensors")[0]


def test_data(dataset: str, tiny: bool) -> Any:
    return load_split(dataset, "test").tensors(300 if tiny else None)


def train_data(dataset: str, tiny: bool) -> Any:
    return load_split(dataset, "train").tensors(500 if tiny else None)


def accuracy_on(data: Any) -> Any:
    return lambda model: evaluate(model, data)["accuracy"]


def prune_and_retrain(model: Any, sparsity: dict[str, float], train: Any, rounds: int, epochs: int, lr: float) -> Any:
    """Iteratively prune ``model`` in place to per-layer ``sparsity``, retraining ``epochs`` per round at ``lr``
    with pruned weights held at zero (Han 2015, section 3.3); returns the model."""
    from deepcompress.prune import PruneConfig, iterative_prune_, keep_pruned_zero
    from deepcompress.train import TrainConfig, fit

    def retrain(m: Any, round_index: int) -> None:
        fit(m, train, TrainConfig(epochs=epochs, seed=round_index), lr=lr,
            on_optimizer=lambda opt: keep_pruned_zero(opt, m), progress=False)

    cfg = PruneConfig(method="sparsity", sparsity=sparsity, rounds=rounds, epochs_per_round=epochs)
    iterative_prune_(model, cfg, retrain=retrain, progress=False)
    return model


def write_json(path: Path, result: dict[str, Any], started: float) -> None:
    result = {**result, "wall_seconds": round(time.perf_counter() - started, 1), "command": " ".join(["python", *sys.argv])}
    atomic_write_text(path, json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}")


def _plain(value: Any, default: Callable[[Any], Any] = float) -> Any:
    """``value`` as it reads back from JSON (numpy scalars as floats), so fresh and resumed points are
    the same objects."""
    return json.loads(json.dumps(value, default=default))


class Sweep:
    """A resumable sweep over named points, for a script writing ``<out>/<result_name>.json``.

    After each point, its JSON-able result is written atomically to ``<out>/.<result_name>.partial.json``
    together with the script's arguments (all but ``--out`` and ``--stop-after``) and the seconds spent so
    far (arguments are compared as JSON, paths as strings). A rerun with the same arguments reuses the
    finished points and computes the rest, saying how many it reused; a partial file from other
    arguments (``--tiny`` against a full run, another switch) is discarded with a message.
    Expensive shared preparation (a pruned and retrained model) is kept by :meth:`prepared` as a
    safetensors checkpoint ``<out>/.<result_name>.<name>.safetensors``. :meth:`finish` writes the final
    JSON, whose ``wall_seconds`` adds up every run that contributed, and removes these files.

    Each point must depend only on its key and the (prepared) inputs, never on which points ran before
    in the same process (copy models, seed every random draw), so a resumed sweep equals an unbroken one.
    """

    def __init__(self, args: argparse.Namespace, result_name: str) -> None:
        """``args`` as from :func:`parse_args` (any parser's will do: it needs ``out``; ``stop_after`` is optional)."""
        self.out: Path = args.out
        self.result_name = result_name
        self.partial = self.out / f".{result_name}.partial.json"
        self.arguments = _plain({k: v for k, v in sorted(vars(args).items()) if k not in UNRECORDED_ARGUMENTS}, str)
        self.stop_after: int | None = getattr(args, "stop_after", None)
        self.started = time.perf_counter()
        self.points: dict[str, Any] = {}
        self.seconds_before = 0.0
        self.computed = 0
        self._resume()

    def _resume(self) -> None:
        if not self.partial.is_file():
            return
        try:
            saved = json.loads(self.partial.read_text())
            arguments, points, seconds = saved["arguments"], saved["points"], float(saved["seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            print(f"ignoring unreadable {self.partial} ({exc}); starting over", file=sys.stderr)
            return
        if arguments != self.arguments:
            print(f"{self.partial} was made with other arguments ({arguments}, now {self.arguments}); "
                  "starting over", file=sys.stderr)
            self._remove_files()
            return
        self.points, self.seconds_before = points, seconds

    def _save(self) -> None:
        state = {"arguments": self.arguments, "seconds": self.seconds_before + time.perf_counter() - self.started,
                 "points": self.points}
        atomic_write_text(self.partial, json.dumps(state, indent=1, default=float) + "\n")

    def _remove_files(self) -> None:
        self.partial.unlink(missing_ok=True)
        for path in self.out.glob(f".{self.result_name}.*.safetensors"):
            path.unlink()

    def prepared(self, name: str, model_name: str, build: Callable[[], nn.Module]) -> nn.Module:
        """``build()``'s model (architecture ``model_name`` of the registry, pruned or not), saved after
        building and loaded instead of rebuilt when a checkpoint from the same arguments exists."""
        path = self.out / f".{self.result_name}.{name}.safetensors"
        if path.is_file():
            try:
                tensors, metadata = read_checkpoint(path)
                if metadata.get("sweep_arguments") == self.arguments and metadata["model"] == model_name:
                    model = build_model(model_name)
                    set_masks_(model, {k.removesuffix(".weight_mask"): v for k, v in tensors.items() if k.endswith(".weight_mask")})
                    load_state_into(model, tensors, str(path))
                    print(f"reused {name} model from {path}", file=sys.stderr)
                    return model
                print(f"{path} was made with other arguments; rebuilding it", file=sys.stderr)
            except CheckpointError as exc:
                print(f"ignoring {path} ({exc}); rebuilding it", file=sys.stderr)
        model = build()
        save_checkpoint(model, path, {"model": model_name, "sweep_arguments": self.arguments})
        return model

    def run(self, keys: Sequence[str], compute: Callable[[str], Any], describe: Callable[[str, Any], str] | None = None) -> dict[str, Any]:
        """``{key: compute(key)}`` for every key, reusing saved points; progress on stderr counts them (a bar
        on a terminal, one summary line in a log) and ``describe(key, value)``, if given, prints a line per
        point on stdout. Values must be JSON-able (numpy scalars become floats); each is returned as it
        reads back from the partial file."""
        if len(set(keys)) != len(keys):
            raise ValueError(f"sweep {self.result_name}: expected distinct point keys, got {list(keys)}")
        reused = [k for k in keys if k in self.points]
        if reused:
            print(f"{self.result_name}: reused {len(reused)} of {len(keys)} points from {self.partial}", file=sys.stderr)
        with progress(desc=self.result_name, total=len(keys), initial=len(reused)) as bar:
            for key in keys:
                if key in self.points:
                    continue
                self.points[key] = _plain(compute(key))
                self._save()
                self.computed += 1
                if describe is not None:
                    log_line(describe(key, self.points[key]), sys.stdout)
                bar.update()
                if self.stop_after is not None and self.computed >= self.stop_after:
                    raise SystemExit(f"stopped after {self.computed} points (--stop-after); rerun without it to resume")
        return {key: self.points[key] for key in keys}

    def finish(self, path: Path, result: dict[str, Any], started: float) -> None:
        """:func:`write_json` the final result, counting earlier runs' seconds, then remove the partial files."""
        write_json(path, result, started - self.seconds_before)
        self._remove_files()
