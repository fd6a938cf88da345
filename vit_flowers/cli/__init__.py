"""The `vit-flowers` command: one module per subcommand (prepare, train,
predict, plot, import-weights, export, demo), each with its options and
what it runs; this module holds the table of commands and what every
command shares when it runs.

Every subcommand exits 0 when done, 1 on a failure of the program or the
machine (one line, the traceback written to a file or shown with --debug)
and 2 on bad input (one line naming the file, row, option or value).
Building a parser imports no TensorFlow, Keras, OpenCV or pandas: lists,
paths and configs are checked before TensorFlow is imported, so bad input
is refused in a second or two."""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILURE, BadInputError
from ..terminal import quiet_native_logs, restore_native_logs
from .common import OneLineParser, _formatter, add_common_args, one_line
from .demo import add_demo_args, run_demo
from .export import add_export_args, run_export
from .import_weights import add_import_args, run_import
from .plot import add_plot_args, run_plot
from .predict import add_predict_args, run_predict
from .prepare import add_prepare_args, run_prepare
from .train import RUN_OPTIONS, add_train_args, apply_preset, build_run_config, check_resume_options, run_train  # noqa: F401

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "prepare": ("make training, validation and testing file lists from a source", add_prepare_args, run_prepare),
    "train": ("train a ViT with the post's head into a run dir", add_train_args, run_train),
    "predict": ("predict images with a run dir; tables, metrics, figures", add_predict_args, run_predict),
    "plot": ("attention comparison figures for one or two run dirs", add_plot_args, run_plot),
    "import-weights": ("turn the post's saved Keras 2 weights (test_model.h5) into a run dir", add_import_args,
                       run_import),
    "export": ("export a run dir's model to run without this package: SavedModel, TFLite, ONNX", add_export_args,
               run_export),
    "demo": ("offline demo: synthetic flowers, tiny ViT, predictions, figures", add_demo_args, run_demo),
}


class VersionAction(argparse.Action):
    """--version: the versions on one line (argparse's own action wraps it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()


def versions() -> str:
    """The package's version and those of the stack it runs on, read from the
    installed metadata (nothing is imported)."""
    from importlib import metadata  # local: a third of the parser's start-up, and only --version reads it

    parts = [f"vit-flowers {__version__}"]
    for dist in ("tensorflow", "keras", "vit-keras"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts) + f" (Python {sys.version.split()[0]})"


def command_parser(command: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one subcommand (scripts/train.py and friends use it alone)."""
    text, add, _ = COMMANDS[command]
    parser = OneLineParser(prog=prog, description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter)
    add(parser)
    add_common_args(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `vit-flowers` parser with every subcommand."""
    parser = OneLineParser(prog="vit-flowers", description=f"Fine-tune and explain ViTs. {EXIT_CODES_HELP}.",
                           formatter_class=_formatter)
    parser.add_argument("--version", action=VersionAction,
                        help="print the versions of vit-flowers, TensorFlow, Keras and vit-keras and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter)
        add(p)
        add_common_args(p)
    return parser


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str], dests: Sequence[str]) -> set[str]:
    """The options the user typed (not left at their defaults): parse again
    into a namespace pre-filled with a marker that argparse then leaves alone."""
    marker = object()
    namespace = argparse.Namespace(**{dest: marker for dest in dests})
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not marker}


def resume_hint() -> str:
    """The command that continues an interrupted training run."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        # `python` when that is this interpreter on PATH, else its full path (a venv not activated)
        found = shutil.which("python")
        same = found is not None and Path(found).resolve() == Path(sys.executable).resolve()
        argv.insert(0, "python" if same else sys.executable)
    elif argv:
        argv[0] = Path(argv[0]).name
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(argv)


def crash_report(command: str) -> Path:
    """Write the current exception's traceback to a file; return its path."""
    path = Path(tempfile.gettempdir()) / f"vit-flowers-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"vit-flowers {command}: {shlex.join(sys.argv)}\n\n{traceback.format_exc()}", encoding="utf-8",
                    errors="backslashreplace")
    return path


def run_command(command: str, args: argparse.Namespace) -> int:
    """Run one subcommand, mapping errors to exit codes and one line each."""
    try:
        return COMMANDS[command][2](args)
    except BadInputError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        hint = f"; continue with: {resume_hint()}" if command == "train" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size or a smaller model", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        if err.errno != errno.ENOSPC:
            return _unexpected(command, args, err)
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: no space left on the device{where}; what this run had not finished was discarded, "
              f"earlier outputs are as they were: free some space and run again", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # a failure of the program or the machine
        return _unexpected(command, args, err)


def _unexpected(command: str, args: argparse.Namespace, err: Exception) -> int:
    """A failure of the program or the machine: one line and where the traceback is."""
    if getattr(args, "debug", False):
        traceback.print_exc()
        return EXIT_FAILURE
    try:
        where = f"the traceback is in {crash_report(command)}"
    except OSError:
        where = "run again with --debug for the traceback"
    print(f"error: unexpected {type(err).__name__}: {one_line(str(err))}; {where}", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """`vit-flowers COMMAND ...` (argv None: the process's own arguments, and
    the terminal is the user's: see `_run`)."""
    own = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command_argv = argv[argv.index(args.command) + 1:]
    return _run(args.command, args, command_parser(args.command), command_argv, own)


def script_main(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry for scripts/train.py and friends: one subcommand's options."""
    own = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = command_parser(command)
    return _run(command, parser.parse_args(argv), parser, argv, own)


def _run(command: str, args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
         own_terminal: bool) -> int:
    """Run a parsed command. In a process of its own, any file name prints
    (undecodable bytes as \\xNN) and TensorFlow's C++ log lines are hidden
    unless --verbose; called from Python (tests, notebooks) the streams are
    left as they are."""
    args.given = given_options(parser, argv, list(vars(args))) if command == "train" else set()
    if not own_terminal:
        return run_command(command, args)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_native_logs(enabled=not args.verbose)
    try:
        return run_command(command, args)
    finally:
        restore_native_logs()
