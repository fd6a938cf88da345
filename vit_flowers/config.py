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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

FORMAT_VERSION = 1
DEFAULT_CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
STEMS = ("patch", "conv")
# the head's gelu: Keras' exact form, or the tanh approximation of the post's `tfa.activations.gelu`
HEAD_GELUS = ("exact", "tanh")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("plateau", "cosine", "constant")
# "basic" is the post's ImageDataGenerator (flips, small rotations and zooms); "seed" is its old name
AUGMENTATIONS = ("none", "basic", "strong", "crop", "resized-crop")
AUGMENTATION_ALIASES = {"seed": "basic"}
STRATEGIES = ("auto", "default", "mirrored", "multihost")

@dataclass
class ModelConfig:
    """The ViT backbone and the post's head, resolved to plain numbers."""

    arch: str
    image_size: list[int]  # [height, width]
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout: float
    class_names: list[str]
    representation_size: Optional[int] = None
    head_units: int = 21
    # Keras' default 0.99 needs hundreds of steps to forget the initial
    # statistics; on small data sets inference then lags training badly
    head_bn_momentum: float = 0.9
    weights: str = "none"
    # "patch": vit_keras' patchify Conv2D (kernel = stride = patch size);
    # "conv": a stack of 3x3 stride-2 convolutions with the same total stride
    stem: str = "patch"
    head_gelu: str = "exact"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, columns)."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)


@dataclass
class TrainConfig:
    """How a model was trained; every field is a `train` command option."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "basic"
    # side (height) the training images are decoded at before `resized-crop`
    # cuts crops of the model's input from them; 0: the model's input size
    load_size: int = 0
    mixup_alpha: float = 0.0
    # CutMix: the share of examples that get a box pasted from another example
    # (the labels mixed by area); 0: none
    cutmix: float = 0.0
    # RandAugment-style operations per training image after the augmentation
    # (0: none), each at rand_strength (0..1 of its range)
    rand_augment: int = 0
    rand_strength: float = 0.5
    # momentum of the moving average of the weights (Keras' optimizer EMA) that
    # validation sees and the run keeps; 0: the raw weights
    ema_momentum: float = 0.0
    patience: int = 5
    seed: int = 123
    strategy: str = "default"
    mixed_precision: bool = False
    scale_lr: bool = False
    train_list: str = ""
    val_list: str = ""


# Every number a config may hold, with the range it must lie in: (low, high).
# Beyond them a model cannot be built or trained sensibly, or would take this
# package's machines for hours (a million layers) before failing.
MAX_IMAGE_SIDE = 4096
MAX_TOKENS = 16384  # attention memory grows with the square of the token count
MODEL_RANGES: dict[str, tuple[float, float]] = {
    "patch_size": (1, 1024),
    "hidden_size": (1, 8192),
    "num_layers": (1, 256),
    "num_heads": (1, 1024),
    "mlp_dim": (1, 65536),
    "head_units": (1, 65536),
    "representation_size": (1, 8192),
}
TRAIN_RANGES: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000),
    "batch_size": (1, 65536),
    "weight_decay": (0.0, 10.0),
    "mixup_alpha": (0.0, 100.0),
    "patience": (0, 1_000_000),
    "seed": (0, 2**32 - 1),
    "load_size": (0, MAX_IMAGE_SIDE),
    "rand_augment": (0, 16),
    "rand_strength": (0.0, 1.0),
}


def _in_range(where: str, value: float, low: float, high: float, why: str = "") -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{where} is {value!r}; it must be between {low} and {high}{why}")


def _below_one(where: str, value: float, what: str) -> None:
    """A share in [0, 1): dropout, momentum, label smoothing."""
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"{where} is {value!r}; {what} must be at least 0 and below 1")


def _choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{where} is {value!r}; choose one of {', '.join(choices)}")


def estimate_parameters(cfg: ModelConfig) -> int:
    """The parameter count of the ViT and head `cfg` describes (exact for the
    patch stem, close for the convolutional one), computed without building it."""
    h, p, layers, mlp = cfg.hidden_size, cfg.patch_size, cfg.num_layers, cfg.mlp_dim
    tokens = (cfg.image_size[0] // p) * (cfg.image_size[1] // p)
    embedding = p * p * 3 * h + h + h + (tokens + 1) * h  # patches, class token, positions
    block = 4 * h + 4 * (h * h + h) + 2 * h * mlp + mlp + h  # two norms, attention, MLP
    pre_logits = (h * cfg.representation_size + cfg.representation_size) if cfg.representation_size else 0
    features = cfg.representation_size or h
    u, classes = cfg.head_units, len(cfg.class_names)
    head = 4 * features + features * u + u + 4 * u + u * classes + classes
    return int(embedding + layers * block + 2 * h + pre_logits + head)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    import os

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
    for side in cfg.image_size:
        _in_range(f"{where}.image_size", side, 1, MAX_IMAGE_SIDE)
    for name, (low, high) in MODEL_RANGES.items():
        value = getattr(cfg, name)
        if value is not None:
            _in_range(f"{where}.{name}", value, low, high)
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
    _below_one(f"{where}.dropout", cfg.dropout, "dropout")
    _below_one(f"{where}.head_bn_momentum", cfg.head_bn_momentum, "a batch-norm momentum")
    _choice(f"{where}.stem", cfg.stem, STEMS)
    _choice(f"{where}.head_gelu", cfg.head_gelu, HEAD_GELUS)
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
    for name, (low, high) in TRAIN_RANGES.items():
        _in_range(f"{where}.{name}", getattr(cfg, name), low, high)
    _in_range(f"{where}.learning_rate", cfg.learning_rate, 1e-12, 10.0)
    _in_range(f"{where}.warmup_epochs", cfg.warmup_epochs, 0.0, cfg.epochs, " (the number of epochs)")
    _below_one(f"{where}.label_smoothing", cfg.label_smoothing, "label smoothing")
    _in_range(f"{where}.cutmix", cfg.cutmix, 0.0, 1.0, " (the share of examples cut and mixed)")
    if cfg.cutmix > 0 and cfg.mixup_alpha > 0:
        raise ConfigError(f"{where}: cutmix {cfg.cutmix} and mixup_alpha {cfg.mixup_alpha}: choose one of the two")
    _below_one(f"{where}.ema_momentum", cfg.ema_momentum, "an EMA momentum")
    _choice(f"{where}.optimizer", cfg.optimizer, OPTIMIZERS)
    _choice(f"{where}.lr_schedule", cfg.lr_schedule, LR_SCHEDULES)
    _choice(f"{where}.augment", cfg.augment, AUGMENTATIONS)
    _choice(f"{where}.strategy", cfg.strategy, STRATEGIES)
    return cfg


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


@dataclass
class RunConfig:
    """What `config.json` in a run dir holds."""

    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        from .atomic import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> "RunConfig":
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
        return checked

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
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
