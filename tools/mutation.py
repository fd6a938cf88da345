"""Mutation testing of the core modules with mutmut: `make mutation`.

For each module, mutmut mutates that module alone and runs the tests that
exercise it (a selection per module, below, so that a run finishes in hours,
not days: mutmut then runs, for each mutant, only the selected tests that
reach the mutated function). Every run works in a copy of the repository
under --work, so nothing is written into the checkout but the report.

Writes `mutation/scores.json` (killed, survived, ... per module, and the
score: killed / (mutants that some test reached)) and `mutation/survivors.txt`
(every surviving mutant's diff, to read: a survivor is a missing assertion
or an equivalent mutant).

    python tools/mutation.py                      # every module
    python tools/mutation.py --modules filelists images
    python tools/mutation.py --modules attention --survivors   # re-check the last survivors only
    python tools/mutation.py --modules datasets --functions file_dataset one_hot   # finish a stopped run

`--survivors` re-runs only the mutants that survived the module's last run
(read from its survivors file) against today's tests, and updates that
run's counts: minutes instead of hours once new tests are written. A
survivor whose name now shows another diff (its function was edited since,
and mutmut numbered its mutants anew) is not re-checked and stays a
survivor; run the module whole to score the edited code.

`--functions` runs only the mutants of the named functions and counts them
in place of the module's last run's "not checked" mutants: for finishing a
run that was stopped before it reached those functions, without running
again what it did check.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# module -> the tests that exercise it (pytest arguments); in-process tests only, because a test that runs
# the scripts in a subprocess imports the package from outside mutmut's copy and never sees the mutant
TESTS: dict[str, list[str]] = {
    "filelists": ["tests/test_filelists.py", "tests/test_labels.py"],
    "images": ["tests/test_images.py", "tests/test_decoders.py", "tests/test_loader.py"],
    "datasets": ["tests/test_datasets.py", "tests/test_augment.py", "tests/test_recipe.py", "-k", "not recipe or cutmix or rand"],
    "model": ["tests/test_model.py"],
    "predict": ["tests/test_predict.py", "tests/test_metrics.py", "tests/test_figures.py", "tests/test_pipeline.py", "tests/test_inputs.py",
                "-k", "not script and not demo and not prepare and not training and not resized_crop "
                      "and not before_tensorflow and not take_the_process"],
    "attention": ["tests/test_attention.py"],
    "train": ["tests/test_train.py", "tests/test_model.py", "tests/test_preset.py", "tests/test_reliability.py",
              "-k", "not sigkill and not ctrl_c and not finished and not contradicts and not short_post"],
    "plots": ["tests/test_figures.py"],
}
STATUSES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "segfault", "not checked")


def mutmut_config(module: str) -> str:
    tests = json.dumps(TESTS[module])
    return (f'\n[tool.mutmut]\nsource_paths = ["vit_flowers"]\nonly_mutate = ["vit_flowers/{module}.py"]\n'
            f'process_isolation = "forkserver"\npytest_add_cli_args_test_selection = {tests}\n'
            # the shipped model, beside the mutated package as in a checkout: the default-model tests read it
            f'also_copy = ["models"]\n'
            f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n')


def copy_tree(work: Path) -> None:
    """The files a clone holds (tracked and untracked-but-not-ignored), copied into `work`."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file() and not name.startswith(("models/", "docs/", "benchmarks/")):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    # the shipped model (mutmut copies it on into its mutants/ folder: see mutmut_config)
    shutil.copytree(REPO / "models", work / "models", dirs_exist_ok=True)


TINY_RUN = """
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from conftest import tiny_run_config
from vit_flowers.filelists import write_file_lists
from vit_flowers.synthetic import write_synthetic_flowers
from vit_flowers.train import TrainOptions, train_run
root = Path(sys.argv[1])
rows = write_synthetic_flowers(root / "data" / "images", n_per_class=12, size=32, seed=1)
write_file_lists(rows, root / "data", test_fraction=0.25, seed=0)
cfg = tiny_run_config(root / "data" / "training_files.csv", root / "data" / "testing_files.csv")
train_run(cfg, root / "tiny", TrainOptions(verbose=0))
"""


def trained_tiny_run(work_root: Path) -> Path:
    """The tests' tiny run dir, trained once by the unmutated package: the
    tests of every module but `train` reuse it (conftest's tiny_run fixture)."""
    target = work_root / "tiny-run"
    if not (target / "tiny" / "model.weights.h5").is_file():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([sys.executable, "-c", TINY_RUN, str(target)], cwd=REPO, check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return target / "tiny"


def diffs_of(mutmut: str, work: Path, names: list[str]) -> list[str]:
    """`mutmut show` of each mutant, as the survivors file holds them."""
    return [f"## {name}\n" + subprocess.run([mutmut, "show", name], cwd=work, capture_output=True,
                                             text=True).stdout.strip() + "\n" for name in names]


def diff_body(shown: str) -> str:
    """A mutant's diff without the name and status lines above it."""
    return "\n".join(line for line in shown.strip().splitlines() if not line.startswith("#")).strip()


def mutation_score(counts: dict) -> float | None:
    """Killed and timed-out mutants over the mutants some test reached; None when none was."""
    reached = sum(counts[k] for k in ("killed", "survived", "timeout", "suspicious", "segfault"))
    return (counts["killed"] + counts["timeout"]) / reached if reached else None


def recorded_survivors(text: str) -> dict[str, str]:
    """mutant name -> its recorded diff, from a survivors file."""
    out = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        name, _, diff = block.partition("\n")
        out[name.strip()] = diff.strip()
    return out


def merged_counts(previous: dict, rechecked: dict[str, str], replacing: str = "survived") -> dict:
    """The previous run's counts with `len(rechecked)` of its `replacing` mutants (its survivors,
    or those it never checked) replaced by their statuses now."""
    if previous[replacing] < len(rechecked):
        raise ValueError(f"the last run has {previous[replacing]} {replacing} mutants, "
                         f"fewer than the {len(rechecked)} checked now")
    counts = dict(previous)
    counts[replacing] -= len(rechecked)
    for status in rechecked.values():
        counts[status] += 1
    return counts


def merged_result(result: dict, previous: dict, counts: dict, note: str) -> dict:
    """A partial run's result folded into the module's previous one: the merged counts and
    their score, both runs' seconds, and what the partial run did."""
    return {**result, "counts": counts, "score": mutation_score(counts),
            "seconds": previous["seconds"] + result["seconds"], "note": note}


def function_patterns(module: str, functions: list[str]) -> list[str]:
    """mutmut name patterns of every mutant of `functions` in `module`."""
    return [f"vit_flowers.{module}.x_{name}__mutmut_*" for name in functions]


def run_module(module: str, work_root: Path, mutmut: str, log, only: dict[str, str] | None = None,
               patterns: list[str] | None = None) -> dict:
    """Mutate `module` in a fresh copy and run its tests on every mutant (or on the mutants
    named in `only`, name -> the diff recorded for it, or on those whose names match `patterns`)."""
    work = work_root / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy_tree(work)
    with open(work / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(mutmut_config(module))
    started = time.time()
    with open(work_root / f"{module}.log", "w", encoding="utf-8") as out:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if module != "train":
            env["VIT_FLOWERS_TEST_TINY_RUN"] = str(trained_tiny_run(work_root))
        subprocess.run([mutmut, "run", *(only or patterns or [])], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                       env=env)
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    statuses = {}
    for line in results.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match and match.group(2) in STATUSES:
            statuses[match.group(1)] = match.group(2)
    if patterns:
        statuses = {name: status for name, status in statuses.items()
                    if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)}
    if only is None:
        survivors = [name for name, status in statuses.items() if status == "survived"]
        shown = dict(zip(survivors, diffs_of(mutmut, work, survivors)))
    else:
        statuses = {name: statuses.get(name, "not checked") for name in only}
        shown = dict(zip(only, diffs_of(mutmut, work, list(only))))
        # a function edited since the last run numbers its mutants anew: a name that now shows another
        # diff was not re-checked, so it stays a survivor, with the diff recorded for it
        moved = [name for name in only if diff_body(shown[name]) != diff_body(only[name])]
        if moved:
            log(f"{module}: {len(moved)} recorded survivors are other mutants now (their function changed), "
                f"kept as survivors: {', '.join(moved)}")
        for name in moved:
            statuses[name] = "survived"
            shown[name] = f"## {name}\n{only[name]}\n"
    counts = {status: sum(st == status for st in statuses.values()) for status in STATUSES}
    diffs = [shown[name] for name, status in statuses.items() if status == "survived"]
    score = mutation_score(counts)
    log(f"{module}: {counts} score {score if score is None else round(score, 3)} ({time.time() - started:.0f} s)")
    return {"counts": counts, "score": score, "tests": TESTS[module], "seconds": round(time.time() - started),
            "survivors": diffs, "statuses": statuses}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(TESTS), choices=list(TESTS),
                        help="the modules to mutate")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vit-flowers-mutation"),
                        help="where the copies of the repository and mutmut's logs go")
    parser.add_argument("--survivors", action="store_true",
                        help="re-check only the mutants that survived each module's last run (see above)")
    parser.add_argument("--functions", nargs="+", metavar="NAME",
                        help="run only these functions' mutants, counted in place of the last run's not-checked "
                             "ones (one module; see above)")
    parser.add_argument("--out", type=Path, default=REPO / "mutation", help="where scores.json and survivors.txt go")
    args = parser.parse_args(argv)
    if args.functions and (args.survivors or len(args.modules) != 1):
        parser.error("--functions takes one module and cannot be combined with --survivors")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        print("error: mutmut is not installed (pip install -r requirements-dev.txt)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    scores_file = args.out / "scores.json"
    scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    for module in args.modules:
        survivors_file = args.out / f"survivors_{module}.txt"
        only = None
        if args.survivors:
            if module not in scores or not survivors_file.exists():
                print(f"error: {module} has no earlier run to re-check (no {survivors_file})", file=sys.stderr)
                return 2
            only = recorded_survivors(survivors_file.read_text(encoding="utf-8"))
            if not only:
                print(f"{module}: no survivors to re-check")
                continue
        patterns = None
        if args.functions:
            if module not in scores:
                print(f"error: {module} has no earlier run to finish", file=sys.stderr)
                return 2
            patterns = function_patterns(module, args.functions)
        result = run_module(module, args.work, mutmut, print, only, patterns)
        if result["counts"]["not checked"] == sum(result["counts"].values()):
            # mutmut stopped before checking any mutant (its first pass over the tests failed, most
            # often): keep the module's last results rather than record every mutant as not checked
            print(f"error: {module}: mutmut checked no mutant; see {args.work / (module + '.log')} "
                  f"(the last results in {scores_file} are kept)", file=sys.stderr)
            return 2
        survivors = result.pop("survivors")
        rechecked = result.pop("statuses")
        if patterns is not None:
            try:
                counts = merged_counts(scores[module]["counts"], rechecked, replacing="not checked")
            except ValueError as err:
                print(f"error: {module}: {err}", file=sys.stderr)
                return 2
            earlier = survivors_file.read_text(encoding="utf-8").rstrip("\n") if survivors_file.exists() else ""
            survivors = ([earlier + "\n"] if earlier.strip() else []) + survivors
            checked = f"{len(rechecked)} mutants of {', '.join(args.functions)} checked"
            result = merged_result(result, scores[module], counts,
                                   "; then ".join(filter(None, [scores[module].get("note"), checked])))
            print(f"{module}: with the last run {counts} score {round(result['score'], 3)}")
        elif only is not None:
            counts = merged_counts(scores[module]["counts"], rechecked)
            result = merged_result(result, scores[module], counts,
                                   f"{len(only)} survivors of the run before re-checked with today's tests "
                                   f"({sum(v == 'killed' for v in rechecked.values())} now killed)")
            print(f"{module}: after the re-check {counts} score {round(result['score'], 3)}")
        scores[module] = result
        (args.out / f"survivors_{module}.txt").write_text("\n".join(survivors), encoding="utf-8")
        scores_file.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    total = {k: sum(s["counts"][k] for s in scores.values()) for k in STATUSES}
    score = mutation_score(total)
    print(f"all modules run so far: {total}, score {score if score is None else round(score, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
