"""Transfer learning the Keras way (`--freeze-backbone`, `--unfreeze-after`,
`--fine-tune-rate`) on the hybrid stem: what is frozen stays as loaded, the
batch norms of the pretrained part never move, the rate after unfreezing is
the fine-tuning one, and a run killed at or after the switch resumes to the
weights of an uninterrupted one. Small: 32 px (a 2x2 grid), a one-layer encoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import tiny_run_config
from vit_flowers.config import check_transfer
from vit_flowers.errors import ConfigError

SIZE = 32


def transfer_config(synthetic_data, **train):
    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv",
                          image_size=SIZE, **{"epochs": 3, "lr_schedule": "constant", "patience": 100, **train})
    return replace(cfg, model=replace(cfg.model, patch_size=16, num_layers=1, stem="efficientnet-lite0"))


def cnn_weights(model) -> dict[str, np.ndarray]:
    """The hybrid CNN's weights by path (kernels, batch-norm scales and statistics)."""
    cnn = model.layers[0].get_layer("efficientnet_lite0")
    return {w.path: np.array(w) for w in cnn.weights}


def head_weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.layers[-1].weights]


@pytest.fixture(scope="module")
def imagenet(synthetic_data):
    """The CNN's weights as a new run starts: the shipped ImageNet ones."""
    from vit_flowers.model import build_classifier

    return cnn_weights(build_classifier(transfer_config(synthetic_data).model))


def train(cfg, run, **options):
    from vit_flowers.train import TrainOptions, train_run

    return train_run(cfg, run, TrainOptions(verbose=0, **options))


@pytest.fixture(scope="module")
def unfrozen_run(synthetic_data, tmp_path_factory):
    """Three epochs, the CNN frozen for the first: (TrainResult, its config)."""
    cfg = transfer_config(synthetic_data, freeze_backbone=True, unfreeze_after=1, fine_tune_rate=3e-4)
    return train(cfg, tmp_path_factory.mktemp("transfer") / "run"), cfg


def test_a_frozen_backbone_keeps_every_imagenet_weight_and_statistic_while_the_rest_learns(synthetic_data,
                                                                                            tmp_path, imagenet):
    from vit_flowers.model import build_classifier

    cfg = transfer_config(synthetic_data, epochs=2, freeze_backbone=True)
    result = train(cfg, tmp_path / "run")
    after = cnn_weights(result.model)
    assert after.keys() == imagenet.keys() and any("moving_mean" in k for k in after)
    assert all(np.array_equal(after[k], imagenet[k]) for k in after), "a frozen weight moved"
    fresh = build_classifier(cfg.model)
    moved = [not np.array_equal(a, b) for a, b in zip(head_weights(result.model), head_weights(fresh))]
    assert any(moved), "the head did not train"


def last_epoch_model(result, cfg):
    """The model as the last epoch left it (the run keeps its best epoch's weights, maybe a frozen one)."""
    from vit_flowers.model import build_classifier
    from vit_flowers.rundir import backup_dir, read_state

    model = build_classifier(cfg.model, load_pretrained=False)
    model.load_weights(str(backup_dir(result.run_dir) / read_state(result.run_dir).latest.weights))
    return model


def test_unfreezing_trains_the_cnn_at_the_fine_tune_rate_with_its_batch_norms_still_frozen(unfrozen_run, imagenet):
    result, cfg = unfrozen_run
    after = cnn_weights(last_epoch_model(result, cfg))
    statistics = [k for k in after if any(s in k for s in ("moving_mean", "moving_variance", "gamma", "beta"))]
    kernels = [k for k in after if k.endswith("kernel")]
    assert statistics and kernels
    assert all(np.array_equal(after[k], imagenet[k]) for k in statistics), "a batch norm of the CNN moved"
    assert sum(not np.array_equal(after[k], imagenet[k]) for k in kernels) == len(kernels), "a kernel did not train"
    rates = result.history["learning_rate"].tolist()
    assert rates[0] == pytest.approx(1e-3) and rates[1:] == pytest.approx([3e-4, 3e-4])


def test_the_fine_tune_rate_defaults_to_a_tenth_of_the_rate():
    from vit_flowers.config import TrainConfig
    from vit_flowers.train import phase_config

    cfg = TrainConfig(epochs=10, learning_rate=1e-3, warmup_epochs=2, freeze_backbone=True, unfreeze_after=4)
    frozen, tuned = phase_config(cfg, True), phase_config(cfg, False)
    assert (frozen.learning_rate, frozen.epochs, frozen.warmup_epochs) == (1e-3, 4, 2)
    assert (tuned.learning_rate, tuned.epochs, tuned.warmup_epochs) == (pytest.approx(1e-4), 6, 0.0)


@pytest.mark.parametrize("stopped_after", [1, 2], ids=["at-the-switch", "after-the-switch"])
def test_a_run_stopped_at_or_after_the_switch_resumes_to_the_uninterrupted_weights(unfrozen_run, tmp_path,
                                                                                    stopped_after):
    result, cfg = unfrozen_run
    run = tmp_path / "run"
    train(replace(cfg, train=replace(cfg.train, epochs=stopped_after)), run)
    resumed = train(cfg, run, resume=True)
    for a, b in zip(resumed.model.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.history["epoch"].tolist() == result.history["epoch"].tolist()


@pytest.mark.parametrize("model, train, message", [
    (dict(stem="conv", patch_size=8), dict(freeze_backbone=True),
     "has none: use --stem efficientnet-lite0 or efficientnet-lite0-s32, or b16"),
    (dict(), dict(freeze_backbone=True, unfreeze_after=2, ema_momentum=0.99), "--ema"),
])
def test_freezing_what_is_not_pretrained_or_an_average_across_the_switch_is_refused(synthetic_data, model, train,
                                                                                     message):
    cfg = transfer_config(synthetic_data, **train)
    cfg = replace(cfg, model=replace(cfg.model, **model))
    with pytest.raises(ConfigError, match=message):
        check_transfer(cfg.model, cfg.train)


@pytest.mark.parametrize("stem, patch", [("efficientnet-lite0", 16), ("efficientnet-lite0-s32", 32)])
def test_either_hybrid_stem_may_be_frozen(synthetic_data, stem, patch):
    cfg = transfer_config(synthetic_data, freeze_backbone=True, unfreeze_after=2)
    check_transfer(replace(cfg.model, stem=stem, patch_size=patch), cfg.train)


def test_unfreeze_after_without_a_frozen_backbone_is_refused_on_the_command_line(synthetic_data, capsys):
    from vit_flowers import cli

    argv = ["train", "--model", "tiny", "--stem", "efficientnet-lite0", "--patch-size", "16", "--image-size", "64",
            "--train-list", str(synthetic_data / "training_files.csv"), "--unfreeze-after", "2", "--out", "x"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "freeze_backbone" in err[0], err


def cached_config(synthetic_data, **train):
    return transfer_config(synthetic_data, **{"epochs": 2, "freeze_backbone": True, "cache_features": True, "augment": "none",
                                             **train})


@pytest.fixture(scope="module")
def cached_run(synthetic_data, tmp_path_factory):
    """Two epochs on stored features: (TrainResult, its config)."""
    cfg = cached_config(synthetic_data)
    return train(cfg, tmp_path_factory.mktemp("cached") / "run"), cfg


def test_stored_features_are_what_the_live_forward_pass_feeds_the_layers_after_the_cnn(synthetic_data):
    import keras

    from vit_flowers.datasets import preprocess
    from vit_flowers.filelists import read_file_list
    from vit_flowers.images import load_images
    from vit_flowers.model import build_classifier, feature_extractor, head_on_features

    cfg = cached_config(synthetic_data)
    model = build_classifier(cfg.model)
    frame = read_file_list(cfg.train.train_list, cfg.model.class_names).head(12)
    x = np.array(preprocess(load_images(frame["path"].tolist(), (SIZE, SIZE), progress=False).images))
    backbone = model.layers[0]
    # the live pass, by the backbone's own layers: its input scaling, then the CNN
    live = backbone.get_layer("efficientnet_lite0")(backbone.layers[1](x), training=False)
    stored = feature_extractor(model, cfg.model).predict(x, verbose=0)
    np.testing.assert_allclose(stored, keras.ops.convert_to_numpy(live), rtol=1e-4, atol=1e-4)  # float rounding
    np.testing.assert_allclose(head_on_features(model, cfg.model).predict(stored, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_training_on_stored_features_gives_the_weights_of_training_on_the_photos(cached_run, tmp_path, imagenet):
    from vit_flowers.model import build_classifier

    result, cfg = cached_run
    live = train(replace(cfg, train=replace(cfg.train, cache_features=False)), tmp_path / "live")
    assert result.history["epoch"].tolist() == live.history["epoch"].tolist() == [0, 1]
    for a, b in zip(result.model.get_weights(), live.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert all(np.array_equal(cnn_weights(result.model)[k], imagenet[k]) for k in imagenet)
    fresh = build_classifier(cfg.model)
    assert any(not np.allclose(a, b) for a, b in zip(head_weights(result.model), head_weights(fresh))), \
        "the head did not train"


def test_a_run_on_stored_features_resumes_to_the_uninterrupted_weights(cached_run, tmp_path):
    from vit_flowers.model import load_run

    result, cfg = cached_run
    run = tmp_path / "run"
    train(replace(cfg, train=replace(cfg.train, epochs=1)), run)
    resumed = train(cfg, run, resume=True)
    for a, b in zip(resumed.model.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    reloaded = load_run(run)[0]  # the run dir holds the whole model, as every run's does
    for a, b in zip(reloaded.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("train_options, message", [
    (dict(augment="basic"), "--augment"),
    (dict(cutmix=0.5), "--cutmix"),
    (dict(freeze_backbone=False), "--freeze-backbone"),
    (dict(unfreeze_after=1), "--unfreeze-after"),
])
def test_stored_features_of_photos_that_change_or_a_part_that_trains_are_refused(synthetic_data, train_options,
                                                                                   message):
    from vit_flowers.config import check_train_config

    with pytest.raises(ConfigError, match=message):
        check_train_config(cached_config(synthetic_data, **train_options).train)


def test_cache_features_with_augmentation_is_one_line_on_the_command_line(synthetic_data, capsys):
    from vit_flowers import cli

    argv = ["train", "--model", "tiny", "--stem", "efficientnet-lite0", "--patch-size", "16", "--image-size", "64",
            "--train-list", str(synthetic_data / "training_files.csv"), "--freeze-backbone", "--cache-features",
            "--augment", "basic", "--out", "x"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--augment" in err[0], err
