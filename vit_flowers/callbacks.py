"""The Keras callbacks of a training run.

Keras' own CSVLogger, EarlyStopping (which keeps the best epoch's weights)
and ReduceLROnPlateau decide and log; `RunBackup` makes them resumable: at
each epoch end it writes the model and optimizer state and the two
callbacks' counters to the run dir's backup (`rundir`), and when a killed run
resumes it puts those counters back, so a resumed run stops, cuts its
learning rate and keeps the best epoch exactly as an uninterrupted one.

Only public Keras API is used: `Callback` hooks, `model.save_weights` /
`load_weights`, `optimizer.build`, and the counters EarlyStopping and
ReduceLROnPlateau keep as public attributes (`wait`, `best`, `best_epoch`,
`stopped_epoch`, `cooldown_counter`; checked on Keras 3.15, and
`check_callback_state` fails loudly if a later Keras renames them).
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path

import keras

from . import atomic
from .config import TrainConfig
from .interrupt import raise_if_interrupted
from .rundir import HISTORY_FILE, LOGS_DIR, EpochState, RunState, backup_dir, epoch_weights_name, write_state

EARLY_STOPPING_STATE = ("wait", "best", "best_epoch", "stopped_epoch")
PLATEAU_STATE = ("wait", "best", "cooldown_counter")


def monitored(has_val: bool) -> str:
    """The logged value early stopping, the plateau schedule and the best epoch follow."""
    return "val_loss" if has_val else "loss"


def check_callback_state(callback, names: tuple[str, ...]) -> None:
    """Fail loudly if a Keras callback no longer keeps the counters a resumed run restores."""
    missing = [name for name in names if not hasattr(callback, name)]
    if missing:
        raise RuntimeError(f"{type(callback).__name__} has no attribute(s) {missing}: this Keras version keeps "
                           f"its state differently; vit_flowers' resume needs updating for it")


def _plain(value):
    """A plain Python number for JSON (numpy scalars included), None kept."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def read_counters(callback, names: tuple[str, ...]) -> dict:
    check_callback_state(callback, names)
    return {name: _plain(getattr(callback, name)) for name in names}


def rng_variables(model) -> list:
    """The model's variables that are not weights: the states of its random
    seed generators (dropout's), which `save_weights` leaves out but a resumed
    run needs to draw the masks an uninterrupted one would."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _rng_name(variable) -> str:
    """A seed generator's path without Keras' process-wide counter
    ('block_0/seed_generator_12/seed_generator_state' -> 'block_0/seed_generator/seed_generator_state')."""
    return re.sub(r"seed_generator_\d+/", "seed_generator/", variable.path)


def rng_state(model) -> list:
    """[[variable name, values], ...] of `rng_variables`, for state.json."""
    return [[_rng_name(v), keras.ops.convert_to_numpy(v.value).tolist()] for v in rng_variables(model)]


def set_rng_state(model, saved: list) -> None:
    """Put seed generator states back; refuse the states of another model."""
    variables = rng_variables(model)
    if [name for name, _ in saved] != [_rng_name(v) for v in variables]:
        raise ValueError(f"the backup's random states are for {[name for name, _ in saved]}, the model has "
                         f"{[_rng_name(v) for v in variables]}")
    for variable, (_, values) in zip(variables, saved):
        variable.assign(values)


def make_backup(run_dir: Path, early_stopping, plateau, keep_previous: bool,
                resumed: RunState | None = None, best_weights: list | None = None):
    """The callback that commits the run's state after every epoch and, when
    `resumed`, restores the callbacks' counters (and the best epoch's weights
    early stopping holds) at the start of training.

    It must come after EarlyStopping and ReduceLROnPlateau in the callback
    list: their `on_train_begin` resets the counters this one restores, and
    their `on_epoch_end` updates the counters this one saves.
    """
    class Backup(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.state = resumed

        def on_train_begin(self, logs=None):
            if resumed is None:
                return
            latest = resumed.latest
            for callback, saved in ((early_stopping, latest.early_stopping), (plateau, latest.plateau)):
                if callback is not None and saved:
                    check_callback_state(callback, tuple(saved))
                    for name, value in saved.items():
                        setattr(callback, name, value)
            if best_weights is not None:
                early_stopping.best_weights = best_weights

        def on_epoch_end(self, epoch, logs=None):
            finished = epoch + 1
            name = epoch_weights_name(finished)
            folder = backup_dir(run_dir)
            with atomic.atomic_path(folder / name) as tmp:
                self.model.save_weights(str(tmp))
            counters = read_counters(early_stopping, EARLY_STOPPING_STATE)
            latest = EpochState(
                epoch=finished, weights=name, best_epoch=_plain(early_stopping.best_epoch),
                best_value=_plain(early_stopping.best), early_stopping=counters,
                plateau=read_counters(plateau, PLATEAU_STATE) if plateau is not None else {},
                stopped_early=bool(self.model.stop_training), rng=rng_state(self.model),
            )
            previous = self.state.latest if keep_previous and self.state is not None else None
            self.state = RunState(latest=latest, previous=previous)
            write_state(run_dir, self.state)

    return Backup()


def learning_rate_logger():
    """Adds the rate the epoch ended with (schedules included) to the logs, for history.csv."""
    class LearningRateLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    return LearningRateLogger()


def ema_callbacks() -> tuple:
    """Two callbacks that show the optimizer's moving average of the weights
    (Keras' `use_ema`) to validation and to early stopping, and the raw
    weights to training and to the backup.

    Keras' fit evaluates and picks the best epoch with the raw weights, and
    swaps the average in only when training ends, where EarlyStopping's
    `restore_best_weights` then overwrites it with the raw weights of the best
    epoch. Here the average is swapped in for each validation pass and for
    the callbacks between the two (EarlyStopping, ReduceLROnPlateau), so the
    logged validation figures, the best epoch and the weights a run keeps are
    the average's. The backup still holds the raw weights and, in the
    optimizer's variables, the average: a resumed run goes on as one never
    stopped (`train.restore_state` swaps the average into the best epoch's).
    """
    raw: list = []

    def swap_in(model) -> None:
        if not raw:
            raw.extend(keras.ops.convert_to_numpy(v) for v in model.trainable_variables)
            model.optimizer.finalize_variable_values(model.trainable_variables)

    def swap_out(model) -> None:
        for variable, value in zip(model.trainable_variables, raw, strict=True):
            variable.assign(value)
        raw.clear()

    class AverageIn(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            swap_in(self.model)

        def on_test_end(self, logs=None):
            if raw:
                swap_out(self.model)

        def on_epoch_end(self, epoch, logs=None):
            swap_in(self.model)

    class AverageOut(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if raw:
                swap_out(self.model)

    return AverageIn(), AverageOut()


def interrupt_check():
    """Raises a pending Ctrl-C at the end of each training and validation
    batch (see `vit_flowers.interrupt`)."""
    return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs=None: raise_if_interrupted(),
                                          on_test_batch_end=lambda batch, logs=None: raise_if_interrupted())


def make_callbacks(run_dir: Path, cfg: TrainConfig, has_val: bool, keep_previous: bool = False,
                   resumed: RunState | None = None, best_weights: list | None = None) -> list:
    """The run's callbacks, in the order they must run at each epoch end:
    the pending Ctrl-C check, the rate logger, EarlyStopping and ReduceLROnPlateau (their decisions; with
    `ema_momentum`, between the two callbacks that swap the average in and out),
    CSVLogger (history.csv), TensorBoard (RUN/logs/), then the backup that commits the epoch. A kill
    between the log and the backup repeats no epoch: a resumed run cuts the
    history back to the committed state."""
    monitor = monitored(has_val)
    early_stopping = keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience,
                                                   restore_best_weights=True)
    plateau = None
    if cfg.lr_schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, cfg.patience // 2),
                                                    min_lr=1e-7)
    average_in, average_out = ema_callbacks() if cfg.ema_momentum > 0 else (None, None)
    callbacks = [interrupt_check(), learning_rate_logger()]
    if average_in is not None:
        callbacks.append(average_in)
    callbacks.append(early_stopping)
    if plateau is not None:
        callbacks.append(plateau)
    if average_out is not None:
        callbacks.append(average_out)
    callbacks.append(keras.callbacks.CSVLogger(str(Path(run_dir) / HISTORY_FILE), append=True))
    if cfg.tensorboard:  # the same numbers as history.csv; a resumed run's epochs go on in the same log
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(run_dir) / LOGS_DIR)))
    callbacks.append(make_backup(run_dir, early_stopping, plateau, keep_previous, resumed, best_weights))
    return callbacks

