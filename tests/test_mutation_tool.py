"""tools/mutation.py's bookkeeping: reading a survivors file back, the
counts and score after its survivors are re-checked, and where its records
go (an ignored folder, never a tracked one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mutation  # noqa: E402

SURVIVORS = """## pkg.mod.x_f__mutmut_1
# pkg.mod.x_f__mutmut_1: survived
--- pkg/mod.py
+++ pkg/mod.py
-    a = 1  ## not a new entry
+    a = 2  ## not a new entry

## pkg.mod.x_g__mutmut_7
# pkg.mod.x_g__mutmut_7: survived
--- pkg/mod.py
+++ pkg/mod.py
-    return b
+    return None
"""


def test_survivors_file_read_back_name_by_name():
    recorded = mutation.recorded_survivors(SURVIVORS)
    assert list(recorded) == ["pkg.mod.x_f__mutmut_1", "pkg.mod.x_g__mutmut_7"]
    assert recorded["pkg.mod.x_f__mutmut_1"].endswith("+    a = 2  ## not a new entry")
    # the name and status lines are not part of the diff compared with `mutmut show`
    shown = "# pkg.mod.x_g__mutmut_7: killed\n--- pkg/mod.py\n+++ pkg/mod.py\n-    return b\n+    return None\n"
    assert mutation.diff_body(shown) == mutation.diff_body(recorded["pkg.mod.x_g__mutmut_7"])
    assert mutation.diff_body(shown) != mutation.diff_body(recorded["pkg.mod.x_f__mutmut_1"])


def test_rechecked_survivors_replace_their_old_status():
    before = {status: 0 for status in mutation.STATUSES} | {"killed": 80, "survived": 20}
    after = mutation.merged_counts(before, {"a": "killed", "b": "survived", "c": "timeout"})
    assert (after["killed"], after["survived"], after["timeout"]) == (81, 18, 1)
    assert sum(after.values()) == sum(before.values())
    assert before["survived"] == 20  # the previous counts are left as they were
    assert mutation.mutation_score(after) == pytest.approx(82 / 100)
    assert mutation.mutation_score({status: 0 for status in mutation.STATUSES}) is None


def test_a_finishing_run_counts_its_mutants_in_place_of_the_not_checked_ones():
    before = {status: 0 for status in mutation.STATUSES} | {"killed": 124, "survived": 20, "not checked": 364}
    after = mutation.merged_counts(before, {"a": "killed", "b": "killed", "c": "survived"}, replacing="not checked")
    assert (after["killed"], after["survived"], after["not checked"]) == (126, 21, 361)
    assert sum(after.values()) == sum(before.values())
    assert mutation.mutation_score(after) == pytest.approx(126 / 147)  # the not-checked count in neither part
    with pytest.raises(ValueError, match="2 not checked mutants, fewer than the 3 checked now"):
        mutation.merged_counts(before | {"not checked": 2}, {"a": "killed", "b": "killed", "c": "killed"},
                               replacing="not checked")


def test_function_patterns_match_that_functions_mutants_alone():
    import fnmatch

    (pattern,) = mutation.function_patterns("datasets", ["file_dataset"])
    assert fnmatch.fnmatch("vit_flowers.datasets.x_file_dataset__mutmut_12", pattern)
    assert not fnmatch.fnmatch("vit_flowers.datasets.x_array_dataset__mutmut_1", pattern)
    assert not fnmatch.fnmatch("vit_flowers.images.x_file_dataset__mutmut_1", pattern)
    assert not fnmatch.fnmatch("vit_flowers.datasets.x_file_dataset_rows__mutmut_1", pattern)  # a longer name


def test_a_partial_run_is_folded_into_the_previous_one_with_both_runs_seconds():
    counts = {status: 0 for status in mutation.STATUSES} | {"killed": 3, "survived": 1}
    merged = mutation.merged_result({"tests": ["t"], "seconds": 40}, {"seconds": 100}, counts, "finished")
    assert merged == {"tests": ["t"], "seconds": 140, "counts": counts, "score": 0.75, "note": "finished"}


def test_a_run_that_checked_no_mutant_keeps_the_last_results(tmp_path, monkeypatch, capsys):
    """mutmut failing its first pass over the tests leaves every mutant not checked: that is an
    error naming the log, and the module's recorded score and survivors stay as they were."""
    scores = tmp_path / "out" / "scores.json"
    scores.parent.mkdir()
    scores.write_text('{"model": {"score": 0.5}}\n')
    (scores.parent / "survivors_model.txt").write_text(SURVIVORS)
    nothing = {status: 0 for status in mutation.STATUSES} | {"not checked": 685}
    monkeypatch.setattr(mutation, "run_module", lambda *a, **k: {"counts": nothing, "score": None, "survivors": [],
                                                                 "statuses": {}})
    monkeypatch.setattr(mutation.shutil, "which", lambda *a, **k: "/bin/mutmut")
    assert mutation.main(["--modules", "model", "--work", str(tmp_path / "work"), "--out", str(scores.parent)]) == 2
    err = capsys.readouterr().err
    assert "model: mutmut checked no mutant" in err
    assert f"see {scores.parent / 'logs' / 'model.log'} " in err  # the log is kept with the records
    assert scores.read_text() == '{"model": {"score": 0.5}}\n'
    assert (scores.parent / "survivors_model.txt").read_text() == SURVIVORS


def test_a_module_with_narrower_functions_runs_them_apart_from_the_rest(tmp_path, monkeypatch):
    source = tmp_path / "mod.py"
    source.write_text("import os\n\ndef fast(x):\n    return x\n\nclass Box:\n    def open(self):\n        pass\n\n"
                      "def slow():\n    return 1\n")
    monkeypatch.setitem(mutation.NARROWER, "mod", (("fast",), ["tests/unit.py"]))
    monkeypatch.setitem(mutation.TESTS, "mod", ["tests/all.py"])
    assert mutation.module_functions("mod", source) == ["fast", "Box.open", "slow"]
    unit, rest = mutation.split_passes("mod", None, None, source)
    assert unit == ("mod-unit", ["tests/unit.py"], None, ["vit_flowers.mod.x_fast__mutmut_*"])
    assert rest == ("mod", ["tests/all.py"], None,
                    ["vit_flowers.mod.x\u01c1Box\u01c1open__mutmut_*", "vit_flowers.mod.x_slow__mutmut_*"])
    # named functions and recorded survivors go to the run their function belongs to
    assert [p[0] for p in mutation.split_passes("mod", None, ["slow"], source)] == ["mod"]
    only = {"vit_flowers.mod.x_fast__mutmut_2": "d1", "vit_flowers.mod.x_slow__mutmut_1": "d2"}
    (unit, _, unit_only, _), (_, _, rest_only, _) = mutation.split_passes("mod", only, None, source)
    assert unit_only == {"vit_flowers.mod.x_fast__mutmut_2": "d1"}
    assert rest_only == {"vit_flowers.mod.x_slow__mutmut_1": "d2"}
    assert mutation.function_of("vit_flowers.mod.x\u01c1Box\u01c1open__mutmut_12") == "x\u01c1Box\u01c1open"
    # a module without narrower functions is one run over its selection
    assert mutation.split_passes("model", None, None) == [("model", mutation.TESTS["model"], None, None)]


def test_the_runs_of_a_module_add_up_and_a_first_partial_run_leaves_the_rest_not_checked():
    def result(killed, survived, statuses, seconds):
        counts = {status: 0 for status in mutation.STATUSES} | {"killed": killed, "survived": survived}
        return {"counts": counts, "score": None, "tests": ["t"], "seconds": seconds, "survivors": ["## s"] * survived,
                "statuses": statuses, "every": sorted(statuses) + [f"other{k}" for k in range(8 - len(statuses))]}

    merged = mutation.merged_passes([result(3, 1, {"a": "killed", "b": "survived"}, 5),
                                     result(2, 0, {"c": "killed"}, 7)])
    assert merged["counts"]["killed"] == 5 and merged["counts"]["survived"] == 1 and merged["seconds"] == 12
    assert merged["score"] == pytest.approx(5 / 6) and merged["survivors"] == ["## s"]
    assert merged["statuses"] == {"a": "killed", "b": "survived", "c": "killed"} and len(merged["every"]) == 10
    first = mutation.first_partial_result(merged, ["f", "g"])
    assert first["counts"]["not checked"] == 7 and first["score"] == pytest.approx(5 / 6)
    assert first["note"].startswith("first run over f, g")


def test_a_finishing_run_checks_only_what_no_run_has_checked_and_records_every_status(tmp_path, monkeypatch,
                                                                                     capsys):
    """The statuses file lets a finishing run stopped halfway be finished by the next one, counting each
    mutant once."""
    out = tmp_path / "out"
    out.mkdir()
    counts = {status: 0 for status in mutation.STATUSES} | {"killed": 1, "not checked": 3}
    (out / "scores.json").write_text(json.dumps({"train": {"counts": counts, "score": 1.0, "seconds": 10}}))
    name = "vit_flowers.train.x_train_run__mutmut_{}".format
    recorded = {name(1): "killed", name(2): "not checked", name(3): "not checked",
                "vit_flowers.train.x_finalise__mutmut_1": "not checked"}
    (out / "statuses_train.json").write_text(json.dumps(recorded))
    calls = []

    def run_module(module, work_root, mutmut_path, log, only=None, patterns=None, selection=None, label="",
                   logs=None):
        calls.append((label, patterns))
        statuses = {name(2): "survived", name(3): "not checked"}  # stopped before the last one
        return {"counts": {s: sum(v == s for v in statuses.values()) for s in mutation.STATUSES}, "score": 0.0,
                "tests": selection, "seconds": 5, "survivors": ["## " + name(2) + "\n"], "statuses": statuses,
                "every": sorted(recorded)}

    monkeypatch.setattr(mutation, "run_module", run_module)
    monkeypatch.setattr(mutation.shutil, "which", lambda *a, **k: "/bin/mutmut")
    argv = ["--modules", "train", "--functions", "train_run", "--work", str(tmp_path / "w"), "--out", str(out)]
    assert mutation.main(argv) == 0
    assert calls == [("train", [name(2), name(3)])]
    scores = json.loads((out / "scores.json").read_text())["train"]
    assert (scores["counts"]["killed"], scores["counts"]["survived"], scores["counts"]["not checked"]) == (1, 1, 2)
    assert scores["note"] == "1 mutants of train_run checked (1 left for a later run)"
    assert json.loads((out / "statuses_train.json").read_text()) == recorded | {name(2): "survived"}
    # the next finishing run takes up the one left; a function with nothing left is said so, and not run
    calls.clear()
    assert mutation.main(argv) == 0 and calls == [("train", [name(3)])]
    (out / "statuses_train.json").write_text(json.dumps(recorded | {name(2): "killed", name(3): "killed"}))
    calls.clear()
    assert mutation.main(argv) == 0 and calls == []
    assert "every mutant of train_run has been checked" in capsys.readouterr().out


def test_a_function_the_module_does_not_have_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mutation, "run_module", lambda *a, **k: pytest.fail("ran mutmut"))
    with pytest.raises(SystemExit) as exit_:
        mutation.main(["--modules", "train", "--functions", "train_run", "nosuch", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--functions: train has no function nosuch (it has set_seed, " in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_records_go_to_an_ignored_folder_and_no_run_output_is_tracked(tmp_path, monkeypatch):
    """Survivors, statuses, scores and logs are machine output: a run without --out writes them to
    RECORDS (`.mutation/`), which git ignores, and the repository tracks none of them. Writing them
    into a tracked folder again (`mutation/`, say) fails here."""
    assert mutation.RECORDS == mutation.REPO / ".mutation"
    names = ["scores.json", "survivors_model.txt", "statuses_model.json", "logs/model.log", "logs/train-unit.log"]
    if shutil.which("git") and (mutation.REPO / ".git").exists():
        git = ["git", "-C", str(mutation.REPO)]
        for name in names:
            path = (mutation.RECORDS / name).relative_to(mutation.REPO).as_posix()
            assert subprocess.run([*git, "check-ignore", "-q", path]).returncode == 0, f"{path} is not ignored"
        tracked = subprocess.run([*git, "ls-files", "--", ":(glob)**/scores.json", ":(glob)**/survivors_*.txt",
                                  ":(glob)**/statuses_*.json", ":(glob)**/*.log"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert tracked == [], f"mutation records tracked by git: {tracked}"

    # where main writes when no --out is given (the repository moved to tmp_path, so a tool that
    # writes anywhere else in it leaves files this test sees, not files in the checkout)
    repo = tmp_path / "repo"
    monkeypatch.setattr(mutation, "REPO", repo)
    monkeypatch.setattr(mutation, "RECORDS", repo / ".mutation")
    seen = {}

    def run_module(module, work_root, mutmut_path, log, only=None, patterns=None, selection=None, label="",
                   logs=None):
        seen["logs"], seen["only"] = logs, only and list(only)
        statuses = {"vit_flowers.model.x_f__mutmut_1": "killed", "vit_flowers.model.x_f__mutmut_2": "survived"}
        if only is not None:  # the re-check: today's tests kill the survivor
            statuses = dict.fromkeys(only, "killed")
        return {"counts": {s: sum(v == s for v in statuses.values()) for s in mutation.STATUSES}, "score": 0.5,
                "tests": selection, "seconds": 1, "survivors": ["## vit_flowers.model.x_f__mutmut_2\n"],
                "statuses": statuses, "every": sorted(statuses)}

    monkeypatch.setattr(mutation, "run_module", run_module)
    monkeypatch.setattr(mutation.shutil, "which", lambda *a, **k: "/bin/mutmut")
    assert mutation.main(["--modules", "model", "--work", str(tmp_path / "work")]) == 0
    assert seen["logs"] == repo / ".mutation" / "logs"
    written = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert written == [".mutation/scores.json", ".mutation/statuses_model.json", ".mutation/survivors_model.txt"]
    # and a re-check reads its survivors back from there
    assert mutation.main(["--modules", "model", "--survivors", "--work", str(tmp_path / "work")]) == 0
    assert seen["only"] == ["vit_flowers.model.x_f__mutmut_2"]
    assert json.loads((repo / ".mutation" / "scores.json").read_text())["model"]["counts"]["killed"] == 2
