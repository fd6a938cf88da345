"""Files and names a user's folder may hold: each is predicted or skipped with
its true reason, nothing crashes, and names come back byte for byte."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from vit_flowers import cli, images

LATIN1 = b"caf\xe9.jpg"  # a name from an old archive: not UTF-8


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, encoding_errors="surrogateescape")


@pytest.fixture
def odd_folder(synthetic_data, tmp_path) -> Path:
    """roses/: a good photo, a 1-byte file, a FIFO, a dangling link, a link loop,
    a folder named .jpg, and the good photo again under a Latin-1 name and a
    name with a carriage return."""
    folder = tmp_path / "photos" / "roses"
    folder.mkdir(parents=True)
    good = next((synthetic_data / "images" / "roses").glob("*.jpg"))
    shutil.copy(good, folder / "good.jpg")
    (folder / "one_byte.jpg").write_bytes(b"x")
    os.mkfifo(folder / "fifo.jpg")
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    os.symlink("loop.jpg", folder / "loop.jpg")
    (folder / "folder.jpg").mkdir()
    shutil.copy(good, os.path.join(os.fsencode(folder), LATIN1))
    shutil.copy(good, folder / "line\rbreak.jpg")
    return folder.parent


REASONS = {"one_byte.jpg": "too short to be an image (1 bytes)",
           "fifo.jpg": "not a regular file (a FIFO, socket or device)",
           "dangling.jpg": "dangling symbolic link (its target does not exist)",
           "loop.jpg": "symbolic link loop",
           "folder.jpg": "is a directory, not an image file"}


def test_every_odd_file_is_skipped_with_its_true_reason_and_the_rest_predicted(tiny_run, odd_folder, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(odd_folder), "--out", str(out),
                     "--no-report"]) == 0
    skipped = _csv(out / "skipped_files.csv")
    assert dict(zip(skipped["file"].map(lambda f: Path(f).name), skipped["reason"])) == REASONS
    predicted = _csv(out / "predictions.csv")
    names = sorted(Path(f).name for f in predicted["file"])
    assert names == sorted(["good.jpg", os.fsdecode(LATIN1), "line\rbreak.jpg"])
    # the two renamed copies of one photo predict exactly as the photo
    probs = predicted.set_index(predicted["file"].map(lambda f: Path(f).name)).filter(like="prob_")
    for name in (os.fsdecode(LATIN1), "line\rbreak.jpg"):
        assert (probs.loc[name] - probs.loc["good.jpg"]).abs().max() < 1e-6
    assert set(predicted["true"]) == {"roses"}


def test_a_name_that_is_not_utf8_is_written_back_as_its_own_bytes(tiny_run, odd_folder, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(odd_folder), "--out", str(out),
                     "--no-report"]) == 0
    raw = (out / "predictions.csv").read_bytes()
    assert b"/roses/" + LATIN1 + b"," in raw  # the byte \xe9 itself, not a replacement character
    assert "\ufffd".encode() not in raw
    # and prepare lists it so that training finds the file again
    lists = tmp_path / "lists"
    assert cli.main(["prepare", "--source", str(odd_folder.parent / "photos"), "--out", str(lists),
                     "--test-fraction", "0.3", "--val-fraction", "0"]) == 0
    listed = pd.concat([_csv(lists / "training_files.csv"), _csv(lists / "testing_files.csv")])
    assert os.fsdecode(LATIN1) in set(listed["file_name"]) and "line\rbreak.jpg" in set(listed["file_name"])
    for row in listed.itertuples():
        path = os.path.join(row.base_path, row.type_dir, row.file_name)
        assert os.path.lexists(os.fsencode(path)), path


def test_a_non_utf8_name_does_not_take_the_process_down(odd_folder, tiny_run, tmp_path):
    """OpenCV's imread on such a path crashes the process; the loader reads the
    bytes itself, so a whole command on the folder ends normally."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--run", str(tiny_run),
                           "--images", os.fsdecode(os.path.join(os.fsencode(odd_folder), b"roses", LATIN1)),
                           "--out", str(tmp_path / "out"), "--no-report"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 predicted, 0 skipped" in done.stdout
    assert "caf\\xe9.jpg" not in done.stderr


def test_permission_denied_is_the_reason_given(odd_folder, monkeypatch):
    target = odd_folder / "roses" / "good.jpg"
    original = os.open

    def denied(path, *args, **kwargs):
        if os.fsdecode(path) == str(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(images.os, "open", denied)
    loaded = images.load_images([str(target)], (16, 16), progress=False)
    assert loaded.skipped["reason"].tolist() == ["permission denied"] and len(loaded.images) == 0


def test_an_unexpected_error_is_one_line_naming_where_the_traceback_went(tiny_run, tmp_path, monkeypatch, capsys):
    from vit_flowers import predict

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(predict, "predict_inputs", bug)
    image = str(next((tiny_run.parent.parent).rglob("*.jpg"), tiny_run / "config.json"))
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(tmp_path))
    code = cli.main(["predict", "--run", str(tiny_run), "--images", image, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: unexpected ZeroDivisionError: a bug; the traceback is in ")
    log = Path(err[0].rsplit(" ", 1)[1])
    assert log.parent == tmp_path and "Traceback (most recent call last)" in log.read_text()
    assert "raise ZeroDivisionError" in log.read_text()

    code = cli.main(["predict", "--run", str(tiny_run), "--images", image, "--out", str(tmp_path / "out"),
                     "--debug"])
    assert code == 1 and "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "plot"])
def test_a_folder_of_only_unreadable_files_is_bad_input_with_the_reasons_kept(odd_folder, tiny_run, tmp_path, capsys,
                                                                              command):
    """Nothing predicted is not a success, for `predict` and for `plot`: exit 2, one
    line naming a file and its reason, and skipped_files.csv still written with every reason."""
    (odd_folder / "roses" / "good.jpg").unlink()
    os.unlink(os.path.join(os.fsencode(odd_folder), b"roses", LATIN1))
    (odd_folder / "roses" / "line\rbreak.jpg").unlink()
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"predictions.csv": "file,true,pred\nold.jpg,roses,roses\n", "attention_selection.csv": "file\nold.jpg\n"}
    for name, text in earlier.items():
        (out / name).write_text(text)
    code = cli.main([command, "--run", str(tiny_run), "--images", str(odd_folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "none of the 5 input files could be read" in err and "skipped_files.csv" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    skipped = _csv(out / "skipped_files.csv")
    assert dict(zip(skipped["file"].map(lambda f: Path(f).name), skipped["reason"])) == REASONS
    # no report, no figure, no empty table; an earlier run's outputs are kept as they were
    # (beside the hidden marker that keeps an output folder out of every command's inputs)
    assert sorted(p.name for p in out.iterdir()) == sorted([*earlier, "skipped_files.csv", ".vit-flowers-output"])
    assert all((out / name).read_text() == text for name, text in earlier.items())
