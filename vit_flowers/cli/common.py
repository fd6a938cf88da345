"""What every command shares: the one-line option errors, the options several
commands take (each declared once), the inputs of predict and plot."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..errors import EXIT_BAD_INPUT
from ..outputs import InputFolders
from ..resources import DEFAULT_MODEL_DIR


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad option refused in one line (exit 2) naming the
    option and what it allows, and a pointer to --help, instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {one_line(message)}; see {self.prog} --help\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help with its default, except a flag's ("--no-check
    (default: True)" would read as if the check were skipped) and a required
    option's (it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.required:
            return action.help
        return super()._get_help_string(action)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _DefaultsFormatter(prog, max_help_position=32)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    p.add_argument("--verbose", action="store_true",
                   help="also show TensorFlow's own start-up and C++ log lines (hidden by default)")
    p.add_argument("--debug", action="store_true",
                   help="print the full traceback of an unexpected error instead of writing it to a file")


def add_input_args(p: argparse.ArgumentParser, several_runs: bool = False) -> None:
    """--run, and the images: --list or --images (predict, plot, export)."""
    if several_runs:
        p.add_argument("--run", type=Path, action="append", metavar="RUN_DIR",
                       help=f"run dir (config.json + model.weights.h5); give it twice to compare two runs on the "
                            f"same images; none given: the shipped model {DEFAULT_MODEL_DIR}")
    else:
        p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                       help=f"run dir with config.json and model.weights.h5 (default: the shipped model "
                            f"{DEFAULT_MODEL_DIR})")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", type=Path, metavar="CSV", help="file list CSV; true labels from type_dir")
    src.add_argument("--images", nargs="+", type=Path, metavar="PATH",
                     help="image files or folders; a folder's class subfolders give true labels")


def read_inputs(args: argparse.Namespace, class_names: Sequence[str]):
    """Rows (file, true) of --list or --images; folders of outputs (this
    run's --out among them) and folders reached twice are left out, once said."""
    # local: file lists come with pandas, which loads once the options are parsed (the parser imports
    # the standard library alone)
    from ..filelists import collect_images, collect_list

    if args.list:
        return collect_list(args.list, class_names)
    folders = InputFolders(out=args.out)
    rows = collect_images(args.images, class_names, folders)
    if folders.left_out_line():
        print(f"note: {folders.left_out_line()}")
    return rows


def one_line(message: str) -> str:
    """A message on one line (a library's own message may hold line breaks)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


# Options several commands take, each declared once: how it parses, and what each command puts there.
SHARED_OPTIONS: dict[str, dict] = {
    "--out": {"type": Path, "required": True, "help": {
        "prepare": "data dir for training_files.csv, validation_files.csv and testing_files.csv",
        "train": "run dir to write (config.json, weights, history)",
        "predict": "output dir for predictions.csv, metrics.json, figures",
        "plot": "output dir for the figures",
        "import-weights": "run dir to write (config.json + model.weights.h5)",
        "export": "folder for saved_model/, model.tflite, model_int8.tflite, model.onnx, labels.txt, README.md",
        "demo": "where data, run dir and figures go"}},
    "--batch-size": {"type": positive_int, "default": 32, "help": {
        "predict": "images per model call",
        "plot": "images per model call (with --faithfulness also the perturbed images: a larger batch, 128 say, scores faster where memory allows)"}},
    "--strict": {"action": "store_true", "help": {
        "train": "exit 2 naming the first unreadable image instead of skipping it",
        "predict": "exit 2 at the first unreadable image instead of skipping it"}},
    "--no-report": {"action": "store_true", "help": {
        "train": "do not write the run dir's report.html (curves, config, best epoch, validation predictions)",
        "predict": "do not write report.html (one self-contained page: every prediction, filters, attention)",
        "plot": "do not write report.html (each image across the runs side by side, in a browser)"}},
    "--seed": {"type": int, "help": {
        "prepare": "seed of the split and of generated images", "demo": "random seed"}},
}


def add_shared(p: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, command: str, **changes) -> None:
    """Add the shared option `flag` as `command` takes it (`changes`: a
    command's own default, say)."""
    spec = {**SHARED_OPTIONS[flag], **changes}
    p.add_argument(flag, **{**spec, "help": spec["help"][command]})
