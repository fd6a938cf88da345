"""Mutation testing of the core modules with mutmut: `make mutation`.

For each module, mutmut mutates that module alone and runs the tests that
exercise it (a selection per module, below, so that a run finishes in hours,
not days: mutmut then runs, for each mutant, only the selected tests that
reach the mutated function). Every run works in a copy of the repository
under --work, so nothing is written into the checkout but the records.

The records are machine output and stay out of git: they go to --out,
`.mutation/` by default (ignored, see .gitignore): `scores.json` (killed,
survived, ... per module, and the score: killed / (mutants that some test
reached)), `survivors_<module>.txt` (every surviving mutant's diff, to read:
a survivor is a missing assertion or an equivalent mutant),
`statuses_<module>.json` (every mutant's last status) and `logs/<run>.log`
(mutmut's output). A fresh clone has none: its first run starts them. The
scores worth keeping are copied by hand into docs/development.md, and the
reasoning about each module's survivors is written in
docs/mutation/equivalent_<module>.md.

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
again what it did check. Where the module's `statuses_<module>.json` (every
mutant's last status, written by each run) is at hand, only those functions'
mutants still not checked run, so a finishing run stopped halfway can itself
be finished. On a module never run, it is a first run over those
functions, the others' mutants recorded as not checked (for a module whose
whole run takes longer than one sitting: `train`).

A module's functions listed in NARROWER (train's data, optimizer and seed
helpers) run against their own unit tests instead of the module's selection,
in a second copy of the repository: every training test reaches them too, and
would cost a minute or more per mutant.
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
# where the records go (ignored by git): scores.json, survivors_<module>.txt, statuses_<module>.json, logs/
RECORDS = REPO / ".mutation"
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
    # the tests that train in this process (the SIGKILL and Ctrl-C tests train in a subprocess)
    "train": ["tests/test_train.py", "tests/test_train_run.py", "tests/test_preset.py", "tests/test_recipe.py",
              "tests/test_reliability.py",
              "tests/test_model.py::test_a_reloaded_run_predicts_what_the_trained_model_predicted",
              "tests/test_pipeline.py::test_training_skips_bad_images_and_strict_refuses_them",
              "tests/test_pipeline.py::test_resized_crop_trains_from_larger_images_and_load_size_needs_it",
              "-k", "not sigkill_then_resume and not ctrl_c_says and not resume_of_a_finished_run "
                    "and not contradicts_the_run and not short_post_preset"],
    "plots": ["tests/test_figures.py"],
}
# functions decided by their own unit tests: their mutants run against this narrower selection instead of
# the module's, every test of which trains and so reaches them too (a minute or more per mutant). Fewer
# tests can only kill fewer mutants, so a score measured this way is a lower bound.
NARROWER: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "train": (("set_seed", "load_list", "make_optimizer", "compile_model", "training_load_size", "array_datasets",
               "stream_datasets", "_best_epoch"),
              ["tests/test_train.py", "tests/test_recipe.py::test_training_batches_carry_the_rand_operations"]),
}
STATUSES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "segfault", "not checked")


def mutmut_config(module: str, selection: list[str]) -> str:
    tests = json.dumps(selection)
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
    return [f"vit_flowers.{module}.{mangled(name)}__mutmut_*" for name in functions]


def mangled(function: str) -> str:
    """mutmut's name for a function (`name`) or a method (`Class.name`) in its mutants' names."""
    owner, _, name = function.rpartition(".")
    return f"xǁ{owner}ǁ{name}" if owner else f"x_{function}"


def function_of(mutant: str) -> str:
    """The mangled function a mutant's name belongs to: `pkg.mod.x_f__mutmut_3` -> `x_f`."""
    return mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]


def module_functions(module: str, source: Path | None = None) -> list[str]:
    """The functions (`name`) and methods (`Class.name`) mutmut mutates in a module, in order."""
    import ast

    tree = ast.parse((source or REPO / "vit_flowers" / f"{module}.py").read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef):
            names += [f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names


def split_passes(module: str, only: dict[str, str] | None, functions: list[str] | None,
                 source: Path | None = None, names: list[str] | None = None
                 ) -> list[tuple[str, list[str], dict[str, str] | None, list[str] | None]]:
    """The mutmut runs a module takes: (label, test selection, `only`, patterns) each. One run over the
    module's selection, or, for a module with NARROWER functions, those functions' mutants against their
    own selection and the rest against the module's. `names`: these mutants alone (exact names as patterns)."""
    if module not in NARROWER:
        patterns = names if names is not None else function_patterns(module, functions) if functions else None
        return [(module, TESTS[module], only, patterns)]
    narrow, narrow_tests = NARROWER[module]
    passes = []
    for label, selection, inside in ((f"{module}-unit", narrow_tests, True), (module, TESTS[module], False)):
        if only is not None or names is not None:
            part = {name: diff for name, diff in (only or dict.fromkeys(names, "")).items()
                    if (function_of(name) in {mangled(f) for f in narrow}) == inside}
            if part:
                passes.append((label, selection, part, None) if only is not None else
                              (label, selection, None, list(part)))
            continue
        chosen = [f for f in (functions or module_functions(module, source)) if (f in narrow) == inside]
        if chosen:
            passes.append((label, selection, None, function_patterns(module, chosen)))
    return passes


def first_partial_result(result: dict, functions: list[str]) -> dict:
    """A first run over some functions of a module: the mutants of the others counted as not checked."""
    counts = dict(result["counts"])
    counts["not checked"] += len(result["every"]) - len(result["statuses"])
    return {**result, "counts": counts, "score": mutation_score(counts),
            "note": f"first run over {', '.join(functions)}; the other functions' mutants not checked yet"}


def merged_passes(results: list[dict]) -> dict:
    """The results of a module's runs as one: counts, statuses and survivors together, the seconds added."""
    counts = {status: sum(r["counts"][status] for r in results) for status in STATUSES}
    return {"counts": counts, "score": mutation_score(counts), "tests": results[-1]["tests"],
            "seconds": sum(r["seconds"] for r in results), "survivors": [d for r in results for d in r["survivors"]],
            "statuses": {name: status for r in results for name, status in r["statuses"].items()},
            "every": sorted({n for r in results for n in r["every"]})}


def run_module(module: str, work_root: Path, mutmut: str, log, only: dict[str, str] | None = None,
               patterns: list[str] | None = None, selection: list[str] | None = None, label: str = "",
               logs: Path | None = None) -> dict:
    """Mutate `module` in a fresh copy (`label`: its folder and log, default the module's name) and run
    `selection` (default: the module's tests) on every mutant (or on the mutants named in `only`,
    name -> the diff recorded for it, or on those whose names match `patterns`). mutmut's output goes
    to `logs`/<label>.log (default: beside the copy, in `work_root`)."""
    selection = selection or TESTS[module]
    label = label or module
    logs = logs or work_root
    logs.mkdir(parents=True, exist_ok=True)
    work = work_root / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy_tree(work)
    with open(work / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(mutmut_config(module, selection))
    started = time.time()
    with open(logs / f"{label}.log", "w", encoding="utf-8") as out:
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
    every = sorted(statuses)  # every mutant of the module, checked now or not
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
    log(f"{label}: {counts} score {score if score is None else round(score, 3)} ({time.time() - started:.0f} s)")
    return {"counts": counts, "score": score, "tests": selection, "seconds": round(time.time() - started),
            "survivors": diffs, "statuses": statuses, "every": every}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(TESTS), choices=list(TESTS),
                        help="the modules to mutate")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vit-flowers-mutation"),
                        help="where the copies of the repository go")
    parser.add_argument("--survivors", action="store_true",
                        help="re-check only the mutants that survived each module's last run (see above)")
    parser.add_argument("--functions", nargs="+", metavar="NAME",
                        help="run only these functions' mutants, counted in place of the last run's not-checked "
                             "ones (one module; see above)")
    parser.add_argument("--out", type=Path, default=RECORDS,
                        help="where the records go (scores.json, survivors_<module>.txt, statuses_<module>.json, "
                             "logs/): machine output, kept out of git")
    args = parser.parse_args(argv)
    if args.functions and (args.survivors or len(args.modules) != 1):
        parser.error("--functions takes one module and cannot be combined with --survivors")
    if args.functions:
        known = module_functions(args.modules[0])
        unknown = [f for f in args.functions if f not in known]
        if unknown:
            parser.error(f"--functions: {args.modules[0]} has no function {', '.join(unknown)} "
                         f"(it has {', '.join(known)})")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        print("error: mutmut is not installed (pip install -r requirements-dev.txt)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    scores_file = args.out / "scores.json"
    scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    for module in args.modules:
        survivors_file = args.out / f"survivors_{module}.txt"
        only = None
        if args.survivors:
            if module not in scores or not survivors_file.exists():
                print(f"error: {module} has no earlier run to re-check (no {survivors_file}: records stay on "
                      f"the machine that ran them; run the module whole first)", file=sys.stderr)
                return 2
            only = recorded_survivors(survivors_file.read_text(encoding="utf-8"))
            if not only:
                print(f"{module}: no survivors to re-check")
                continue
        # --functions on a module never run: a first run over those functions alone, the others' mutants
        # left not checked for a later --functions run to finish
        finishing = bool(args.functions) and module in scores
        statuses_file = args.out / f"statuses_{module}.json"
        recorded = json.loads(statuses_file.read_text(encoding="utf-8")) if statuses_file.exists() else {}
        names = None
        if finishing and recorded:  # only the mutants of those functions that no run has checked yet
            wanted = {mangled(f) for f in args.functions}
            names = [n for n, status in recorded.items() if status == "not checked" and function_of(n) in wanted]
            if not names:
                print(f"{module}: every mutant of {', '.join(args.functions)} has been checked")
                continue
        results = []
        for label, selection, part, part_patterns in split_passes(module, only, args.functions, names=names):
            results.append(run_module(module, args.work, mutmut, print, part, part_patterns, selection, label,
                                      logs=logs))
            if results[-1]["counts"]["not checked"] == sum(results[-1]["counts"].values()):
                # mutmut stopped before checking any mutant (its first pass over the tests failed, most
                # often): keep the module's last results rather than record every mutant as not checked
                print(f"error: {module}: mutmut checked no mutant; see {logs / (label + '.log')} "
                      f"(the last results in {scores_file} are kept)", file=sys.stderr)
                return 2
        result = merged_passes(results)
        if args.functions and not finishing:
            result = first_partial_result(result, args.functions)
        if module in NARROWER:
            result["narrower"] = {"functions": list(NARROWER[module][0]), "tests": NARROWER[module][1]}
        survivors = result.pop("survivors")
        rechecked = result.pop("statuses")
        every = result.pop("every")
        recorded = ({**recorded, **rechecked} if finishing or only is not None
                    else {**dict.fromkeys(every, "not checked"), **rechecked})
        if finishing:
            try:
                counts = merged_counts(scores[module]["counts"], rechecked, replacing="not checked")
            except ValueError as err:
                print(f"error: {module}: {err}", file=sys.stderr)
                return 2
            earlier = survivors_file.read_text(encoding="utf-8").rstrip("\n") if survivors_file.exists() else ""
            survivors = ([earlier + "\n"] if earlier.strip() else []) + survivors
            done = sum(status != "not checked" for status in rechecked.values())
            checked = f"{done} mutants of {', '.join(args.functions)} checked" + (
                f" ({len(rechecked) - done} left for a later run)" if done < len(rechecked) else "")
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
        survivors_file.write_text("\n".join(survivors), encoding="utf-8")
        statuses_file.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n", encoding="utf-8")
        scores_file.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    total = {k: sum(s["counts"][k] for s in scores.values()) for k in STATUSES}
    score = mutation_score(total)
    print(f"all modules run so far: {total}, score {score if score is None else round(score, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
