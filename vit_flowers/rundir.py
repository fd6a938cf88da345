"""A run dir: the files it holds, whether it holds a run, whether its config
and weights agree (read without building the model, so before TensorFlow
starts), and the state a killed run resumes from.

```
config.json           everything needed to rebuild the model (written before training)
history.csv           one row per finished epoch (Keras' CSVLogger)
backup/state.json     the last finished epoch: the weights file holding the model and
                      optimizer after it, the best epoch's file, and the state of early
                      stopping and of the plateau schedule
backup/*.weights.h5   the files state.json names (nothing else is kept)
model.weights.h5      the best epoch's weights without optimizer state (written last)
training_curves.png, skipped_files.csv
```

`state.json` is the commit point: the weights file it names is written under
a temporary name and renamed before `state.json` is itself written the same
way, so a kill at any instant leaves a state and every file it names whole.
The backup stays when training ends, so `--resume --epochs N` can train on.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import pandas as pd

from . import atomic
from .config import ModelConfig, RunConfig
from .errors import BadInputError, ConfigError
from .outputs import REPORT_FILE, SKIPPED_FILE
from .resources import DEFAULT_MODEL_DIR

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"
# what a run writes; --overwrite removes them before a new run starts
LOGS_DIR = "logs"  # TensorBoard's (train/, validation/)
RUN_OUTPUTS = (WEIGHTS_FILE, HISTORY_FILE, CURVES_FILE, SKIPPED_FILE, REPORT_FILE, BACKUP_DIR, LOGS_DIR)


@dataclass
class EpochState:
    """The training state after `epoch` finished epochs."""

    epoch: int
    weights: str  # file in backup/: model and optimizer variables after the epoch
    best_epoch: int | None = None  # index of the best epoch so far (its file is kept)
    best_value: float | None = None  # its monitored value
    early_stopping: dict = field(default_factory=dict)  # wait, best, best_epoch, stopped_epoch
    plateau: dict = field(default_factory=dict)  # wait, best, cooldown_counter
    stopped_early: bool = False
    # [variable path, state] of every random seed generator (dropout's): not in the weights file
    rng: list = field(default_factory=list)

    @property
    def best_weights(self) -> str | None:
        return None if self.best_epoch is None else epoch_weights_name(self.best_epoch + 1)


@dataclass
class RunState:
    """The last finished epoch, and the one before it (kept for several
    processes, which may be killed on either side of one epoch's backup)."""

    latest: EpochState
    previous: EpochState | None = None

    def files(self) -> set[str]:
        names = set()
        for state in (self.latest, self.previous):
            if state is not None:
                names.add(state.weights)
                if state.best_weights:
                    names.add(state.best_weights)
        return names


def epoch_weights_name(epoch: int) -> str:
    """The backup file holding the state after `epoch` finished epochs."""
    return f"epoch-{epoch:05d}.weights.h5"


def backup_dir(run_dir: Path) -> Path:
    return Path(run_dir) / BACKUP_DIR


def read_state(run_dir: Path) -> RunState | None:
    """The committed state of a run dir, or None when no epoch has finished."""
    path = backup_dir(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        state = RunState(latest=EpochState(**data["latest"]),
                         previous=EpochState(**data["previous"]) if data.get("previous") else None)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a training state this package wrote ({err}); "
                          f"start the run again with --overwrite") from err
    missing = [name for name in sorted(state.files()) if not (backup_dir(run_dir) / name).is_file()]
    if missing:
        raise ConfigError(f"{path} names {missing[0]}, which is not in {backup_dir(run_dir)}; "
                          f"start the run again with --overwrite")
    return state


def write_state(run_dir: Path, state: RunState) -> None:
    """Commit `state` (its files are already written), then drop every backup
    file it no longer names."""
    folder = backup_dir(run_dir)
    atomic.write_json(folder / STATE_FILE, asdict(state))
    keep = state.files() | {STATE_FILE}
    for item in folder.iterdir():
        if item.name not in keep and not item.name.startswith(".tmp-"):
            item.unlink(missing_ok=True)


def read_history(run_dir: Path) -> pd.DataFrame:
    """`history.csv`, or an empty table when there is none yet (also when a
    kill in the first epoch left it empty)."""
    path = Path(run_dir) / HISTORY_FILE
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def trim_history(run_dir: Path, epochs: int) -> pd.DataFrame:
    """Keep the rows of the first `epochs` epochs: those the state resumes
    after (a kill between the log and the backup leaves one more)."""
    path = Path(run_dir) / HISTORY_FILE
    history = read_history(run_dir)
    if "epoch" not in history or epochs == 0:
        path.unlink(missing_ok=True)
        return pd.DataFrame()
    kept = history[history["epoch"] < epochs]
    atomic.write_csv(path, kept)
    return kept


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run unless asked to; with --overwrite, remove the
    old run's outputs (config.json is rewritten by the new run)."""
    if resume:
        return
    existing = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if existing and not overwrite:
        raise BadInputError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it "
            f"or --overwrite to start again"
        )
    if overwrite:
        for name in RUN_OUTPUTS + ("checkpoints",):
            target = run_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()


def align_state(run_dir: Path, state: RunState | None, gather_ints: Callable[[int], list[int]]
                ) -> RunState | None:
    """Make every process resume at the same epoch; return this one's state.

    Processes are killed together but not in the same instant: one may have
    committed epoch e while another still holds e - 1. All take the earliest
    epoch; a process one ahead goes back to the previous state it kept; at
    epoch 0 the backup is dropped and training starts over.
    """
    mine = state.latest.epoch if state else 0
    target = min(gather_ints(mine))
    if state is None or mine == target:
        return state
    if target == 0:
        shutil.rmtree(backup_dir(run_dir))
        return None
    if state.previous is not None and state.previous.epoch == target:
        stepped = RunState(latest=state.previous)
        write_state(run_dir, stepped)
        return stepped
    raise ConfigError(
        f"{backup_dir(run_dir)}: this process's backup is at epoch {mine}, another process's at {target}, and "
        f"no backup of epoch {target} is left here to go back to; start again with --overwrite"
    )


def is_finished(state: RunState | None, epochs: int) -> bool:
    """True when the state is past the last epoch, or early stopping ended it."""
    return state is not None and (state.latest.stopped_early or state.latest.epoch >= epochs)


def resolve_run(run: str | Path | None) -> Path:
    """The run dir to use: the one given, else the shipped default model."""
    if run is not None:
        return Path(run)
    if not DEFAULT_MODEL_DIR.is_dir():
        raise ConfigError(f"no --run given and no default model at {DEFAULT_MODEL_DIR}")
    return DEFAULT_MODEL_DIR


def weight_layout(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every array of a Keras `.weights.h5` file: {path inside the file: shape}."""
    layout: dict[str, tuple[int, ...]] = {}

    def visit(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            layout[name] = tuple(item.shape)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as err:
        raise ConfigError(f"{path}: not a readable HDF5 weights file ({err})") from err
    return layout


def check_run_files(run_dir: str | Path, weights_file: str = WEIGHTS_FILE) -> RunConfig:
    """A run dir's config (validated) after checking its weights file is
    there and is HDF5, all without building the model or importing TensorFlow."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: run dir not found")
    run_config = RunConfig.load(run_dir / CONFIG_FILE)
    weights = run_dir / weights_file
    if not weights.is_file():
        raise ConfigError(f"{weights}: weights file not found")
    check_weights_outline(weight_layout(weights), weights, run_dir / CONFIG_FILE, run_config.model)
    return run_config


def weights_outline(layout: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """What a weights file's layout says of the model it came from, read
    without building one: encoder layers, hidden size, tokens, classes."""
    outline: dict[str, int] = {}
    blocks = {part for path in layout for part in path.split("/") if re.fullmatch(r"transformer_block(_\d+)?", part)}
    if blocks:
        outline["num_layers"] = len(blocks)
    for path, shape in layout.items():
        if path.endswith("class_token/vars/0") and len(shape) == 3:
            outline["hidden_size"] = shape[-1]
        elif path.endswith("add_position_embs/vars/0") and len(shape) == 3:
            outline["tokens"] = shape[1]
    heads = sorted(path for path in layout if re.fullmatch(r"layers/dense(_\d+)?/vars/0", path))
    if heads and len(layout[heads[-1]]) == 2:
        outline["num_classes"] = layout[heads[-1]][1]
    return outline


def check_weights_outline(layout: dict[str, tuple[int, ...]], weights: Path, config_path: Path,
                          cfg: ModelConfig) -> None:
    """Refuse, before a model is built, weights whose number of layers,
    hidden size, token count or class count is not the config's (a config
    saying 200 layers would otherwise build for a minute to be refused)."""
    rows, cols = cfg.grid
    expected = {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "tokens": rows * cols + 1,
                "num_classes": cfg.num_classes}
    what = {"num_layers": "encoder layers", "hidden_size": "hidden size", "tokens": "tokens (patches + class token)",
            "num_classes": "classes"}
    for key, found in weights_outline(layout).items():
        if found != expected[key]:
            raise ConfigError(f"{weights} does not match {config_path}: {what[key]} {found} in the weights, "
                              f"{expected[key]} in the config")
