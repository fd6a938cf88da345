"""Make and read the CSV file lists (`base_path,type_dir,file_name`).

A list row names one image as `base_path/type_dir/file_name`, as the post's
`training_files.csv` did. The label is the class name found in `type_dir`
(the post's `create_labels`). A relative `base_path` is read relative to the
folder that holds the list, so a data dir can be moved as a whole.

The images `predict` and `plot` take come as rows (file, true) from a list
or from files and folders (`collect_list`, `collect_images`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, csv_options
from .errors import BadInputError
from .outputs import InputFolders

COLUMNS = ["base_path", "type_dir", "file_name"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
TRAINING_LIST = "training_files.csv"
VALIDATION_LIST = "validation_files.csv"
TESTING_LIST = "testing_files.csv"


def is_image_name(path: Path) -> bool:
    """True for names with an image suffix (the file may still be broken)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_folder(folder: Path) -> list[Path]:
    """A folder's entries, sorted; a folder that cannot be listed is bad input naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise BadInputError(f"{folder}: cannot list the folder ({err.strerror or err})") from err


def scan_class_folders(root: str | Path, folders: InputFolders | None = None) -> pd.DataFrame:
    """List `root/<class>/<image>` as list rows; class folders sorted by name.
    `folders` leaves out folders of outputs and folders read already (a link
    to another class folder) and keeps what it left out."""
    root = Path(root)
    folders = folders if folders is not None else InputFolders()
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder of class subfolders")
    rows = []
    for class_dir in [p for p in list_folder(root) if p.is_dir() and not is_image_name(p) and folders.admit(p)]:
        for item in list_folder(class_dir):
            if is_image_name(item):
                rows.append((str(root), class_dir.name, item.name))
    if not rows:
        raise BadInputError(f"{root}: no images found in class subfolders (expected {root}/<class>/<image>.jpg)")
    return pd.DataFrame(rows, columns=COLUMNS)


def class_names_of(frame: pd.DataFrame) -> list[str]:
    """Class names as the sorted distinct `type_dir` values of a scanned folder."""
    return sorted(frame["type_dir"].unique().tolist())


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    """Test and validation shares that leave something to train on."""
    for name, value in (("--test-fraction", test_fraction), ("--val-fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise BadInputError(f"{name} must be at least 0 and below 1, got {value}")
    if not 0.0 < test_fraction:
        raise BadInputError(f"--test-fraction must be above 0, got {test_fraction}")
    if test_fraction + val_fraction >= 1.0:
        raise BadInputError(f"--test-fraction {test_fraction} and --val-fraction {val_fraction} leave nothing "
                            f"to train on")


def stratified_split(
    frame: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split each class into train / validation / test with the same
    fractions, reproducibly: (train, validation, test). Training keeps at
    least one image of every class (a class it never sees is never learnt),
    then the test part gets one, then validation: a class of two gives one to
    test, each part of a class of three or more gets at least one.
    Validation is empty when `val_fraction` is 0."""
    check_fractions(test_fraction, val_fraction)
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for _, group in frame.groupby("type_dir", sort=True):
        n = len(group)
        order = rng.permutation(n)
        n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
        n_val = int(round(n * val_fraction))
        if val_fraction > 0:
            n_val = max(n_val, 1)
        n_val = min(n_val, n - n_test - 1)
        parts[2].append(group.iloc[order[:n_test]])
        parts[1].append(group.iloc[order[n_test:n_test + n_val]])
        parts[0].append(group.iloc[order[n_test + n_val:]])
    train, val, test = (pd.concat(part).sort_index().reset_index(drop=True) for part in parts)
    return train, val, test


def write_file_lists(
    frame: pd.DataFrame, out_dir: str | Path, test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.0
) -> dict[str, Path]:
    """Write `training_files.csv`, `validation_files.csv` (when `val_fraction`
    is above 0) and `testing_files.csv` into `out_dir`, all or none: every
    list is written under a temporary name first and renamed only when all
    are written. Returns {"train", "val", "test": path} for the lists written.

    Base paths inside `out_dir` are written relative to it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    frame["base_path"] = [_relative_if_inside(Path(p), out_dir) for p in frame["base_path"]]
    train, val, test = stratified_split(frame, test_fraction, seed, val_fraction)
    lists = {"train": (TRAINING_LIST, train), "val": (VALIDATION_LIST, val), "test": (TESTING_LIST, test)}
    if val_fraction <= 0:
        del lists["val"]
        (out_dir / VALIDATION_LIST).unlink(missing_ok=True)  # an older split's, wrong beside these
    with contextlib.ExitStack() as stack:
        for name, part in lists.values():
            part[COLUMNS].to_csv(stack.enter_context(atomic_path(out_dir / name)), **csv_options())
    return {key: out_dir / name for key, (name, _) in lists.items()}


def _relative_if_inside(path: Path, folder: Path) -> str:
    path, folder = path.resolve(), folder.resolve()
    return os.path.relpath(path, folder) if path.is_relative_to(folder) else str(path)


_COMPONENT_SEPARATORS = re.compile(r"[/\\]+")
_TOKEN_SEPARATORS = re.compile(r"[/\\_\-.\s]+")


def _tokens(text: str) -> list[str]:
    """Lower-cased words of a name split at `/ \\ _ - .` and white space."""
    return [token for token in _TOKEN_SEPARATORS.split(text.casefold()) if token]


def _token_spans(words: list[str], name: str) -> list[tuple[int, int]]:
    """Where the words of class `name` occur as a contiguous run in `words`."""
    target = _tokens(name)
    n = len(target)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(words) - n + 1) if words[i:i + n] == target]


def match_class(type_dir: str, class_names: Sequence[str]) -> str | None:
    """The one class that `type_dir` names, or None when it names none or several.

    The rules, first that applies:
    1. `type_dir` is a class name: that class.
    2. A path component (split at `/` or `\\`) is a class name: that class
       (several different ones: None).
    3. Split into words at `/ \\ _ - .` and white space, compared without case:
       the classes whose words occur as whole words (a run of words for a
       class like `red_roses`). A class found only inside a longer class's
       match (`roses` inside `red_roses`) does not count. Exactly one class
       left: it; several: None. So `Roses`, `red-roses` and `flowers/roses.v2`
       are roses, `roses_and_tulips` is none (ambiguous, never the first),
       and `rosebush` is not `rose` (no substring matches inside a word).
    """
    if type_dir in class_names:
        return type_dir
    named = {part for part in _COMPONENT_SEPARATORS.split(type_dir) if part in class_names}
    if named:
        return named.pop() if len(named) == 1 else None
    words = _tokens(type_dir)
    spans = {name: _token_spans(words, name) for name in class_names}
    spans = {name: found for name, found in spans.items() if found}

    def inside_longer(name: str) -> bool:
        return all(
            any(a <= start and end <= b and (b - a) > (end - start)
                for other, theirs in spans.items() if other != name for a, b in theirs)
            for start, end in spans[name]
        )

    found = [name for name in spans if not inside_longer(name)]
    return found[0] if len(found) == 1 else None


def read_file_list(
    csv_path: str | Path, class_names: Sequence[str], require_labels: bool = True
) -> pd.DataFrame:
    """Read a list; add `path` (absolute) and `label` (class index, -1 if unknown).

    Errors name the list and the row (as a line number of the CSV file).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise BadInputError(f"{csv_path}: file list not found")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            encoding_errors="surrogateescape")
    except pd.errors.EmptyDataError:
        raise BadInputError(f"{csv_path}: the list is empty (expected a header {','.join(COLUMNS)} and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise BadInputError(f"{csv_path}: not a readable CSV file ({err})") from err
    except OSError as err:
        raise BadInputError(f"{csv_path}: cannot read the list ({err.strerror or err})") from err
    columns = [c.strip() for c in frame.columns]
    frame.columns = columns
    missing = [c for c in COLUMNS if c not in columns]
    extra = [c for c in columns if c not in COLUMNS]
    if missing or extra:
        raise BadInputError(
            f"{csv_path}: columns must be exactly {','.join(COLUMNS)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    if frame.empty:
        raise BadInputError(f"{csv_path}: the list has a header but no rows")
    frame = frame[COLUMNS].apply(lambda col: col.str.strip())
    line = frame.index + 2  # header is line 1
    blank = frame["file_name"] == ""
    if blank.any():
        raise BadInputError(f"{csv_path}: line {int(line[blank][0])}: empty file_name")
    duplicated = frame.duplicated(keep="first")
    if duplicated.any():
        first = int(np.flatnonzero(duplicated)[0])
        raise BadInputError(
            f"{csv_path}: line {first + 2}: duplicate row "
            f"{'/'.join(frame.iloc[first].tolist())}; each image must be listed once"
        )
    base = csv_path.parent
    frame["path"] = [
        str((Path(b) if Path(b).is_absolute() else base / b) / t / f)
        for b, t, f in zip(frame["base_path"], frame["type_dir"], frame["file_name"])
    ]
    labels = []
    for i, type_dir in enumerate(frame["type_dir"]):
        name = match_class(type_dir, class_names)
        if name is None and require_labels:
            raise BadInputError(
                f"{csv_path}: line {i + 2}: type_dir {type_dir!r} names none of the classes "
                f"{list(class_names)} (or several of them)"
            )
        labels.append(-1 if name is None else list(class_names).index(name))
    frame["label"] = labels
    return frame


def require_classes(frame: pd.DataFrame, class_names: Sequence[str], where: str, minimum: int = 2) -> None:
    """Refuse training data with fewer than `minimum` classes present."""
    present = sorted(set(int(v) for v in frame["label"] if v >= 0))
    if len(present) < minimum:
        names = [class_names[i] for i in present]
        raise BadInputError(
            f"{where}: only {len(present)} class(es) present ({names}); training needs at least {minimum}"
        )


def collect_images(paths: Sequence[str | Path], class_names: Sequence[str],
                   folders: InputFolders | None = None) -> pd.DataFrame:
    """Rows (file, true) for files and folders; a folder's subfolders are
    classes (true = the subfolder's name when it is a known class).
    `folders` leaves out folders of outputs and folders read already (a link
    back to a parent, say), and keeps what it left out."""
    folders = folders if folders is not None else InputFolders()
    rows: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            if not (path.exists() or path.is_symlink()):
                raise BadInputError(f"{path}: no such file or folder")
            rows.append((str(path), ""))  # a file given by name: read (or skipped with its reason) as it is
            continue
        if not folders.admit(path, top=True):
            continue
        for item in list_folder(path):
            if item.is_dir() and not is_image_name(item):
                if not folders.admit(item):
                    continue
                true = item.name if item.name in class_names else ""
                rows += [(str(f), true) for f in list_folder(item) if is_image_name(f)]
            elif is_image_name(item):
                rows.append((str(item), ""))
    if not rows:
        raise BadInputError(f"no image files found in {', '.join(str(p) for p in paths)}")
    return pd.DataFrame(rows, columns=["file", "true"])


def collect_list(csv_path: str | Path, class_names: Sequence[str]) -> pd.DataFrame:
    """Rows (file, true) from a file list; unknown classes are an error."""
    frame = read_file_list(csv_path, class_names)
    return pd.DataFrame({"file": frame["path"], "true": [class_names[i] for i in frame["label"]]})
