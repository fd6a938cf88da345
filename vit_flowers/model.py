"""Build the ViT backbone and the post's head; save and load a run dir.

One builder over a table of architectures (vit_keras' B/16, B/32, L/16,
L/32 and two from-scratch configs small enough for a CPU) and four stems
(vit_keras' patch embedding, a convolutional stem, and the ViT paper's
hybrid: EfficientNet-Lite0 with ImageNet weights cut at stride 16 or 32). The classifier
is the source post's: backbone, Flatten, BatchNormalization, Dense(21, gelu),
BatchNormalization, Dense(n_classes, softmax), as a Sequential whose
`layers[0]` is the backbone, so the post's
`visualize.attention_map(model=model.layers[0], ...)` works unchanged.

A run dir holds `config.json` and `model.weights.h5`; loading rebuilds the
model from the config, checks that every weight in the file has its place
in the model (and every place a weight), then reads them. No pickles, no
`safe_mode`.

What needs no model lives where the command line reads it before Keras
starts: resolving an architecture into a checked `ModelConfig`
(`config.model_config`) and checking a run dir's files against its config
(`rundir.check_run_files`); both are importable from here as well.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
from vit_keras import layers as vit_layers
from vit_keras import utils as vit_utils
from vit_keras import vit

from . import efficientnet_lite
from .atomic import atomic_path

# Besides what the model uses, these are the parts of the model's API that live with the config and the run dir,
# read before TensorFlow starts: `from vit_flowers.model import model_config` (and the rest) works as it did
from .config import (  # noqa: F401
    ARCHITECTURES,
    HYBRID_STEMS,
    PRETRAINED_WEIGHTS,
    STEMS,
    Architecture,
    ModelConfig,
    RunConfig,
    check_model_config,
    check_stem,
    conv_stem_depth,
    model_config,
    replace_checked,
)
from .errors import ConfigError, WeightsUnavailableError
from .rundir import (  # noqa: F401
    CONFIG_FILE,
    DEFAULT_MODEL_DIR,
    WEIGHTS_FILE,
    check_run_files,
    resolve_run,
    weight_layout,
    weights_outline,
)

PRETRAINED_URL = "https://github.com/faustomorales/vit-keras/releases/download/dl/ViT-{size}_{weights}.npz"
# the name of a hybrid's CNN (`HYBRID_STEMS`) nested in the backbone
HYBRID_CNN = "efficientnet_lite0"


def build_conv_stem_backbone(cfg: ModelConfig, sync_batchnorm: bool = False):
    """vit_keras' ViT with a convolutional stem (Xiao et al. 2021, "Early
    convolutions help transformers see better"): 3x3 stride-2 convolutions
    with batch norm and ReLU, channels doubling up to the hidden size, then a
    1x1 convolution named `embedding`; the same token grid as patches of
    `patch_size`, with the locality a ViT lacks on small data sets.

    The rest is vit_keras' `vit.build_model(include_top=False)` layer for
    layer, so attention tools and weight names see a vit_keras backbone.
    """
    depth = conv_stem_depth(cfg.patch_size)
    x = keras.layers.Input(shape=(*cfg.image_size, 3))
    y = x
    for k in range(depth):
        width = max(cfg.hidden_size // 2 ** (depth - 1 - k), 8)
        y = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"stem_conv_{k}")(y)
        y = keras.layers.BatchNormalization(synchronized=sync_batchnorm, name=f"stem_bn_{k}")(y)
        y = keras.layers.ReLU(name=f"stem_relu_{k}")(y)
    y = keras.layers.Conv2D(cfg.hidden_size, 1, name="embedding")(y)
    # the conv stem has always left out vit_keras' pre-logits layer; kept so that its run dirs reload
    return _vit_encoder(x, y, cfg, f"vit-{cfg.arch}-convstem", representation_size=None)


def build_hybrid_backbone(cfg: ModelConfig, sync_batchnorm: bool = False):
    """The ViT paper's hybrid (Dosovitskiy et al. 2021, section 3.1): the
    feature map of a CNN is the patch embedding. The pipeline's images
    (`x / 127.5 - 1`) -> `rescaling_from_vit_input` (EfficientNet-Lite's
    `(x - 127) / 128`, inside the model so that config.json rebuilds it) ->
    EfficientNet-Lite0 cut after the stage `HYBRID_STEMS` gives `cfg.stem`
    (stride 16 with 112 channels, or 32 with 320; one nested layer named
    `efficientnet_lite0`, its layers named as the shipped ImageNet weights) ->
    a 1x1 convolution to the hidden size named `embedding` -> vit_keras'
    class token, position embeddings, encoder blocks, norm and class token
    extraction, layer for layer as the other stems.

    Random weights: `load_backbone_weights` sets the CNN's ImageNet ones.
    The backbone stays a chain of single-input layers, so
    `fused_attention_call` serves it.
    """
    x = keras.layers.Input(shape=(*cfg.image_size, 3))
    y = efficientnet_lite.rescaling_from_vit_input()(x)
    cnn = efficientnet_lite.efficientnet_lite0((*cfg.image_size, 3), include_top=False,
                                               cut=HYBRID_STEMS[cfg.stem], sync_batchnorm=sync_batchnorm,
                                               name=HYBRID_CNN)
    y = cnn(y)
    y = keras.layers.Conv2D(cfg.hidden_size, 1, name="embedding")(y)
    return _vit_encoder(x, y, cfg, f"vit-{cfg.arch}-{cfg.stem}", cfg.representation_size)


def _vit_encoder(x, y, cfg: ModelConfig, name: str, representation_size: int | None):
    """The backbone from input `x` and the patch embedding `y` (N, h, w,
    hidden) on: vit_keras' `build_model(include_top=False)` after its
    `embedding` Conv2D, layer for layer."""
    y = keras.layers.Reshape((y.shape[1] * y.shape[2], cfg.hidden_size))(y)
    y = vit_layers.ClassToken(name="class_token")(y)
    y = vit_layers.AddPositionEmbs(name="Transformer_posembed_input")(y)
    for n in range(cfg.num_layers):
        y, _ = vit_layers.TransformerBlock(num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout,
                                           name=f"Transformer_encoderblock_{n}")(y)
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="Transformer_encoder_norm")(y)
    y = keras.layers.Lambda(lambda v: v[:, 0], name="ExtractToken")(y)
    if representation_size is not None:
        y = keras.layers.Dense(representation_size, name="pre_logits", activation="tanh")(y)
    return keras.models.Model(inputs=x, outputs=y, name=name)


def build_backbone(cfg: ModelConfig, sync_batchnorm: bool = False):
    """The vit_keras ViT without its top, as the post's `vit.vit_b16(include_top=False)`
    (or with a convolutional stem, `cfg.stem == "conv"`, or the hybrid's
    CNN, `cfg.stem` one of `HYBRID_STEMS`)."""
    check_stem(cfg.stem, cfg.patch_size, cfg.weights, cfg.image_size)  # also for configs read from config.json
    if cfg.stem == "conv":
        return build_conv_stem_backbone(cfg, sync_batchnorm)
    if cfg.stem in HYBRID_STEMS:
        return build_hybrid_backbone(cfg, sync_batchnorm)
    return vit.build_model(
        image_size=tuple(cfg.image_size),
        patch_size=cfg.patch_size,
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_heads,
        name=f"vit-{cfg.arch}",
        mlp_dim=cfg.mlp_dim,
        classes=cfg.num_classes,
        dropout=cfg.dropout,
        activation="sigmoid",
        include_top=False,
        representation_size=cfg.representation_size,
    )


def pretrained_file(cfg: ModelConfig) -> tuple[str, str]:
    """(file name, URL) of the pretrained weights for `cfg`."""
    spec = ARCHITECTURES[cfg.arch]
    return f"ViT-{spec.pretrained}_{cfg.weights}.npz", PRETRAINED_URL.format(size=spec.pretrained, weights=cfg.weights)


def fetch_pretrained(cfg: ModelConfig) -> Path:
    """Path of the pretrained .npz: Keras' cache (`keras.utils.get_file`,
    which looks there before downloading), else downloaded into it.

    Offline, the error names the file, the URL and where the cache is.
    """
    fname, url = pretrained_file(cfg)
    try:
        return Path(keras.utils.get_file(fname, url, cache_subdir="weights"))
    except Exception as err:  # network errors come in many types
        raise WeightsUnavailableError(
            f"could not download the pretrained weights {fname} from {url} ({type(err).__name__}: {err}). "
            f"Download that file on a machine with network and put it in Keras' cache folder "
            f"($KERAS_HOME/weights/, by default ~/.keras/weights/), or pass --weights PATH.npz"
        ) from err


def load_backbone_weights(backbone, cfg: ModelConfig) -> None:
    """Load Flax-layout .npz weights (vit_keras' release files or a local path);
    for the hybrid stem, the shipped ImageNet weights of its CNN (and no ViT weights)."""
    if cfg.stem in HYBRID_STEMS:
        try:
            efficientnet_lite.load_imagenet_weights(backbone.get_layer(HYBRID_CNN))
        except FileNotFoundError as err:  # package data missing from a broken install
            raise WeightsUnavailableError(str(err)) from err
    if cfg.weights == "none":
        return
    path = fetch_pretrained(cfg) if cfg.weights in PRETRAINED_WEIGHTS else Path(cfg.weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found")
    rows, cols = cfg.grid
    try:
        vit_utils.load_weights_numpy(
            model=backbone, params_path=str(path), pretrained_top=False,
            num_x_patches=cols, num_y_patches=rows,
        )
    except (KeyError, AssertionError, ValueError) as err:
        raise ConfigError(f"{path}: weights do not fit model {cfg.arch!r} ({type(err).__name__}: {err})") from err


def head_activation(form: str):
    """The head's gelu: Keras' exact one, or the tanh approximation
    (`tfa.activations.gelu`'s default, which the post used)."""
    if form == "tanh":
        def gelu_tanh(x):
            return keras.activations.gelu(x, approximate=True)

        return gelu_tanh
    return "gelu"


def build_classifier(cfg: ModelConfig, load_pretrained: bool = True, sync_batchnorm: bool = False):
    """Backbone + the post's head, built (weights created) and ready to compile.

    `load_pretrained`: read the backbone's pretrained weights (`cfg.weights`;
    for the hybrid stem, its CNN's ImageNet weights), as a fresh model for
    training wants; False for a model whose weights all come from a file
    next (a run dir's model.weights.h5, a resumed run's backup).

    `sync_batchnorm` shares batch statistics across replicas of a
    tf.distribute strategy; the weights are the same either way.
    """
    def batch_norm():
        return keras.layers.BatchNormalization(momentum=cfg.head_bn_momentum, synchronized=sync_batchnorm)

    backbone = build_backbone(cfg, sync_batchnorm)
    if load_pretrained:
        load_backbone_weights(backbone, cfg)
    model = keras.Sequential(
        [
            backbone,
            keras.layers.Flatten(),
            batch_norm(),
            keras.layers.Dense(cfg.head_units, activation=head_activation(cfg.head_gelu)),
            batch_norm(),
            keras.layers.Dense(cfg.num_classes, activation="softmax", dtype="float32"),
        ],
        name="vision_transformer",
    )
    model.build((None, *cfg.image_size, 3))
    return model


def pretrained_part(model, cfg: ModelConfig):
    """The part of a classifier `--freeze-backbone` freezes: the hybrid's CNN,
    else the whole vit_keras backbone (pretrained weights)."""
    backbone = model.layers[0]
    return backbone.get_layer(HYBRID_CNN) if cfg.stem in HYBRID_STEMS else backbone


def set_frozen(model, cfg: ModelConfig, frozen: bool) -> None:
    """Freeze the pretrained part (Keras runs a frozen BatchNormalization in
    inference mode), or make it trainable with its batch norms still frozen,
    as Keras' transfer-learning guide fine-tunes. Compile after it."""
    part = pretrained_part(model, cfg)
    part.trainable = not frozen
    if not frozen:
        for layer in _nested_layers(part):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def split_at_pretrained(model, cfg: ModelConfig) -> tuple[list, list]:
    """The classifier as two chains of layers: up to and including its
    pretrained part, and everything after it (`--cache-features` runs the
    first once per photo and trains the second)."""
    backbone, head = model.layers[0], list(model.layers[1:])
    if cfg.stem not in HYBRID_STEMS:
        return [backbone], head
    chain = [layer for layer in backbone.layers if layer.__class__.__name__ != "InputLayer"]
    cut = chain.index(backbone.get_layer(HYBRID_CNN)) + 1
    return chain[:cut], chain[cut:] + head


def _chain_model(layers: list, input_shape: tuple[int, ...], name: str):
    """A functional model calling `layers` one after the other on a new input;
    the layers (and so the weights) are those of the model they come from."""
    x = keras.layers.Input(shape=input_shape)
    y = x
    for layer in layers:
        y = layer(y)
        if isinstance(layer, vit_layers.TransformerBlock):
            y = y[0]  # vit_keras' blocks also return their attention weights
    return keras.Model(x, y, name=name)


def feature_extractor(model, cfg: ModelConfig):
    """Images (the pipeline's [-1, 1] scaling) -> the pretrained part's output."""
    before, _ = split_at_pretrained(model, cfg)
    return _chain_model(before, (*cfg.image_size, 3), "pretrained_features")


def head_on_features(model, cfg: ModelConfig):
    """The pretrained part's output -> class probabilities, through the
    classifier's own layers after it: training this trains `model`."""
    before, after = split_at_pretrained(model, cfg)
    return _chain_model(after, tuple(before[-1].output.shape[1:]), "head_on_features")


def _nested_layers(model) -> list:
    """Every layer inside `model`, nested models walked through."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_nested_layers(layer))
    return found


def _fused_block(block, x):
    """One vit_keras TransformerBlock at inference, its attention through
    `keras.ops.dot_product_attention` (the (batch, tokens, heads, dim) layout,
    so no head transposes), the block's own layers and weights otherwise.
    The attention weights are not returned: the rollout needs them, and
    uses the blocks themselves."""
    att = block.att
    heads, dim = att.num_heads, att.projection_dim
    y = block.layernorm1(x)
    shape = keras.ops.shape(y)
    split = (shape[0], shape[1], heads, dim)
    q = keras.ops.reshape(att.query_dense(y), split)
    k = keras.ops.reshape(att.key_dense(y), split)
    v = keras.ops.reshape(att.value_dense(y), split)
    y = keras.ops.dot_product_attention(q, k, v)
    x = att.combine_heads(keras.ops.reshape(y, (shape[0], shape[1], heads * dim))) + x
    return x + block.mlpblock(block.layernorm2(x), training=False)


def layer_inputs(model) -> dict[str, list[str]]:
    """Layer name -> the names of the layers whose outputs it takes, for a
    functional model called once per layer; read from the model's public
    config (`get_config`), not from Keras' private node attributes."""
    inputs: dict[str, list[str]] = {}
    for layer in model.get_config()["layers"]:
        nodes = layer.get("inbound_nodes", [])
        if len(nodes) > 1:
            inputs[layer["name"]] = []  # a layer called twice: not a chain
            continue
        args = nodes[0]["args"] if nodes else []
        inputs[layer["name"]] = [arg["config"]["keras_history"][0] for arg in args
                                 if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"]
    return inputs


def fused_attention_call(model):
    """`model(x, training=False)` for the package's classifier (or a bare
    vit_keras backbone) with the attention of every block computed by
    `keras.ops.dot_product_attention` instead of vit_keras' explicit
    matmul-softmax-matmul; the same layers and weights, so any weights file
    that loads into the model works. Returns a function of x, or None when
    the model is not a chain of layers this knows (then use `model` itself).
    """
    layers = list(getattr(model, "layers", []))
    if layers and hasattr(layers[0], "layers") and any(
            isinstance(l, vit_layers.TransformerBlock) for l in layers[0].layers):
        backbone, head = layers[0], layers[1:]
    elif any(isinstance(l, vit_layers.TransformerBlock) for l in layers):
        backbone, head = model, []
    else:
        return None
    chain = [l for l in backbone.layers if l.__class__.__name__ != "InputLayer"]
    # a chain: each layer's single input is the previous layer's output
    inputs = layer_inputs(backbone)
    if any(inputs.get(layer.name) != [prev.name] for prev, layer in zip(chain, chain[1:])):
        return None

    def call(x):
        for layer in chain:
            x = _fused_block(layer, x) if isinstance(layer, vit_layers.TransformerBlock) else layer(x, training=False)
        for layer in head:
            x = layer(x, training=False)
        return x

    return call


def save_weights(model, path: str | Path) -> Path:
    """Save weights atomically: the previous good file survives a crash."""
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))
    return Path(path)


def save_run(model, run_config: RunConfig, run_dir: str | Path) -> Path:
    """Write `config.json` and `model.weights.h5` into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, run_dir / WEIGHTS_FILE)
    run_config.save(run_dir / CONFIG_FILE)
    return run_dir


def model_layout(model) -> dict[str, tuple[int, ...]]:
    """The layout Keras gives `model`'s weights file, written by Keras itself
    (to memory-backed scratch space where there is one) and read back."""
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "expected.weights.h5"
        model.save_weights(str(path))
        return weight_layout(path)


def _layer_of(path: str) -> str:
    """'layers/functional/layers/transformer_block_2/att/vars/0' -> 'functional/transformer_block_2/att'."""
    parts = [p for p in path.split("/") if p != "layers"]
    if len(parts) >= 2 and parts[-2] == "vars":
        parts = parts[:-2]
    return "/".join(parts)


def check_weights_match(model, weights: Path, config_path: Path, cfg: ModelConfig) -> None:
    """Refuse weights that do not fit the model built from the config: an
    array the model has no place for, a place with no array, or another shape."""
    expected, found = model_layout(model), weight_layout(weights)
    if expected == found:
        return
    problems = [(path, f"{_layer_of(path)} is in the weights but not in the model the config describes")
                for path in found.keys() - expected.keys()]
    problems += [(path, f"the model the config describes has {_layer_of(path)}, which the weights lack")
                 for path in expected.keys() - found.keys()]
    problems += [(path, f"{_layer_of(path)} has shape {found[path]} in the weights, {expected[path]} in the model")
                 for path in expected.keys() & found.keys() if expected[path] != found[path]]
    first = sorted(problems)[0][1]
    raise ConfigError(
        f"{weights} does not match {config_path} (model {cfg.arch!r}, {cfg.num_layers} layers, hidden size "
        f"{cfg.hidden_size}, {cfg.num_classes} classes): {first}; {len(problems)} array(s) differ in all"
    )


def load_run(run_dir: str | Path, weights_file: str = WEIGHTS_FILE):
    """Rebuild the model from `config.json` and load its weights.

    Returns (model, RunConfig). Weights that do not fit the config exactly
    (a layer more or less, another shape, another class count) or a file
    that is not HDF5 give a ConfigError naming both files.
    """
    run_dir = Path(run_dir)
    run_config = check_run_files(run_dir, weights_file)  # not HDF5: refused before the model is built
    weights = run_dir / weights_file
    model = build_classifier(run_config.model, load_pretrained=False)
    check_weights_match(model, weights, run_dir / CONFIG_FILE, run_config.model)
    try:
        model.load_weights(str(weights))
    except (ValueError, KeyError, OSError) as err:
        raise ConfigError(f"{weights}: cannot be loaded into the model of {run_dir / CONFIG_FILE}: {err}") from err
    return model, run_config
