"""`vit_flowers.train`'s pieces that decide a run before it fits: the
optimizer and its schedule, the loss, the size images are decoded at, the
seed, and the data a run refuses."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CLASS_NAMES, list_with_a_broken_file
from vit_flowers.config import RunConfig, TrainConfig
from vit_flowers.errors import BadInputError, ConfigError
from vit_flowers.model import model_config
from vit_flowers.train import compile_model, make_optimizer, set_seed, training_load_size


def _rate(optimizer, step: int) -> float:
    """The rate the optimizer applies at `step`, read through its public
    `learning_rate` (the schedule evaluated at its iteration count)."""
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


def test_warm_up_then_cosine_reaches_the_peak_after_the_warm_up_and_zero_at_the_end():
    cfg = TrainConfig(epochs=10, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=2)
    optimizer = make_optimizer(cfg, steps_per_epoch=5)  # 50 steps, 10 of them warm-up
    assert _rate(optimizer, 0) == 0.0
    assert _rate(optimizer, 5) == pytest.approx(5e-4)
    assert _rate(optimizer, 10) == pytest.approx(1e-3)
    assert _rate(optimizer, 30) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 20 / 40)), rel=1e-5)
    assert _rate(optimizer, 50) == pytest.approx(0.0, abs=1e-9)


def test_cosine_without_warm_up_starts_at_the_peak():
    cfg = TrainConfig(epochs=4, learning_rate=2e-3, lr_schedule="cosine", warmup_epochs=0)
    optimizer = make_optimizer(cfg, steps_per_epoch=10)
    assert _rate(optimizer, 0) == pytest.approx(2e-3)
    assert _rate(optimizer, 20) == pytest.approx(1e-3, rel=1e-5)
    assert _rate(optimizer, 40) == pytest.approx(0.0, abs=1e-9)
    fractional = make_optimizer(TrainConfig(epochs=4, learning_rate=1e-3, lr_schedule="cosine",
                                            warmup_epochs=0.5), steps_per_epoch=10)
    assert _rate(fractional, 5) == pytest.approx(1e-3)  # half an epoch of 10 steps: 5 warm-up steps
    assert _rate(fractional, 4) < 1e-3


def test_a_schedule_of_one_step_after_its_warm_up_ends_at_zero_on_that_step():
    one = make_optimizer(TrainConfig(epochs=1, learning_rate=1e-3, lr_schedule="cosine"), steps_per_epoch=1)
    assert _rate(one, 0) == pytest.approx(1e-3) and _rate(one, 1) == pytest.approx(0.0, abs=1e-9)
    warm = make_optimizer(TrainConfig(epochs=2, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=1),
                          steps_per_epoch=1)
    assert _rate(warm, 1) == pytest.approx(1e-3) and _rate(warm, 2) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("schedule", ["plateau", "constant"])
def test_other_schedules_start_from_the_configured_rate(schedule):
    optimizer = make_optimizer(TrainConfig(learning_rate=3e-4, lr_schedule=schedule), steps_per_epoch=7)
    assert _rate(optimizer, 0) == pytest.approx(3e-4) and _rate(optimizer, 1000) == pytest.approx(3e-4)


def test_adamw_carries_its_weight_decay_and_adam_none():
    import keras

    adamw = make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.05), 3)
    assert type(adamw) is keras.optimizers.AdamW and adamw.weight_decay == pytest.approx(0.05)
    adam = make_optimizer(TrainConfig(optimizer="adam"), 3)
    assert type(adam) is keras.optimizers.Adam and not adam.weight_decay


def test_ema_is_kept_by_the_optimizer_only_when_asked_for():
    with_ema = make_optimizer(TrainConfig(optimizer="adamw", ema_momentum=0.995), 3)
    assert with_ema.use_ema and with_ema.ema_momentum == pytest.approx(0.995)
    assert make_optimizer(TrainConfig(optimizer="adam", ema_momentum=0.9), 3).use_ema
    assert not make_optimizer(TrainConfig(), 3).use_ema


def test_the_loss_smooths_labels_by_the_configured_amount():
    import keras

    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(5, activation="softmax")])
    compile_model(model, TrainConfig(label_smoothing=0.2), steps_per_epoch=4)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    y_true = np.eye(5, dtype=np.float32)[[1]]
    y_pred = np.array([[0.1, 0.6, 0.1, 0.1, 0.1]], np.float32)
    smoothed = y_true * 0.8 + 0.2 / 5
    expected = -(smoothed * np.log(y_pred)).sum()
    assert float(model.loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def _run_config(image_size, **train) -> RunConfig:
    return RunConfig(model=model_config("tiny", CLASS_NAMES, image_size), train=TrainConfig(**train))


def test_images_are_decoded_at_the_models_size_unless_crops_are_cut_from_larger_ones():
    assert training_load_size(_run_config([32, 48])) == (32, 48)
    assert training_load_size(_run_config([32, 48], augment="resized-crop")) == (32, 48)
    assert training_load_size(_run_config([32, 48], augment="resized-crop", load_size=64)) == (64, 96)
    assert training_load_size(_run_config([48, 80], augment="resized-crop", load_size=100)) == (100, 167)  # 166.7
    assert training_load_size(_run_config([32, 32], augment="resized-crop", load_size=32)) == (32, 32)


def test_a_load_size_that_cannot_be_used_is_refused_saying_why():
    with pytest.raises(ConfigError, match=r"^--load-size 64 needs --augment resized-crop \(crops are cut from the "
                                          r"larger images\); with --augment basic images are decoded at the "
                                          r"model's size$"):
        training_load_size(_run_config([32, 32], load_size=64))
    with pytest.raises(ConfigError, match=r"^--load-size 40 is smaller than the model's input height 48$"):
        training_load_size(_run_config([48, 32], augment="resized-crop", load_size=40))


def test_the_same_seed_gives_the_same_random_draws():
    import random

    import tensorflow as tf

    def draws():
        return random.random(), float(np.random.rand()), float(tf.random.uniform(()))

    set_seed(7, deterministic=False)
    first = draws()
    set_seed(7, deterministic=False)
    assert draws() == first
    set_seed(8, deterministic=False)
    assert draws() != first


def test_lists_too_small_or_unreadable_are_refused_naming_the_list(synthetic_data, tmp_path):
    from vit_flowers.train import array_datasets, stream_datasets

    rows = pd.read_csv(synthetic_data / "training_files.csv")
    rows["base_path"] = [str(synthetic_data / base) for base in rows["base_path"]]  # the lists are written elsewhere
    small = tmp_path / "small.csv"
    rows.groupby("type_dir").head(2).to_csv(small, index=False)  # 10 images, 2 a class
    cfg = _run_config([32, 32], train_list=str(small), batch_size=16)
    with pytest.raises(BadInputError, match=f"^{small}: 10 images, fewer than one batch of 16$"):
        array_datasets(cfg, 16, 0, False, progress=False)
    with pytest.raises(BadInputError, match=f"^{small}: 10 images, fewer than one batch of 16$"):
        stream_datasets(cfg, 16)
    broken = tmp_path / "broken"
    for row in rows.itertuples():
        (broken / row.type_dir).mkdir(parents=True, exist_ok=True)
        (broken / row.type_dir / row.file_name).write_bytes(b"")
    unreadable = tmp_path / "unreadable.csv"
    rows.assign(base_path=str(broken)).to_csv(unreadable, index=False)
    with pytest.raises(BadInputError, match=f"^{unreadable}: no image in the list could be read$"):
        array_datasets(_run_config([32, 32], train_list=str(unreadable)), 8, 0, False, progress=False)
    mixing = _run_config([32, 32], train_list=str(small), cutmix=0.5)
    with pytest.raises(BadInputError, match="cannot be combined with --stream"):
        stream_datasets(mixing, 2)


def test_an_epoch_is_the_full_batches_of_the_list(synthetic_data):
    from vit_flowers.train import array_datasets, stream_datasets

    train_list = synthetic_data / "training_files.csv"
    count = len(pd.read_csv(train_list))
    cfg = _run_config([32, 32], train_list=str(train_list), val_list=str(synthetic_data / "testing_files.csv"))
    train_ds, val_ds, steps, skipped = array_datasets(cfg, 16, 0, False, progress=False)
    assert steps == count // 16 and skipped.empty
    x, y = next(iter(train_ds))
    assert tuple(x.shape) == (16, 32, 32, 3) and tuple(y.shape) == (16, len(CLASS_NAMES))
    assert sum(int(b[0].shape[0]) for b in val_ds) == len(pd.read_csv(synthetic_data / "testing_files.csv"))
    _, val_equal, _, _ = array_datasets(cfg, 16, 0, True, progress=False)
    assert all(int(b[0].shape[0]) == 16 for b in val_equal)  # equal shards: no partial batch
    _, stream_val, stream_steps, _ = stream_datasets(cfg, 16)
    assert stream_steps == steps and stream_val is not None
    no_val = _run_config([32, 32], train_list=str(train_list))
    assert array_datasets(no_val, 16, 0, False, progress=False)[1] is None
    assert stream_datasets(no_val, 16)[1] is None


def test_the_best_epoch_of_a_run_state_is_minus_one_when_none_was_chosen():
    from vit_flowers.rundir import EpochState, RunState
    from vit_flowers.train import _best_epoch

    assert _best_epoch(None) == -1
    assert _best_epoch(RunState(EpochState(epoch=3, weights="epoch_3.weights.h5"))) == -1
    chosen = RunState(EpochState(epoch=3, weights="epoch_3.weights.h5", best_epoch=0))
    assert _best_epoch(chosen) == 0 and type(_best_epoch(chosen)) is int
    assert _best_epoch(RunState(EpochState(epoch=5, weights="w", best_epoch=2.0))) == 2


def test_set_seed_makes_ops_deterministic_unless_told_not_to(monkeypatch):
    import tensorflow as tf

    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append("on"))
    set_seed(5)
    assert calls == ["on"]
    set_seed(5, deterministic=False)
    assert calls == ["on"]


def test_a_compiled_model_has_the_configured_optimizer_and_schedule_and_reports_accuracy():
    import keras

    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(5, activation="softmax")])
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.01, learning_rate=4e-3, lr_schedule="cosine", epochs=2)
    compile_model(model, cfg, steps_per_epoch=10)
    assert type(model.optimizer) is keras.optimizers.AdamW
    assert _rate(model.optimizer, 10) == pytest.approx(2e-3, rel=1e-5)  # half of the 20 steps
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 12)]
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert sorted(logs) == ["accuracy", "loss"]
    right = (model.predict(x, verbose=0).argmax(1) == y.argmax(1)).mean()
    assert logs["accuracy"] == pytest.approx(right)


def test_the_streamed_lists_give_the_models_size_their_labels_and_their_skipped_files(synthetic_data, tmp_path):
    """The --stream path: training batches of the model's (non-square) size with
    one-hot labels, reshuffled and drawn with the run's RandAugment; the
    validation list in file order; unreadable files reported as they are met."""
    from vit_flowers.filelists import read_file_list
    from vit_flowers.train import stream_datasets

    listed = list_with_a_broken_file(synthetic_data, "training_files.csv", tmp_path)
    rows = pd.read_csv(listed)
    cfg = _run_config([32, 48], train_list=str(listed), val_list=str(listed), augment="resized-crop", load_size=40,
                      rand_augment=2, rand_strength=1.0, seed=3)
    train_ds, val_ds, steps, skipped = stream_datasets(cfg, 8)
    assert steps == len(rows) // 8
    batches = list(train_ds.take(steps + 1))  # the training stream repeats
    assert len(batches) == steps + 1
    x, y = batches[0]
    assert tuple(x.shape) == (8, 32, 48, 3) and tuple(y.shape) == (8, len(CLASS_NAMES))
    np.testing.assert_array_equal(np.sort(np.asarray(y), axis=1)[:, -1], np.ones(8))
    labels = np.concatenate([np.asarray(b[1]).argmax(1) for b in val_ds])
    frame = read_file_list(str(listed), CLASS_NAMES)
    np.testing.assert_array_equal(labels, frame["label"].to_numpy()[:-1])  # in order, the broken file left out
    assert {Path(f).name for f, _ in skipped} == {"broken_training_files.csv.jpg"}  # met by each pass that read it
    first_val = next(iter(val_ds))[0]
    assert not np.allclose(np.asarray(x), np.asarray(first_val))  # shuffled and augmented, not the files in order

    def first_batch(**changes):
        options = dict(train_list=str(listed), augment="resized-crop", load_size=40, rand_augment=2,
                       rand_strength=1.0, seed=3) | changes
        return np.asarray(next(iter(stream_datasets(_run_config([32, 48], **options), 8)[0]))[0])

    np.testing.assert_array_equal(first_batch(), np.asarray(x))  # fixed by its seed
    for changed in (dict(seed=4), dict(rand_augment=0), dict(rand_strength=0.5), dict(augment="basic", load_size=0)):
        assert not np.allclose(first_batch(**changed), np.asarray(x)), changed  # each option reaches the stream


def test_the_streamed_path_refuses_mixing_one_class_and_takes_exactly_one_batch(synthetic_data, tmp_path):
    from vit_flowers.train import stream_datasets

    train_list = str(synthetic_data / "training_files.csv")
    count = len(pd.read_csv(train_list))
    with pytest.raises(BadInputError, match=r"^--mixup and --cutmix work on loaded images; they cannot be combined "
                                            r"with --stream$"):
        stream_datasets(_run_config([32, 32], train_list=train_list, mixup_alpha=0.5), 2)
    assert stream_datasets(_run_config([32, 32], train_list=train_list), count)[2] == 1
    rows = pd.read_csv(train_list)
    rows["base_path"] = [str(synthetic_data / base) for base in rows["base_path"]]
    one = tmp_path / "one.csv"
    rows[rows["type_dir"] == "roses"].to_csv(one, index=False)
    with pytest.raises(BadInputError, match=re.escape(f"{one}: only 1 class(es) present (['roses'])")):
        stream_datasets(_run_config([32, 32], train_list=str(one)), 2)
    two = tmp_path / "two.csv"
    rows[rows["type_dir"].isin(["daisy", "dandelion"])].to_csv(two, index=False)
    train_ds, val_ds, _, _ = stream_datasets(_run_config([32, 32], train_list=str(two), val_list=str(two)), 4)
    assert next(iter(train_ds))[1].shape == (4, 5) and next(iter(val_ds))[1].shape == (4, 5)


def test_the_loaded_lists_give_the_models_size_their_labels_and_one_table_of_skipped_files(synthetic_data, tmp_path,
                                                                                          capsys):
    """The in-memory path: the run's options reach the training stream (size,
    crops, MixUp, CutMix, seed, the epoch it starts at), both lists' labels are
    one-hot over the classes, and the files skipped in both lists are one table."""
    from vit_flowers.train import array_datasets, load_list

    train_list = list_with_a_broken_file(synthetic_data, "training_files.csv", tmp_path)
    val_list = list_with_a_broken_file(synthetic_data, "testing_files.csv", tmp_path)
    base = dict(train_list=str(train_list), val_list=str(val_list), augment="resized-crop", load_size=40, seed=3)

    def first_batches(count=1, start_epoch=0, **train):
        train_ds, _, _, _ = array_datasets(_run_config([32, 48], **(base | train)), 8, start_epoch, False,
                                           progress=False)
        return [tuple(np.asarray(t) for t in batch) for batch in train_ds.take(count)]

    train_ds, val_ds, steps, skipped = array_datasets(_run_config([32, 48], **base), 8, 0, False, progress=True)
    shown = capsys.readouterr().out
    for listed in (train_list, val_list):  # Keras' bar, for each list, counting its files
        count = len(pd.read_csv(listed))
        assert f"{count}/{count}" in shown, shown
    array_datasets(_run_config([32, 48], **base), 8, 0, False, progress=False)
    assert capsys.readouterr().out == ""
    assert steps == (len(pd.read_csv(train_list)) - 1) // 8
    assert [Path(f).name for f in skipped["file"]] == ["broken_training_files.csv.jpg",
                                                        "broken_testing_files.csv.jpg"]
    assert skipped.index.tolist() == [0, 1]
    x, y = next(iter(train_ds))
    assert x.shape == (8, 32, 48, 3) and y.shape == (8, len(CLASS_NAMES))
    val_x, val_y = next(iter(val_ds))
    assert val_x.shape[1:] == (32, 48, 3) and val_y.shape[1] == len(CLASS_NAMES)
    _, labels, _ = load_list(str(val_list), CLASS_NAMES, (32, 48), progress=False)
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(np.concatenate([np.asarray(b[1]).argmax(1) for b in val_ds]), labels)

    (x0, y0), = first_batches()
    np.testing.assert_array_equal(x0, np.asarray(x))  # fixed by its seed
    assert not np.array_equal(first_batches(seed=4)[0][0], x0)
    later = first_batches(count=steps + 1)[steps]  # the second epoch's first batch
    np.testing.assert_array_equal(first_batches(start_epoch=1)[0][0], later[0])
    for mixing in (dict(mixup_alpha=0.4), dict(cutmix=1.0)):
        mixed = first_batches(**mixing)[0][1]
        assert ((mixed > 0) & (mixed < 1)).any(), mixing  # labels mixed in proportion
    np.testing.assert_array_equal(np.sort(y0, axis=1)[:, -1], np.ones(8))  # without: one-hot


def test_the_loaded_path_refuses_one_class_and_takes_exactly_one_batch(synthetic_data, tmp_path, capsys):
    from vit_flowers.train import array_datasets, load_list

    train_list = str(synthetic_data / "training_files.csv")
    count = len(pd.read_csv(train_list))
    assert array_datasets(_run_config([32, 32], train_list=train_list), count, 0, False, progress=False)[2] == 1
    one = list_with_a_broken_file(synthetic_data, "training_files.csv", tmp_path, classes=["roses"])
    with pytest.raises(BadInputError, match=re.escape(f"{one}: only 1 class(es) present (['roses'])")):
        array_datasets(_run_config([32, 32], train_list=str(one)), 2, 0, False, progress=False)
    capsys.readouterr()
    load_list(train_list, CLASS_NAMES, (32, 32))
    assert "image" in capsys.readouterr().out  # a bar unless told not to
    # labels are one-hot over the config's classes, also where the last classes are absent
    two = list_with_a_broken_file(synthetic_data, "training_files.csv", tmp_path / "two", ["daisy", "dandelion"])
    train_ds, val_ds, _, _ = array_datasets(_run_config([32, 32], train_list=str(two), val_list=str(two)), 4, 0,
                                            False, progress=False)
    assert next(iter(train_ds))[1].shape == (4, 5) and next(iter(val_ds))[1].shape == (4, 5)
