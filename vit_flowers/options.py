"""Every setting declared once: a field of a config dataclass whose metadata
carries its help text, its command-line flag, its range or choices.

It is the pattern of Hugging Face's `HfArgumentParser`
(`field(metadata={"help": ...})`), in a small reader of our own: the
parser, the range checks of a hand-edited `config.json`, the `--resume`
agreement check and the config a command line builds are all derived from
the declaration, so a new setting is one edit (the field) plus its use.

This module imports nothing heavy: building a parser starts no TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection, Iterator
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

FIELD_DEFAULT = object()  # an option whose default is its field's


@dataclass(frozen=True)
class Setting:
    """What a config field says about itself (see `setting`)."""

    help: str
    flag: str | None = None  # the command-line flag; None: derived from the name; "" none at all
    choices: tuple = ()
    low: float | None = None  # inclusive range of a number
    high: float | None = None
    share: str = ""  # a share in [0, 1), named in messages: "dropout", "a batch-norm momentum"
    note: str = ""  # said after the range in a message: " (the share of examples cut and mixed)"
    metavar: str | None = None
    nargs: str | None = None
    group: str = "training"  # the --help section it is listed under
    defines_run: bool = True  # on --resume, a value given must agree with the run's config.json
    option_default: Any = FIELD_DEFAULT  # the option's default when it is not the field's (None: the architecture's)
    option_type: Any = None  # what the option parses to when not the field's type (a Path for a list's str)
    aliases: tuple = ()  # other accepted values on the command line (old names)


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field declaring a setting: its default, its help text and
    what `Setting` holds (flag, choices, range, group ...)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"setting": Setting(help=help, **meta)})


def settings_of(cls: type) -> Iterator[tuple[dataclasses.Field, Setting]]:
    """The fields of `cls` that declare a setting, in declaration order."""
    for f in dataclasses.fields(cls):
        if "setting" in f.metadata:
            yield f, f.metadata["setting"]


def flag_of(f: dataclasses.Field) -> str:
    """The field's command-line flag ('' when it has none)."""
    declared = f.metadata["setting"].flag
    return ("--" + f.name.replace("_", "-")) if declared is None else declared


def dest_of(f: dataclasses.Field) -> str:
    """Where argparse puts the option's value: the flag without dashes
    (`--ema` puts `ema`; `--no-tensorboard` puts `tensorboard`)."""
    name = flag_of(f).lstrip("-")
    return (name[3:] if name.startswith("no-") else name).replace("-", "_")


def flags_by_dest(*classes: type) -> dict[str, str]:
    """Option dest -> its flag, for messages."""
    return {dest_of(f): flag_of(f) for cls in classes for f, _ in settings_of(cls) if flag_of(f)}


def value_type(cls: type, f: dataclasses.Field) -> Any:
    """The field's type with Optional taken off (list[int] stays list[int])."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def range_text(s: Setting) -> str:
    """'between 1 and 100000', 'at least 0 and below 1' or ''."""
    if s.share:
        return "at least 0 and below 1"
    if s.low is not None and s.high is not None:
        return f"between {s.low} and {s.high}"
    return ""


def check_value(where: str, value: Any, s: Setting) -> None:
    """One setting's value against its range or choices (ConfigError naming `where`)."""
    if value is None:
        return
    if s.choices and value not in s.choices:
        raise ConfigError(f"{where} is {value!r}; choose one of {', '.join(map(str, s.choices))}")
    numbers = value if isinstance(value, list) else [value]
    for number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        if s.share and not (math.isfinite(number) and 0.0 <= number < 1.0):
            raise ConfigError(f"{where} is {number!r}; {s.share} must be at least 0 and below 1")
        if s.low is not None and not (math.isfinite(number) and s.low <= number <= s.high):
            raise ConfigError(f"{where} is {number!r}; it must be between {s.low} and {s.high}{s.note}")


def check_settings(cfg: Any, where: str) -> None:
    """Every declared setting of `cfg` in its range or among its choices."""
    for f, s in settings_of(type(cfg)):
        check_value(f"{where}.{f.name}", getattr(cfg, f.name), s)


def check_options(options: Any) -> None:
    """Every declared setting of `options` in its range or among its choices,
    named by its flag: for values that came through Python, not the parser."""
    for f, s in settings_of(type(options)):
        check_value(flag_of(f) or f.name, getattr(options, f.name), s)


def _option_type(kind: Any, s: Setting) -> Callable[[str], Any]:
    """argparse's `type`: parse, then refuse out of range in one line naming the value."""
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    parse = Path if kind is Path else kind

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            check_value("it", value, dataclasses.replace(s, choices=()))
        except ConfigError:
            raise argparse.ArgumentTypeError(f"must be {range_text(s)}, got {value}") from None
        return value

    convert.__name__ = kind.__name__ if hasattr(kind, "__name__") else "value"
    return convert


def _escaped(text: str) -> str:
    """A help text as argparse reads it: % starts a format there."""
    return text.replace("%", "%%")


def add_settings(parser: argparse.ArgumentParser, *classes: type,
                 groups: dict[str, argparse._ArgumentGroup] | None = None,
                 only: Collection[str] | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add one option per declared setting of `classes` to `parser` (`only`:
    just these fields), each in its group (created on first use); returns the
    groups for more options."""
    groups = {} if groups is None else groups
    for cls in classes:
        for f, s in settings_of(cls):
            flag = flag_of(f)
            if not flag or (only is not None and f.name not in only):
                continue
            group = groups.setdefault(s.group, parser.add_argument_group(s.group))
            default = f.default if s.option_default is FIELD_DEFAULT else s.option_default
            if default is MISSING and f.default_factory is not MISSING:
                default = f.default_factory()
            kind = value_type(cls, f)
            if kind is bool:
                action = "store_false" if flag.startswith("--no-") else "store_true"
                group.add_argument(flag, dest=dest_of(f), action=action, default=bool(default), help=_escaped(s.help))
                continue
            options: dict[str, Any] = {"dest": dest_of(f), "default": default, "help": _escaped(s.help)}
            if s.option_type is not None:
                options["type"] = s.option_type
            elif s.choices:
                options["choices"] = tuple(s.choices) + tuple(s.aliases)
            elif kind is not str:
                options["type"] = _option_type(kind, s)
            if s.nargs or (typing.get_origin(kind) is list and s.option_type is None):
                options["nargs"] = s.nargs or "+"
            if s.metavar:
                options["metavar"] = s.metavar
            group.add_argument(flag, **options)
    return groups


def run_options(**sections: type) -> dict[str, tuple[str, str]]:
    """Option dest -> (config section, field) for every setting that defines
    a run: on --resume, each one given must agree with the saved config."""
    return {dest_of(f): (section, f.name)
            for section, cls in sections.items() for f, s in settings_of(cls) if flag_of(f) and s.defines_run}


def values_from(cls: type, args: argparse.Namespace, read: Callable[[str], Any] | None = None,
                only: Collection[str] | None = None) -> dict[str, Any]:
    """The field values of `cls` the options in `args` give (`only`: just
    these fields), each read by its dest with `read` (default: as parsed);
    those that are None are left out (the architecture's own)."""
    read = read or (lambda dest: getattr(args, dest))
    values = {}
    for f, _ in settings_of(cls):
        if not flag_of(f) or (only is not None and f.name not in only):
            continue
        value = read(dest_of(f))
        if value is not None:
            values[f.name] = value
    return values
