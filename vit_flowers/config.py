"""Settings for the model, the data and training, with a validated JSON round trip.

A run dir's `config.json` holds a `RunConfig`: everything needed to rebuild
the model (architecture, image size, class names) and to know how it was
trained. Loading checks the format version, unknown keys and types, so a
hand-edited or foreign file fails with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

FORMAT_VERSION = 1
DEFAULT_CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


@dataclass
class ModelConfig:
    """The ViT backbone and the seed's head, resolved to plain numbers."""

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
    augment: str = "seed"
    # side (height) the training images are decoded at before `resized-crop`
    # cuts crops of the model's input from them; 0: the model's input size
    load_size: int = 0
    mixup_alpha: float = 0.0
    patience: int = 5
    seed: int = 123
    strategy: str = "default"
    mixed_precision: bool = False
    scale_lr: bool = False
    train_list: str = ""
    val_list: str = ""


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
        if len(checked.model.class_names) < 2:
            raise ConfigError(f"{where}: model.class_names needs at least two classes")
        if len(set(checked.model.class_names)) != len(checked.model.class_names):
            raise ConfigError(f"{where}: model.class_names has duplicates: {checked.model.class_names}")
        if len(checked.model.image_size) != 2 or min(checked.model.image_size) <= 0:
            raise ConfigError(f"{where}: model.image_size must be [height, width], got {checked.model.image_size}")
        return checked

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
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
        raise ConfigError(f"{where}: unknown key(s) {unknown}")
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
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
