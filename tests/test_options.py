"""Each setting is declared once, as a field of the config dataclasses
(`vit_flowers.options`), and everything else is derived from it: the
parser's options, the range checks of the command line and of config.json,
the --resume agreement check. Building the parser starts nothing heavy."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from vit_flowers import cli
from vit_flowers.cli.import_weights import ARCHITECTURE_OVERRIDES
from vit_flowers.command_options import (
    DemoOptions,
    ExportOptions,
    PlotOptions,
    PredictOptions,
    PrepareOptions,
    RolloutOptions,
)
from vit_flowers.config import ModelConfig, RunConfig, TrainConfig
from vit_flowers.errors import ConfigError
from vit_flowers.options import FIELD_DEFAULT, dest_of, flag_of, settings_of, values_from

SETTINGS = [(cls, f, s) for cls in (ModelConfig, TrainConfig) for f, s in settings_of(cls)]
# each command, the classes whose settings are its options (None: all of them), and what it needs besides
COMMAND_SETTINGS = [
    ("train", {ModelConfig: None, TrainConfig: None}, []),
    ("predict", {PredictOptions: None}, ["--out", "o", "--images", "x"]),
    ("plot", {PlotOptions: None, RolloutOptions: None}, ["--out", "o", "--images", "x"]),
    ("export", {ExportOptions: None}, ["--out", "o"]),
    ("prepare", {PrepareOptions: None}, ["--out", "o"]),
    ("demo", {DemoOptions: None}, []),
    ("import-weights", {ModelConfig: ARCHITECTURE_OVERRIDES}, ["post.h5", "--out", "o"]),
]


def declared(classes: dict) -> list:
    """(class, field, setting) of each option `classes` declare for a command."""
    return [(cls, f, s) for cls, only in classes.items() for f, s in settings_of(cls)
            if flag_of(f) and (only is None or f.name in only)]
RANGED = [(cls, f, s) for cls, f, s in SETTINGS if flag_of(f) and s.low is not None]


def parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.command_parser("train").parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_building_every_parser_imports_nothing_heavy():
    """Every bad option is refused before TensorFlow, Keras, OpenCV or pandas load."""
    code = ("import sys; from vit_flowers import cli; cli.build_parser(); "
            "[cli.command_parser(c) for c in cli.COMMANDS]; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'cv2', 'pandas', 'vit_keras', 'matplotlib') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command,classes,_", COMMAND_SETTINGS, ids=[c for c, _, _ in COMMAND_SETTINGS])
def test_every_declared_setting_is_an_option_with_its_help_and_default(command, classes, _):
    parser = cli.command_parser(command)
    actions = {o: a for a in parser._actions for o in a.option_strings}
    for _cls, f, s in declared(classes):
        action = actions[flag_of(f)]
        assert action.dest == dest_of(f) and action.help.replace("%%", "%") == s.help
        if s.choices:
            assert set(s.choices) <= set(action.choices)
        if action.nargs != 0 and f.default is not dataclasses.MISSING:  # a flag's default is its negation's
            assert action.default == (f.default if s.option_default is FIELD_DEFAULT else s.option_default)


@pytest.mark.parametrize("command,classes,needed", COMMAND_SETTINGS[1:], ids=[c for c, _, _ in COMMAND_SETTINGS[1:]])
def test_a_command_hands_its_declared_settings_to_its_job_as_given(command, classes, needed):
    """Every option of the commands besides train reaches its dataclass: each
    value differs from its default on the command line and arrives as given."""
    argv, expected = list(needed), {}
    for cls, f, s in declared(classes):
        value, text = _non_default(f, s)
        argv += [flag_of(f)] + ([] if text is None else [text])
        expected[(cls, f.name)] = value
    args = cli.command_parser(command).parse_args(argv)
    for cls, only in classes.items():
        values = values_from(cls, args, only=only)
        for f, _ in settings_of(cls):
            if (cls, f.name) in expected:
                assert values[f.name] == expected[(cls, f.name)], (command, f.name)


def _non_default(f: dataclasses.Field, s) -> tuple:
    """A value other than the field's default, and its command-line text (None: a flag)."""
    if isinstance(f.default, bool):
        return (not f.default), None
    if s.choices:
        value = next(c for c in s.choices if c != f.default)
        return value, str(value)
    if f.name == "source":
        return ["inspection"], "inspection"
    if f.name == "image_size" and f.default is dataclasses.MISSING:
        return [96], "96"
    if f.default is dataclasses.MISSING:  # an architecture's number
        return 7, "7"
    if f.name == "report_attention":
        return 3, "3"
    if f.name == "boxes":
        return Path("boxes.csv"), "boxes.csv"
    if f.name in ("format",):
        return "onnx", "onnx"
    if f.name == "class_name":
        return "tulips", "tulips"
    if isinstance(f.default, float):
        return 0.25, "0.25"
    value = (f.default or 0) + 2 if f.default is not None else 5
    return value, str(value)


@pytest.mark.parametrize("cls,f,s", RANGED, ids=[f.name for _, f, _ in RANGED])
def test_a_number_out_of_its_declared_range_is_refused_on_the_command_line_and_in_config_json(cls, f, s, capsys,
                                                                                              tmp_path):
    below = s.low - 1
    value = str(int(below)) if isinstance(s.low, int) else str(below)
    err = parse_error([flag_of(f), value, "--out", "x"], capsys)
    assert err.count("\n") == 1 and f"argument {flag_of(f)}: must be between {s.low} and {s.high}" in err
    config = RunConfig(model=ModelConfig(arch="tiny", image_size=[32, 32], patch_size=8, hidden_size=32,
                                         num_layers=1, num_heads=2, mlp_dim=32, dropout=0.0,
                                         class_names=["a", "b"]))
    data = config.to_dict()
    section = "model" if cls is ModelConfig else "train"
    data[section][f.name] = [below, below] if f.name == "image_size" else below
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"{section}\.{f.name} is {re.escape(str(below))}.*between {s.low} and"):
        RunConfig.load(path)


def test_the_options_that_define_a_run_are_the_declared_ones():
    """--resume checks every setting given that defines the run, and nothing else."""
    declared = {dest_of(f): ("model" if cls is ModelConfig else "train", f.name)
                for cls, f, s in SETTINGS if flag_of(f) and s.defines_run}
    assert cli.RUN_OPTIONS == declared
    assert {"model", "ema", "mixup"} <= set(cli.RUN_OPTIONS) and "epochs" not in cli.RUN_OPTIONS


def test_the_config_a_command_line_builds_holds_every_train_setting_given(synthetic_data):
    """Each train setting given on the command line reaches TrainConfig (no hand-written copy to forget)."""
    given = {"--epochs": "7", "--batch-size": "8", "--learning-rate": "0.002", "--optimizer": "adamw",
             "--weight-decay": "0.01", "--lr-schedule": "cosine", "--warmup-epochs": "1", "--label-smoothing": "0.1",
             "--augment": "strong", "--load-size": "40", "--cutmix": "0.5", "--rand-augment": "2",
             "--rand-strength": "0.3", "--ema": "0.9", "--patience": "3", "--seed": "9", "--strategy": "mirrored"}
    argv = [x for pair in given.items() for x in pair] + ["--mixed-precision", "--scale-lr",
                                                        "--train-list", str(synthetic_data / "training_files.csv"),
                                                        "--out", "x"]
    train = cli.build_run_config(cli.command_parser("train").parse_args(argv)).train
    defaults = TrainConfig()
    for f, _ in settings_of(TrainConfig):
        if flag_of(f) in given:
            assert getattr(train, f.name) != getattr(defaults, f.name), f.name
    assert (train.mixed_precision, train.scale_lr) == (True, True)
    assert dataclasses.asdict(train)["train_list"].endswith("training_files.csv")


def documented_options(page: str, command: str) -> set[str]:
    """The flags in the first column of the options table a page marks with
    `<!-- options: COMMAND ... -->`."""
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"<!-- options: {command} "))
    flags: set[str] = set()
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        first = line.replace("\\|", "/").split("|")[1]
        flags |= set(re.findall(r"--[a-z0-9][a-z0-9-]*", first))
    return flags


@pytest.mark.parametrize("command,page", [("train", "docs/commands.md"), ("predict", "docs/commands.md"),
                                          ("plot", "docs/commands.md"), ("export", "docs/export.md")])
def test_each_options_table_lists_exactly_the_parsers_options(command, page):
    """A command's options table cannot miss an option nor keep one that is gone."""
    parser = cli.command_parser(command)
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert documented_options(page, command) == flags - {"--help", "--verbose", "--debug"}


def test_an_option_several_commands_take_is_declared_once_with_what_each_command_puts_there():
    """--out, --batch-size, --strict, --no-report, --seed: one declaration each
    (`cli.common.SHARED_OPTIONS`); train's --batch-size and --seed are settings of its config."""
    from vit_flowers.cli.common import SHARED_OPTIONS

    seen = 0
    for command in cli.COMMANDS:
        actions = {o: a for a in cli.command_parser(command)._actions for o in a.option_strings}
        for flag, spec in SHARED_OPTIONS.items():
            if flag in actions and command in spec["help"]:
                assert actions[flag].help == spec["help"][command], (command, flag)
                seen += 1
            elif flag in actions:
                assert command == "train" and flag in ("--batch-size", "--seed"), (command, flag)
    assert seen == sum(len(spec["help"]) for spec in SHARED_OPTIONS.values())


@pytest.mark.parametrize("changes, message", [
    (dict(limit=0), "--limit is 0; it must be between 1 and 1000000"),
    (dict(only="some"), "--only is 'some'; choose one of all, correct, wrong"),
    (dict(discard_ratio=1.0), "--discard-ratio is 1.0; the discard ratio must be at least 0 and below 1"),
])
def test_plot_values_given_from_python_are_checked_against_the_same_declarations(changes, message, tmp_path):
    """plot_comparison's own check reads the ranges and choices the parser is built from."""
    from vit_flowers.comparison import plot_comparison

    with pytest.raises(ConfigError) as err:
        plot_comparison([tmp_path / "run"], tmp_path / "out", inputs=None, **changes)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()
