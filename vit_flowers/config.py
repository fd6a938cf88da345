"""Settings for the model, the data and training, with a validated JSON round trip.

A run dir's `config.json` holds a `RunConfig`: everything needed to rebuild
the model (architecture, image size, class names) and to know how it was
trained. Loading checks the format version, unknown keys, types and the
range of every number, so a hand-edited or foreign file fails with a message
naming the key before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_json
from .errors import ConfigError
from .options import check_settings, setting

FORMAT_VERSION = 1
DEFAULT_CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
# the ViT paper's hybrids (Dosovitskiy et al. 2021, sec. 3.1): EfficientNet-Lite0 cut after a stage, its feature
# map the patch embedding; {stem: the stage it is cut after (vit_flowers/efficientnet_lite.py's table)}
HYBRID_STEMS = {
    "efficientnet-lite0": "stage5",  # stride 16, 112 channels: 14x14 tokens at 224 px, 10x10 at 160 px
    "efficientnet-lite0-s32": "stage7",  # stride 32, 320 channels: every ImageNet stage, 5x5 tokens at 160 px
}
STEMS = ("patch", "conv", *HYBRID_STEMS)
# the head's gelu: Keras' exact form, or the tanh approximation of the post's `tfa.activations.gelu`
HEAD_GELUS = ("exact", "tanh")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("plateau", "cosine", "constant")
# "basic" is the post's ImageDataGenerator (flips, small rotations and zooms); "seed" is its old name
AUGMENTATIONS = ("none", "basic", "strong", "crop", "resized-crop")
AUGMENTATION_ALIASES = {"seed": "basic"}
STRATEGIES = ("auto", "default", "mirrored", "multihost")

MAX_IMAGE_SIDE = 4096
MAX_TOKENS = 16384  # attention memory grows with the square of the token count
PRETRAINED_WEIGHTS = ("imagenet21k+imagenet2012", "imagenet21k")
PRETRAINED_BY_DEFAULT = "imagenet21k+imagenet2012"  # the post's


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
    pretrained: str | None = None


# B and L are vit_keras' CONFIG_B and CONFIG_L (a test holds them equal; they
# are not imported from vit_keras here because that imports TensorFlow)
_BASE = dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, dropout=0.1)
_LARGE = dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096, dropout=0.1)
ARCHITECTURES: dict[str, Architecture] = {
    "b16": Architecture(patch_size=16, image_size=224, pretrained="B_16", **_BASE),
    "b32": Architecture(patch_size=32, image_size=224, pretrained="B_32", **_BASE),
    "l16": Architecture(patch_size=16, image_size=384, pretrained="L_16", **_LARGE),
    "l32": Architecture(patch_size=32, image_size=384, pretrained="L_32", **_LARGE),
    "tiny": Architecture(patch_size=8, hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128, dropout=0.0,
                         image_size=48),
    "small": Architecture(patch_size=8, hidden_size=128, num_layers=6, num_heads=4, mlp_dim=256, dropout=0.1,
                          image_size=64),
}


def _override(what: str, low: int, high: int) -> dict:
    """A model option that overrides the architecture's value when given."""
    return dict(help=f"override the architecture's {what}", low=low, high=high, group="model", option_default=None)


@dataclass
class ModelConfig:
    """The ViT backbone and the post's head, resolved to plain numbers.

    Each field declares its setting (`vit_flowers.options`): help, flag,
    range or choices. A model option left out takes its architecture's value.
    """

    arch: str = setting(help="ViT architecture: b16/b32/l16/l32 as vit_keras, tiny/small from scratch for a CPU",
                        flag="--model", choices=tuple(sorted(ARCHITECTURES)), group="model", option_default="tiny")
    image_size: list[int] = setting(help="input side (or HEIGHT WIDTH); default: the architecture's own",
                                    metavar="PX", low=1, high=MAX_IMAGE_SIDE, group="model", option_default=None)
    patch_size: int = setting(**_override("patch size", 1, 1024))
    hidden_size: int = setting(**_override("hidden size", 1, 8192))
    num_layers: int = setting(**_override("number of layers", 1, 256))
    num_heads: int = setting(**_override("number of heads", 1, 1024))
    mlp_dim: int = setting(**_override("MLP width", 1, 65536))
    dropout: float = setting(help="override the architecture's dropout", share="dropout", group="model",
                             option_default=None)
    class_names: list[str] = setting(help="comma-separated class names in label order, or 'auto' for the sorted "
                                          "type_dir values of the training list", group="data", option_type=str,
                                     option_default="auto")
    # vit_keras' pre-logits layer (the imagenet21k-only weights have one)
    representation_size: int | None = setting(None, help="pre-logits width", flag="", low=1, high=8192)
    head_units: int = setting(21, help="units of the head's hidden Dense (the post's 21)", flag="", low=1,
                              high=65536)
    # Keras' default 0.99 needs hundreds of steps to forget the initial
    # statistics; on small data sets inference then lags training badly
    head_bn_momentum: float = setting(
        0.9, help="momentum of the head's two BatchNormalization layers (default 0.9: Keras' 0.99 needs hundreds "
                  "of steps to forget its initial statistics; the post used 0.99)",
        share="a batch-norm momentum", group="model", option_default=None)
    weights: str = setting(
        "none", help=f"backbone weights: {', '.join(PRETRAINED_WEIGHTS)}, none, or a path to a .npz; default: "
                     f"{PRETRAINED_BY_DEFAULT} for b16/b32/l16/l32 (the post's fine-tune), none for tiny/small",
        group="model", option_default=None)
    # "patch": vit_keras' patchify Conv2D (kernel = stride = patch size);
    # "conv": a stack of 3x3 stride-2 convolutions with the same total stride;
    # "efficientnet-lite0", "efficientnet-lite0-s32": the ViT paper's hybrid, an ImageNet CNN cut at stride 16 or 32
    stem: str = setting("patch", help="patch (default): vit_keras' patch embedding; conv: 3x3 stride-2 convolutions "
                                      "to the same token grid (patch size a power of two; helps from-scratch "
                                      "training on small data sets); efficientnet-lite0: the ViT paper's hybrid, "
                                      "EfficientNet-Lite0 with its shipped ImageNet weights cut at stride 16, then "
                                      "a 1x1 convolution to the hidden size (needs --patch-size 16, an image size "
                                      "that is a multiple of 16 and --weights none; its input scaling is inside "
                                      "the model, so a run dir's config.json rebuilds it exactly); "
                                      "efficientnet-lite0-s32: the same CNN with all its ImageNet stages, cut at "
                                      "stride 32 (--patch-size 32; deeper features, a coarser token grid)",
                        choices=STEMS, group="model", option_default=None)
    head_gelu: str = setting("exact", help="the head's gelu: exact (Keras' own, default) or tanh (the approximation "
                                           "that tensorflow-addons' gelu, which the post used, computes by default)",
                             choices=HEAD_GELUS, group="model", option_default=None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, columns)."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)


@dataclass
class TrainConfig:
    """How a model was trained; each field declares its `train` option
    (`vit_flowers.options`): help, flag, range or choices."""

    epochs: int = setting(10, help="maximum number of epochs (a larger one with --resume trains a finished run on)", low=1, high=100_000, defines_run=False)
    batch_size: int = setting(32, help="images per batch on each replica", low=1, high=65536)
    learning_rate: float = setting(1e-4, help="peak learning rate (the post's Adam 1e-4)", low=1e-12, high=10.0)
    optimizer: str = setting("adam", help="optimizer", choices=OPTIMIZERS)
    weight_decay: float = setting(0.0, help="decoupled weight decay for adamw", low=0.0, high=10.0)
    lr_schedule: str = setting("plateau", help="plateau: ReduceLROnPlateau; cosine: warm-up then cosine decay; "
                                               "constant", choices=LR_SCHEDULES)
    # at most the number of epochs (checked in `check_train_config`)
    warmup_epochs: float = setting(0.0, help="linear warm-up length for the cosine schedule")
    label_smoothing: float = setting(0.0, help="label smoothing of the cross-entropy", share="label smoothing")
    augment: str = setting(
        "basic", help="basic: flips, small rotations and zooms as the post ('seed' is its old name); strong: also "
                      "translation, contrast; crop: zoom, shifts and colour jitter; resized-crop: random resized "
                      "crops (from images decoded at --load-size), flips, colour jitter, for real photos; every draw "
                      "is seeded by the example's place in the stream, so a resumed run draws the same",
        choices=AUGMENTATIONS, aliases=tuple(AUGMENTATION_ALIASES))
    # side (height) the training images are decoded at before `resized-crop`
    # cuts crops of the model's input from them; 0: the model's input size
    load_size: int = setting(0, help="decode training images this high (0: the model's input) so that --augment "
                                     "resized-crop cuts detailed crops from them; for example 96 for a 64 px model",
                             metavar="PX", low=0, high=MAX_IMAGE_SIDE)
    mixup_alpha: float = setting(0.0, help="MixUp Beta alpha (0 disables)", flag="--mixup", low=0.0, high=100.0)
    # CutMix: the share of examples that get a box pasted from another example
    # (the labels mixed by area); 0: none
    cutmix: float = setting(0.0, help="CutMix: the share of training examples (0-1) that get a box of another "
                                      "example pasted in, of a uniform share of the area, the labels mixed by area "
                                      "(0 disables; not with --mixup)",
                            metavar="SHARE", low=0.0, high=1.0, note=" (the share of examples cut and mixed)")
    # RandAugment-style operations per training image after the augmentation
    # (0: none), each at rand_strength (0..1 of its range)
    rand_augment: int = setting(0, help="RandAugment-style: N operations per training image after --augment, each "
                                        "drawn from rotate, shear, translate, brightness, contrast, colour, "
                                        "sharpness, posterize, autocontrast and identity (0 disables; no hue "
                                        "change, the flowers' colour is kept)", metavar="N", low=0, high=16)
    rand_strength: float = setting(0.5, help="strength of every --rand-augment operation, 0-1 of its range (1: "
                                             "rotations of 30 degrees, shears of 0.3, shifts of 30%, factors "
                                             "1+-0.9, 4 bits left)", metavar="S", low=0.0, high=1.0)
    # momentum of the moving average of the weights (Keras' optimizer EMA) that
    # validation sees and the run keeps; 0: the raw weights
    ema_momentum: float = setting(0.0, help="keep a moving average of the weights with this momentum per step (for "
                                            "example 0.999); validation, the best epoch and the saved weights use "
                                            "the average (0: the raw weights)",
                                  flag="--ema", metavar="MOMENTUM", share="an EMA momentum")
    patience: int = setting(5, help="epochs without improvement before early stopping", low=0, high=1_000_000)
    seed: int = setting(123, help="random seed (the post's 123)", low=0, high=2**32 - 1)
    strategy: str = setting("default", help="auto: mirrored with several GPUs, multihost when a cluster is "
                                            "configured, else default",
                            choices=STRATEGIES, group="devices", option_default="auto", defines_run=False)
    mixed_precision: bool = setting(False, help="float16 on GPU, bfloat16 on CPU; the last Dense and softmax stay "
                                                "float32", group="devices")
    scale_lr: bool = setting(False, help="multiply the learning rate by the number of replicas", group="devices")
    train_list: str = setting("", help="training list CSV (base_path,type_dir,file_name)", group="data",
                              option_type=Path, option_default=None)
    val_list: str = setting("", help="validation list CSV (prepare's validation_files.csv, never the test list); "
                                     "early stopping and the best epoch use it",
                            group="data", option_type=Path, option_default=None)
    # transfer learning as Keras' guide: the pretrained part frozen (its batch norms in inference mode), then
    # optionally everything trained from epoch `unfreeze_after` at `fine_tune_rate`
    freeze_backbone: bool = setting(False, help="train only what follows the pretrained part: the CNN of --stem "
                                                "efficientnet-lite0, or the whole vit_keras backbone of "
                                                "b16/b32/l16/l32 with pretrained --weights; frozen batch norms "
                                                "stay in inference mode", group="transfer")
    unfreeze_after: int = setting(0, help="with --freeze-backbone: from this epoch on train everything at "
                                          "--fine-tune-rate with a fresh optimizer, the pretrained batch norms "
                                          "still in inference mode (0: frozen to the end)",
                                  metavar="N", low=0, high=100_000, group="transfer")
    fine_tune_rate: float = setting(0.0, help="peak learning rate after --unfreeze-after, decayed over the "
                                              "epochs left as --lr-schedule says, no warm-up (0: a tenth of "
                                              "--learning-rate)", metavar="RATE", low=0.0, high=10.0,
                                    group="transfer")
    cache_features: bool = setting(False, help="with --freeze-backbone, no --unfreeze-after and no augmentation: "
                                               "run the frozen part once per photo and train what follows it on "
                                               "the stored features (the same forward pass, minutes faster)",
                                   group="transfer")
    tensorboard: bool = setting(True, help="do not write RUN/logs/, the TensorBoard log of loss, accuracy, "
                                           "validation metrics and learning rate per epoch (open it with "
                                           "tensorboard --logdir RUN/logs)", flag="--no-tensorboard", group="run dir")


# --preset post: the source post's run (vit_b16 at 224 with ImageNet-21k+2012 weights, its head with Keras'
# BatchNormalization default momentum and tensorflow-addons' tanh-approximated gelu, Adam 1e-4, categorical
# cross-entropy, ReduceLROnPlateau, its ImageDataGenerator's flips, rotations and zooms, seed 123, the model
# summary), as `train` option values; every option given on the command line still wins
PRESETS: dict[str, dict[str, Any]] = {
    "post": {"model": "b16", "image_size": [224], "weights": PRETRAINED_BY_DEFAULT, "head_bn_momentum": 0.99,
             "head_gelu": "tanh", "optimizer": "adam", "learning_rate": 1e-4, "lr_schedule": "plateau",
             "label_smoothing": 0.0, "augment": "basic", "seed": 123, "summary": True},
}
PRESET_ALIASES = {"seed": "post"}  # the package's first name for the post's things


def _in_range(where: str, value: float, low: float, high: float, why: str = "") -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{where} is {value!r}; it must be between {low} and {high}{why}")


def estimate_parameters(cfg: ModelConfig) -> int:
    """The parameter count of the ViT and head `cfg` describes (exact for the
    patch and hybrid stems, close for the convolutional one), computed without building it."""
    h, p, layers, mlp = cfg.hidden_size, cfg.patch_size, cfg.num_layers, cfg.mlp_dim
    tokens = (cfg.image_size[0] // p) * (cfg.image_size[1] // p)
    if cfg.stem in HYBRID_STEMS:  # the cut CNN (batch-norm statistics included), a 1x1 projection
        from .efficientnet_lite import cut_channels, cut_parameters  # local: see hybrid_stride

        cut = HYBRID_STEMS[cfg.stem]
        patches = cut_parameters(cut) + cut_channels(cut) * h + h
    else:
        patches = p * p * 3 * h + h
    embedding = patches + h + (tokens + 1) * h  # patches, class token, positions
    block = 4 * h + 4 * (h * h + h) + 2 * h * mlp + mlp + h  # two norms, attention, MLP
    pre_logits = (h * cfg.representation_size + cfg.representation_size) if cfg.representation_size else 0
    features = cfg.representation_size or h
    u, classes = cfg.head_units, len(cfg.class_names)
    head = 4 * features + features * u + u + 4 * u + u * classes + classes
    return int(embedding + layers * block + 2 * h + pre_logits + head)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(cfg: ModelConfig, bytes_per_parameter: int, what: str, where: str = "model") -> None:
    """Refuse, before building anything, a model this machine cannot hold:
    4 bytes a parameter to predict, about 16 to train (weights, gradients,
    two optimizer moments)."""
    memory = machine_memory_bytes()
    params = estimate_parameters(cfg)
    if memory and params * bytes_per_parameter > memory:
        raise ConfigError(
            f"{where}: a model of {params:,} parameters needs about {params * bytes_per_parameter / 2**30:.1f} GiB "
            f"to {what}; this machine has {memory / 2**30:.1f} GiB"
        )


def check_model_config(cfg: ModelConfig, where: str = "model") -> ModelConfig:
    """Every field of `cfg` in its range, with the reason when it is not."""
    if len(cfg.image_size) != 2:
        raise ConfigError(f"{where}.image_size must be [height, width], got {cfg.image_size}")
    check_settings(cfg, where)
    height, width = cfg.image_size
    if height % cfg.patch_size or width % cfg.patch_size:
        raise ConfigError(f"{where}: image size {cfg.image_size} is not a multiple of the patch size {cfg.patch_size}")
    tokens = (height // cfg.patch_size) * (width // cfg.patch_size)
    if tokens > MAX_TOKENS:
        raise ConfigError(f"{where}: {tokens} patches of {cfg.patch_size} px in {cfg.image_size}; at most "
                          f"{MAX_TOKENS} (attention memory grows with their square): use a larger patch")
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(f"{where}.num_heads is {cfg.num_heads}, which does not divide "
                          f"hidden_size {cfg.hidden_size}: each head gets hidden_size / num_heads channels")
    if len(cfg.class_names) < 2:
        raise ConfigError(f"{where}.class_names needs at least two classes, got {cfg.class_names}")
    if len(set(cfg.class_names)) != len(cfg.class_names):
        raise ConfigError(f"{where}.class_names has duplicates: {cfg.class_names}")
    if any(not name.strip() for name in cfg.class_names):
        raise ConfigError(f"{where}.class_names has an empty name: {cfg.class_names}")
    if not cfg.weights:
        raise ConfigError(f"{where}.weights is empty; use 'none', a pretrained name or a .npz path")
    check_fits_memory(cfg, 4, "hold its weights", where)
    return cfg


def check_train_config(cfg: TrainConfig, where: str = "train") -> TrainConfig:
    """Every field of `cfg` in its range or among its choices."""
    cfg.augment = AUGMENTATION_ALIASES.get(cfg.augment, cfg.augment)
    check_settings(cfg, where)
    _in_range(f"{where}.warmup_epochs", cfg.warmup_epochs, 0.0, cfg.epochs, " (the number of epochs)")
    if cfg.unfreeze_after and not cfg.freeze_backbone:
        raise ConfigError(f"{where}: unfreeze_after {cfg.unfreeze_after} needs freeze_backbone (--freeze-backbone): "
                          f"there is nothing frozen to unfreeze")
    if cfg.cache_features:
        check_cacheable(cfg, where)
    if cfg.cutmix > 0 and cfg.mixup_alpha > 0:
        raise ConfigError(f"{where}: cutmix {cfg.cutmix} and mixup_alpha {cfg.mixup_alpha}: choose one of the two")
    return cfg


def check_cacheable(cfg: TrainConfig, where: str = "train") -> None:
    """--cache-features stores the frozen part's output once per photo: it
    needs that part frozen for the whole run and each photo seen unchanged."""
    if not cfg.freeze_backbone or cfg.unfreeze_after:
        raise ConfigError(f"{where}: cache_features (--cache-features) needs --freeze-backbone without "
                          f"--unfreeze-after: the stored features are those of the frozen part")
    changed = {f"--augment {cfg.augment} (use --augment none)": cfg.augment != "none",
               "--mixup": cfg.mixup_alpha > 0, "--cutmix": cfg.cutmix > 0, "--rand-augment": cfg.rand_augment > 0,
               "--load-size": cfg.load_size > 0}
    used = [name for name, on in changed.items() if on]
    if used:
        raise ConfigError(f"{where}: --cache-features computes each photo's features once, so every epoch must see "
                          f"the photo unchanged: {', '.join(used)}")


def check_transfer(model: ModelConfig, train: TrainConfig, where: str = "train") -> None:
    """--freeze-backbone needs a pretrained part to freeze: the hybrid's CNN,
    or a vit_keras backbone with pretrained weights."""
    if train.cache_features:
        check_cacheable(train, where)
    if not train.freeze_backbone:
        return
    if model.stem in HYBRID_STEMS or (model.stem == "patch" and model.weights != "none"):
        if train.unfreeze_after and train.ema_momentum > 0:
            raise ConfigError(f"{where}: --unfreeze-after starts a fresh optimizer, whose --ema average would "
                              f"restart from the unfrozen weights; use one of the two")
        return
    raise ConfigError(f"{where}: --freeze-backbone freezes pretrained weights, and --stem {model.stem} with "
                      f"--weights {model.weights} has none: use --stem {' or '.join(HYBRID_STEMS)}, "
                      f"or b16/b32/l16/l32 with pretrained --weights")


def replace_checked(cfg: Any, where: str = "config", **changes: Any) -> Any:
    """`dataclasses.replace` that refuses a field the dataclass does not have,
    naming the nearest valid one (a typo must not vanish silently)."""
    names = [f.name for f in dataclasses.fields(cfg)]
    for key in changes:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid fields: {', '.join(names)}"
            raise ConfigError(f"{where}: unknown field {key!r}{hint}")
    return dataclasses.replace(cfg, **changes)


def model_config(
    arch: str,
    class_names: Sequence[str],
    image_size: int | Sequence[int] | None = None,
    weights: str = "none",
    **overrides,
) -> ModelConfig:
    """Resolve an architecture name (plus overrides of any ModelConfig field)
    into a checked ModelConfig; an unknown field is refused with the nearest name."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    if image_size is None:
        image_size = spec.image_size
    size = [int(image_size), int(image_size)] if isinstance(image_size, int) else [int(v) for v in image_size]
    if weights in PRETRAINED_WEIGHTS and spec.pretrained is None:
        raise ConfigError(f"model {arch!r} has no pretrained weights; use --weights none or a .npz path")
    base = ModelConfig(
        arch=arch, image_size=size, patch_size=spec.patch_size, hidden_size=spec.hidden_size,
        num_layers=spec.num_layers, num_heads=spec.num_heads, mlp_dim=spec.mlp_dim, dropout=spec.dropout,
        class_names=list(class_names), weights=weights,
    )
    cfg = replace_checked(base, "model", **overrides)
    if "representation_size" not in overrides:
        # vit_keras adds a pre-logits layer for the imagenet21k-only weights
        cfg.representation_size = cfg.hidden_size if weights == "imagenet21k" else None
    check_model_config(cfg)
    check_stem(cfg.stem, cfg.patch_size, cfg.weights, cfg.image_size)
    return cfg


def check_stem(stem: str, patch_size: int, weights: str, image_size: Sequence[int] | None = None) -> None:
    """A known stem; the convolutional one needs a power-of-two patch, a
    hybrid (`HYBRID_STEMS`) a patch of its CNN's stride (16 or 32) and an image
    size that is a multiple of it; neither takes pretrained ViT weights
    (those fit vit_keras' patch embedding only)."""
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r}; choose one of {STEMS}")
    if stem == "conv":
        conv_stem_depth(patch_size)
    elif stem in HYBRID_STEMS:
        stride = hybrid_stride(stem)
        if patch_size != stride:
            raise ConfigError(f"--stem {stem} needs --patch-size {stride} (its CNN's output stride: each token is "
                              f"one cell of the CNN's feature map), not {patch_size}")
        if image_size is not None and any(int(side) % stride for side in image_size):
            raise ConfigError(f"--stem {stem} needs an image size that is a multiple of {stride}, not "
                              f"{'x'.join(str(int(side)) for side in image_size)}")
    if stem != "patch" and weights != "none":
        extra = " (its CNN loads its own ImageNet weights)" if stem in HYBRID_STEMS else ""
        raise ConfigError(f"pretrained weights fit the patch stem only, not --stem {stem}{extra}: "
                          f"use --weights none, not {weights}")


def hybrid_stride(stem: str) -> int:
    """Output stride of a hybrid's CNN: the patch size its tokens stand for (16 or 32)."""
    # local: efficientnet_lite brings NumPy, and this module is imported to build the command-line parser,
    # which imports the standard library alone
    from .efficientnet_lite import cut_stride

    return cut_stride(HYBRID_STEMS[stem])


def conv_stem_depth(patch_size: int) -> int:
    """Number of 3x3 stride-2 convolutions that replace a patch of `patch_size`."""
    depth = int(patch_size).bit_length() - 1
    if patch_size < 2 or 2 ** depth != patch_size:
        raise ConfigError(f"--stem conv needs a patch size that is a power of two, not {patch_size}")
    return depth


@dataclass
class RunConfig:
    """What `config.json` in a run dir holds."""

    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{where}: format_version is {version!r}; this package reads version {FORMAT_VERSION}"
            )
        checked = _dataclass_from_dict(cls, data, where)
        check_model_config(checked.model, f"{where}: model")
        check_train_config(checked.train, f"{where}: train")
        check_transfer(checked.model, checked.train, f"{where}: train")
        return checked

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from err
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, huge numbers
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, where=str(path))


def _dataclass_from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}")
    missing = [
        name
        for name, f in known.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    values = {name: _check(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _check(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint; return it (nested dataclasses built)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        return _dataclass_from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value} is too large for a number") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
