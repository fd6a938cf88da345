"""An output folder belongs to one run: a second run on a busy folder is
refused naming the process, a killed run's lock is taken over, a failing
run leaves the earlier outputs as they were, and outputs are never read
back as inputs (nor a folder twice through a link)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vit_flowers import cli
from vit_flowers.errors import BadInputError
from vit_flowers.outputs import LOCK_FILE, MARKER_FILE, STAGING_PREFIX, InputFolders, claim_output_dir

OUTPUTS = ["confusion_matrix.png", "metrics.json", "prediction_grid.png", "predictions.csv", "report.html"]


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def hold_lock(folder: Path, pid: int = 4242, command: str = "predict") -> int:
    """Hold the folder's lock from this process as another run would."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": pid, "host": "elsewhere", "command": command, "started": 0}).encode())
    return fd


@pytest.fixture
def photos(synthetic_data, tmp_path) -> Path:
    """A folder of class subfolders (roses, tulips) of its own."""
    folder = tmp_path / "photos"
    for name in ("roses", "tulips"):
        shutil.copytree(synthetic_data / "images" / name, folder / name)
    return folder


# ------------------------------------------------------------------ one run at a time
def test_a_held_folder_is_refused_naming_the_process_and_left_alone(tmp_path):
    out = tmp_path / "out"
    fd = hold_lock(out, pid=4242)
    try:
        with pytest.raises(BadInputError, match=r"^--out .*out: in use by process 4242 \(predict, started .* on "
                                                r"elsewhere\); wait for it to finish or choose another folder$"):
            with claim_output_dir(out, "plot"):
                pass  # pragma: no cover
        assert (out / LOCK_FILE).exists() and json.loads((out / LOCK_FILE).read_text())["pid"] == 4242
    finally:
        os.close(fd)


@pytest.mark.parametrize("command", ["predict", "plot", "prepare", "export"])
def test_every_command_refuses_a_busy_out_before_any_work(command, tiny_run, photos, tmp_path, capsys):
    out = tmp_path / "out"
    fd = hold_lock(out, pid=777)
    inputs = {"predict": ["--run", str(tiny_run), "--images", str(photos)],
              "plot": ["--run", str(tiny_run), "--images", str(photos)],
              "prepare": ["--source", str(photos)], "export": ["--run", str(tiny_run)]}[command]
    try:
        started = time.perf_counter()
        code = cli.main([command, *inputs, "--out", str(out)])
        err = capsys.readouterr().err
    finally:
        os.close(fd)
    assert code == 2
    assert err.startswith(f"error: --out {out}: in use by process 777 (predict,") and len(err.splitlines()) == 1
    assert visible(out) == []
    assert time.perf_counter() - started < 10  # refused before the model loads


def test_a_killed_runs_lock_is_taken_over_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "h", "command": "predict", "started": 0}))
    (out / f"{STAGING_PREFIX}999999").mkdir()
    (out / f"{STAGING_PREFIX}999999" / "predictions.csv").write_text("half\n")
    with claim_output_dir(out, "predict") as claim:
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not (out / f"{STAGING_PREFIX}999999").exists()  # the killed run's half-written outputs
        assert claim.took_over.startswith("process 999999 (predict")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"note: --out {out}: taking over the lock left by process 999999 (predict, started ")
    assert err.rstrip().endswith("which is no longer running")
    assert not (out / LOCK_FILE).exists()  # a finished run leaves no lock
    with claim_output_dir(out, "predict"):
        pass
    assert capsys.readouterr().err == ""  # nothing to take over after a clean end


def test_a_predict_killed_mid_run_leaves_a_lock_the_next_run_takes_over(tiny_run, photos, tmp_path, capsys):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "vit_flowers", "predict", "--run", str(tiny_run), "--images",
                             str(photos), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / LOCK_FILE).exists() or not (out / LOCK_FILE).read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "predict ended before it held --out"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_FILE).exists()
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock left by process {proc.pid} (predict" in err
    assert visible(out) == OUTPUTS
    assert not [p for p in out.iterdir() if p.name.startswith((STAGING_PREFIX, LOCK_FILE))]


@pytest.mark.parametrize("command", ["predict", "plot"])
def test_a_run_that_fails_while_writing_leaves_the_earlier_outputs_as_they_were(command, tiny_run, photos, tmp_path,
                                                                              capsys, monkeypatch):
    out = tmp_path / "out"
    argv = [command, "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]
    assert cli.main(argv) == 0
    before = snapshot(out)
    assert "report.html" in before and len(before) >= 4  # plot's page too, with nothing skipped

    import vit_flowers.pages as pages
    import vit_flowers.report as report

    def disk_full(*args, **kwargs):  # the last output of both commands: the page
        raise OSError(errno.ENOSPC, "No space left on device")

    if command == "predict":
        monkeypatch.setattr(pages, "write_prediction_report", disk_full)
    else:
        monkeypatch.setattr(report, "write_comparison_report", disk_full)
    shutil.rmtree(photos / "tulips")  # the failing run would write other rows
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device") and len(err.splitlines()) == 1
    assert snapshot(out) == before  # not one file of the failed run, not one of the earlier run lost
    assert not [p for p in out.iterdir() if p.name.startswith((STAGING_PREFIX, LOCK_FILE))]


def test_a_finished_folder_holds_one_runs_files(tiny_run, photos, tmp_path):
    """Labelled, then unlabelled into the same --out: the metrics and the
    matrix of the first run go, and the table is the second run's."""
    out = tmp_path / "out"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]) == 0
    flat = sorted((photos / "roses").iterdir())[:3]
    assert cli.main(["predict", "--run", str(tiny_run), "--images", *map(str, flat), "--out", str(out)]) == 0
    assert visible(out) == ["prediction_grid.png", "predictions.csv", "report.html"]
    assert pd.read_csv(out / "predictions.csv")["file"].tolist() == [str(f) for f in flat]


# ------------------------------------------------------------------ outputs are never inputs
def test_an_out_inside_the_images_is_not_predicted_on_the_next_run(tiny_run, photos, capsys):
    out = photos / "out"
    argv = ["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]
    assert cli.main(argv) == 0
    first = pd.read_csv(out / "predictions.csv")
    capsys.readouterr()
    assert cli.main(argv) == 0
    second = pd.read_csv(out / "predictions.csv")
    assert second["file"].tolist() == first["file"].tolist()
    assert not second["file"].str.contains("/out/").any()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: left out")]
    assert lines == [f"note: left out 1 folder: {out} (a folder of vit-flowers outputs)"]


def test_a_folder_of_another_commands_outputs_is_left_out_everywhere(tiny_run, photos, tmp_path, capsys):
    """A plot's figures inside the photos are not a class for prepare nor photos for predict."""
    assert cli.main(["plot", "--run", str(tiny_run), "--images", str(photos), "--out", str(photos / "figures"),
                     "--limit", "2"]) == 0
    assert (photos / "figures" / MARKER_FILE).exists()
    capsys.readouterr()
    assert cli.main(["prepare", "--source", str(photos), "--out", str(tmp_path / "lists"), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert f"left out 1 folder: {photos / 'figures'} (a folder of vit-flowers outputs)" in out
    lists = pd.concat([pd.read_csv(tmp_path / "lists" / n) for n in ("training_files.csv", "testing_files.csv")])
    assert sorted(lists["type_dir"].unique()) == ["roses", "tulips"]
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(tmp_path / "p")]) == 0
    assert not pd.read_csv(tmp_path / "p" / "predictions.csv")["file"].str.contains("figures").any()


def test_out_equal_to_an_input_folder_is_refused(tiny_run, photos, capsys):
    code = cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(photos)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --out {photos} is also an input folder") and err.count("\n") == 1
    assert not (photos / MARKER_FILE).exists()


def test_a_folder_reached_twice_through_links_is_read_once(tiny_run, photos, tmp_path, capsys):
    (photos / "again").symlink_to(".")
    (photos / "roses_too").symlink_to("roses")
    out = tmp_path / "out"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), str(photos / "roses_too"),
                     "--out", str(out)]) == 0
    files = pd.read_csv(out / "predictions.csv")["file"]
    expected = sorted(str(p) for sub in ("roses", "tulips") for p in (photos / sub).iterdir())
    assert sorted(files) == expected  # each photo once, under its first name
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert note == [f"note: left out 2 folders: {photos / 'again'} (read already, through another path); "
                    f"{photos / 'roses_too'} (read already, through another path)"]


def test_input_folders_admit_each_folder_once_and_no_output_folder(tmp_path):
    a, b, marked = tmp_path / "a", tmp_path / "b", tmp_path / "marked"
    for folder in (a, b, marked):
        folder.mkdir()
    (marked / MARKER_FILE).write_text("{}")
    (tmp_path / "link").symlink_to(a)
    folders = InputFolders(out=b)
    assert folders.admit(a) and not folders.admit(tmp_path / "link") and not folders.admit(b)
    assert not folders.admit(marked) and folders.admit(marked / ".." / "marked", top=True)
    assert folders.left_out_line() == (f"left out 3 folders: {tmp_path / 'link'} (read already, through another "
                                       f"path); {b} (a folder of vit-flowers outputs); {marked} (a folder of "
                                       f"vit-flowers outputs)")
    assert InputFolders().left_out_line() is None
    with pytest.raises(BadInputError, match="is also an input folder"):
        InputFolders(out=b).admit(b, top=True)
