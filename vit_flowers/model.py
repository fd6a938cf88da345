"""Build the ViT backbone and the seed's head; save and load a run dir.

One builder over a table of architectures (vit_keras' B/16, B/32, L/16,
L/32 and two from-scratch configs small enough for a CPU). The classifier
is the seed's: backbone, Flatten, BatchNormalization, Dense(21, gelu),
BatchNormalization, Dense(n_classes, softmax), as a Sequential whose
`layers[0]` is the backbone, so the seed's
`visualize.attention_map(model=model.layers[0], ...)` works unchanged.

A run dir holds `config.json` and `model.weights.h5`; loading rebuilds the
model from the config and reads the weights. No pickles, no `safe_mode`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .config import ModelConfig, RunConfig
from .errors import ConfigError, WeightsUnavailableError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "flowers-vit-small"
PRETRAINED_WEIGHTS = ("imagenet21k+imagenet2012", "imagenet21k")
STEMS = ("patch", "conv")
PRETRAINED_URL = "https://github.com/faustomorales/vit-keras/releases/download/dl/ViT-{size}_{weights}.npz"


@dataclass(frozen=True)
class Architecture:
    """A ViT shape; `pretrained` names vit_keras' weight file prefix, if any."""

    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout: float
    image_size: int
    pretrained: Optional[str] = None


ARCHITECTURES: dict[str, Architecture] = {
    "b16": Architecture(16, 768, 12, 12, 3072, 0.1, 224, "B_16"),
    "b32": Architecture(32, 768, 12, 12, 3072, 0.1, 224, "B_32"),
    "l16": Architecture(16, 1024, 24, 16, 4096, 0.1, 384, "L_16"),
    "l32": Architecture(32, 1024, 24, 16, 4096, 0.1, 384, "L_32"),
    "tiny": Architecture(8, 64, 4, 4, 128, 0.0, 48),
    "small": Architecture(8, 128, 6, 4, 256, 0.1, 64),
}


def model_config(
    arch: str,
    class_names: Sequence[str],
    image_size: int | Sequence[int] | None = None,
    weights: str = "none",
    **overrides,
) -> ModelConfig:
    """Resolve an architecture name (plus overrides) into a ModelConfig."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    if image_size is None:
        image_size = spec.image_size
    size = [int(image_size), int(image_size)] if isinstance(image_size, int) else [int(v) for v in image_size]
    patch = int(overrides.pop("patch_size", spec.patch_size))
    if size[0] % patch or size[1] % patch:
        raise ConfigError(f"image size {size} is not a multiple of the patch size {patch} of model {arch!r}")
    if weights != "none" and weights in PRETRAINED_WEIGHTS and spec.pretrained is None:
        raise ConfigError(f"model {arch!r} has no pretrained weights; use --weights none or a .npz path")
    hidden = int(overrides.pop("hidden_size", spec.hidden_size))
    stem = overrides.pop("stem", "patch")
    check_stem(stem, patch, weights)
    cfg = ModelConfig(
        arch=arch,
        image_size=size,
        patch_size=patch,
        hidden_size=hidden,
        num_layers=int(overrides.pop("num_layers", spec.num_layers)),
        num_heads=int(overrides.pop("num_heads", spec.num_heads)),
        mlp_dim=int(overrides.pop("mlp_dim", spec.mlp_dim)),
        dropout=float(overrides.pop("dropout", spec.dropout)),
        class_names=list(class_names),
        # vit_keras adds a pre-logits layer for the imagenet21k-only weights
        representation_size=hidden if weights == "imagenet21k" else None,
        weights=weights,
        stem=stem,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def check_stem(stem: str, patch_size: int, weights: str) -> None:
    """A known stem; the convolutional one needs a power-of-two patch and no
    pretrained weights (those fit vit_keras' patch embedding only)."""
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r}; choose one of {STEMS}")
    if stem == "conv":
        conv_stem_depth(patch_size)
        if weights != "none":
            raise ConfigError(f"pretrained weights fit the patch stem only, not --stem {stem}")


def conv_stem_depth(patch_size: int) -> int:
    """Number of 3x3 stride-2 convolutions that replace a patch of `patch_size`."""
    depth = int(patch_size).bit_length() - 1
    if patch_size < 2 or 2 ** depth != patch_size:
        raise ConfigError(f"--stem conv needs a patch size that is a power of two, not {patch_size}")
    return depth


def build_conv_stem_backbone(cfg: ModelConfig, sync_batchnorm: bool = False):
    """vit_keras' ViT with a convolutional stem (Xiao et al. 2021, "Early
    convolutions help transformers see better"): 3x3 stride-2 convolutions
    with batch norm and ReLU, channels doubling up to the hidden size, then a
    1x1 convolution named `embedding`; the same token grid as patches of
    `patch_size`, with the locality a ViT lacks on small data sets.

    The rest is vit_keras' `vit.build_model(include_top=False)` layer for
    layer, so attention tools and weight names see a vit_keras backbone.
    """
    import keras
    from vit_keras import layers as vit_layers

    depth = conv_stem_depth(cfg.patch_size)
    x = keras.layers.Input(shape=(*cfg.image_size, 3))
    y = x
    for k in range(depth):
        width = max(cfg.hidden_size // 2 ** (depth - 1 - k), 8)
        y = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"stem_conv_{k}")(y)
        y = keras.layers.BatchNormalization(synchronized=sync_batchnorm, name=f"stem_bn_{k}")(y)
        y = keras.layers.ReLU(name=f"stem_relu_{k}")(y)
    y = keras.layers.Conv2D(cfg.hidden_size, 1, name="embedding")(y)
    y = keras.layers.Reshape((y.shape[1] * y.shape[2], cfg.hidden_size))(y)
    y = vit_layers.ClassToken(name="class_token")(y)
    y = vit_layers.AddPositionEmbs(name="Transformer_posembed_input")(y)
    for n in range(cfg.num_layers):
        y, _ = vit_layers.TransformerBlock(num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout,
                                           name=f"Transformer_encoderblock_{n}")(y)
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="Transformer_encoder_norm")(y)
    y = keras.layers.Lambda(lambda v: v[:, 0], name="ExtractToken")(y)
    return keras.models.Model(inputs=x, outputs=y, name=f"vit-{cfg.arch}-convstem")


def build_backbone(cfg: ModelConfig, sync_batchnorm: bool = False):
    """The vit_keras ViT without its top, as the seed's `vit.vit_b16(include_top=False)`
    (or with a convolutional stem, `cfg.stem == "conv"`)."""
    from vit_keras import vit

    check_stem(cfg.stem, cfg.patch_size, cfg.weights)  # also for configs read from config.json
    if cfg.stem == "conv":
        return build_conv_stem_backbone(cfg, sync_batchnorm)
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


def pretrained_file(cfg: ModelConfig) -> tuple[str, str, Path]:
    """(file name, URL, cache path) of the pretrained weights for `cfg`."""
    spec = ARCHITECTURES[cfg.arch]
    fname = f"ViT-{spec.pretrained}_{cfg.weights}.npz"
    url = PRETRAINED_URL.format(size=spec.pretrained, weights=cfg.weights)
    cache_root = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return fname, url, cache_root / "weights" / fname


def fetch_pretrained(cfg: ModelConfig) -> Path:
    """Path of the pretrained .npz: from the Keras cache, else downloaded.

    Offline, the error names the URL and the cache path to drop the file at.
    """
    import keras

    fname, url, cached = pretrained_file(cfg)
    if cached.is_file():
        return cached
    try:
        return Path(keras.utils.get_file(fname, url, cache_subdir="weights"))
    except Exception as err:  # network errors come in many types
        raise WeightsUnavailableError(
            f"could not download the pretrained weights {url} ({type(err).__name__}: {err}). "
            f"Download that file on a machine with network and put it at {cached}, "
            f"or pass --weights PATH.npz"
        ) from err


def load_backbone_weights(backbone, cfg: ModelConfig) -> None:
    """Load Flax-layout .npz weights (vit_keras' release files or a local path)."""
    from vit_keras import utils

    if cfg.weights == "none":
        return
    path = fetch_pretrained(cfg) if cfg.weights in PRETRAINED_WEIGHTS else Path(cfg.weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found")
    rows, cols = cfg.grid
    try:
        utils.load_weights_numpy(
            model=backbone, params_path=str(path), pretrained_top=False,
            num_x_patches=cols, num_y_patches=rows,
        )
    except (KeyError, AssertionError, ValueError) as err:
        raise ConfigError(f"{path}: weights do not fit model {cfg.arch!r} ({type(err).__name__}: {err})") from err


def build_classifier(cfg: ModelConfig, load_pretrained: bool = True, sync_batchnorm: bool = False):
    """Backbone + the seed's head, built (weights created) and ready to compile.

    `sync_batchnorm` shares batch statistics across replicas of a
    tf.distribute strategy; the weights are the same either way.
    """
    import keras

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
            keras.layers.Dense(cfg.head_units, activation="gelu"),
            batch_norm(),
            keras.layers.Dense(cfg.num_classes, activation="softmax", dtype="float32"),
        ],
        name="vision_transformer",
    )
    model.build((None, *cfg.image_size, 3))
    return model


def save_weights(model, path: str | Path) -> Path:
    """Save weights atomically: the previous good file survives a crash."""
    from .atomic import atomic_path

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


def resolve_run(run: str | Path | None) -> Path:
    """The run dir to use: the one given, else the shipped default model."""
    if run is not None:
        return Path(run)
    if not DEFAULT_MODEL_DIR.is_dir():
        raise ConfigError(f"no --run given and no default model at {DEFAULT_MODEL_DIR}")
    return DEFAULT_MODEL_DIR


def load_run(run_dir: str | Path, weights_file: str = WEIGHTS_FILE):
    """Rebuild the model from `config.json` and load its weights.

    Returns (model, RunConfig). A config whose classes or shapes disagree with
    the weights gives a ConfigError naming both.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: run dir not found")
    run_config = RunConfig.load(run_dir / CONFIG_FILE)
    weights = run_dir / weights_file
    if not weights.is_file():
        raise ConfigError(f"{weights}: weights file not found")
    model = build_classifier(run_config.model, load_pretrained=False)
    try:
        model.load_weights(str(weights))
    except (ValueError, KeyError) as err:
        raise ConfigError(
            f"{weights} does not match {run_dir / CONFIG_FILE} "
            f"(model {run_config.model.arch!r}, {run_config.model.num_classes} classes): {err}"
        ) from err
    return model, run_config
