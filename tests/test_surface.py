"""The command-line surface, through the real entry points, in subprocesses.

What a user meets first is the console script `vit-flowers`, `python -m
vit_flowers` and the scripts under `scripts/`; tests that call `cli.main` in
the test process do not go through them (nor through argparse's help
formatting, which crashed once on a `%` in a help text). This file checks:

- every entry point's `--help` exits 0, quietly, without starting TensorFlow,
  and shows every option its parser declares; `--version` prints the
  versions on one line;
- each row of docs/reliability.md's failure table ("What happens when things go
  wrong") that a small input reproduces in seconds: the exit code the table
  states, ONE stderr line `error: ...` naming what is wrong, no traceback,
  and what is on disk afterwards (nothing written, earlier files unchanged);
  the rows that need a long run are mapped to the test that covers them,
  and a README row without either fails here (so does a case or a mapping
  whose row is gone or reworded);
- a successful command exits 0 with nothing on stderr.

Subprocesses run in parallel (a thread pool) so that the file stays fast on
a small machine. Cases marked as refused before TensorFlow starts run with
stub `tensorflow`, `keras` and `vit_keras` packages first on PYTHONPATH that
record their import and fail: such a case also proves the README's "before
TensorFlow starts" (and so its "in under 2 s") without timing anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

import vit_flowers
from conftest import REPO
from vit_flowers import cli
from vit_flowers.errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK
from vit_flowers.outputs import LOCK_FILE, MARKER_FILE

COMMANDS_PAGE = REPO / "docs" / "commands.md"  # "The commands": the exit codes
FAILURES_PAGE = REPO / "docs" / "reliability.md"  # "What happens when things go wrong": the failure table
SCRIPTS = REPO / "scripts"
VIT_FLOWERS = Path(sys.executable).parent / "vit-flowers"  # the console script of this environment
REAL_RUN = REPO / "models" / "flowers-vit-small"  # a real run dir of the repository, the quickest to load
TIMEOUT_S = 300
WORKERS = 2 * (os.cpu_count() or 1) + 2  # subprocesses mostly wait on imports and disk
TF_MARKER_ENV = "VIT_FLOWERS_TEST_TF_IMPORTED"
STUBBED = ("tensorflow", "keras", "vit_keras")
STUB = """import os
with open(os.environ[{env!r}], "a") as f:
    f.write({name!r} + "\\n")
raise ImportError("this test stubs {name} out: the command was to finish before importing it")
"""
PROGRESS_BAR = re.compile(r"━|^\s*\d+/\d+\s+\[")  # a Keras progress bar line


# ---------------------------------------------------------------- running commands
@dataclass(frozen=True)
class Done:
    """A finished subprocess."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    tensorflow_imported: bool  # a stubbed module was imported (only known when run with the stubs)
    seconds: float

    def show(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout\n{self.stdout[-2000:]}\n--- stderr\n{self.stderr[-3000:]}")


@dataclass(frozen=True)
class Job:
    """A command line to run, in `cwd`, with or without the TensorFlow stubs."""

    argv: list[str]
    cwd: Path
    no_tensorflow: bool


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    """A folder of stub packages that record their import and fail."""
    folder = tmp_path_factory.mktemp("no-tensorflow")
    for name in STUBBED:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(STUB.format(env=TF_MARKER_ENV, name=name))
    return folder


def run_all(jobs: dict[str, Job], stubs: Path) -> dict[str, Done]:
    """Run every job at once (a bounded pool); return each one's result."""

    def one(key: str) -> Done:
        job = jobs[key]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        marker = stubs / f"imported-{uuid.uuid4().hex}.txt"
        if job.no_tensorflow:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")]))
            env[TF_MARKER_ENV] = str(marker)
        start = time.perf_counter()
        done = subprocess.run([str(a) for a in job.argv], check=False, cwd=job.cwd, env=env, capture_output=True,
                              text=True, encoding="utf-8", errors="backslashreplace", timeout=TIMEOUT_S)
        return Done([str(a) for a in job.argv], done.returncode, done.stdout, done.stderr, marker.exists(),
                    time.perf_counter() - start)

    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return dict(zip(jobs, pool.map(one, jobs)))


def the_error_line(done: Done) -> str:
    """stderr's one line (blank lines and progress bars aside); fails unless
    it is exactly one line starting with `error: ` and there is no traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.show()
    lines = [line for line in done.stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1, f"stderr is not one line:\n{done.show()}"
    assert lines[0].startswith("error: "), done.show()
    return lines[0]


# ---------------------------------------------------------------- --help and --version
def option_strings(parser) -> list[str]:
    """Every option string the parser declares (--help included)."""
    return [s for action in parser._actions for s in action.option_strings]


def positional_names(parser) -> list[str]:
    """How the usage line names each positional argument (subcommand choices aside)."""
    names = []
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        names.append(action.metavar if isinstance(action.metavar, str) else action.dest)
    return names


def load_script(path: Path):
    """Import a script under scripts/ as a module (its `__main__` part does not run)."""
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wrapped_command(path: Path) -> str | None:
    """The subcommand a thin wrapper runs (`script_main("train")`), or None for a primer script."""
    found = re.search(r"""script_main\(["']([\w-]+)["']\)""", path.read_text(encoding="utf-8"))
    return found.group(1) if found else None


SCRIPT_FILES = sorted(SCRIPTS.glob("*.py"))
WRAPPERS = {p.name: wrapped_command(p) for p in SCRIPT_FILES if wrapped_command(p)}
PRIMERS = [p.name for p in SCRIPT_FILES if not wrapped_command(p)]


def help_entries() -> dict[str, tuple[list, Callable]]:
    """Entry point id -> (command line, a function giving the parser it must document)."""
    entries: dict[str, tuple[list, Callable]] = {"vit-flowers --help": ([VIT_FLOWERS, "--help"], cli.build_parser)}
    for name in cli.COMMANDS:
        entries[f"vit-flowers {name} --help"] = ([VIT_FLOWERS, name, "--help"],
                                                 lambda name=name: cli.command_parser(name))
    for script, command in WRAPPERS.items():
        entries[f"scripts/{script} --help"] = ([sys.executable, SCRIPTS / script, "--help"],
                                               lambda command=command: cli.command_parser(command))
    for script in PRIMERS:
        entries[f"scripts/{script} --help"] = ([sys.executable, SCRIPTS / script, "--help"],
                                               lambda script=script: load_script(SCRIPTS / script).build_parser())
    return entries


HELP = help_entries()
VERSION = {"vit-flowers --version": [VIT_FLOWERS, "--version"],
           "python -m vit_flowers --version": [sys.executable, "-m", "vit_flowers", "--version"]}


@pytest.fixture(scope="module")
def surface(stubs, tmp_path_factory) -> dict[str, Done]:
    """Every --help and --version, run at once, without TensorFlow."""
    cwd = tmp_path_factory.mktemp("help")
    jobs = {key: Job(argv, cwd, no_tensorflow=True) for key, (argv, _) in HELP.items()}
    jobs.update({key: Job(argv, cwd, no_tensorflow=True) for key, argv in VERSION.items()})
    return run_all(jobs, stubs)


def test_the_entry_points_are_found():
    """The console script is installed; scripts/ holds the four thin wrappers
    the README names and the four primer scripts (so discovery works)."""
    assert WRAPPERS == {"train.py": "train", "predict.py": "predict", "plot_comparison.py": "plot",
                        "export.py": "export"}
    assert {"query_attention.py", "learn_query.py", "symbolic_attention.py", "make_inspection.py"} <= set(PRIMERS)
    assert VIT_FLOWERS.is_file(), f"no console script {VIT_FLOWERS}: is the package installed in this environment?"


@pytest.mark.parametrize("entry", list(HELP))
def test_help_exits_0_quietly_and_shows_every_option(entry, surface):
    """`--help` exits 0, writes nothing on stderr, starts no TensorFlow, and
    names every option (and positional) its parser declares."""
    done = surface[entry]
    assert done.returncode == EXIT_OK, done.show()
    assert done.stderr == "", done.show()
    assert "Traceback" not in done.stdout
    assert not done.tensorflow_imported, f"--help imported TensorFlow:\n{done.show()}"
    parser = HELP[entry][1]()
    assert done.stdout.startswith("usage: "), done.show()
    missing = [s for s in option_strings(parser) if not re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", done.stdout)]
    assert not missing, f"{entry} does not show {missing}:\n{done.stdout}"
    missing = [name for name in positional_names(parser) if name not in done.stdout]
    assert not missing, f"{entry} does not name {missing}:\n{done.stdout}"
    text = " ".join(done.stdout.split())  # argparse wraps the description
    if entry == "vit-flowers --help":
        assert all(name in done.stdout for name in cli.COMMANDS), done.stdout
    if entry.startswith("vit-flowers") or Path(entry.split()[0]).name in WRAPPERS:
        assert EXIT_CODES_HELP in text, done.stdout


@pytest.mark.parametrize("entry", list(VERSION))
def test_version_prints_the_stack_on_one_line(entry, surface):
    """`--version`: `vit-flowers X.Y.Z` and the TensorFlow, Keras and vit-keras versions on one line."""
    done = surface[entry]
    assert done.returncode == EXIT_OK and done.stderr == "", done.show()
    assert not done.tensorflow_imported, done.show()
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.show()
    assert lines[0].startswith(f"vit-flowers {vit_flowers.__version__}, "), lines[0]
    for dist in ("tensorflow", "keras", "vit-keras"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        assert re.search(rf"(?<![\w-]){re.escape(dist)} {re.escape(version)}(?![\w.])", lines[0]), lines[0]


# ---------------------------------------------------------------- the README's tables
def readme_section(title: str, page: Path) -> str:
    """The text of one `## ` section of a documentation page."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def failure_rows() -> list[str]:
    """The first cell of each row of the failure table (docs/reliability.md)."""
    lines = [line.strip() for line in readme_section("What happens when things go wrong", FAILURES_PAGE).splitlines()]
    table = [line for line in lines if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))] for line in table]
    assert cells[0] == ["case", "what you get", "test"], cells[0]
    assert set("".join(cells[1])) <= set("-: "), cells[1]
    return [row[0] for row in cells[2:]]


def test_the_readme_exit_codes_are_the_programs():
    """"The commands" (docs/commands.md) states 0 done, 1 failure, 2 bad input: the codes the program uses and its --help says."""
    section = readme_section("The commands", COMMANDS_PAGE)
    stated = {int(code): text.strip() for code, text in
              re.findall(r"\*\*(\d)\*\*\s+([^,(]+)", " ".join(section.split()))}
    assert stated == {EXIT_OK: "done", EXIT_FAILURE: "a failure of the program or the machine",
                      EXIT_BAD_INPUT: "bad input"}, stated
    assert (EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT) == (0, 1, 2)
    assert EXIT_CODES_HELP == "exit codes: 0 done, 1 failure, 2 bad input"


# ---------------------------------------------------------------- one case per failure row
@dataclass(frozen=True)
class Shared:
    """Inputs every case may read (never written): a real run dir, images and a good list."""

    root: Path
    run: Path  # a real run's config.json and model.weights.h5
    images: Path  # roses/ and tulips/, three PNGs each
    good_list: Path  # those six images


@dataclass(frozen=True)
class Case:
    """One README row reproduced: `make(case_dir, shared)` writes the bad
    input and returns the command line; `message` is a regex the error line
    must match (`{dir}`, `{shared}` and `{pid}` stand for those folders and
    the test's process id); `leaves` are the paths (relative to the case dir)
    a refused run may add; everything else in the case dir must be as it
    was. With `lock`, the test process holds that folder's lock file, as a
    live run would, while the command runs."""

    row: str  # a unique prefix of the README row's first cell
    name: str
    make: Callable[[Path, Shared], list]
    message: str
    leaves: tuple[str, ...] = ()
    tensorflow: bool = False  # refused only after TensorFlow started (slower)
    lock: str | None = None  # a folder (relative to the case dir) another live run holds

    @property
    def id(self) -> str:
        return f"{self.row[:40]} [{self.name}]"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def predict_list(content: str | bytes | None, command: str = "predict"):
    """`predict` (or `plot`, `train`) on a list holding `content` (None: no list at all)."""

    def make(d: Path, s: Shared) -> list:
        bad = d / "list.csv"
        if content is not None:
            write(bad, content)
        if command == "train":
            return [VIT_FLOWERS, "train", "--train-list", bad, "--out", d / "out"]
        return [VIT_FLOWERS, command, "--run", s.run, "--list", bad, "--out", d / "out"]

    return make


def run_dir_with(edit: Callable[[dict], None] | None = None, weights: Callable[[bytes], bytes] | None = None,
                 script: bool = False):
    """`predict` with a copy of the run dir whose config.json or weights file is edited."""

    def make(d: Path, s: Shared) -> list:
        run = d / "run"
        run.mkdir()
        config = json.loads((s.run / "config.json").read_text())
        if edit:
            edit(config)
        (run / "config.json").write_text(json.dumps(config))  # NaN is written as the literal NaN
        data = (s.run / "model.weights.h5").read_bytes()
        (run / "model.weights.h5").write_bytes(weights(data) if weights else data)
        entry = [sys.executable, SCRIPTS / "predict.py"] if script else [VIT_FLOWERS, "predict"]
        return [*entry, "--run", run, "--list", s.good_list, "--out", d / "out"]

    return make


def held_run(*options: str, resume: bool = False):
    """`train` into a run dir that holds a run (config.json + model.weights.h5)."""

    def make(d: Path, s: Shared) -> list:
        held = d / "held"
        held.mkdir()
        for name in ("config.json", "model.weights.h5"):
            shutil.copy(s.run / name, held / name)
        resume_args = ["--resume"] if resume else ["--train-list", s.good_list]
        return [sys.executable, SCRIPTS / "train.py", *resume_args, "--out", held, *options]

    return make


def out_is_a_file(command: str):
    """A command whose --out is an existing file."""

    def make(d: Path, s: Shared) -> list:
        out = write(d / "out", "a file, not a folder\n")
        return {"prepare": [VIT_FLOWERS, "prepare", "--source", "synthetic", "--per-class", "2", "--out", out],
                "predict": [VIT_FLOWERS, "predict", "--run", s.run, "--list", s.good_list, "--out", out],
                "train": [VIT_FLOWERS, "train", "--train-list", s.good_list, "--out", out],
                "export": [VIT_FLOWERS, "export", "--run", s.run, "--out", out]}[command]

    return make


def import_file(content: bytes | None, keras3: bool = False):
    """`import-weights` on a file that is not the post's saved weights."""

    def make(d: Path, s: Shared) -> list:
        weights = d / "test_model.h5"
        if keras3:
            shutil.copy(s.run / "model.weights.h5", weights)
        elif content is not None:
            write(weights, content)
        return [VIT_FLOWERS, "import-weights", weights, "--out", d / "run"]

    return make


HEADER = "base_path,type_dir,file_name\n"
CLASSES = re.escape(str(["daisy", "dandelion", "roses", "sunflowers", "tulips"]))
LIST = "{dir}/list\\.csv"
LIST_ROW = "list file missing, empty, not CSV"
CONFIG_ROW = "`config.json` with an unknown key"
CONFIG = "{dir}/run/config\\.json"
WEIGHTS = "{dir}/run/model\\.weights\\.h5"
OUT_FOLDER = ("out", f"out/{MARKER_FILE}")  # an --out claimed (made and marked) before the input was refused

CASES = [
    Case(LIST_ROW, "missing", predict_list(None), LIST + ": file list not found$"),
    Case(LIST_ROW, "empty", predict_list(b""),
         LIST + ": the list is empty \\(expected a header base_path,type_dir,file_name and rows\\)$"),
    Case(LIST_ROW, "header only", predict_list(HEADER), LIST + ": the list has a header but no rows$"),
    Case(LIST_ROW, "not CSV", predict_list(HEADER + 'images,roses,"0.png\n'),
         LIST + ": not a readable CSV file \\(.*EOF inside string.*\\)$"),
    Case(LIST_ROW, "missing column", predict_list("base_path,type_dir\nimages,roses\n", command="plot"),
         LIST + ": columns must be exactly base_path,type_dir,file_name; missing \\['file_name'\\]$"),
    Case(LIST_ROW, "extra column", predict_list("base_path,type_dir,file_name,size\nimages,roses,0.png,3\n"),
         LIST + ": columns must be exactly base_path,type_dir,file_name; unexpected \\['size'\\]$"),
    Case(LIST_ROW, "unknown class", predict_list(HEADER + "images,roses,0.png\nimages,orchids,1.png\n"),
         LIST + f": line 3: type_dir 'orchids' names none of the classes {CLASSES}"),
    Case(LIST_ROW, "two classes", predict_list(HEADER + "images,roses_tulips,0.png\n"),
         LIST + f": line 2: type_dir 'roses_tulips' names none of the classes {CLASSES} \\(or several of them\\)$"),
    Case(LIST_ROW, "duplicate rows", predict_list(HEADER + "images,roses,0.png\nimages,tulips,0.png\n"
                                                  "images,roses,0.png\n", command="train"),
         LIST + ": line 4: duplicate row images/roses/0\\.png; each image must be listed once$"),
    Case(LIST_ROW, "blank file name", predict_list(HEADER + "images,roses,0.png\nimages,roses,\n"),
         LIST + ": line 3: empty file_name$"),

    Case("training list with one class", "one class",
         lambda d, s: [VIT_FLOWERS, "train", "--train-list",
                       write(d / "one.csv", HEADER + "images,roses,0.png\nimages,roses,1.png\n"), "--out", d / "run"],
         "{dir}/one\\.csv: only 1 class\\(es\\) in type_dir \\['roses'\\]; training needs two or more$"),
    Case("`train` into a run dir that holds a run", "no --resume or --overwrite", held_run("--epochs", "1"),
         "{dir}/held already holds a run \\(model\\.weights\\.h5\\); pass --resume to continue it or --overwrite "
         "to start again$", leaves=(f"held/{MARKER_FILE}",), tensorflow=True),
    Case("`--resume` on a finished run", "an option that contradicts it",
         held_run("--image-size", "32", resume=True),
         "^error: --image-size \\[32, 32\\] contradicts the run being resumed \\({dir}/held/config\\.json has "
         "model\\.image_size = \\[64, 64\\]\\); leave --image-size out to resume, or start a new run with "
         "--overwrite$"),

    Case(CONFIG_ROW, "unknown key", run_dir_with(lambda c: c["model"].update(colour="red")),
         CONFIG + "\\.model: unknown key\\(s\\) \\['colour'\\]"),
    Case(CONFIG_ROW, "unknown key, a near miss", run_dir_with(lambda c: c["train"].update(epochz=3)),
         CONFIG + "\\.train: unknown key\\(s\\) \\['epochz'\\] \\(did you mean 'epochs'\\?\\)$"),
    Case(CONFIG_ROW, "wrong type", run_dir_with(lambda c: c["model"].update(hidden_size="big")),
         CONFIG + "\\.model\\.hidden_size: expected an integer, got 'big'$"),
    Case(CONFIG_ROW, "hidden_size 1e9", run_dir_with(lambda c: c["model"].update(hidden_size=10 ** 9)),
         CONFIG + ": model\\.hidden_size is 1000000000; it must be between 1 and \\d+$"),
    Case(CONFIG_ROW, "patch_size 0", run_dir_with(lambda c: c["model"].update(patch_size=0), script=True),
         CONFIG + ": model\\.patch_size is 0; it must be between 1 and \\d+$"),
    Case(CONFIG_ROW, "heads that do not divide", run_dir_with(lambda c: c["model"].update(num_heads=7)),
         CONFIG + ": model\\.num_heads is 7, which does not divide hidden_size 128"),
    Case(CONFIG_ROW, "dropout NaN", run_dir_with(lambda c: c["model"].update(dropout=float("nan"))),
         CONFIG + ": model\\.dropout is nan; dropout must be at least 0 and below 1$"),
    Case(CONFIG_ROW, "10 million layers", run_dir_with(lambda c: c["model"].update(num_layers=10 ** 7)),
         CONFIG + ": model\\.num_layers is 10000000; it must be between 1 and \\d+$"),
    Case(CONFIG_ROW, "momentum 5", run_dir_with(lambda c: c["model"].update(head_bn_momentum=5)),
         CONFIG + ": model\\.head_bn_momentum is 5\\.0; a batch-norm momentum must be at least 0 and below 1$"),
    Case(CONFIG_ROW, "another format version", run_dir_with(lambda c: c.update(format_version=99)),
         CONFIG + ": format_version is 99; this package reads version 1$"),

    Case("weights that do not fit `config.json`", "a layer less",
         run_dir_with(lambda c: c["model"].update(num_layers=5)),
         WEIGHTS + " does not match " + CONFIG + ": encoder layers 6 in the weights, 5 in the config$"),
    Case("weights that do not fit `config.json`", "another class count",
         run_dir_with(lambda c: c["model"].update(class_names=["a", "b", "c"])),
         WEIGHTS + " does not match " + CONFIG + ": classes 5 in the weights, 3 in the config$"),

    Case("a weights file that is empty", "empty", run_dir_with(weights=lambda data: b""),
         WEIGHTS + ": not a readable HDF5 weights file \\(.+\\)$"),
    Case("a weights file that is empty", "truncated", run_dir_with(weights=lambda data: data[:len(data) // 2]),
         WEIGHTS + ": not a readable HDF5 weights file \\(.*truncated.*\\)$"),
    Case("a weights file that is empty", "not HDF5", run_dir_with(weights=lambda data: b"not hdf5\n" * 100),
         WEIGHTS + ": not a readable HDF5 weights file \\(.+\\)$"),

    Case("`--out` that is a file", "prepare", out_is_a_file("prepare"),
         "^error: --out {dir}/out: is a file, not a folder; choose a folder for the outputs$"),
    Case("`--out` that is a file", "predict", out_is_a_file("predict"),
         "^error: --out {dir}/out: is a file, not a folder; choose a folder for the outputs$"),
    Case("`--out` that is a file", "train", out_is_a_file("train"),
         "^error: --out {dir}/out: is a file, not a folder; choose a folder for the outputs$"),
    Case("`--out` that is a file", "export", out_is_a_file("export"),
         "^error: --out {dir}/out: is a file, not a folder; choose a folder for the outputs$"),

    Case("`--out` that is an input folder itself", "predict", lambda d, s: [
        VIT_FLOWERS, "predict", "--run", s.run, "--images", shutil.copytree(s.images, d / "images"), "--out",
        d / "images"], "^error: --out {dir}/images is also an input folder: its outputs would be read as photos by "
                       "the next run; choose another folder for --out \\(inside the input folder is fine\\)$"),
    Case("`--out` that is an input folder itself", "plot", lambda d, s: [
        VIT_FLOWERS, "plot", "--run", s.run, "--images", shutil.copytree(s.images, d / "images"), "--out",
        d / "images"], "^error: --out {dir}/images is also an input folder"),

    Case("an `--out` (or run dir) another run is working in", "predict", lambda d, s: [
        VIT_FLOWERS, "predict", "--run", s.run, "--list", s.good_list, "--out", d / "out"],
        "^error: --out {dir}/out: in use by process {pid} \\(predict, started [-0-9: ]+ on h\\); wait for it to "
        "finish or choose another folder$", lock="out"),
    Case("an `--out` (or run dir) another run is working in", "train", lambda d, s: [
        VIT_FLOWERS, "train", "--train-list", s.good_list, "--out", d / "run"],
        "^error: --out {dir}/run: in use by process {pid} \\(predict, started [-0-9: ]+ on h\\)", lock="run"),

    Case("`import-weights` on a file", "a Keras 3 weights file", import_file(None, keras3=True),
         "{dir}/test_model\\.h5: not a legacy Keras weights file \\(no layer_names\\)"),
    Case("`import-weights` on a file", "not HDF5", import_file(b"model weights, honest\n"),
         "{dir}/test_model\\.h5: not a readable HDF5 weights file \\(.+\\)$"),
    Case("`import-weights` on a file", "no such file", import_file(None),
         "{dir}/test_model\\.h5: no such file$"),
]
CASE_IDS = [case.id for case in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "two cases share an id"

# README rows that need a long run, the real photos, a network or a planted bug, and the halves of rows
# the cases above do not reproduce (a row may be in both): row prefix -> the test that covers it
COVERED_ELSEWHERE = {
    "zero-byte, 1-byte":
        "tests/test_inputs.py::test_every_odd_file_is_skipped_with_its_true_reason_and_the_rest_predicted",
    "a file name that is not UTF-8":
        "tests/test_inputs.py::test_a_name_that_is_not_utf8_is_written_back_as_its_own_bytes",
    "EXIF-rotated JPEG":
        "tests/test_decoders.py::test_exif_orientation_comes_out_upright",
    "UTF-8 BOM":
        "tests/test_filelists.py::test_bom_and_windows_line_endings_are_read",
    "training list with one class":
        "tests/test_train.py::test_lists_too_small_or_unreadable_are_refused_naming_the_list",
    "a listed image file that does not exist":
        "tests/test_loader.py::test_missing_files_and_links",
    "training killed":
        "tests/test_reliability.py::test_sigkill_then_resume_ends_as_the_uninterrupted_run",
    "several processes killed":
        "tests/test_train_run.py::test_hosts_resume_together_at_the_epoch_all_of_them_hold_and_end_as_the_run_never_stopped",
    "a kill while the weights":
        "tests/test_reliability.py::test_crash_while_writing_weights_keeps_previous_good_weights",
    "`--resume` on a finished run":
        "tests/test_reliability.py::test_resume_of_a_finished_run_says_so_and_a_larger_epochs_trains_on",
    "`--out` that is a file":
        "tests/test_pipeline.py::test_an_output_that_cannot_be_written_is_refused_before_any_work",
    "an `--out` used before":
        "tests/test_pipeline.py::test_an_output_folder_holds_one_runs_files",
    "an `--out` whose run was killed":
        "tests/test_outputs.py::test_a_predict_killed_mid_run_leaves_a_lock_the_next_run_takes_over",
    "a full disk (or any failure)":
        "tests/test_outputs.py::test_a_run_that_fails_while_writing_leaves_the_earlier_outputs_as_they_were",
    "`--out` inside an input folder":
        "tests/test_outputs.py::test_an_out_inside_the_images_is_not_predicted_on_the_next_run",
    "pretrained weights or flower_photos cannot be downloaded":
        "tests/test_pipeline.py::test_prepare_download_offline_says_what_to_do",
    "an export format whose converter fails":
        "tests/test_export.py::test_a_failing_converter_is_one_clear_error_and_leaves_the_folder_alone",
    "`import-weights` on a file":
        "tests/test_import_weights.py::test_a_file_of_another_architecture_is_refused_naming_the_first_layer",
    "a bug":
        "tests/test_inputs.py::test_an_unexpected_error_is_one_line_naming_where_the_traceback_went",
}


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> its content's hash ('<dir>' for a folder)."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            seen[key] = "<dir>"
        else:
            seen[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<other>"
    return seen


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    """A real run dir (the from-scratch model's two files), six small images and their list."""
    from PIL import Image

    root = tmp_path_factory.mktemp("shared")
    run = root / "run"
    run.mkdir()
    for name in ("config.json", "model.weights.h5"):
        shutil.copy(REAL_RUN / name, run / name)
    for c, name in enumerate(("roses", "tulips")):
        (root / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (24, 24), (40 * i, 200 * c, 90)).save(root / "images" / name / f"{i}.png")
    good = write(root / "list.csv", HEADER + "".join(f"images,{name},{i}.png\n" for name in ("roses", "tulips")
                                                     for i in range(3)))
    return Shared(root, run, root / "images", good)


def hold_lock(folder: Path) -> int:
    """Hold `folder`'s lock file as a live `predict` of this process would; return the descriptor."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": "h", "command": "predict", "started": 0}).encode())
    return fd


@pytest.fixture(scope="module")
def refused(shared, stubs, tmp_path_factory) -> dict[str, tuple[Done, Path, dict, dict]]:
    """Every case, made and run at once: id -> (result, case dir, disk before, disk after)."""
    shared_before = snapshot(shared.root)
    folders, jobs, held = {}, {}, []
    try:
        for number, case in sorted(enumerate(CASES), key=lambda item: not item[1].tensorflow):  # slow ones first
            folder = tmp_path_factory.mktemp(f"case{number:02d}")
            jobs[case.id] = Job(case.make(folder, shared), folder, no_tensorflow=not case.tensorflow)
            if case.lock:
                held.append(hold_lock(folder / case.lock))
            folders[case.id] = (folder, snapshot(folder))
        done = run_all(jobs, stubs)
    finally:
        for fd in held:
            os.close(fd)
    assert snapshot(shared.root) == shared_before, "a refused command changed the shared inputs"
    return {key: (done[key], folders[key][0], folders[key][1], snapshot(folders[key][0])) for key in jobs}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_readme_failure_row_exits_2_with_one_line_and_leaves_the_disk_alone(case, refused, shared):
    """The row's bad input: exit 2, one `error:` line naming the file, line,
    key or value, no traceback; only the stated paths added, nothing changed;
    refused before TensorFlow starts unless the case says otherwise."""
    done, folder, before, after = refused[case.id]
    assert done.returncode == EXIT_BAD_INPUT, done.show()
    line = the_error_line(done)
    pattern = case.message.format(dir=re.escape(str(folder)), shared=re.escape(str(shared.root)), pid=os.getpid())
    assert re.search(pattern if pattern.startswith("^") else "^error: " + pattern, line), \
        f"{line!r} does not match {pattern!r}"
    if not case.tensorflow:
        assert not done.tensorflow_imported, f"TensorFlow was imported before the input was refused:\n{done.show()}"
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"the refused run changed or removed {changed}"
    assert sorted(set(after) - set(before)) == sorted(case.leaves), "what the refused run left on disk"
    assert "Traceback" not in done.stdout


def test_every_readme_failure_row_has_a_case_here_or_a_named_test():
    """A README row added or reworded without a test fails: each row is a
    case here or in COVERED_ELSEWHERE; each key names exactly one row."""
    rows = failure_rows()
    keys = {case.row for case in CASES} | set(COVERED_ELSEWHERE)
    for key in keys:
        matching = [row for row in rows if row.startswith(key)]
        assert len(matching) == 1, f"{key!r} matches {len(matching)} README rows: {matching}"
    uncovered = [row for row in rows if not any(row.startswith(key) for key in keys)]
    assert not uncovered, f"README rows with no test: {uncovered}"


@pytest.mark.parametrize("row", sorted(COVERED_ELSEWHERE))
def test_a_row_covered_elsewhere_names_a_test_that_exists(row):
    """COVERED_ELSEWHERE names a file and a test function that is defined in it."""
    path, name = COVERED_ELSEWHERE[row].split("::")
    source = (REPO / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), f"no `def {name}(` in {path}"


# ---------------------------------------------------------------- exit 0
def test_a_command_that_succeeds_exits_0_with_nothing_on_stderr(shared, stubs, tmp_path):
    """Exit 0 (the README's "done"): `prepare` from a folder, quietly, without TensorFlow."""
    out = tmp_path / "data"
    done = run_all({"prepare": Job([VIT_FLOWERS, "prepare", "--source", shared.images, "--out", out,
                                    "--val-fraction", "0"], tmp_path, no_tensorflow=True)}, stubs)["prepare"]
    assert done.returncode == EXIT_OK and done.stderr == "", done.show()
    assert not done.tensorflow_imported
    assert sorted(p.name for p in out.glob("*.csv")) == ["testing_files.csv", "training_files.csv"]
    assert done.stdout.splitlines()[0] == "6 images in classes ['roses', 'tulips']", done.show()
