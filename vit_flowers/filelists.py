"""Make and read the CSV file lists (`base_path,type_dir,file_name`).

A list row names one image as `base_path/type_dir/file_name`, as the seed's
`training_files.csv` did. The label is the class name found in `type_dir`
(the seed's `create_labels`). A relative `base_path` is read relative to the
folder that holds the list, so a data dir can be moved as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import BadInputError

COLUMNS = ["base_path", "type_dir", "file_name"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
TRAINING_LIST = "training_files.csv"
TESTING_LIST = "testing_files.csv"


def is_image_name(path: Path) -> bool:
    """True for names with an image suffix (the file may still be broken)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_class_folders(root: str | Path) -> pd.DataFrame:
    """List `root/<class>/<image>` as list rows; class folders sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder of class subfolders")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_image_name(p)):
        for item in sorted(class_dir.iterdir()):
            if is_image_name(item):
                rows.append((str(root), class_dir.name, item.name))
    if not rows:
        raise BadInputError(f"{root}: no images found in class subfolders (expected {root}/<class>/<image>.jpg)")
    return pd.DataFrame(rows, columns=COLUMNS)


def class_names_of(frame: pd.DataFrame) -> list[str]:
    """Class names as the sorted distinct `type_dir` values of a scanned folder."""
    return sorted(frame["type_dir"].unique().tolist())


def stratified_split(
    frame: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each class apart with the same fraction, reproducibly."""
    if not 0.0 < test_fraction < 1.0:
        raise BadInputError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for _, group in frame.groupby("type_dir", sort=True):
        order = rng.permutation(len(group))
        n_test = int(round(len(group) * test_fraction))
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        test_parts.append(group.iloc[order[:n_test]])
        train_parts.append(group.iloc[order[n_test:]])
    train = pd.concat(train_parts).sort_index().reset_index(drop=True)
    test = pd.concat(test_parts).sort_index().reset_index(drop=True)
    return train, test


def write_file_lists(
    frame: pd.DataFrame, out_dir: str | Path, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Path, Path]:
    """Write `training_files.csv` and `testing_files.csv` into `out_dir`.

    Base paths inside `out_dir` are written relative to it.
    """
    from .atomic import write_csv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    frame["base_path"] = [_relative_if_inside(Path(p), out_dir) for p in frame["base_path"]]
    train, test = stratified_split(frame, test_fraction, seed)
    return (
        write_csv(out_dir / TRAINING_LIST, train[COLUMNS]),
        write_csv(out_dir / TESTING_LIST, test[COLUMNS]),
    )


def _relative_if_inside(path: Path, folder: Path) -> str:
    path, folder = path.resolve(), folder.resolve()
    return os.path.relpath(path, folder) if path.is_relative_to(folder) else str(path)


def match_class(type_dir: str, class_names: Sequence[str]) -> str | None:
    """The class named in `type_dir`: an exact match, else the one class name it contains."""
    if type_dir in class_names:
        return type_dir
    parts = Path(type_dir).parts
    for name in class_names:
        if name in parts:
            return name
    found = [name for name in class_names if name in type_dir]
    if len(found) == 1:
        return found[0]
    return None


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
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise BadInputError(f"{csv_path}: the list is empty (expected a header {','.join(COLUMNS)} and rows)")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BadInputError(f"{csv_path}: not a readable CSV file ({err})") from err
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
