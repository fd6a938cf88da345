"""Fit a classifier from file lists into a run dir, with Keras callbacks.

The run dir gets `config.json` first (so a killed run can be rebuilt), then
`history.csv` (CSVLogger, one row per finished epoch), a backup of the
training state after every epoch (BackupAndRestore, removed when training
finishes), the best weights so far (ModelCheckpoint, for resumed runs) and
finally `model.weights.h5` (the best epoch's weights, restored in memory by
EarlyStopping, written atomically) and `training_curves.png`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from . import atomic
from .config import RunConfig, TrainConfig
from .errors import BadInputError, ConfigError
from .filelists import read_file_list, require_classes
from .images import load_images, write_skipped
from .model import CONFIG_FILE, WEIGHTS_FILE, build_classifier, save_weights

HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
BACKUP_DIR = "backup"
# the names Keras' BackupAndRestore gives its files inside BACKUP_DIR
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
BEST_WEIGHTS = "checkpoints/best.weights.h5"
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class TrainResult:
    run_dir: Path
    history: pd.DataFrame
    skipped: pd.DataFrame
    best_epoch: int
    model: object


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; make TF's ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def load_list(csv_path: str, class_names: list[str], image_size: tuple[int, int], progress: bool = True):
    """Read a list and decode its images: (images, labels, skipped)."""
    frame = read_file_list(csv_path, class_names)
    loaded = load_images(frame["path"].tolist(), image_size, progress=progress)
    labels = frame["label"].to_numpy()[loaded.kept]
    return loaded.images, labels, loaded.skipped


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    """Adam (the seed's) or AdamW, with a constant or warm-up + cosine rate."""
    import keras

    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {OPTIMIZERS}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule {cfg.lr_schedule!r}; choose one of {LR_SCHEDULES}")
    rate = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch)
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else cfg.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(learning_rate=rate)


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )


PREVIOUS_WEIGHTS = "previous.weights.h5"
PREVIOUS_METADATA = "previous_training_metadata.json"


def atomic_backup_callback(backup_dir: Path, keep_previous: bool = False):
    """Keras' BackupAndRestore whose backup is written under temporary names
    and renamed into place, so a kill while it writes (the weights take a
    while) leaves the previous epoch's backup whole instead of a truncated
    HDF5 file that cannot be resumed from.

    `keep_previous` also keeps the epoch before (for several processes, which
    may be killed on either side of one epoch's backup: `align_backup`)."""
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            weights, metadata = Path(self._weights_path), Path(self._training_metadata_path)
            if keep_previous and weights.is_file() and metadata.is_file():
                for source, target in ((weights, PREVIOUS_WEIGHTS), (metadata, PREVIOUS_METADATA)):
                    with atomic.atomic_path(weights.parent / target) as tmp:
                        shutil.copyfile(source, tmp)
            # the weights are renamed into place first, the small metadata file
            # right after: only in that instant are the weights an epoch ahead
            with atomic.atomic_path(weights) as tmp:
                self.model.save_weights(str(tmp), overwrite=True)
            state = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
            atomic.write_text(metadata, json.dumps(state))

    return AtomicBackupAndRestore(str(backup_dir))


def atomic_checkpoint_callback(path: Path, monitor: str, best_so_far: float | None):
    """Keras' ModelCheckpoint (best weights only) writing under a temporary
    name that is renamed into place: a kill while it writes leaves the
    previous best whole, which a resumed run may load at its end."""
    import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            final = self.filepath
            # Keras writes only when the epoch is the best: the rename is optional
            with atomic.atomic_path(final, optional=True) as tmp:
                self.filepath = str(tmp)
                try:
                    super()._save_model(epoch, batch, logs)
                finally:
                    self.filepath = final

    return AtomicModelCheckpoint(str(path), monitor=monitor, save_best_only=True, save_weights_only=True,
                                 initial_value_threshold=best_so_far)


def align_backup(run_dir: Path, gather_ints) -> int:
    """Make every process resume at the same epoch; return it.

    Processes are killed together but not in the same instant: one may have
    written the backup of epoch e while another still holds e - 1. All take
    the earliest epoch; a process that is one ahead goes back to the previous
    backup it kept; at epoch 0 the backup is dropped and training starts over.
    """
    backup = run_dir / BACKUP_DIR
    mine = restored_epoch(run_dir)
    target = min(gather_ints(mine))
    if mine == target:
        return target
    if target == 0:
        shutil.rmtree(backup)
        return 0
    previous = backup / PREVIOUS_METADATA
    if previous.is_file() and int(json.loads(previous.read_text())["epoch"]) == target:
        os.replace(backup / PREVIOUS_WEIGHTS, backup / BACKUP_WEIGHTS)
        os.replace(previous, backup / BACKUP_METADATA)
        return target
    raise ConfigError(
        f"{backup}: this process's backup is at epoch {mine}, another process's at {target}, and no backup "
        f"of epoch {target} is left here to go back to; start again with --overwrite"
    )


def make_callbacks(run_dir: Path, cfg: TrainConfig, has_val: bool, best_so_far: float | None,
                   keep_previous_backup: bool = False):
    """CSVLogger, BackupAndRestore, ModelCheckpoint, EarlyStopping, and
    ReduceLROnPlateau when the rate is not a schedule. The logger comes
    before the backup, so a kill between them repeats no epoch on resume
    (the history is cut back to the backup's epoch)."""
    import keras

    monitor = "val_loss" if has_val else "loss"

    def log_learning_rate(epoch, logs):
        # the rate the epoch ended with, schedules included, for history.csv
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(log_lr.model.optimizer.learning_rate))

    log_lr = keras.callbacks.LambdaCallback(on_epoch_end=log_learning_rate)
    callbacks = [
        log_lr,
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        atomic_backup_callback(run_dir / BACKUP_DIR, keep_previous_backup),
        # keeps the best epoch's weights in memory and puts them back at the end
        keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True),
        atomic_checkpoint_callback(run_dir / BEST_WEIGHTS, monitor, best_so_far),
    ]
    if cfg.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, cfg.patience // 2), min_lr=1e-7)
        )
    return callbacks


def restored_epoch(run_dir: Path) -> int:
    """The epoch BackupAndRestore will resume at (0 without a backup)."""
    meta = run_dir / BACKUP_DIR / BACKUP_METADATA
    return int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0


def training_load_size(run_config: RunConfig) -> tuple[int, int]:
    """The size training images are decoded at: the model's input, or
    `load_size` high (the input's aspect kept) for `resized-crop` to cut from."""
    cfg, mcfg = run_config.train, run_config.model
    height, width = mcfg.image_size
    if not cfg.load_size:
        return height, width
    if cfg.augment != "resized-crop":
        raise ConfigError(f"--load-size {cfg.load_size} needs --augment resized-crop (crops are cut from the larger "
                          f"images); with --augment {cfg.augment} images are decoded at the model's size")
    if cfg.load_size < height:
        raise ConfigError(f"--load-size {cfg.load_size} is smaller than the model's input height {height}")
    return cfg.load_size, round(width * cfg.load_size / height)


def array_datasets(run_config: RunConfig, global_batch: int, start_epoch: int, equal_shards: bool,
                   progress: bool):
    """Load the lists into memory: (train, val or None, steps per epoch, skipped files).

    An epoch is len // batch full batches in a fresh seeded order (the few
    left over are in the next epoch's order), so every replica gets equal
    shards; a resumed run continues with the epoch it stopped in.
    """
    from .datasets import array_dataset

    cfg, mcfg = run_config.train, run_config.model
    size = (mcfg.image_size[0], mcfg.image_size[1])
    x_train, y_train, skipped = load_list(cfg.train_list, mcfg.class_names, training_load_size(run_config),
                                          progress=progress)
    if len(x_train) == 0:
        raise BadInputError(f"{cfg.train_list}: no image in the list could be read")
    require_classes(pd.DataFrame({"label": y_train}), mcfg.class_names, cfg.train_list)
    if len(x_train) < global_batch:
        raise BadInputError(f"{cfg.train_list}: {len(x_train)} images, fewer than one batch of {global_batch}")
    train_ds = array_dataset(x_train, y_train, mcfg.num_classes, global_batch, training=True,
                             augment=cfg.augment, mixup_alpha=cfg.mixup_alpha, seed=cfg.seed,
                             start_epoch=start_epoch, output_size=size)
    val_ds = None
    if cfg.val_list:
        x_val, y_val, skipped_val = load_list(cfg.val_list, mcfg.class_names, size, progress=progress)
        skipped = pd.concat([skipped, skipped_val], ignore_index=True)
        # several processes need equal shards: the last partial batch is not evaluated there
        val_ds = array_dataset(x_val, y_val, mcfg.num_classes, global_batch, drop_remainder=equal_shards)
    return train_ds, val_ds, len(x_train) // global_batch, skipped


def stream_datasets(run_config: RunConfig, global_batch: int):
    """Decode the lists batch by batch (for lists larger than memory):
    (train, val or None, steps per epoch, a list that collects skipped files)."""
    from .datasets import file_dataset

    cfg, mcfg = run_config.train, run_config.model
    size = (mcfg.image_size[0], mcfg.image_size[1])
    if cfg.mixup_alpha > 0:
        raise BadInputError("--mixup works on loaded images; it cannot be combined with --stream")
    train = read_file_list(cfg.train_list, mcfg.class_names)
    require_classes(train, mcfg.class_names, cfg.train_list)
    if len(train) < global_batch:
        raise BadInputError(f"{cfg.train_list}: {len(train)} images, fewer than one batch of {global_batch}")
    skipped: list[tuple[str, str]] = []
    train_ds = file_dataset(train["path"].tolist(), train["label"].tolist(), mcfg.num_classes,
                            training_load_size(run_config), global_batch, skipped, training=True,
                            augment=cfg.augment, seed=cfg.seed, output_size=size).repeat()
    val_ds = None
    if cfg.val_list:
        val = read_file_list(cfg.val_list, mcfg.class_names)
        val_ds = file_dataset(val["path"].tolist(), val["label"].tolist(), mcfg.num_classes, size, global_batch,
                              skipped)
    return train_ds, val_ds, len(train) // global_batch, skipped


def trim_history_for_resume(run_dir: Path) -> float | None:
    """Cut `history.csv` back to the epoch the backup restores; return the
    best monitored value so far (so the best checkpoint is not overwritten
    by a worse epoch after resuming)."""
    history_path = run_dir / HISTORY_FILE
    if not history_path.is_file():
        return None
    history = pd.read_csv(history_path)
    kept = history[history["epoch"] < restored_epoch(run_dir)]
    atomic.write_csv(history_path, kept)
    for column in ("val_loss", "loss"):
        if column in kept and len(kept):
            return float(kept[column].min())
    return None


def best_before_resume(history: pd.DataFrame, monitor: str, best_so_far: float | None) -> bool:
    """True when no epoch after resuming beat the best one logged before it."""
    if best_so_far is None or monitor not in history:
        return False
    return bool(history[monitor].min() >= best_so_far)


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished run unless asked to."""
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise BadInputError(f"{run_dir}: nothing to resume (no {CONFIG_FILE})")
        return
    existing = [name for name in (WEIGHTS_FILE, HISTORY_FILE, BACKUP_DIR) if (run_dir / name).exists()]
    if existing and not overwrite:
        raise BadInputError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it "
            f"or --overwrite to start again"
        )
    if overwrite:
        for name in (HISTORY_FILE, BACKUP_DIR, "checkpoints"):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def train_run(
    run_config: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    stream: bool = False,
    deterministic: bool = True,
    verbose: int | str = "auto",
    strategy=None,
    num_replicas: int | None = None,
    first_callbacks: list | None = None,
    gather_ints=None,
) -> TrainResult:
    """Train `run_config` on its lists and write the run dir.

    `stream` decodes the lists batch by batch instead of loading them into
    memory first. `strategy` is a tf.distribute strategy (or None); `num_replicas` the
    replica count of another engine (Keras' distribution on JAX), whose
    `first_callbacks` run before the package's own. Under several processes
    each process calls this with its own dir: the chief with the run dir,
    the others with a worker dir of their own, so only the chief writes the
    run dir. `gather_ints` (several processes) collects an int from every
    process, so that a resumed run restarts all of them at one epoch.
    """
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, resume, overwrite)
    if resume and gather_ints is not None:
        align_backup(run_dir, gather_ints)
    if resume:
        saved = RunConfig.load(run_dir / CONFIG_FILE)
        saved.train.epochs = run_config.train.epochs
        run_config = saved
    cfg, mcfg = run_config.train, run_config.model
    set_seed(cfg.seed, deterministic)

    replicas = strategy.num_replicas_in_sync if strategy is not None else (num_replicas or 1)
    global_batch = cfg.batch_size * replicas
    start_epoch = restored_epoch(run_dir) if resume else 0
    if stream:
        if strict:
            raise BadInputError("--strict needs the images loaded up front; it cannot be combined with --stream")
        train_ds, val_ds, steps, streamed = stream_datasets(run_config, global_batch)
        has_val, skipped = val_ds is not None, pd.DataFrame(columns=["file", "reason"])
    else:
        train_ds, val_ds, steps, skipped = array_datasets(run_config, global_batch, start_epoch,
                                                          (num_replicas or 1) > 1, bool(verbose))
        has_val = val_ds is not None
    if strict and len(skipped):
        first = skipped.iloc[0]
        raise BadInputError(f"{first['file']}: {first['reason']} (--strict stops at the first bad file)")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_config.save(run_dir / CONFIG_FILE)
    write_skipped(skipped, run_dir / "skipped_files.csv")

    import contextlib

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        # synchronised batch statistics make N replicas train like one device
        model = build_classifier(mcfg, sync_batchnorm=strategy is not None and replicas > 1)
        train_cfg = cfg
        if cfg.scale_lr and replicas > 1:
            train_cfg = replace(cfg, learning_rate=cfg.learning_rate * replicas)
        compile_model(model, train_cfg, steps)
    best_so_far = trim_history_for_resume(run_dir) if resume else None
    callbacks = list(first_callbacks or []) + make_callbacks(run_dir, cfg, has_val, best_so_far,
                                                             keep_previous_backup=gather_ints is not None)
    # the dataset shuffles itself, seeded
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks,
              verbose=verbose, shuffle=False)
    if stream and streamed:
        skipped = pd.DataFrame(sorted(set(streamed)), columns=["file", "reason"])
        write_skipped(skipped, run_dir / "skipped_files.csv")

    history = pd.read_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else pd.DataFrame()
    best_epoch = -1
    monitor = "val_loss" if has_val else "loss"
    if resume and best_before_resume(history, monitor, best_so_far):
        model.load_weights(str(run_dir / BEST_WEIGHTS))  # the best epoch ran before the kill
    # an uncompiled twin, so the shipped file holds no optimizer state
    clean = build_classifier(mcfg, load_pretrained=False)
    clean.set_weights(model.get_weights())
    save_weights(clean, run_dir / WEIGHTS_FILE)
    if monitor in history and history[monitor].notna().any():
        best_epoch = int(history.loc[history[monitor].idxmin(), "epoch"])
        from .plots import training_curves

        training_curves(history, run_dir / CURVES_FILE)
    return TrainResult(run_dir, history, skipped, best_epoch, model)
