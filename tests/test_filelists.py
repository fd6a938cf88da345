"""File lists: the seed's columns, a stratified seeded split, labels from type_dir."""

from __future__ import annotations

import pandas as pd
import pytest

from vit_flowers.errors import BadInputError
from vit_flowers.filelists import (
    COLUMNS,
    match_class,
    read_file_list,
    scan_class_folders,
    stratified_split,
    write_file_lists,
)

from conftest import CLASS_NAMES


def make_tree(root, counts: dict[str, int]):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{name}_{i}.jpg").write_bytes(b"x")
    return root


def test_split_is_stratified_and_seeded(tmp_path):
    root = make_tree(tmp_path / "photos", {"daisy": 50, "roses": 20, "tulips": 10})
    rows = scan_class_folders(root)
    train, val, test = stratified_split(rows, 0.2, seed=3)
    assert val.empty
    assert test.groupby("type_dir").size().to_dict() == {"daisy": 10, "roses": 4, "tulips": 2}
    assert len(train) + len(test) == 80
    assert set(train["file_name"]).isdisjoint(test["file_name"])
    _, _, again_test = stratified_split(rows, 0.2, seed=3)
    pd.testing.assert_frame_equal(test, again_test)
    _, _, other = stratified_split(rows, 0.2, seed=4)
    assert set(other["file_name"]) != set(test["file_name"])
    # with a validation share: three disjoint parts per class, the test part unchanged
    train3, val3, test3 = stratified_split(rows, 0.2, seed=3, val_fraction=0.1)
    pd.testing.assert_frame_equal(test3, test)
    assert val3.groupby("type_dir").size().to_dict() == {"daisy": 5, "roses": 2, "tulips": 1}
    names = [set(part["file_name"]) for part in (train3, val3, test3)]
    assert sum(map(len, names)) == 80 and len(set.union(*names)) == 80


def test_split_refuses_fractions_that_leave_nothing_to_train(tmp_path):
    rows = scan_class_folders(make_tree(tmp_path / "photos", {"daisy": 10, "roses": 10}))
    for test, val in ((0.0, 0.1), (0.6, 0.4), (1.0, 0.0), (0.2, -0.1)):
        with pytest.raises(BadInputError, match="fraction"):
            stratified_split(rows, test, seed=0, val_fraction=val)


def test_the_three_lists_are_written_all_or_none(tmp_path, monkeypatch):
    rows = scan_class_folders(make_tree(tmp_path / "data" / "images", {"daisy": 10, "tulips": 10}))
    lists = write_file_lists(rows, tmp_path / "data", 0.2, seed=0, val_fraction=0.2)
    assert sorted(p.name for p in lists.values()) == ["testing_files.csv", "training_files.csv",
                                                      "validation_files.csv"]
    before = {p.name: p.read_bytes() for p in lists.values()}
    calls = []
    original = pd.DataFrame.to_csv

    def fail_on_second(frame, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(frame, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        write_file_lists(rows, tmp_path / "data", 0.5, seed=1, val_fraction=0.2)
    monkeypatch.undo()
    # the first list was written under a temporary name and never renamed: the old set stands whole
    assert {p.name: p.read_bytes() for p in lists.values()} == before
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".tmp")]


def test_written_lists_have_seed_columns_and_resolve(tmp_path):
    root = make_tree(tmp_path / "data" / "images", {"daisy": 5, "tulips": 5})
    lists = write_file_lists(scan_class_folders(root), tmp_path / "data", 0.2, seed=0)
    train_csv, test_csv = lists["train"], lists["test"]
    raw = pd.read_csv(train_csv)
    assert list(raw.columns) == COLUMNS
    assert raw["base_path"].unique().tolist() == ["images"]  # relative to the list's folder
    frame = read_file_list(test_csv, CLASS_NAMES)
    assert len(frame) == 2
    assert all(pd.Series(frame["path"]).map(lambda p: __import__("os").path.exists(p)))
    assert sorted(frame["label"].tolist()) == [CLASS_NAMES.index("daisy"), CLASS_NAMES.index("tulips")]


def test_labels_found_in_type_dir_like_the_seed():
    assert match_class("sunflowers", CLASS_NAMES) == "sunflowers"
    assert match_class("train/roses", CLASS_NAMES) == "roses"
    assert match_class("my_tulips_2023", CLASS_NAMES) == "tulips"
    assert match_class("cats", CLASS_NAMES) is None


def write_list(path, text: str, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_unknown_class_names_the_row(tmp_path):
    csv = write_list(tmp_path / "l.csv", "base_path,type_dir,file_name\n.,daisy,a.jpg\n.,cats,b.jpg\n")
    with pytest.raises(BadInputError, match=r"l\.csv: line 3: type_dir 'cats'"):
        read_file_list(csv, CLASS_NAMES)


@pytest.mark.parametrize(
    "text, message",
    [
        ("base_path,type_dir\n.,daisy\n", r"missing \['file_name'\]"),
        ("base_path,type_dir,file_name,extra\n.,daisy,a.jpg,1\n", r"unexpected \['extra'\]"),
        ("", "empty"),
        ("base_path,type_dir,file_name\n", "no rows"),
        ("base_path,type_dir,file_name\n.,daisy,a.jpg\n.,roses,b.jpg\n.,daisy,a.jpg\n", "line 4: duplicate row"),
    ],
)
def test_broken_lists_get_clear_messages(tmp_path, text, message):
    csv = write_list(tmp_path / "broken.csv", text)
    with pytest.raises(BadInputError, match=message):
        read_file_list(csv, CLASS_NAMES)


def test_bom_and_windows_line_endings_are_read(tmp_path):
    text = "base_path,type_dir,file_name\r\n.,daisy,a.jpg\r\n.,roses,b.jpg\r\n"
    csv = write_list(tmp_path / "bom.csv", text, encoding="utf-8-sig")
    frame = read_file_list(csv, CLASS_NAMES)
    assert frame["file_name"].tolist() == ["a.jpg", "b.jpg"]
    assert frame["label"].tolist() == [0, 2]


def test_missing_list_file(tmp_path):
    with pytest.raises(BadInputError, match="nope.csv: file list not found"):
        read_file_list(tmp_path / "nope.csv", CLASS_NAMES)


def test_prepare_splits_several_source_folders_as_one_set(tmp_path, capsys):
    from vit_flowers import cli

    first = make_tree(tmp_path / "a", {"daisy": 10, "roses": 10})
    second = tmp_path / "b"
    for name, n in {"daisy": 10, "roses": 30}.items():
        (second / name).mkdir(parents=True)
        for i in range(n):
            (second / name / f"more_{i}.jpg").write_bytes(b"x")
    out = tmp_path / "lists"
    assert cli.main(["prepare", "--source", str(first), str(second), "--out", str(out), "--test-fraction", "0.1",
                     "--val-fraction", "0.1"]) == 0
    parts = {name: pd.read_csv(out / f"{name}_files.csv") for name in ("training", "validation", "testing")}
    assert {k: v.groupby("type_dir").size().to_dict() for k, v in parts.items() if k != "training"} == {
        "validation": {"daisy": 2, "roses": 4}, "testing": {"daisy": 2, "roses": 4}}
    everything = pd.concat(parts.values())
    assert len(everything) == 60 and not everything.duplicated().any()
    assert set(everything["base_path"]) == {str(first), str(second)}  # both folders reach every list
    assert set(parts["training"]["base_path"]) == {str(first), str(second)}

    assert cli.main(["prepare", "--source", str(first), str(first) + "/", "--out", str(tmp_path / "twice")]) == 2
    assert "is found through more than one source" in capsys.readouterr().err
    assert cli.main(["prepare", "--source", str(first), "synthetic", "--out", str(tmp_path / "mixed")]) == 2
