"""Model building, config validation, pretrained .npz loading, run dir reload."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import CLASS_NAMES, write_flax_npz
from vit_flowers.config import FORMAT_VERSION, RunConfig
from vit_flowers.errors import ConfigError, WeightsUnavailableError
from vit_flowers.model import ARCHITECTURES, build_backbone, build_classifier, load_run, model_config, pretrained_file


def small_cfg(**kw):
    return model_config("tiny", CLASS_NAMES, 32, num_layers=2, hidden_size=32, mlp_dim=64, **kw)


def test_seed_head_on_top_of_backbone():
    model = build_classifier(small_cfg())
    assert model.layers[0].name == "vit-tiny"
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Flatten", "BatchNormalization", "Dense", "BatchNormalization", "Dense"]
    assert model.layers[3].units == 21
    assert model.output_shape == (None, 5)
    out = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_architecture_table_matches_vit_keras():
    from vit_keras import vit

    for name, size in (("b16", "B"), ("l32", "L")):
        spec, ref = ARCHITECTURES[name], getattr(vit, f"CONFIG_{size}")
        assert (spec.hidden_size, spec.num_layers, spec.num_heads, spec.mlp_dim) == (
            ref["hidden_size"], ref["num_layers"], ref["num_heads"], ref["mlp_dim"])


def test_image_size_must_fit_patches():
    with pytest.raises(ConfigError, match="not a multiple of the patch size"):
        model_config("tiny", CLASS_NAMES, 30)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        model_config("tiny", CLASS_NAMES, 32, weights="imagenet21k")


def test_config_round_trip_and_validation(tmp_path):
    cfg = RunConfig(model=small_cfg())
    path = cfg.save(tmp_path / "config.json")
    assert RunConfig.load(path) == cfg
    data = json.loads(path.read_text())
    for mutate, message in [
        (lambda d: d.update(format_version=99), "format_version is 99"),
        (lambda d: d["model"].update(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (lambda d: d["model"].update(patch_size="8"), r"model.patch_size: expected an integer"),
        (lambda d: d["train"].update(epochs=2.5), r"train.epochs: expected an integer"),
        (lambda d: d["model"].pop("hidden_size"), r"missing key\(s\) \['hidden_size'\]"),
        (lambda d: d["model"].update(class_names=["a"]), "at least two classes"),
    ]:
        broken = json.loads(json.dumps(data))
        mutate(broken)
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match=message):
            RunConfig.load(tmp_path / "bad.json")


def test_npz_in_flax_layout_loads_into_backbone(tmp_path):
    cfg = small_cfg()
    source = build_backbone(cfg)
    path = write_flax_npz(source, tmp_path / "tiny.npz")
    model = build_classifier(model_config("tiny", CLASS_NAMES, 32, weights=str(path), num_layers=2,
                                          hidden_size=32, mlp_dim=64))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.layers[0].predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-5)
    fresh = build_classifier(cfg)
    assert np.abs(fresh.layers[0].predict(x, verbose=0) - source.predict(x, verbose=0)).max() > 1e-3


def test_npz_position_embeddings_resized_for_other_image_size(tmp_path):
    path = write_flax_npz(build_backbone(small_cfg()), tmp_path / "tiny.npz")
    cfg = model_config("tiny", CLASS_NAMES, [48, 64], weights=str(path), num_layers=2, hidden_size=32, mlp_dim=64)
    with pytest.warns(UserWarning, match="Resizing position embeddings"):
        model = build_classifier(cfg)
    assert model.layers[0].get_layer("Transformer_posembed_input").get_weights()[0].shape == (1, 6 * 8 + 1, 32)


def test_npz_of_another_architecture_is_a_clear_error(tmp_path):
    path = write_flax_npz(build_backbone(small_cfg()), tmp_path / "tiny.npz")
    cfg = model_config("tiny", CLASS_NAMES, 32, weights=str(path), num_layers=3, hidden_size=32, mlp_dim=64)
    with pytest.raises(ConfigError) as err:
        build_classifier(cfg)
    # the cause named by its type: vit_keras 0.2.0 asserts the file's layer count
    assert str(err.value).startswith(f"{path}: weights do not fit model 'tiny' (AssertionError: ")


def test_offline_pretrained_download_names_url_and_cache_path(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    cfg = model_config("b16", CLASS_NAMES, 32, weights="imagenet21k+imagenet2012")
    fname, url = pretrained_file(cfg)
    assert fname == "ViT-B_16_imagenet21k+imagenet2012.npz" and url.endswith("/" + fname)
    with pytest.raises(WeightsUnavailableError) as err:
        build_classifier(cfg)
    for part in (url, fname, "(OSError: Temporary failure in name resolution)", "$KERAS_HOME/weights/",
                 "--weights PATH.npz"):
        assert part in str(err.value)


def test_pretrained_weights_are_looked_up_through_keras_get_file(tmp_path, monkeypatch):
    """Keras' get_file owns the cache (and its fallback when ~/.keras is not writable)."""
    import keras

    calls = []

    def cached(fname, origin, cache_subdir):
        calls.append((fname, origin, cache_subdir))
        return str(tmp_path / fname)

    monkeypatch.setattr(keras.utils, "get_file", cached)
    from vit_flowers.model import fetch_pretrained

    cfg = model_config("b32", CLASS_NAMES, 32, weights="imagenet21k")
    assert fetch_pretrained(cfg) == tmp_path / "ViT-B_32_imagenet21k.npz"
    assert calls == [("ViT-B_32_imagenet21k.npz", pretrained_file(cfg)[1], "weights")]


def test_architecture_table_equals_vit_keras_configs():
    from vit_keras import vit

    for name, reference in (("b16", vit.CONFIG_B), ("b32", vit.CONFIG_B), ("l16", vit.CONFIG_L),
                            ("l32", vit.CONFIG_L)):
        spec = ARCHITECTURES[name]
        assert {key: getattr(spec, key) for key in reference} == reference, name


def test_an_unknown_model_field_is_refused_with_the_nearest_name():
    with pytest.raises(ConfigError, match=r"^model: unknown field 'head_unit'; did you mean 'head_units'\?$"):
        model_config("tiny", CLASS_NAMES, head_unit=99)
    assert model_config("tiny", CLASS_NAMES, head_units=99).head_units == 99


def test_a_reloaded_run_predicts_what_the_trained_model_predicted(synthetic_data, tmp_path):
    """The weights written are the ones the model in memory ended training
    with (the best epoch's), and they are not what a fresh build gives."""
    from conftest import tiny_run_config
    from vit_flowers.train import TrainOptions, train_run

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv", epochs=3)
    result = train_run(cfg, tmp_path / "run", TrainOptions(verbose=0))
    model, saved = load_run(tmp_path / "run")
    x = np.random.default_rng(1).uniform(-1, 1, (4, *saved.model.image_size, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), result.model.predict(x, verbose=0))
    fresh = build_classifier(saved.model)
    assert np.abs(fresh.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-4


def _edited_copy(tiny_run, tmp_path, **model_fields):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    data = json.loads((copy / "config.json").read_text())
    data["model"].update(model_fields)
    (copy / "config.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("field, value, message", [
    ("class_names", ["a", "b", "c"], "classes 5 in the weights, 3 in the config"),
    ("num_layers", 1, "encoder layers 2 in the weights, 1 in the config"),
    ("num_layers", 200, "encoder layers 2 in the weights, 200 in the config"),
    ("hidden_size", 64, "hidden size 32 in the weights, 64 in the config"),
    ("image_size", [48, 48], r"tokens \(patches \+ class token\) 17 in the weights, 37 in the config"),
])
def test_weights_that_disagree_with_the_config_are_refused_before_a_model_is_built(
        field, value, message, tiny_run, tmp_path, monkeypatch):
    from vit_flowers import model as model_module

    copy = _edited_copy(tiny_run, tmp_path, **{field: value})
    monkeypatch.setattr(model_module, "build_classifier", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ConfigError, match=f"copy/model.weights.h5 does not match .*copy/config.json: {message}"):
        load_run(copy)


def test_weights_that_differ_anywhere_else_are_refused_naming_the_first_layer(tiny_run, tmp_path):
    copy = _edited_copy(tiny_run, tmp_path, head_units=20)
    with pytest.raises(ConfigError, match=r"batch_normalization_1 has shape \(21,\) in the weights, \(20,\) in the model; 7 array"):
        load_run(copy)
    copy = _edited_copy(tiny_run, tmp_path / "b", mlp_dim=32)
    with pytest.raises(ConfigError, match=r"transformer_block/mlpblock/dense has shape \(32, 64\) in the weights, \(32, 32\) in the model; 6 array"):
        load_run(copy)


def test_weights_with_arrays_the_model_lacks_and_lacking_some_it_has_are_refused_counting_all(tmp_path):
    """A patch-stem model with a pre-logits layer, loaded under a conv-stem config without one: 3
    arrays in the weights alone (the patch embedding's bias, pre_logits' kernel and bias), 16 in the
    model alone (three stem batch norms, three more convolutions), 1 of another shape (the first
    convolution's kernel); the message names both files and the first by path. Then under a plain
    patch-stem config: pre_logits' two arrays alone."""
    from vit_flowers.model import save_run

    saved = small_cfg(representation_size=32)
    run = save_run(build_classifier(saved), RunConfig(model=saved), tmp_path / "run")
    RunConfig(model=small_cfg(stem="conv")).save(run / "config.json")
    with pytest.raises(ConfigError) as err:
        load_run(run)
    assert str(err.value) == (
        f"{run / 'model.weights.h5'} does not match {run / 'config.json'} (model 'tiny', 2 layers, hidden size 32, "
        f"5 classes): the model the config describes has functional/batch_normalization, which the weights lack; "
        f"20 array(s) differ in all")
    RunConfig(model=small_cfg()).save(run / "config.json")
    with pytest.raises(ConfigError, match=r": functional/dense is in the weights but not in the model the config "
                                          r"describes; 2 array\(s\) differ in all$"):
        load_run(run)


def test_loading_a_run_never_fetches_pretrained_weights(tiny_run, monkeypatch):
    """The run's weights replace the backbone's anyway: a fine-tuned ViT-B/16 loads offline."""
    from vit_flowers import model as model_module

    monkeypatch.setattr(model_module, "load_backbone_weights", lambda *a, **k: pytest.fail("pretrained weights loaded"))
    model, _ = load_run(tiny_run)
    assert model.output_shape == (None, len(CLASS_NAMES))


def test_weights_keras_cannot_load_are_refused_naming_both_files(tiny_run, monkeypatch):
    import keras

    def refuse(self, path, *args, **kwargs):
        raise ValueError("a dtype Keras will not cast")

    monkeypatch.setattr(keras.Model, "load_weights", refuse)
    with pytest.raises(ConfigError) as err:
        load_run(tiny_run)
    assert str(err.value) == (f"{tiny_run / 'model.weights.h5'}: cannot be loaded into the model of "
                              f"{tiny_run / 'config.json'}: a dtype Keras will not cast")


def test_the_outline_of_weights_without_a_head_has_no_class_count():
    from vit_flowers.model import weights_outline

    layout = {"layers/functional/layers/class_token/vars/0": (1, 1, 32),
              "layers/functional/layers/add_position_embs/vars/0": (1, 17, 32)}
    assert weights_outline(layout) == {"hidden_size": 32, "tokens": 17}


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all\n", "truncated"])
def test_a_weights_file_that_is_not_hdf5_is_refused(content, tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    weights = copy / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:5000] if content == "truncated" else content)
    with pytest.raises(ConfigError, match="model.weights.h5: not a readable HDF5 weights file"):
        load_run(copy)


def test_a_config_of_another_format_version_is_refused(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    data = json.loads((copy / "config.json").read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (copy / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"format_version is {FORMAT_VERSION + 1}; this package reads version {FORMAT_VERSION}"):
        load_run(copy)


def test_no_unsafe_loading_anywhere_in_the_package():
    from pathlib import Path

    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "vit_flowers").rglob("*.py"))
    for banned in ("safe_mode=False", "enable_unsafe_deserialization", "import pickle", "pickle.load", "allow_pickle=True"):
        assert banned not in source


def test_conv_stem_gives_the_patch_grid_and_round_trips(synthetic_data, tmp_path):
    from vit_flowers import cli
    from vit_flowers.attention import explainer_for

    run = tmp_path / "run"
    assert cli.main(["train", "--train-list", str(synthetic_data / "training_files.csv"), "--model", "tiny",
                     "--image-size", "32", "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32",
                     "--stem", "conv", "--epochs", "1", "--batch-size", "8", "--out", str(run)]) == 0
    model, cfg = load_run(run)
    assert cfg.model.stem == "conv" and json.loads((run / "config.json").read_text())["model"]["stem"] == "conv"
    backbone = model.layers[0]
    strides = [layer.strides for layer in backbone.layers if layer.name.startswith("stem_conv")]
    assert strides == [(2, 2)] * 3  # patch 8 = three halvings
    assert backbone.get_layer("embedding").kernel_size == (1, 1)
    assert tuple(backbone.get_layer("embedding").output.shape[1:3]) == cfg.model.grid == (4, 4)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    again, _ = load_run(run)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    explainer = explainer_for(model)
    assert (explainer.grid, explainer.patch_size) == ((4, 4), 8)
    maps = explainer.rollout(np.zeros((2, 32, 32, 3), np.uint8))
    assert maps.mask.shape == (2, 32, 32) and np.isfinite(maps.mask).all()


def test_the_conv_stem_backbone_is_the_patch_backbone_after_its_stem():
    """From the token sequence on, the conv-stem backbone is vit_keras' layer for layer: the same
    names (what the attention tools and weight files look up), classes, settings and weight shapes,
    on a non-square grid."""
    def after_the_stem(stem: str) -> list:
        backbone = build_backbone(model_config("tiny", CLASS_NAMES, [32, 48], num_layers=2, hidden_size=32,
                                               mlp_dim=64, dropout=0.2, stem=stem))  # not vit_keras' 0.1
        names = [layer.name for layer in backbone.layers]
        tokens = backbone.layers[names.index("class_token") - 1]
        assert tokens.target_shape == (4 * 6, 32)
        return [(layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights],
                 None if type(layer).__name__ == "Lambda" else layer.get_config())
                for layer in backbone.layers[names.index("class_token"):]]

    conv, patch = after_the_stem("conv"), after_the_stem("patch")
    assert [row[0] for row in conv][-2:] == ["Transformer_encoder_norm", "ExtractToken"]
    assert conv == patch


def test_a_config_with_an_unknown_stem_is_refused_by_the_builder_too():
    """A ModelConfig made in code, not through model_config or config.json, is checked again."""
    import dataclasses

    with pytest.raises(ConfigError, match=r"^unknown stem 'hybrid'; choose one of \('patch', 'conv', 'efficientnet-lite0', "
                       r"'efficientnet-lite0-s32'\)$"):
        build_backbone(dataclasses.replace(small_cfg(), stem="hybrid"))


def test_conv_stem_needs_a_power_of_two_patch_and_no_pretrained_weights():
    with pytest.raises(ConfigError, match="power of two"):
        model_config("tiny", CLASS_NAMES, 36, patch_size=6, stem="conv")
    with pytest.raises(ConfigError, match="patch stem only"):
        model_config("b16", CLASS_NAMES, 224, weights="imagenet21k", stem="conv")
    with pytest.raises(ConfigError, match="stem is 'hybrid'; choose one of patch, conv"):
        model_config("tiny", CLASS_NAMES, 32, stem="hybrid")


def test_a_config_written_before_stems_existed_loads_as_patch(tiny_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "config.json").read_text())
    data["model"].pop("stem")
    (run / "config.json").write_text(json.dumps(data))
    _, cfg = load_run(run)
    assert cfg.model.stem == "patch"


@pytest.mark.parametrize("arch, overrides", [("tiny", {"num_layers": 2, "hidden_size": 32, "mlp_dim": 64}),
                                             ("small", {}), ("tiny", {"representation_size": 16})])
def test_the_parameter_estimate_is_the_built_models_count(arch, overrides):
    from vit_flowers.config import estimate_parameters

    cfg = model_config(arch, CLASS_NAMES, 32, **overrides)
    assert estimate_parameters(cfg) == build_classifier(cfg, load_pretrained=False).count_params()


def test_a_model_too_big_for_this_machine_is_refused_before_it_is_built(monkeypatch):
    from vit_flowers import config as config_module
    from vit_flowers import model as model_module

    monkeypatch.setattr(config_module, "machine_memory_bytes", lambda: 8 * 2**30)
    monkeypatch.setattr(model_module, "build_backbone", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ConfigError, match=r"a model of 5,371,609,303 parameters needs about 20.0 GiB to hold its "
                                          r"weights; this machine has 8.0 GiB"):
        model_config("tiny", CLASS_NAMES, 64, hidden_size=8192, num_layers=4, num_heads=8, mlp_dim=65536)
    assert model_config("b16", CLASS_NAMES, 224).hidden_size == 768  # ViT-B/16 fits in 8 GiB to predict


# ------------------------------------------------------------- fused attention (the prediction graph)
@pytest.mark.parametrize("overrides", [{}, {"stem": "conv"}, {"num_heads": 2, "image_size": [32, 48]}],
                         ids=["patch", "conv-stem", "non-square"])
def test_fused_attention_call_equals_the_model(overrides):
    """`keras.ops.dot_product_attention` in place of vit_keras' explicit
    attention: same layers, same weights, the same probabilities; the
    backbone alone too. With dropout in the blocks: the fused call is inference, so it drops nothing."""
    import tensorflow as tf

    from vit_flowers.model import fused_attention_call

    size = overrides.pop("image_size", 32)
    model = build_classifier(model_config("tiny", CLASS_NAMES, size, num_layers=2, hidden_size=32, mlp_dim=64,
                                          dropout=0.3, **overrides))
    h, w = model.input_shape[1:3]
    x = np.random.default_rng(0).uniform(-1, 1, (3, h, w, 3)).astype(np.float32)
    fused = tf.function(fused_attention_call(model))
    np.testing.assert_allclose(fused(tf.constant(x)).numpy(), model(x, training=False).numpy(), atol=1e-5)
    backbone = model.layers[0]
    np.testing.assert_allclose(fused_attention_call(backbone)(tf.constant(x)).numpy(),
                               backbone(x, training=False).numpy(), atol=1e-5)


def test_fused_attention_call_refuses_what_it_does_not_know():
    import keras

    from vit_flowers.model import fused_attention_call

    plain = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(3)])
    assert fused_attention_call(plain) is None
    assert fused_attention_call(lambda x: x) is None  # not a Keras model at all (no layers)
    # a vit_keras block fed from two places is not a chain: left to the model itself
    from vit_keras import layers as vit_layers

    inputs = keras.layers.Input((5, 16))
    y, _ = vit_layers.TransformerBlock(num_heads=2, mlp_dim=32, dropout=0.0, name="b0")(inputs)
    branched = keras.Model(inputs, keras.layers.Add()([y, inputs]))
    assert fused_attention_call(branched) is None


def test_fused_weights_load_from_and_save_to_the_same_file(tmp_path):
    """The fused call adds no variable: a weights file written by the model
    loads back and predicts the same through it."""
    import tensorflow as tf

    from vit_flowers.model import fused_attention_call

    model = build_classifier(small_cfg())
    before = len(model.weights)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = tf.function(fused_attention_call(model))(tf.constant(x)).numpy()
    assert len(model.weights) == before
    model.save_weights(tmp_path / "m.weights.h5")
    other = build_classifier(small_cfg())
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(tf.function(fused_attention_call(other))(tf.constant(x)).numpy(), expected, atol=1e-6)


# ------------------------------------------------------------- the builder's details
def test_the_table_gives_each_architecture_its_default_input_and_sizes_are_kept_as_given():
    assert model_config("tiny", CLASS_NAMES).image_size == [48, 48]
    assert model_config("small", CLASS_NAMES).image_size == [64, 64]
    assert model_config("b16", CLASS_NAMES).image_size == [224, 224]
    assert model_config("tiny", CLASS_NAMES, [32, 48]).image_size == [32, 48]
    cfg = model_config("small", CLASS_NAMES, 32, num_heads=2)
    assert (cfg.arch, cfg.patch_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.mlp_dim, cfg.dropout) == (
        "small", 8, 128, 6, 2, 256, 0.1)
    assert cfg.class_names == CLASS_NAMES and cfg.weights == "none"
    with pytest.raises(ConfigError, match=r"^unknown model 'b64'; choose one of \['b16', 'b32', 'l16', 'l32', "
                                          r"'small', 'tiny'\]$"):
        model_config("b64", CLASS_NAMES)


def test_only_the_imagenet21k_weights_bring_a_pre_logits_layer():
    assert model_config("b16", CLASS_NAMES, weights="imagenet21k").representation_size == 768
    assert model_config("b16", CLASS_NAMES, weights="imagenet21k+imagenet2012").representation_size is None
    assert model_config("tiny", CLASS_NAMES).representation_size is None
    assert model_config("tiny", CLASS_NAMES, representation_size=16).representation_size == 16


@pytest.mark.parametrize("patch, depth", [(2, 1), (4, 2), (8, 3), (16, 4), (32, 5)])
def test_a_power_of_two_patch_is_that_many_halvings(patch, depth):
    from vit_flowers.model import conv_stem_depth

    assert conv_stem_depth(patch) == depth


@pytest.mark.parametrize("patch", [1, 0, 6, 12, 24])
def test_other_patches_have_no_convolutional_stem(patch):
    from vit_flowers.model import conv_stem_depth

    with pytest.raises(ConfigError, match=f"^--stem conv needs a patch size that is a power of two, not {patch}$"):
        conv_stem_depth(patch)


@pytest.mark.parametrize("hidden, widths", [(32, [8, 16, 32]), (16, [8, 8, 16]), (64, [16, 32, 64])])
def test_the_stem_doubles_its_channels_up_to_the_hidden_size(hidden, widths):
    cfg = model_config("tiny", CLASS_NAMES, 32, num_layers=1, hidden_size=hidden, num_heads=2, mlp_dim=32,
                       stem="conv")
    backbone = build_backbone(cfg)
    convs = [layer for layer in backbone.layers if layer.name.startswith("stem_conv_")]
    assert [layer.filters for layer in convs] == widths
    assert [layer.name for layer in convs] == ["stem_conv_0", "stem_conv_1", "stem_conv_2"]
    assert all(layer.kernel_size == (3, 3) and layer.padding == "same" and not layer.use_bias for layer in convs)
    assert [layer.name for layer in backbone.layers if layer.name.startswith(("stem_bn_", "stem_relu_"))] == [
        "stem_bn_0", "stem_relu_0", "stem_bn_1", "stem_relu_1", "stem_bn_2", "stem_relu_2"]
    assert backbone.get_layer("embedding").filters == hidden
    assert backbone.name == "vit-tiny-convstem" and backbone.output_shape == (None, hidden)


def test_the_conv_stem_backbone_returns_the_normalised_class_token():
    import keras

    cfg = model_config("tiny", CLASS_NAMES, 32, num_layers=2, hidden_size=32, mlp_dim=64, stem="conv")
    backbone = build_backbone(cfg)
    assert [layer.name for layer in backbone.layers if layer.name.startswith("Transformer_encoderblock_")] == [
        "Transformer_encoderblock_0", "Transformer_encoderblock_1"]
    tokens = keras.Model(backbone.input, backbone.get_layer("Transformer_encoder_norm").output)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    all_tokens = tokens.predict(x, verbose=0)
    assert all_tokens.shape == (2, 17, 32)
    np.testing.assert_allclose(backbone.predict(x, verbose=0), all_tokens[:, 0], atol=1e-6)
    block = backbone.get_layer("Transformer_encoderblock_0")
    assert (block.num_heads, block.mlp_dim, block.dropout) == (cfg.num_heads, 64, cfg.dropout)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_synchronised_batch_norm_is_asked_for_everywhere_or_nowhere(stem):
    import keras

    cfg = model_config("tiny", CLASS_NAMES, 32, num_layers=1, hidden_size=32, mlp_dim=32, stem=stem)
    for sync in (None, False, True):  # None: the default, one machine's batch norm
        model = build_classifier(cfg) if sync is None else build_classifier(cfg, sync_batchnorm=sync)
        norms = [layer for layer in model.layers[1:] + model.layers[0].layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(norms) == (2 if stem == "patch" else 5)
        assert all(layer.synchronized is bool(sync) for layer in norms)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized
                   for layer in build_backbone(cfg).layers)


def test_the_head_follows_its_config():
    cfg = model_config("tiny", CLASS_NAMES, 32, num_layers=1, hidden_size=32, mlp_dim=32, head_units=7,
                       head_bn_momentum=0.75)
    model = build_classifier(cfg)
    assert model.name == "vision_transformer" and model.input_shape == (None, 32, 32, 3)
    assert [model.layers[2].momentum, model.layers[4].momentum] == [0.75, 0.75]
    assert model.layers[3].units == 7 and model.layers[5].units == len(CLASS_NAMES)
    x = np.linspace(-3, 3, 13, dtype=np.float32)[None]
    np.testing.assert_allclose(model.layers[5].activation(x).numpy().sum(), 1.0, rtol=1e-6)  # softmax


def test_the_heads_gelu_is_exact_or_the_tanh_form_the_post_used():
    import keras

    from vit_flowers.model import head_activation

    x = np.array([-2.0, -0.5, 0.0, 1.0, 2.5], np.float32)
    exact = keras.activations.gelu(x, approximate=False).numpy()
    tanh = keras.activations.gelu(x, approximate=True).numpy()
    assert np.abs(exact - tanh).max() > 1e-4  # the two forms differ enough to tell apart
    for form, expected in (("exact", exact), ("tanh", tanh)):
        cfg = model_config("tiny", CLASS_NAMES, 32, num_layers=1, hidden_size=32, mlp_dim=32, head_gelu=form)
        dense = build_classifier(cfg).layers[3]
        np.testing.assert_allclose(dense.activation(x).numpy(), expected, atol=1e-7)
    assert head_activation("exact") == "gelu"


def test_the_output_layer_stays_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier(small_cfg())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[3].dtype_policy.name == "mixed_float16"
    assert model.layers[5].dtype_policy.name == "float32"
    assert model(np.zeros((1, 32, 32, 3), np.float32)).dtype == "float32"


def test_a_non_square_grid_gets_its_rows_and_columns_the_right_way_round(tmp_path):
    """The position embeddings resized for a 4 x 6 grid are vit_keras' own
    for 6 patches across and 4 down, not the transposed grid's."""
    import warnings

    from vit_keras import utils

    path = write_flax_npz(build_backbone(small_cfg()), tmp_path / "tiny.npz")
    cfg = model_config("tiny", CLASS_NAMES, [32, 48], weights=str(path), num_layers=2, hidden_size=32, mlp_dim=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = build_classifier(cfg).layers[0]
        reference = build_backbone(cfg)
        utils.load_weights_numpy(reference, str(path), pretrained_top=False, num_x_patches=6, num_y_patches=4)
        transposed = build_backbone(cfg)
        utils.load_weights_numpy(transposed, str(path), pretrained_top=False, num_x_patches=4, num_y_patches=6)

    def posemb(backbone):
        return backbone.get_layer("Transformer_posembed_input").get_weights()[0]

    np.testing.assert_array_equal(posemb(loaded), posemb(reference))
    assert np.abs(posemb(transposed) - posemb(reference)).max() > 1e-3


def test_a_missing_weights_file_is_named(tmp_path):
    cfg = model_config("tiny", CLASS_NAMES, 32, weights=str(tmp_path / "absent.npz"), num_layers=1, hidden_size=32,
                       mlp_dim=32)
    with pytest.raises(WeightsUnavailableError, match=f"^{tmp_path / 'absent.npz'}: weights file not found$"):
        build_classifier(cfg)
    build_classifier(cfg, load_pretrained=False)  # building alone does not read it


def test_the_run_to_use_is_the_one_given_else_the_shipped_model(tmp_path, monkeypatch):
    from vit_flowers import rundir as model_module  # resolve_run and DEFAULT_MODEL_DIR live there

    assert model_module.resolve_run(str(tmp_path / "mine")) == tmp_path / "mine"
    assert model_module.resolve_run(None) == model_module.DEFAULT_MODEL_DIR
    assert (model_module.DEFAULT_MODEL_DIR / "config.json").is_file()
    monkeypatch.setattr(model_module, "DEFAULT_MODEL_DIR", tmp_path / "not-installed")
    with pytest.raises(ConfigError, match=f"^no --run given and no default model at {tmp_path / 'not-installed'}$"):
        model_module.resolve_run(None)


def test_a_saved_run_holds_the_config_and_the_weights(tmp_path):
    from vit_flowers.model import save_run

    cfg = RunConfig(model=small_cfg())
    model = build_classifier(cfg.model)
    assert save_run(model, cfg, tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert sorted(p.name for p in (tmp_path / "new" / "run").iterdir()) == ["config.json", "model.weights.h5"]
    again, saved = load_run(tmp_path / "new" / "run")
    assert saved == cfg
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    # saving into the run again (a resumed or finished run rewrites its own dir) replaces the weights
    other = build_classifier(cfg.model)
    save_run(other, cfg, tmp_path / "new" / "run")
    np.testing.assert_array_equal(load_run(tmp_path / "new" / "run")[0].predict(x, verbose=0),
                                  other.predict(x, verbose=0))


def test_a_weights_path_is_named_by_its_layer():
    """The layer named when weights differ: 'layers' and the trailing 'vars/N' dropped, nothing else."""
    from vit_flowers.model import _layer_of

    assert _layer_of("layers/functional/layers/transformer_block_2/att/vars/0") == "functional/transformer_block_2/att"
    assert _layer_of("layers/dense/vars/1") == "dense"
    assert _layer_of("vars/0") == ""  # the model's own variables
    assert _layer_of("optimizer/iterations") == "optimizer/iterations"
    assert _layer_of("metadata") == "metadata"


def test_a_run_dir_without_its_files_is_refused_naming_what_is_missing(tiny_run, tmp_path):
    from vit_flowers.model import check_run_files

    with pytest.raises(ConfigError, match=f"^{tmp_path / 'none'}: run dir not found$"):
        check_run_files(tmp_path / "none")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    assert check_run_files(copy).model.arch == "tiny"
    (copy / "model.weights.h5").rename(copy / "other.weights.h5")
    with pytest.raises(ConfigError, match=f"^{copy / 'model.weights.h5'}: weights file not found$"):
        check_run_files(copy)
    assert check_run_files(copy, "other.weights.h5").model.arch == "tiny"
    model, _ = load_run(copy, "other.weights.h5")
    assert model.output_shape == (None, len(CLASS_NAMES))
