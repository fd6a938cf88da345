"""Label rules: which class a list row's `type_dir` names (`filelists.match_class`).

Exact name, else a path component that is a class, else whole words compared
without case; one class or nothing: a `type_dir` naming two classes is an
error, never the first of them.
"""

from __future__ import annotations

import pytest

from conftest import CLASS_NAMES
from vit_flowers.errors import BadInputError
from vit_flowers.filelists import match_class, read_file_list

ROSE_CLASSES = ["rose", "roses", "tulips"]


@pytest.mark.parametrize(
    "type_dir, expected",
    [
        ("roses", "roses"),
        ("Roses", "roses"),
        ("ROSES", "roses"),
        ("red-roses", "roses"),
        ("red_roses", "roses"),
        ("red roses", "roses"),
        ("flowers/roses", "roses"),
        ("flowers/Roses", "roses"),
        ("roses.v2", "roses"),
        ("roses/2023", "roses"),
        ("train\\roses", "roses"),
        ("  roses  ", "roses"),
        ("my_tulips_2023", "tulips"),
        ("Sun-Flowers", None),  # two words, neither a class
        ("sunflowers-2", "sunflowers"),
    ],
)
def test_case_and_separators(type_dir, expected):
    assert match_class(type_dir, CLASS_NAMES) == expected


@pytest.mark.parametrize(
    "type_dir",
    ["roses_and_tulips", "tulips_and_roses", "Roses-Tulips", "roses/tulips", "daisy dandelion", "roses.tulips"],
)
def test_two_classes_named_is_ambiguous_not_the_first(type_dir):
    assert match_class(type_dir, CLASS_NAMES) is None


@pytest.mark.parametrize("type_dir", ["cats", "", "rosebush", "myroses", "roses2", "tulipsroses", "./", "flowers/"])
def test_no_class_named(type_dir):
    """Substrings inside a word do not count: `myroses` is not roses."""
    assert match_class(type_dir, CLASS_NAMES) is None


@pytest.mark.parametrize(
    "type_dir, expected",
    [
        ("rose", "rose"),
        ("roses", "roses"),
        ("Rose", "rose"),
        ("Roses", "roses"),
        ("red_rose", "rose"),
        ("red_roses", "roses"),
        ("rose-garden", "rose"),
        ("roses-garden", "roses"),
        ("rose_and_roses", None),
        ("rosebush", None),
    ],
)
def test_a_class_name_inside_another(type_dir, expected):
    """`rose` and `roses` both classes: whole words only, so neither swallows the other."""
    assert match_class(type_dir, ROSE_CLASSES) == expected
    assert match_class(type_dir, list(reversed(ROSE_CLASSES))) == expected  # order of the classes does not matter


@pytest.mark.parametrize(
    "type_dir, expected",
    [
        ("red_roses", "red_roses"),
        ("Red-Roses", "red_roses"),
        ("red roses 2", "red_roses"),
        ("garden/red_roses", "red_roses"),
        ("roses", "roses"),
        ("white_roses", "roses"),
        ("red", None),
        ("red_roses_and_roses", None),  # roses once on its own as well: two classes
        ("red_white_roses", "roses"),  # the words red, roses are not a run
    ],
)
def test_a_class_of_several_words_wins_over_its_last_word(type_dir, expected):
    classes = ["red_roses", "roses", "tulips"]
    assert match_class(type_dir, classes) == expected
    assert match_class(type_dir, list(reversed(classes))) == expected


def test_exact_and_path_component_come_before_words():
    """A folder named exactly as a class decides, even when other words name another."""
    assert match_class("roses_and_tulips/roses", CLASS_NAMES) == "roses"
    assert match_class("tulips/red_roses", CLASS_NAMES) == "tulips"
    assert match_class("roses/tulips/roses", CLASS_NAMES) is None  # two different folders
    # a class whose own name holds a separator matches exactly, not by words
    assert match_class("a_b", ["a_b", "a", "b"]) == "a_b"
    assert match_class("x/a", ["a_b", "a", "b"]) == "a"
    assert match_class("a\\b", ["a\\b", "a", "b"]) == "a\\b"  # a POSIX folder name may hold a backslash


def test_classes_differing_only_in_case():
    classes = ["Roses", "roses"]
    assert match_class("Roses", classes) == "Roses"
    assert match_class("roses", classes) == "roses"
    assert match_class("ROSES", classes) is None  # both match without case
    # two classes matching the same words are both named, not both dropped in favour of a third
    assert match_class("my_ROSES_and_tulips", classes + ["tulips"]) is None
    assert match_class("ROSES_tulips", classes + ["tulips"]) is None


@pytest.mark.parametrize(
    "type_dir, expected",
    [("Red-Roses", "red_roses"), ("red roses 2", "red_roses"), ("dark_red", "red"), ("red_tulips", None)],
)
def test_a_class_that_is_the_first_word_of_a_longer_one(type_dir, expected):
    classes = ["red", "red_roses", "tulips"]
    assert match_class(type_dir, classes) == expected
    assert match_class(type_dir, list(reversed(classes))) == expected


def test_the_list_reader_reports_an_ambiguous_row(tmp_path):
    csv = tmp_path / "lst.csv"
    csv.write_text("base_path,type_dir,file_name\n.,Roses,a.jpg\n.,roses_and_tulips,b.jpg\n")
    with pytest.raises(BadInputError, match=r"lst\.csv: line 3: type_dir 'roses_and_tulips'.*several"):
        read_file_list(csv, CLASS_NAMES)
    frame = read_file_list(csv, CLASS_NAMES, require_labels=False)
    assert frame["label"].tolist() == [CLASS_NAMES.index("roses"), -1]
