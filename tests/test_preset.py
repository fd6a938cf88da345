"""--preset post: the source post's run, every option given still winning;
pretrained weights by default for vit_keras' ViTs."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO
from vit_flowers import cli


def resolved(argv: list[str]):
    """The RunConfig `train` would run with these options (no training)."""
    parser = cli.command_parser("train")
    args = parser.parse_args(argv)
    args.given = cli.given_options(parser, argv, list(vars(args)))
    cli.apply_preset(args)
    return cli.build_run_config(args), args


def test_the_post_preset_is_the_posts_model_head_optimizer_and_seed(synthetic_data, tmp_path):
    config, args = resolved(["--preset", "post", "--train-list", str(synthetic_data / "training_files.csv"),
                             "--out", str(tmp_path / "run")])
    model, train = config.model, config.train
    assert (model.arch, model.image_size, model.patch_size, model.hidden_size, model.num_layers) == (
        "b16", [224, 224], 16, 768, 12)
    assert model.weights == "imagenet21k+imagenet2012"
    assert (model.head_units, model.head_bn_momentum, model.head_gelu) == (21, 0.99, "tanh")
    assert (train.optimizer, train.learning_rate, train.lr_schedule, train.label_smoothing, train.seed) == (
        "adam", 1e-4, "plateau", 0.0, 123)
    assert train.augment == "basic" and args.summary is True
    # the old name of the preset is the same preset
    again, _ = resolved(["--preset", "seed", "--train-list", str(synthetic_data / "training_files.csv"),
                         "--out", str(tmp_path / "run")])
    assert again.to_dict() == config.to_dict()


def test_options_given_with_the_preset_override_it(synthetic_data, tmp_path):
    config, _ = resolved(["--preset", "post", "--model", "tiny", "--image-size", "32", "--learning-rate", "0.001",
                          "--head-gelu", "exact", "--weights", "none", "--train-list", str(synthetic_data / "training_files.csv"),
                          "--out", str(tmp_path / "run")])
    assert (config.model.arch, config.model.image_size, config.model.head_gelu) == ("tiny", [32, 32], "exact")
    assert config.model.head_bn_momentum == 0.99  # not given: the preset's
    assert config.train.learning_rate == 1e-3


def test_vit_keras_models_default_to_the_posts_pretrained_weights(synthetic_data, tmp_path):
    for arch, expected in (("b16", "imagenet21k+imagenet2012"), ("l32", "imagenet21k+imagenet2012"),
                           ("tiny", "none"), ("small", "none")):
        config, _ = resolved(["--model", arch, "--image-size", "32", "--train-list",
                              str(synthetic_data / "training_files.csv"), "--out", str(tmp_path / "run")])
        assert config.model.weights == expected, arch


def test_a_short_post_preset_run_prints_the_summary_and_keeps_the_head(synthetic_data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--preset", "post", "--model", "tiny",
           "--image-size", "32", "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32", "--weights", "none",
           "--epochs", "1", "--batch-size", "8", "--train-list", str(synthetic_data / "training_files.csv"),
           "--out", str(run), "--no-report"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'Model: "vision_transformer"' in done.stdout and "Total params" in done.stdout
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"]["head_bn_momentum"], saved["model"]["head_gelu"]) == (0.99, "tanh")
    assert (saved["train"]["optimizer"], saved["train"]["learning_rate"], saved["train"]["seed"]) == (
        "adam", 1e-4, 123)


def test_a_big_vit_from_random_weights_says_so(synthetic_data, tmp_path, capsys, monkeypatch):
    from vit_flowers import train

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(train, "train_run", stop)
    code = cli.main(["train", "--model", "b16", "--weights", "none", "--image-size", "32", "--train-list",
                     str(synthetic_data / "training_files.csv"), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 1 and "note: training b16 from random weights (--weights none)" in out
