"""The training options of the shipped recipe's pilots: CutMix,
RandAugment-style operations and the moving average of the weights (EMA)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from conftest import tiny_run_config
from vit_flowers import cli
from vit_flowers.augment import RAND_OPS, rand_augment, rand_augment_op
from vit_flowers.config import TrainConfig, check_train_config
from vit_flowers.datasets import array_dataset, cutmix_pair
from vit_flowers.errors import BadInputError, ConfigError


# ------------------------------------------------------------ CutMix
def _pair(height: int = 16, width: int | None = None):
    """A black and a white example (one-hot labels 0 and 1): b's pixels are 1, a's are 0."""
    shape = (height, width or height, 3)
    a = (np.zeros(shape, np.float32), np.array([1.0, 0.0], np.float32))
    b = (np.ones(shape, np.float32), np.array([0.0, 1.0], np.float32))
    return a, b


def test_cutmix_pastes_one_box_and_mixes_the_labels_by_its_area():
    a, b = _pair()
    shares = []
    for step in range(40):
        x, y = (np.asarray(v) for v in cutmix_pair(a, b, 1.0, step))
        pasted = x[..., 0] == 1.0
        np.testing.assert_allclose(y, [1 - pasted.mean(), pasted.mean()], atol=1e-6)  # labels follow the pixels
        assert np.all(x[..., 0] == x[..., 2])  # a whole pixel comes from one image
        if pasted.any():
            rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
            # one rectangle: every pixel between its first and last row and column is pasted
            assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert pasted.sum() == len(rows) * len(cols)
        shares.append(pasted.mean())
        again = np.asarray(cutmix_pair(a, b, 1.0, step)[0])
        np.testing.assert_array_equal(again, x)  # stateless: the same step, the same box
    assert 0.1 < np.std(shares) and len(set(shares)) > 10  # boxes of many sizes


def test_cutmix_leaves_examples_alone_outside_its_share():
    a, b = _pair()
    cut = [float(np.asarray(cutmix_pair(a, b, 0.3, step)[1])[1]) > 0 for step in range(200)]
    assert 0.15 < np.mean(cut) < 0.45
    for step in range(20):
        x, y = (np.asarray(v) for v in cutmix_pair(a, b, 0.0, step))
        np.testing.assert_array_equal(x, a[0])
        np.testing.assert_array_equal(y, a[1])


def test_cutmix_in_the_pipeline_gives_labels_that_match_the_pixels():
    # each image one flat colour, its class's: a pixel tells which image it came from
    labels = np.arange(8) % 4
    images = np.repeat((labels * 60 + 20).astype(np.uint8), 8 * 8 * 3).reshape(8, 8, 8, 3)
    ds = array_dataset(images, labels, 4, batch_size=8, training=True, augment="none", cutmix=1.0, seed=2)
    x, y = (np.asarray(v) for v in next(iter(ds)))
    values = np.round((x[..., 0] + 1.0) * 127.5)
    for image, label in zip(values, y):
        share = np.array([(image == c * 60 + 20).mean() for c in range(4)])
        np.testing.assert_allclose(label, share, atol=1e-5)
    assert (y.max(axis=1) < 0.999).any()


def test_cutmix_with_mixup_is_refused_and_its_share_is_checked():
    with pytest.raises(ConfigError, match="choose one of the two"):
        check_train_config(TrainConfig(cutmix=0.5, mixup_alpha=0.2))
    with pytest.raises(ConfigError, match="train.cutmix is 1.5"):
        check_train_config(TrainConfig(cutmix=1.5))
    with pytest.raises(ConfigError, match="ema_momentum"):
        check_train_config(TrainConfig(ema_momentum=1.0))
    with pytest.raises(ConfigError, match="rand_augment"):
        check_train_config(TrainConfig(rand_augment=-1))
    with pytest.raises(ConfigError, match="rand_strength"):
        check_train_config(TrainConfig(rand_strength=2.0))


# ------------------------------------------------------------ options
def _train_args(synthetic_data, *extra):
    return cli.build_parser().parse_args(
        ["train", "--train-list", str(synthetic_data / "training_files.csv"), "--out", "unused", *extra])


def test_the_options_reach_the_config_and_resume_checks_them(synthetic_data, tmp_path):
    args = _train_args(synthetic_data, "--cutmix", "0.5", "--ema", "0.99", "--rand-augment", "2", "--rand-strength",
                       "0.3")
    config = cli.build_run_config(args)
    assert (config.train.cutmix, config.train.ema_momentum) == (0.5, 0.99)
    assert (config.train.rand_augment, config.train.rand_strength) == (2, 0.3)
    assert (cli.build_run_config(_train_args(synthetic_data)).train.cutmix,
            cli.build_run_config(_train_args(synthetic_data)).train.ema_momentum) == (0.0, 0.0)
    path = config.save(tmp_path / "config.json")
    for option, value in (("--ema", "0.9"), ("--cutmix", "0.25"), ("--rand-augment", "1"), ("--rand-strength", "0.5")):
        with pytest.raises(BadInputError, match=f"{option} {value} contradicts the run being resumed"):
            cli.check_resume_options(config, _train_args(synthetic_data, option, value), {option[2:].replace("-", "_")},
                                     path)


# ------------------------------------------------------------ EMA
EMA = 0.9


@pytest.fixture(scope="module")
def ema_run(synthetic_data, tmp_path_factory):
    """Three epochs with a moving average of the weights, validated on a list."""
    from vit_flowers.train import TrainOptions, train_run

    run_dir = tmp_path_factory.mktemp("ema") / "run"
    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv", epochs=3,
                          batch_size=8, optimizer="adamw", ema_momentum=EMA, patience=100, seed=4)
    result = train_run(cfg, run_dir, TrainOptions(verbose=0))
    return run_dir, cfg, result


def _compiled(run_dir, cfg):
    """A compiled model of the run's config with its optimizer built, as a resumed run has."""
    from vit_flowers.model import build_classifier
    from vit_flowers.train import compile_model

    model = build_classifier(cfg.model, load_pretrained=False)
    compile_model(model, cfg.train, 1)
    model.optimizer.build(model.trainable_variables)
    return model


def _best_backup(run_dir):
    from vit_flowers.rundir import backup_dir, read_state

    state = read_state(run_dir)
    return state, backup_dir(run_dir) / state.latest.best_weights


def test_the_run_keeps_the_moving_average_of_its_best_epoch(ema_run):
    import keras

    from vit_flowers.model import load_run

    run_dir, cfg, _ = ema_run
    shipped, _ = load_run(run_dir)
    state, best_file = _best_backup(run_dir)
    # the best epoch's backup: raw weights, and the average among the optimizer's variables
    backup = _compiled(run_dir, cfg)
    backup.load_weights(str(best_file))
    assert backup.optimizer.use_ema and backup.optimizer.ema_momentum == pytest.approx(EMA)
    raw = [keras.ops.convert_to_numpy(v) for v in backup.trainable_variables]
    backup.optimizer.finalize_variable_values(backup.trainable_variables)
    average = [keras.ops.convert_to_numpy(v) for v in backup.trainable_variables]
    kept = [keras.ops.convert_to_numpy(v) for v in shipped.trainable_variables]  # the same models: the same order
    assert any(not np.allclose(r, a) for r, a in zip(raw, average))  # the average is not the raw weights
    for variable, mine, value in zip(backup.trainable_variables, kept, average, strict=True):
        np.testing.assert_array_equal(mine, value, err_msg=variable.path)


def test_validation_scores_the_average(ema_run, synthetic_data):
    """The val_loss logged for the best epoch is the kept weights' loss on the
    validation list (Keras alone would log the raw weights')."""
    import pandas as pd

    from vit_flowers.datasets import array_dataset
    from vit_flowers.model import load_run
    from vit_flowers.train import compile_model, load_list

    run_dir, cfg, result = ema_run
    model, _ = load_run(run_dir)
    compile_model(model, cfg.train, 1)
    x, y, _ = load_list(cfg.train.val_list, cfg.model.class_names, tuple(cfg.model.image_size), progress=False)
    logs = model.evaluate(array_dataset(x, y, cfg.model.num_classes, 8), return_dict=True, verbose=0)
    history = pd.read_csv(run_dir / "history.csv")
    best = history.loc[history["val_loss"].idxmin()]
    assert int(best["epoch"]) == result.best_epoch
    np.testing.assert_allclose(logs["loss"], best["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(logs["accuracy"], best["val_accuracy"], rtol=1e-4)


def test_a_resumed_run_restores_the_average_of_its_best_epoch(ema_run):
    from vit_flowers.model import load_run
    from vit_flowers.rundir import read_state
    from vit_flowers.train import restore_state

    run_dir, cfg, _ = ema_run
    model = _compiled(run_dir, cfg)
    best = restore_state(model, run_dir, read_state(run_dir), contextlib.nullcontext)
    shipped, _ = load_run(run_dir)
    for mine, kept in zip(best, shipped.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, kept)


def test_the_config_records_the_options(ema_run):
    run_dir, _, _ = ema_run
    train = json.loads((run_dir / "config.json").read_text())["train"]
    assert train["ema_momentum"] == EMA and train["cutmix"] == 0.0


def test_a_run_stopped_and_resumed_ends_as_one_never_stopped(synthetic_data, tmp_path):
    """Two epochs, then --resume to four: the history and the kept weights are
    bitwise those of four epochs in one go (the average lives in the
    optimizer's variables, which the backup holds; a constant rate, so that
    the schedule does not depend on the epoch count)."""
    from dataclasses import replace

    import pandas as pd

    from vit_flowers.model import load_run
    from vit_flowers.train import TrainOptions, train_run

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv", epochs=4,
                          batch_size=8, optimizer="adamw", lr_schedule="constant", ema_momentum=0.8, patience=100,
                          cutmix=0.5, augment="resized-crop", load_size=40, rand_augment=2)
    train_run(cfg, tmp_path / "whole", TrainOptions(verbose=0))
    train_run(replace(cfg, train=replace(cfg.train, epochs=2)), tmp_path / "parts", TrainOptions(verbose=0))
    train_run(cfg, tmp_path / "parts", TrainOptions(resume=True, verbose=0))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "parts" / "history.csv"),
                                  pd.read_csv(tmp_path / "whole" / "history.csv"), check_exact=True)
    for mine, theirs in zip(load_run(tmp_path / "parts")[0].get_weights(),
                            load_run(tmp_path / "whole")[0].get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


# ------------------------------------------------------------ RandAugment
def _texture(side: int = 12, seed: int = 0) -> np.ndarray:
    """An image with every channel spanning 0..255 (autocontrast leaves it alone)."""
    x = np.random.default_rng(seed).integers(0, 256, (side, side, 3)).astype(np.float32)
    x[0, 0], x[-1, -1] = 0.0, 255.0
    return x


@pytest.mark.parametrize("name", RAND_OPS)
def test_every_rand_operation_is_the_identity_at_strength_0_and_changes_the_image_at_1(name):
    x = _texture()
    index = RAND_OPS.index(name)
    for signed in (1.0, -1.0):
        np.testing.assert_allclose(np.asarray(rand_augment_op(x, index, 0.0, signed)), x, atol=1e-3)
        strong = np.asarray(rand_augment_op(x, index, 1.0, signed))
        assert strong.shape == x.shape and 0.0 <= strong.min() and strong.max() <= 255.0
        changed = not np.allclose(strong, x, atol=1e-3)
        assert changed == (name not in ("identity", "autocontrast")), name
    low_contrast = x * 0.5 + 40.0
    stretched = np.asarray(rand_augment_op(low_contrast, RAND_OPS.index("autocontrast"), 0.5, 1.0))
    np.testing.assert_allclose(stretched, x, atol=1e-3)  # autocontrast undoes a linear squeeze


def test_rand_operations_move_and_scale_as_their_ranges_say():
    x = _texture(side=10)
    shifted = np.asarray(rand_augment_op(x, RAND_OPS.index("translate_x"), 1.0, 1.0))
    np.testing.assert_allclose(shifted[:, :7], x[:, 3:], atol=1e-3)  # 30% of 10 pixels
    brighter = np.asarray(rand_augment_op(x, RAND_OPS.index("brightness"), 0.5, 1.0))
    np.testing.assert_allclose(brighter, np.clip(x * 1.45, 0, 255), atol=1e-3)
    posterized = np.asarray(rand_augment_op(x, RAND_OPS.index("posterize"), 1.0, 1.0))
    np.testing.assert_array_equal(posterized, np.floor(x / 16) * 16)  # 4 bits left
    turned = np.asarray(rand_augment_op(x, RAND_OPS.index("rotate"), 1.0, 1.0))
    np.testing.assert_allclose(turned[4:6, 4:6], x[4:6, 4:6], atol=60)  # about the centre


def test_rand_augment_is_seeded_and_draws_every_operation():
    import tensorflow as tf

    x = tf.constant(_texture(side=16))
    first = np.asarray(rand_augment(x, 2, 0.7, tf.constant([5, 9], tf.int64)))
    np.testing.assert_array_equal(np.asarray(rand_augment(x, 2, 0.7, tf.constant([5, 9], tf.int64))), first)
    assert not np.array_equal(np.asarray(rand_augment(x, 2, 0.7, tf.constant([5, 10], tf.int64))), first)
    drawn = {int(tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_split(
        tf.constant([s, 1], tf.int64), num=2)[0], maxval=len(RAND_OPS), dtype=tf.int32)) for s in range(300)}
    assert drawn == set(range(len(RAND_OPS)))


def test_training_batches_carry_the_rand_operations(synthetic_data):
    """The option reaches the training pipeline (train.array_datasets), drawn
    apart from the crops: at strength 0 the batches are the crops alone."""
    from dataclasses import replace

    from vit_flowers.train import array_datasets

    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, batch_size=8, augment="resized-crop",
                          load_size=40)

    def first_batch(**train):
        run = replace(cfg, train=replace(cfg.train, **train))
        return np.asarray(next(iter(array_datasets(run, 8, 0, False, False)[0]))[0])

    plain = first_batch()
    assert not np.allclose(first_batch(rand_augment=2, rand_strength=0.9), plain, atol=1e-3)
    np.testing.assert_array_equal(first_batch(rand_augment=2, rand_strength=0.9),
                                  first_batch(rand_augment=2, rand_strength=0.9))
    # strength 0: every operation is the identity except autocontrast, which a crop in 0..255 may still stretch;
    # most images come through unchanged, and no crop moved
    weak = first_batch(rand_augment=1, rand_strength=0.0)
    same = [np.allclose(a, b, atol=1e-4) for a, b in zip(weak, plain)]
    assert sum(same) >= 4


def _cutmix_boxes(height: int, width: int, draws: int, share: float = 1.0) -> np.ndarray:
    """The pasted mask of `draws` CutMix draws on a height x width pair."""
    a, b = _pair(height, width)
    return np.stack([np.asarray(cutmix_pair(a, b, share, step)[0])[..., 0] == 1.0 for step in range(draws)])


def _oracle_mean_area(height: int, width: int, draws: int = 200_000) -> float:
    """The rule as its docstring states it, in NumPy: sides sqrt(U) of the image's, centre
    uniform anywhere, clipped at the borders; the mean share of the image pasted."""
    rng = np.random.default_rng(0)
    side = np.sqrt(rng.random(draws))
    half_h, half_w = np.round(side * height / 2), np.round(side * width / 2)
    cy, cx = np.floor(rng.random(draws) * height), np.floor(rng.random(draws) * width)
    rows = np.minimum(cy + half_h, height) - np.maximum(cy - half_h, 0)
    cols = np.minimum(cx + half_w, width) - np.maximum(cx - half_w, 0)
    return float((rows * cols).mean() / (height * width))


def test_cutmix_boxes_are_centred_anywhere_with_the_stated_sizes_on_a_non_square_image():
    """On a 12 x 20 image over 600 draws: the mean pasted share matches the rule's (sides of
    sqrt(U) times the image's, clipped), every border row and column is reached, and the box's
    centre row is independent of its column and of its size."""
    height, width, draws = 12, 20, 600
    masks = _cutmix_boxes(height, width, draws)
    areas = masks.mean(axis=(1, 2))
    expected = _oracle_mean_area(height, width)
    assert abs(areas.mean() - expected) < 4 * areas.std() / np.sqrt(draws), (areas.mean(), expected)
    for edge in (masks[:, 0, :], masks[:, -1, :], masks[:, :, 0], masks[:, :, -1]):
        assert edge.any(axis=1).mean() > 0.1  # the first and last rows and columns get pasted
    boxed = masks.any(axis=(1, 2))
    rows = np.array([np.flatnonzero(m.any(axis=1)).mean() for m in masks[boxed]]) / (height - 1)
    cols = np.array([np.flatnonzero(m.any(axis=0)).mean() for m in masks[boxed]]) / (width - 1)
    assert abs(rows.mean() - 0.5) < 0.06 and abs(cols.mean() - 0.5) < 0.06  # centred anywhere, no side favoured
    assert abs(np.corrcoef(rows, cols)[0, 1]) < 0.2  # the row and the column drawn apart
    assert abs(np.corrcoef(rows, areas[boxed])[0, 1]) < 0.2  # the size drawn apart from the place


def test_cutmix_decides_the_cut_apart_from_the_box_size():
    """At share 0.5 about half the examples are cut, and the boxes of those that are have the
    sizes of all boxes: the decision is not drawn from the number that sizes the box."""
    height, width, draws = 12, 20, 600
    areas = _cutmix_boxes(height, width, draws, share=0.5).mean(axis=(1, 2))
    cut = areas > 0
    assert 0.4 < cut.mean() < 0.6
    expected, spread = _oracle_mean_area(height, width), np.sqrt(1 / 12)
    assert abs(areas[cut].mean() - expected) < 4 * spread / np.sqrt(cut.sum()), (areas[cut].mean(), expected)


def test_a_cutmix_box_clear_of_the_borders_is_twice_its_half_sides_around_its_centre():
    """A box the borders do not clip spans rows cy - h .. cy + h - 1 (h its rounded half side):
    an even height and width, never a row or a column more."""
    height, width = 12, 20
    masks = _cutmix_boxes(height, width, 300)
    clear = 0
    for mask in masks[masks.any(axis=(1, 2))]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one solid rectangle
        if 0 < rows[0] and rows[-1] < height - 1 and 0 < cols[0] and cols[-1] < width - 1:
            clear += 1
            assert len(rows) % 2 == 0 and len(cols) % 2 == 0, (rows, cols)
    assert clear > 30
