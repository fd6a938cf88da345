"""Do the tests still kill the mutants they killed before a change to the tests?

A change that makes the suite faster by sharing trained fixtures (a run
trained once for every test worker instead of once in each; tests reusing
that run instead of training their own) must not make a test weaker. This
applies each of MUTANTS (one exact substitution in one line of the package,
the kind mutmut makes) to a clean copy of each revision given, runs the tests
that use the moved fixtures and reach that line, and reports whether each
mutant is killed (a test fails) at every revision.

    python tools/still_killed.py --revs 4932925 3604da0

Each revision is checked out with `git worktree` under --work (removed at the end); its tests run
with this venv's Python, the copy first on PYTHONPATH. Prints a Markdown
table and writes the statuses to --out (default `.mutation/still_killed.json`,
ignored by git). Exit 0 when every mutant is killed at every revision.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WEIGHTS_DISAGREE = "tests/test_model.py::test_weights_that_disagree_with_the_config_are_refused_before_a_model_is_built"
PLOT_BAD_OPTIONS = "tests/test_attention.py::test_plot_bad_options_exit_2"
ONLY_WRONG = "tests/test_attention.py::test_plot_only_wrong_and_correct"
RUN_DIR_FILES = "tests/test_model.py::test_a_run_dir_without_its_files_is_refused_naming_what_is_missing"


@dataclass(frozen=True)
class Mutant:
    path: str  # in the repository
    old: str  # found exactly once in the file
    new: str
    tests: tuple[str, ...]  # node ids that use a moved fixture (tiny_run, or the attention tests' runs)


# Twenty mutants the tests killed before the change. Four first chosen survived at both revisions (the
# tests never killed them, so they say nothing of the change) and were replaced: predict.py's
# `len(chunk.skipped)` -> `> 1` with --strict, `argmax` -> `argmin` in the predictions table, recall over
# the predicted count, and comparison.py's --only wrong filter dropped.
MUTANTS = [
    Mutant("vit_flowers/rundir.py", 'outline["num_layers"] = len(blocks)', 'outline["num_layers"] = len(blocks) + 1',
           (WEIGHTS_DISAGREE,)),
    Mutant("vit_flowers/rundir.py", '"tokens": rows * cols + 1,', '"tokens": rows * cols,', (WEIGHTS_DISAGREE,)),
    Mutant("vit_flowers/rundir.py", 'outline["hidden_size"] = shape[-1]', 'outline["hidden_size"] = shape[1]',
           (WEIGHTS_DISAGREE,)),
    Mutant("vit_flowers/rundir.py", "{what[key]} {found} in the weights", "{what[key]} {expected[key]} in the weights",
           (WEIGHTS_DISAGREE,)),
    Mutant("vit_flowers/model.py", "first = sorted(problems)[0][1]", "first = sorted(problems)[-1][1]",
           ("tests/test_model.py::test_weights_that_differ_anywhere_else_are_refused_naming_the_first_layer",)),
    Mutant("vit_flowers/model.py", "{len(problems)} array(s) differ", "{len(problems) - 1} array(s) differ",
           ("tests/test_model.py::test_weights_that_differ_anywhere_else_are_refused_naming_the_first_layer",)),
    Mutant("vit_flowers/predict.py", "kept.append(chunk.kept + offset)", "kept.append(chunk.kept)",
           ("tests/test_predict.py::test_chunks_keep_each_probability_row_with_its_own_file",)),
    Mutant("vit_flowers/predict.py", "bar.update(min(offset + chunk_size, len(files)))",
           "bar.update(min(offset, len(files)))", ("tests/test_predict.py::test_the_progress_bar_counts_every_file",)),
    Mutant("vit_flowers/predict.py", "np.ascontiguousarray(x[:, :, ::-1])", "np.ascontiguousarray(x[:, ::-1])",
           ("tests/test_predict.py::test_mirror_averages_the_arrays_with_their_mirror_images",)),
    Mutant("vit_flowers/predict.py", "np.zeros((0, num_classes), np.float32)",
           "np.zeros((0, num_classes - 1), np.float32)",
           ("tests/test_predict.py::test_nothing_readable_gives_empty_arrays_of_the_right_shapes",)),
    Mutant("vit_flowers/rundir.py", 'raise ConfigError(f"{weights}: weights file not found")',
           'raise ConfigError(f"{run_dir}: weights file not found")', (RUN_DIR_FILES,)),
    Mutant("vit_flowers/rundir.py", 'raise ConfigError(f"{run_dir}: run dir not found")',
           'raise ConfigError(f"{run_dir}: not found")', (RUN_DIR_FILES,)),
    Mutant("vit_flowers/rundir.py", "not a readable HDF5 weights file ({err})", "not readable ({err})",
           ("tests/test_model.py::test_a_weights_file_that_is_not_hdf5_is_refused",)),
    Mutant("vit_flowers/config.py", "if version != FORMAT_VERSION:", "if version not in (FORMAT_VERSION, FORMAT_VERSION + 1):",
           ("tests/test_model.py::test_a_config_of_another_format_version_is_refused",)),
    Mutant("vit_flowers/choices.py", "if not 1 <= len(run_dirs) <= MAX_RUNS:",
           "if not 1 <= len(run_dirs) <= MAX_RUNS + 1:", (PLOT_BAD_OPTIONS,)),
    Mutant("vit_flowers/comparison.py", "if not -num_layers <= head_layer < num_layers:",
           "if not -num_layers <= head_layer < num_layers + 6:", (PLOT_BAD_OPTIONS,)),
    Mutant("vit_flowers/comparison.py", 'table = table[labelled & (table["true"] == table["pred"])]',
           "table = table[labelled]", (ONLY_WRONG,)),
    Mutant("vit_flowers/comparison.py",
           "skipped = pd.concat([skipped, pd.DataFrame(bad, columns=SKIPPED_COLUMNS)], ignore_index=True)",
           "skipped = pd.DataFrame(bad, columns=SKIPPED_COLUMNS)",
           ("tests/test_attention.py::test_plot_skips_bad_images",)),
    Mutant("vit_flowers/comparison.py", "    if chosen.empty:", "    if chosen.empty and len(table) > 5:",
           ("tests/test_attention.py::test_plot_nothing_to_show_still_finishes",)),
    Mutant("vit_flowers/comparison.py", "return table.iloc[plots.evenly_spaced(len(table), limit)]",
           "return table.iloc[plots.evenly_spaced(len(table), limit + 1)]",
           ("tests/test_attention.py::test_plot_command_two_runs",)),
]


def worktree(rev: str, work: Path) -> Path:
    """A clean checkout of `rev` under `work` (made again each time)."""
    folder = work / rev
    if folder.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=REPO, check=True,
                   capture_output=True)
    return folder


def run_mutant(copy: Path, mutant: Mutant, log: Path) -> str:
    """'killed', 'survived', or 'not applied' (the line is not in this revision's file once)."""
    source = copy / mutant.path
    text = source.read_text(encoding="utf-8")
    if text.count(mutant.old) != 1:
        return "not applied"
    source.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
    try:
        env = {**os.environ, "PYTHONPATH": str(copy), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=900)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"=== {mutant.path}: {mutant.old!r} -> {mutant.new!r}\n{done.stdout[-3000:]}\n")
        if done.returncode == 0:
            return "survived"
        return "killed" if done.returncode == 1 else f"error (pytest exit {done.returncode})"
    finally:
        source.write_text(text, encoding="utf-8")


def check_revision(rev: str, work: Path, out_dir: Path) -> list[str]:
    copy = worktree(rev, work)
    log = out_dir / f"still_killed_{rev}.log"
    log.write_text("", encoding="utf-8")
    started = time.monotonic()
    try:
        statuses = [run_mutant(copy, m, log) for m in MUTANTS]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(copy)], cwd=REPO, capture_output=True)
    print(f"{rev}: {statuses.count('killed')}/{len(MUTANTS)} killed in {time.monotonic() - started:.0f} s",
          flush=True)
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revs", nargs="+", required=True, help="revisions to check, the one before the change first")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vit-flowers-still-killed"),
                        help="where the worktrees go")
    parser.add_argument("--out", type=Path, default=REPO / ".mutation", help="where the statuses and logs go")
    parser.add_argument("--jobs", type=int, default=2, help="revisions checked at once")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(args.revs, pool.map(lambda r: check_revision(r, args.work, args.out), args.revs)))
    print("| mutant | " + " | ".join(args.revs) + " |")
    print("|---|" + "---|" * len(args.revs))
    for k, m in enumerate(MUTANTS):
        print(f"| `{m.path}`: `{m.old.strip()}` -> `{m.new.strip()}` | " + " | ".join(results[r][k] for r in args.revs)
              + " |")
    records = [{"path": m.path, "old": m.old, "new": m.new, "tests": list(m.tests),
                **{rev: results[rev][k] for rev in args.revs}} for k, m in enumerate(MUTANTS)]
    (args.out / "still_killed.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return 0 if all(s == "killed" for r in results.values() for s in r) else 1


if __name__ == "__main__":
    sys.exit(main())
