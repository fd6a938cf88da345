"""File lists: the seed's columns, a stratified seeded split, labels from type_dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CLASS_NAMES
from vit_flowers.errors import BadInputError
from vit_flowers.filelists import (
    COLUMNS,
    VALIDATION_LIST,
    match_class,
    read_file_list,
    require_classes,
    scan_class_folders,
    stratified_split,
    write_file_lists,
)


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
    assert all(map(os.path.exists, frame["path"]))
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


COLUMNS_MESSAGE = "columns must be exactly base_path,type_dir,file_name; "


@pytest.mark.parametrize(
    "text, message",
    [
        ("base_path,type_dir\n.,daisy\n", COLUMNS_MESSAGE + "missing ['file_name']"),
        ("base_path,type_dir,file_name,extra\n.,daisy,a.jpg,1\n", COLUMNS_MESSAGE + "unexpected ['extra']"),
        ("base_path,type_dir,extra\n.,daisy,1\n", COLUMNS_MESSAGE + "missing ['file_name']; unexpected ['extra']"),
        ("", "the list is empty (expected a header base_path,type_dir,file_name and rows)"),
        ("base_path,type_dir,file_name\n", "the list has a header but no rows"),
        ("base_path,type_dir,file_name\n.,daisy,a.jpg\n.,roses,b.jpg\n.,daisy,a.jpg\n",
         "line 4: duplicate row ./daisy/a.jpg; each image must be listed once"),
        ("base_path,type_dir,file_name\n.,daisy,a.jpg\n.,roses,\n.,tulips,  \n", "line 3: empty file_name"),
    ],
)
def test_broken_lists_get_exact_messages(tmp_path, text, message):
    csv = write_list(tmp_path / "broken.csv", text)
    with pytest.raises(BadInputError) as err:
        read_file_list(csv, CLASS_NAMES)
    assert str(err.value) == f"{csv}: {message}"


def test_a_row_with_too_many_fields_is_not_a_readable_csv(tmp_path):
    csv = write_list(tmp_path / "ragged.csv", "base_path,type_dir,file_name\n.,daisy,a.jpg\n.,daisy,b.jpg,x,y\n")
    with pytest.raises(BadInputError, match=r"^.*ragged\.csv: not a readable CSV file \(.*line 3, saw 5"):
        read_file_list(csv, CLASS_NAMES)


@pytest.mark.parametrize("error, shown", [(PermissionError(13, "Permission denied"), "Permission denied"),
                                          (OSError("device gone"), "device gone")])
def test_a_list_that_cannot_be_read_names_the_reason(tmp_path, monkeypatch, error, shown):
    csv = write_list(tmp_path / "l.csv", "base_path,type_dir,file_name\n.,daisy,a.jpg\n")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(pd, "read_csv", fail)
    with pytest.raises(BadInputError) as err:
        read_file_list(csv, CLASS_NAMES)
    assert str(err.value) == f"{csv}: cannot read the list ({shown})"


def test_names_that_look_like_numbers_or_missing_values_stay_text(tmp_path):
    csv = write_list(tmp_path / "l.csv", "base_path,type_dir,file_name\n2023,daisy,NA\n2023,daisy,null\n"
                                         "2023,daisy,007.jpg\n2023,daisy,nan\n")
    frame = read_file_list(csv, CLASS_NAMES)
    assert frame["base_path"].tolist() == ["2023"] * 4
    assert frame["file_name"].tolist() == ["NA", "null", "007.jpg", "nan"]
    assert frame["path"].tolist() == [str(tmp_path / "2023" / "daisy" / name) for name in ("NA", "null", "007.jpg",
                                                                                            "nan")]


def test_a_name_that_is_not_utf8_is_kept_byte_for_byte(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_bytes(b"base_path,type_dir,file_name\n.,daisy,caf\xe9.jpg\n")
    frame = read_file_list(csv, CLASS_NAMES)
    assert os.fsencode(frame["path"][0]) == os.fsencode(tmp_path) + b"/daisy/caf\xe9.jpg"
    assert frame["label"].tolist() == [0]


def test_a_bom_written_twice_by_resaving_is_read(tmp_path):
    """A BOM-marked list read without stripping it and saved again with a BOM starts with two."""
    csv = write_list(tmp_path / "l.csv", "\ufeff\ufeffbase_path,type_dir,file_name\n.,daisy,a.jpg\n")
    assert read_file_list(csv, CLASS_NAMES)["file_name"].tolist() == ["a.jpg"]


def test_absolute_and_relative_base_paths(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    csv = write_list(lists / "l.csv", f"base_path,type_dir,file_name\n{tmp_path / 'abs'},daisy,a.jpg\n"
                                      "../photos,roses,b.jpg\n.,tulips,c.jpg\n")
    frame = read_file_list(csv, CLASS_NAMES)
    assert frame["path"].tolist() == [str(tmp_path / "abs" / "daisy" / "a.jpg"),
                                      str(lists / ".." / "photos" / "roses" / "b.jpg"),
                                      str(lists / "tulips" / "c.jpg")]


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


def test_scan_skips_hidden_files_and_stray_files_beside_the_class_folders(tmp_path):
    root = make_tree(tmp_path / "photos", {"daisy": 2, "roses": 1})
    (root / "daisy" / "._daisy_0.jpg").write_bytes(b"x")  # a macOS resource fork
    (root / "daisy" / ".hidden.png").write_bytes(b"x")
    (root / "daisy" / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("about these photos")
    (root / "cover.jpg").write_bytes(b"x")
    rows = scan_class_folders(root)
    assert rows.values.tolist() == [[str(root), "daisy", "daisy_0.jpg"], [str(root), "daisy", "daisy_1.jpg"],
                                    [str(root), "roses", "roses_0.jpg"]]


def test_scan_messages_name_the_folder(tmp_path):
    with pytest.raises(BadInputError) as err:
        scan_class_folders(tmp_path / "nowhere")
    assert str(err.value) == f"{tmp_path / 'nowhere'}: not a folder of class subfolders"
    (tmp_path / "empty" / "daisy").mkdir(parents=True)
    with pytest.raises(BadInputError) as err:
        scan_class_folders(tmp_path / "empty")
    root = tmp_path / "empty"
    assert str(err.value) == f"{root}: no images found in class subfolders (expected {root}/<class>/<image>.jpg)"


@pytest.mark.parametrize("error, shown", [(PermissionError(13, "Permission denied"), "Permission denied"),
                                          (OSError("device gone"), "device gone")])
def test_a_class_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch, error, shown):
    root = make_tree(tmp_path / "photos", {"daisy": 2, "roses": 2})
    iterdir = Path.iterdir

    def fail_in_roses(self):
        if self.name == "roses":
            raise error
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", fail_in_roses)
    with pytest.raises(BadInputError) as err:
        scan_class_folders(root)
    assert str(err.value) == f"{root / 'roses'}: cannot list the folder ({shown})"


@pytest.mark.parametrize(
    "test, val, message",
    [
        (1.0, 0.0, "--test-fraction must be at least 0 and below 1, got 1.0"),
        (1.5, 0.0, "--test-fraction must be at least 0 and below 1, got 1.5"),
        (-0.1, 0.0, "--test-fraction must be at least 0 and below 1, got -0.1"),
        (0.2, 1.0, "--val-fraction must be at least 0 and below 1, got 1.0"),
        (0.2, -0.1, "--val-fraction must be at least 0 and below 1, got -0.1"),
        (0.0, 0.1, "--test-fraction must be above 0, got 0.0"),
        (0.6, 0.4, "--test-fraction 0.6 and --val-fraction 0.4 leave nothing to train on"),
    ],
)
def test_fraction_messages_name_the_option(test, val, message):
    rows = pd.DataFrame([(".", "daisy", f"{i}.jpg") for i in range(4)], columns=COLUMNS)
    with pytest.raises(BadInputError) as err:
        stratified_split(rows, test, seed=0, val_fraction=val)
    assert str(err.value) == message


def rows_of(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame([(".", name, f"{name}_{i}.jpg") for name, n in counts.items() for i in range(n)],
                        columns=COLUMNS)


@pytest.mark.parametrize(
    "test, val, expected",
    [
        # a class of 1 stays in training; 2: one to test; 3: one to each part, though the shares round to 0
        (0.2, 0.1, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (1, 1, 1), "ten": (7, 1, 2)}),
        (0.2, 0.0, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (2, 0, 1), "ten": (8, 0, 2)}),
        # large shares still leave one image of every class to train on
        (0.9, 0.0, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (1, 0, 2), "ten": (1, 0, 9)}),
        (0.2, 0.3, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (1, 1, 1), "ten": (5, 3, 2)}),
        (0.34, 0.64, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (1, 1, 1), "ten": (1, 6, 3)}),
        # a validation share that rounds to 0 in a class of ten still gets one
        (0.1, 0.04, {"one": (1, 0, 0), "two": (1, 0, 1), "three": (1, 1, 1), "ten": (8, 1, 1)}),
    ],
)
def test_split_sizes_of_small_classes(test, val, expected):
    rows = rows_of({"one": 1, "two": 2, "three": 3, "ten": 10})
    parts = stratified_split(rows, test, seed=0, val_fraction=val)
    sizes = {name: tuple(int((part["type_dir"] == name).sum()) for part in parts) for name in expected}
    assert sizes == expected


def test_every_class_keeps_an_image_to_train_on():
    rows = rows_of({f"c{n}": n for n in range(1, 7)})
    for test in (0.05, 0.2, 0.5, 0.6, 0.9, 0.99):
        for val in (0.0, 0.05, 0.3, 0.6):
            if test + val < 1:
                train, val_part, test_part = stratified_split(rows, test, seed=0, val_fraction=val)
                assert set(train["type_dir"]) == set(rows["type_dir"]), (test, val)
                assert len(train) + len(val_part) + len(test_part) == len(rows)


def test_split_parts_keep_the_columns_and_the_row_order():
    rows = rows_of({"daisy": 6, "roses": 5})
    rows["extra"] = range(len(rows))
    for part in stratified_split(rows, 0.3, seed=2, val_fraction=0.2):
        assert list(part.columns) == COLUMNS + ["extra"]
        assert part.index.equals(pd.RangeIndex(len(part)))
        assert part["extra"].is_monotonic_increasing


def test_split_depends_on_the_class_names_not_on_the_order_of_the_rows():
    rows = rows_of({"daisy": 12, "roses": 7, "tulips": 9})
    reordered = pd.concat([rows[rows["type_dir"] == name] for name in ("tulips", "roses", "daisy")])
    for part, again in zip(stratified_split(rows, 0.3, seed=5, val_fraction=0.2),
                           stratified_split(reordered.reset_index(drop=True), 0.3, seed=5, val_fraction=0.2)):
        assert set(part["file_name"]) == set(again["file_name"])


def test_split_defaults_are_a_fifth_to_test_with_seed_0():
    rows = rows_of({"daisy": 12, "roses": 7})
    train, val, test = stratified_split(rows)
    expected = stratified_split(rows, 0.2, seed=0, val_fraction=0.0)
    for part, same in zip((train, val, test), expected):
        pd.testing.assert_frame_equal(part, same)
    assert set(test["file_name"]) != set(stratified_split(rows, 0.2, seed=1)[2]["file_name"])


def test_written_lists_follow_the_seed_and_the_defaults(tmp_path):
    rows = scan_class_folders(make_tree(tmp_path / "photos", {"daisy": 12, "roses": 7}))

    def written_test_names(lists):
        return set(pd.read_csv(lists["test"])["file_name"])

    assert written_test_names(write_file_lists(rows, tmp_path / "a")) == set(stratified_split(rows)[2]["file_name"])
    seeded = write_file_lists(rows, tmp_path / "b", 0.3, seed=3)
    assert written_test_names(seeded) == set(stratified_split(rows, 0.3, seed=3)[2]["file_name"])
    assert written_test_names(seeded) != set(stratified_split(rows, 0.3, seed=4)[2]["file_name"])


def test_out_dir_is_made_with_its_parents(tmp_path):
    rows = scan_class_folders(make_tree(tmp_path / "photos", {"daisy": 5, "roses": 5}))
    out = tmp_path / "new" / "deeper" / "lists"
    lists = write_file_lists(rows, out, 0.2, seed=0)
    assert all(path.parent == out and path.is_file() for path in lists.values())


def test_no_validation_share_writes_no_validation_list_and_drops_an_old_one(tmp_path):
    rows = scan_class_folders(make_tree(tmp_path / "photos", {"daisy": 5, "roses": 5}))
    out = tmp_path / "lists"
    assert "val" in write_file_lists(rows, out, 0.2, seed=0, val_fraction=0.2)
    assert (out / VALIDATION_LIST).is_file()
    lists = write_file_lists(rows, out, 0.2, seed=0, val_fraction=0.0)
    assert sorted(lists) == ["test", "train"]
    assert not (out / VALIDATION_LIST).exists()


def test_require_classes_counts_the_known_labels():
    require_classes(pd.DataFrame({"label": [0, 0, -1, 2]}), CLASS_NAMES, "train.csv")  # daisy and roses: enough
    require_classes(pd.DataFrame({"label": np.array([0, 1, 4])}), CLASS_NAMES, "train.csv", minimum=3)
    for labels, minimum, message in [
        ([0, 0, -1], 2, "only 1 class(es) present (['daisy']); training needs at least 2"),
        ([2, 2], 2, "only 1 class(es) present (['roses']); training needs at least 2"),
        ([-1, -1], 2, "only 0 class(es) present ([]); training needs at least 2"),
        ([1, 0, 1], 3, "only 2 class(es) present (['daisy', 'dandelion']); training needs at least 3"),
    ]:
        with pytest.raises(BadInputError) as err:
            require_classes(pd.DataFrame({"label": labels}), CLASS_NAMES, "train.csv", minimum=minimum)
        assert str(err.value) == f"train.csv: {message}"
    with pytest.raises(BadInputError, match="at least 2$"):  # the default minimum
        require_classes(pd.DataFrame({"label": [3]}), CLASS_NAMES, "train.csv")
