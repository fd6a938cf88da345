"""The ViT paper's hybrid (`--stem efficientnet-lite0`): EfficientNet-Lite0 with
its shipped ImageNet weights, cut at stride 16, as the patch embedding of
vit_keras' encoder and the post's head. Small: 64 px images (a 4x4 token
grid) and a one-layer encoder of hidden size 32."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import CLASS_NAMES, tiny_run_config
from vit_flowers.errors import ConfigError
from vit_flowers.model import HYBRID_CNN, build_backbone, build_classifier, load_run, model_config, save_run

SIZE = 64
SMALL = dict(num_layers=1, hidden_size=32, mlp_dim=64, num_heads=4)


def hybrid_cfg(size=SIZE, **overrides):
    return model_config("tiny", CLASS_NAMES, size, **{**SMALL, "patch_size": 16, "stem": "efficientnet-lite0",
                                                      **overrides})


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """One epoch of `train_run` with the hybrid stem: (TrainResult, its run dir)."""
    from vit_flowers.train import TrainOptions, train_run

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv", epochs=1,
                          image_size=SIZE)
    cfg = replace(cfg, model=replace(cfg.model, patch_size=16, num_layers=1, stem="efficientnet-lite0"))
    run = tmp_path_factory.mktemp("hybrid") / "run"
    return train_run(cfg, run, TrainOptions(verbose=0)), run


@pytest.fixture(scope="module")
def photos(synthetic_data):
    return sorted(str(p) for p in (synthetic_data / "images").rglob("*.jpg"))[::6]


@pytest.fixture(scope="module")
def imagenet_cnn():
    """A bare EfficientNet-Lite0 cut as the hybrid's, with the shipped ImageNet weights."""
    from vit_flowers.config import HYBRID_STEMS
    from vit_flowers.efficientnet_lite import efficientnet_lite0, load_imagenet_weights

    bare = efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut=HYBRID_STEMS["efficientnet-lite0"])
    load_imagenet_weights(bare)
    return bare


def test_the_cnn_holds_the_shipped_imagenet_weights_and_tokens_are_its_stride_16_grid(imagenet_cnn):
    bare = imagenet_cnn
    cfg = hybrid_cfg()
    backbone = build_classifier(cfg).layers[0]
    names = [layer.name for layer in backbone.layers]
    # (the input's name carries Keras' global counter: input_layer_197 after other models in one process)
    assert names[0].startswith("input_layer") and names[1:4] == ["lite0_input_rescaling", HYBRID_CNN, "embedding"]
    assert names[names.index("class_token"):] == ["class_token", "Transformer_posembed_input",
                                                  "Transformer_encoderblock_0", "Transformer_encoder_norm",
                                                  "ExtractToken"]
    cnn = backbone.get_layer(HYBRID_CNN)
    for name in ("conv_stem", "blocks.10._project_conv", "blocks.10._bn2"):
        for have, want in zip(cnn.get_layer(name).get_weights(), bare.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(have, want)
    embedding = backbone.get_layer("embedding")
    assert embedding.kernel_size == (1, 1) and tuple(embedding.kernel.shape) == (1, 1, 112, 32)
    assert tuple(embedding.output.shape[1:3]) == cfg.grid == (SIZE // 16, SIZE // 16)
    # non-square images give a non-square grid; building alone (as for a reload) leaves the CNN random
    other = build_backbone(hybrid_cfg([64, 96]))
    assert tuple(other.get_layer("embedding").output.shape[1:3]) == (4, 6)
    stem = other.get_layer(HYBRID_CNN).get_layer("conv_stem").kernel.numpy()
    assert not np.array_equal(stem, bare.get_layer("conv_stem").kernel.numpy())


def test_a_trained_run_reloads_with_every_weight_from_its_file_and_predicts_the_same(trained, photos, imagenet_cnn,
                                                                                      tmp_path, monkeypatch):
    from vit_flowers import efficientnet_lite, predict

    result, run = trained
    assert len(result.history) == 1
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["stem"], saved["patch_size"], saved["image_size"]) == ("efficientnet-lite0", 16, [SIZE, SIZE])
    # save_run as the package calls it, on an uncompiled model (a compiled one's file holds its optimizer too)
    again = save_run(*load_run(run), tmp_path / "saved")
    # a reload never reads the ImageNet file: all its weights are the run dir's
    monkeypatch.setattr(efficientnet_lite, "load_imagenet_weights", lambda *a, **k: pytest.fail("ImageNet read"))
    expected, kept, _ = predict.predict_files(result.model, photos, (SIZE, SIZE), progress=False)
    assert len(kept) == len(photos)
    for folder in (run, again):
        model, cfg = load_run(folder)
        assert cfg.model.stem == "efficientnet-lite0"
        probs, _, _ = predict.predict_files(model, photos, (SIZE, SIZE), progress=False)
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    # training moved the CNN off its ImageNet weights, so the file is what the reload read
    for name in ("conv_stem", "bn0"):
        have = model.layers[0].get_layer(HYBRID_CNN).get_layer(name).get_weights()
        assert not np.allclose(have[0], imagenet_cnn.get_layer(name).get_weights()[0])


def test_the_rollout_gives_maps_of_the_stems_grid_and_fused_attention_gives_the_same_output(trained):
    from vit_flowers import predict
    from vit_flowers.attention import explainer_for
    from vit_flowers.model import fused_attention_call

    model, _ = load_run(trained[1])
    explainer = explainer_for(model)
    assert (explainer.grid, explainer.patch_size) == ((4, 4), 16)
    images = np.random.default_rng(3).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    maps = explainer.rollout(images)
    assert maps.grid.shape == (3, 4, 4) and maps.mask.shape == (3, SIZE, SIZE)
    assert np.isfinite(maps.grid).all() and np.allclose(maps.grid.max(axis=(1, 2)), 1.0)
    call = fused_attention_call(model)
    assert call is not None  # the backbone is a chain: the CNN is one nested layer
    x = images.astype(np.float32) / 127.5 - 1.0
    plain = model(x, training=False).numpy()
    np.testing.assert_allclose(call(x).numpy(), plain, atol=1e-5)
    assert predict.forward_options(model, fused=True)["fused"] is True  # the package's predict path takes it
    np.testing.assert_allclose(predict.forward(model, x, fused=True), plain, atol=1e-5)
    np.testing.assert_allclose(maps.probs, plain, atol=1e-5)


@pytest.mark.parametrize("size, overrides, message", [
    (SIZE, {"patch_size": 8}, r"^--stem efficientnet-lite0 needs --patch-size 16 \(its CNN's output stride.*\), not 8$"),
    (72, {}, r"^model: image size \[72, 72\] is not a multiple of the patch size 16$"),
    (SIZE, {"stem": "efficientnet-lite0-s32"},
     r"^--stem efficientnet-lite0-s32 needs --patch-size 32 \(its CNN's output stride.*\), not 16$"),
    (SIZE, {"arch": "b16", "weights": "imagenet21k"},
     r"^pretrained weights fit the patch stem only, not --stem efficientnet-lite0 \(its CNN loads its own ImageNet "
     r"weights\): use --weights none, not imagenet21k$"),
])
def test_configs_the_hybrid_cannot_take_are_refused(size, overrides, message):
    overrides = dict(overrides)
    arch = overrides.pop("arch", "tiny")
    weights = overrides.pop("weights", "none")
    with pytest.raises(ConfigError, match=message):
        model_config(arch, CLASS_NAMES, size, weights, **{**SMALL, "patch_size": 16, "stem": "efficientnet-lite0",
                                                          **overrides})


def test_the_builder_refuses_an_image_size_that_is_not_a_multiple_of_16():
    """A ModelConfig made in code (not through model_config or config.json) is checked again."""
    with pytest.raises(ConfigError, match=r"^--stem efficientnet-lite0 needs an image size that is a multiple of "
                                          r"16, not 72x64$"):
        build_backbone(replace(hybrid_cfg(), image_size=[72, 64]))


@pytest.mark.parametrize("stem, patch", [("efficientnet-lite0", 16), ("efficientnet-lite0-s32", 32)])
def test_the_parameter_estimate_counts_the_cnn(stem, patch):
    """The memory check before building sees the CNN too (it is 20 times this tiny encoder)."""
    from vit_flowers.config import estimate_parameters

    cfg = hybrid_cfg(stem=stem, patch_size=patch)
    assert estimate_parameters(cfg) == build_classifier(cfg, load_pretrained=False).count_params()


def test_the_stride_32_hybrid_holds_every_imagenet_stage_and_a_grid_of_32_px_cells(imagenet_cnn):
    """--stem efficientnet-lite0-s32: the same CNN to its last block (320 channels), the shipped weights
    in it, one token per 32x32 px; its stride-16 part equals the other hybrid's."""
    cfg = hybrid_cfg(stem="efficientnet-lite0-s32", patch_size=32)
    backbone = build_classifier(cfg).layers[0]
    cnn = backbone.get_layer(HYBRID_CNN)
    assert cnn.output_shape == (None, SIZE // 32, SIZE // 32, 320) and cfg.grid == (2, 2)
    for name in ("conv_stem", "blocks.10._project_conv", "blocks.10._bn2"):
        for a, b in zip(cnn.get_layer(name).get_weights(), imagenet_cnn.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert np.any(cnn.get_layer("blocks.15._bn2").get_weights()[2] != 0)  # the last block's ImageNet statistics


def test_train_takes_no_pretrained_vit_weights_by_default_with_the_hybrid(synthetic_data):
    """`--model b16 --stem efficientnet-lite0` without --weights: none (the post's ViT weights fit the patch stem only)."""
    from vit_flowers import cli

    argv = ["--model", "b16", "--stem", "efficientnet-lite0", "--patch-size", "16", "--image-size", "64",
            "--train-list", str(synthetic_data / "training_files.csv"), "--out", "x"]
    config = cli.build_run_config(cli.command_parser("train").parse_args(argv))
    assert (config.model.stem, config.model.weights, config.model.grid) == ("efficientnet-lite0", "none", (4, 4))
    plain = cli.build_run_config(cli.command_parser("train").parse_args(argv[:2] + argv[6:]))
    assert plain.model.weights == "imagenet21k+imagenet2012"
