"""Train a classifier from file lists into a run dir: load the data, build
the model, fit it with the run's callbacks, then write the best weights.

Run-dir bookkeeping (what a run dir holds, the state a killed run resumes
from) is `rundir`; the callbacks that log, stop early and commit each epoch
are `callbacks`; the devices and hosts the run uses come in one
`DistributionEnv` (`distribute`).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from .callbacks import make_callbacks, monitored, set_rng_state
from .config import RunConfig, TrainConfig, check_fits_memory, check_transfer
from .datasets import array_dataset, feature_dataset, file_dataset
from .distribute import DistributionEnv
from .errors import BadInputError, ConfigError
from .filelists import read_file_list, require_classes
from .images import load_images, write_skipped
from .interrupt import deferred_interrupt
from .model import (
    build_classifier,
    feature_extractor,
    head_on_features,
    save_weights,
    set_frozen,
)
from .plots import training_curves
from .rundir import (
    CONFIG_FILE,
    CURVES_FILE,
    SKIPPED_FILE,
    WEIGHTS_FILE,
    RunState,
    align_state,
    backup_dir,
    is_finished,
    prepare_run_dir,
    read_history,
    read_state,
    trim_history,
)


@dataclass
class TrainOptions:
    """How to run training, beside what the run is (the RunConfig)."""

    resume: bool = False
    overwrite: bool = False
    strict: bool = False  # stop at the first unreadable image
    stream: bool = False  # decode batch by batch instead of loading the lists first
    deterministic: bool = True
    verbose: int | str = "auto"
    summary: bool = False  # print model.summary() before training, as the source post does


@dataclass
class TrainResult:
    run_dir: Path
    history: pd.DataFrame
    skipped: pd.DataFrame
    best_epoch: int
    model: object
    stopped_early: bool = False
    already_finished: bool = False  # --resume on a run that had nothing left to train


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; make TF's ops deterministic."""
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
    """Adam (the post's) or AdamW, with a constant or warm-up + cosine rate."""
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
    # ema_momentum: the optimizer also keeps a moving average of the weights (`callbacks.ema_callbacks`)
    ema = dict(use_ema=True, ema_momentum=cfg.ema_momentum) if cfg.ema_momentum > 0 else {}
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate=rate, **ema)


def frozen_in(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the pretrained part is frozen during epoch `epoch` (0-based)."""
    return cfg.freeze_backbone and not (cfg.unfreeze_after and epoch >= cfg.unfreeze_after)


def phase_config(cfg: TrainConfig, frozen: bool) -> TrainConfig:
    """The optimizer's settings for one phase of a run with --unfreeze-after:
    the frozen epochs with the run's rate and schedule over those epochs, the
    fine-tuning epochs at --fine-tune-rate over the rest, without warm-up."""
    if not cfg.unfreeze_after:
        return cfg
    if frozen:
        return replace(cfg, epochs=cfg.unfreeze_after, warmup_epochs=min(cfg.warmup_epochs, cfg.unfreeze_after))
    return replace(cfg, learning_rate=cfg.fine_tune_rate or cfg.learning_rate / 10,
                   epochs=max(1, cfg.epochs - cfg.unfreeze_after), warmup_epochs=0.0)


def early_stopping_of(callbacks: list):
    """The EarlyStopping among `callbacks` (it holds the best epoch's weights)."""
    return next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )


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


def load_training_lists(run_config: RunConfig, global_batch: int, progress: bool, size: tuple[int, int]):
    """Decode the training list at `size` and the validation list at the
    model's input: (x_train, y_train, x_val or None, y_val or None, skipped files)."""
    cfg, mcfg = run_config.train, run_config.model
    x_train, y_train, skipped = load_list(cfg.train_list, mcfg.class_names, size, progress=progress)
    if len(x_train) == 0:
        raise BadInputError(f"{cfg.train_list}: no image in the list could be read")
    require_classes(pd.DataFrame({"label": y_train}), mcfg.class_names, cfg.train_list)
    if len(x_train) < global_batch:
        raise BadInputError(f"{cfg.train_list}: {len(x_train)} images, fewer than one batch of {global_batch}")
    x_val = y_val = None
    if cfg.val_list:
        x_val, y_val, skipped_val = load_list(cfg.val_list, mcfg.class_names, tuple(mcfg.image_size),
                                              progress=progress)
        skipped = pd.concat([skipped, skipped_val], ignore_index=True)
    return x_train, y_train, x_val, y_val, skipped


def array_datasets(run_config: RunConfig, global_batch: int, start_epoch: int, equal_shards: bool,
                   progress: bool):
    """Load the lists into memory: (train, val or None, steps per epoch, skipped files).

    An epoch is len // batch full batches in a fresh seeded order (the few
    left over are in the next epoch's order), so every replica gets equal
    shards; a resumed run continues with the epoch it stopped in.
    """
    cfg, mcfg = run_config.train, run_config.model
    size = (mcfg.image_size[0], mcfg.image_size[1])
    x_train, y_train, x_val, y_val, skipped = load_training_lists(run_config, global_batch, progress,
                                                                  training_load_size(run_config))
    train_ds = array_dataset(x_train, y_train, mcfg.num_classes, global_batch, training=True,
                             augment=cfg.augment, mixup_alpha=cfg.mixup_alpha, seed=cfg.seed,
                             start_epoch=start_epoch, output_size=size, cutmix=cfg.cutmix,
                             rand_ops=cfg.rand_augment, rand_strength=cfg.rand_strength)
    val_ds = None
    if x_val is not None:
        # several processes need equal shards: the last partial batch is not evaluated there
        val_ds = array_dataset(x_val, y_val, mcfg.num_classes, global_batch, drop_remainder=equal_shards)
    return train_ds, val_ds, len(x_train) // global_batch, skipped


def feature_datasets(lists: tuple, extractor, run_config: RunConfig, global_batch: int, start_epoch: int):
    """`--cache-features`: the frozen part run once over the loaded lists
    (`load_training_lists`' tuple), its outputs batched as the images would
    be: (train, val or None)."""
    cfg, mcfg = run_config.train, run_config.model
    x_train, y_train, x_val, y_val, _ = lists

    def features(images):
        return extractor.predict(array_dataset(images, None, mcfg.num_classes, global_batch), verbose=0)

    train_ds = feature_dataset(features(x_train), y_train, mcfg.num_classes, global_batch, training=True,
                               seed=cfg.seed, start_epoch=start_epoch)
    val_ds = None if x_val is None else feature_dataset(features(x_val), y_val, mcfg.num_classes, global_batch)
    return train_ds, val_ds


def stream_datasets(run_config: RunConfig, global_batch: int):
    """Decode the lists batch by batch (for lists larger than memory):
    (train, val or None, steps per epoch, a list that collects skipped files)."""
    cfg, mcfg = run_config.train, run_config.model
    size = (mcfg.image_size[0], mcfg.image_size[1])
    if cfg.mixup_alpha > 0 or cfg.cutmix > 0:
        raise BadInputError("--mixup and --cutmix work on loaded images; they cannot be combined with --stream")
    train = read_file_list(cfg.train_list, mcfg.class_names)
    require_classes(train, mcfg.class_names, cfg.train_list)
    if len(train) < global_batch:
        raise BadInputError(f"{cfg.train_list}: {len(train)} images, fewer than one batch of {global_batch}")
    skipped: list[tuple[str, str]] = []
    train_ds = file_dataset(train["path"].tolist(), train["label"].tolist(), mcfg.num_classes,
                            training_load_size(run_config), global_batch, skipped, training=True,
                            augment=cfg.augment, seed=cfg.seed, output_size=size, rand_ops=cfg.rand_augment,
                            rand_strength=cfg.rand_strength).repeat()
    val_ds = None
    if cfg.val_list:
        val = read_file_list(cfg.val_list, mcfg.class_names)
        val_ds = file_dataset(val["path"].tolist(), val["label"].tolist(), mcfg.num_classes, size, global_batch,
                              skipped)
    return train_ds, val_ds, len(train) // global_batch, skipped


def restore_state(model, run_dir: Path, state: RunState, scope) -> list | None:
    """Put the model, its optimizer and its random states back as they were
    after the state's epoch; return the best epoch's weights (for early
    stopping to restore at the end). `scope` makes the context to create
    variables in (a strategy's scope), once per use."""
    folder = backup_dir(run_dir)
    with scope():
        model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
    best = None
    try:
        if state.latest.best_weights:
            with warnings.catch_warnings():  # a best epoch before --unfreeze-after: its optimizer is not this one
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(str(folder / state.latest.best_weights))
            if model.optimizer.use_ema:  # early stopping kept the moving average of that epoch
                model.optimizer.finalize_variable_values(model.trainable_variables)
            best = model.get_weights()
        model.load_weights(str(folder / state.latest.weights))
        with scope():
            set_rng_state(model, state.latest.rng)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder}: the backup cannot be loaded ({err}); start again with --overwrite") from err
    return best


def finalise(model, run_config: RunConfig, run_dir: Path, has_val: bool) -> tuple[pd.DataFrame, int]:
    """Write the best weights (without optimizer state) and the curves; (history, best epoch)."""
    # an uncompiled twin, so the shipped file holds no optimizer state
    clean = build_classifier(run_config.model, load_pretrained=False)
    clean.set_weights(model.get_weights())
    save_weights(clean, run_dir / WEIGHTS_FILE)
    history = read_history(run_dir)
    monitor = monitored(has_val)
    best_epoch = -1
    if monitor in history and history[monitor].notna().any():
        best_epoch = int(history.loc[history[monitor].idxmin(), "epoch"])
        training_curves(history, run_dir / CURVES_FILE)
    return history, best_epoch


def train_run(run_config: RunConfig, run_dir: str | Path, options: TrainOptions | None = None,
              env=None) -> TrainResult:
    """Train `run_config` on its lists and write the run dir.

    `env` is a `distribute.DistributionEnv` (None: one device). Under several
    processes each process calls this with its own dir: the chief with the
    run dir, the others with a worker dir of their own, so only the chief
    writes the run dir; on --resume they restart at one epoch.
    """
    check_transfer(run_config.model, run_config.train)
    options = options or TrainOptions()
    env = env or DistributionEnv(strategy=None, is_chief=True, name="default")
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, options.resume, options.overwrite)
    state = read_state(run_dir) if options.resume else None
    if options.resume and env.gather_ints is not None:
        state = align_state(run_dir, state, env.gather_ints)
    cfg, mcfg = run_config.train, run_config.model
    finished = is_finished(state, cfg.epochs)
    if finished and (run_dir / WEIGHTS_FILE).is_file():
        history = read_history(run_dir)
        return TrainResult(run_dir, history, pd.DataFrame(columns=["file", "reason"]), _best_epoch(state),
                           None, stopped_early=state.latest.stopped_early, already_finished=True)
    check_fits_memory(mcfg, 16, "train")
    set_seed(cfg.seed, options.deterministic)

    strategy = env.strategy
    replicas = strategy.num_replicas_in_sync if strategy is not None else env.num_replicas
    global_batch = cfg.batch_size * replicas
    start_epoch = state.latest.epoch if state else 0
    if cfg.cache_features and (options.stream or env.num_replicas > 1):
        raise BadInputError("--cache-features stores the features of loaded lists on one device; it cannot be "
                            "combined with --stream or several replicas")
    lists = None
    if options.stream:
        if options.strict:
            raise BadInputError("--strict needs the images loaded up front; it cannot be combined with --stream")
        train_ds, val_ds, steps, streamed = stream_datasets(run_config, global_batch)
        skipped = pd.DataFrame(columns=["file", "reason"])
        streamed_lists = [streamed]  # each stream fills its list with the files it could not read
    elif cfg.cache_features:  # the datasets come once the model exists
        streamed_lists = []
        lists = load_training_lists(run_config, global_batch, bool(options.verbose), tuple(mcfg.image_size))
        train_ds = val_ds = None
        steps, skipped = len(lists[0]) // global_batch, lists[4]
    else:
        streamed_lists = []
        train_ds, val_ds, steps, skipped = array_datasets(run_config, global_batch, start_epoch,
                                                          env.num_replicas > 1, bool(options.verbose))
    has_val = val_ds is not None or (lists is not None and lists[2] is not None)
    if options.strict and len(skipped):
        first = skipped.iloc[0]
        raise BadInputError(f"{first['file']}: {first['reason']} (--strict stops at the first bad file)")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_config.save(run_dir / CONFIG_FILE)
    write_skipped(skipped, run_dir / SKIPPED_FILE)

    def scope():
        """A fresh context for each use: a distribution strategy's scope is entered once."""
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    def compile_for(frozen: bool) -> None:
        """Freeze or unfreeze the pretrained part and compile a fresh optimizer
        for that phase; call it inside `scope()`."""
        phase = phase_config(cfg, frozen)
        if cfg.scale_lr and replicas > 1:
            phase = replace(phase, learning_rate=phase.learning_rate * replicas)
        if cfg.freeze_backbone:
            set_frozen(model, mcfg, frozen)
        compile_model(fit_model, phase, steps)

    # the phase the backup was written in, and the phase of the next epoch
    saved_frozen = frozen_in(cfg, start_epoch - 1 if state else start_epoch)
    with scope():
        # synchronised batch statistics make N replicas train like one device; a resumed run's weights
        # come from its backup, but for the frozen part of a --cache-features run, which it does not hold
        model = build_classifier(mcfg, load_pretrained=state is None or cfg.cache_features,
                                 sync_batchnorm=strategy is not None and replicas > 1)
        # what fit trains: the model, or with --cache-features its layers after the frozen part (the same weights)
        fit_model = head_on_features(model, mcfg) if cfg.cache_features else model
        compile_for(saved_frozen)
    if lists is not None:
        train_ds, val_ds = feature_datasets(lists, feature_extractor(model, mcfg), run_config, global_batch,
                                            start_epoch)
        lists = None  # the photos are no longer needed
    if options.summary and env.is_chief:
        model.summary()
    best_weights = restore_state(fit_model, run_dir, state, scope) if state is not None else None
    if frozen_in(cfg, start_epoch) != saved_frozen:  # killed just after the last frozen epoch
        with scope():
            compile_for(frozen_in(cfg, start_epoch))
    trim_history(run_dir, start_epoch)
    if state is not None and options.verbose:
        print(f"{run_dir}: resuming after epoch {start_epoch} of {cfg.epochs}")
    if finished:  # killed after the last epoch's backup, before the weights were written
        if best_weights is not None:
            fit_model.set_weights(best_weights)
    else:
        # a --freeze-backbone run with --unfreeze-after trains in two fits, the second as a resumed run
        unfreeze = cfg.unfreeze_after if frozen_in(cfg, start_epoch) and cfg.unfreeze_after else cfg.epochs
        stages = [(start_epoch, min(unfreeze, cfg.epochs))]
        if unfreeze < cfg.epochs:
            stages.append((unfreeze, cfg.epochs))
        callbacks: list = []  # the first stage's, read by the second
        for first, last in stages:
            if first != start_epoch:
                state = read_state(run_dir)
                if state.latest.stopped_early:
                    break
                best_weights = early_stopping_of(callbacks).best_weights
                with scope():
                    compile_for(False)
                # the examples from this epoch on, drawn as a run resumed here would draw them
                if options.stream:
                    train_ds, _, _, more = stream_datasets(run_config, global_batch)
                    streamed_lists.append(more)
                else:
                    train_ds = array_datasets(run_config, global_batch, first, env.num_replicas > 1, False)[0]
            callbacks = list(env.first_callbacks) + make_callbacks(
                run_dir, cfg, has_val, keep_previous=env.gather_ints is not None, resumed=state,
                best_weights=best_weights)
            # the dataset orders and shuffles itself, seeded per epoch
            with deferred_interrupt():  # Ctrl-C raised at a batch end, never lost in a gc callback
                fit_model.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=first,
                          steps_per_epoch=steps, callbacks=callbacks, verbose=options.verbose, shuffle=False)
    streamed = [entry for entries in streamed_lists for entry in entries]
    if options.stream and streamed:
        skipped = pd.DataFrame(sorted(set(streamed)), columns=["file", "reason"])
        write_skipped(skipped, run_dir / SKIPPED_FILE)
    history, best_epoch = finalise(model, run_config, run_dir, has_val)
    final = read_state(run_dir)
    return TrainResult(run_dir, history, skipped, best_epoch, model,
                       stopped_early=bool(final and final.latest.stopped_early))


def _best_epoch(state: RunState | None) -> int:
    return -1 if state is None or state.latest.best_epoch is None else int(state.latest.best_epoch)
