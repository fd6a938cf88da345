"""The `--boxes` CSV of `plot --faithfulness`: one box per photo (columns
file, x0, y0, x1, y1 in the photo's pixels), read and checked on its own so
that a bad row is refused before the model, or TensorFlow, loads.
`faithfulness` scores the maps against the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .errors import BadInputError

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _file_name(entry: str) -> str:
    """The file name of a path written with / or \\."""
    return PurePosixPath(entry.replace("\\", "/")).name


def _box_rows(path: Path, table: pd.DataFrame) -> dict[str, tuple[int, np.ndarray]]:
    """{file: (row number, box)} of a read boxes table, rows with all four
    values empty left out; BadInputError names the first bad row."""
    rows: dict[str, tuple[int, np.ndarray]] = {}
    for i, record in enumerate(table.itertuples(index=False), start=1):
        where = f"{path}: row {i} (line {i + 1})"
        entry = str(record.file).strip()
        if not entry:
            raise BadInputError(f"{where}: empty file name")
        raws = [str(getattr(record, column)).strip() for column in BOX_COLUMNS]
        if not any(raws):  # a photo without a box (defects.csv's normal ones): usable only unscored
            continue
        values = []
        for column, raw in zip(BOX_COLUMNS, raws):
            value = pd.to_numeric(pd.Series([raw]), errors="coerce").iloc[0]
            if not np.isfinite(value):
                raise BadInputError(f"{where}: {column} is not a number ({raw!r})")
            if value < 0:
                raise BadInputError(f"{where}: {column} is negative ({raw})")
            values.append(float(value))
        box = np.array(values)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BadInputError(f"{where}: empty box (needs x1 > x0 and y1 > y0, got {', '.join(map(str, values))})")
        if entry in rows:
            raise BadInputError(f"{where}: file {entry!r} is listed again (first at row {rows[entry][0]})")
        rows[entry] = (i, box)
    return rows


def _match(path: Path, rows: dict[str, tuple[int, np.ndarray]], files: Sequence[str]) -> np.ndarray:
    """The box of each photo: its exact entry, else the one entry with its file name when that is unique."""
    by_name: dict[str, list[str]] = {}
    for entry in rows:
        by_name.setdefault(_file_name(entry), []).append(entry)
    photo_names = pd.Series([_file_name(str(f)) for f in files]).value_counts()
    out = np.empty((len(files), 4))
    for k, photo in enumerate(map(str, files)):
        name = _file_name(photo)
        candidates = by_name.get(name, [])
        if photo in rows:
            out[k] = rows[photo][1]
        elif len(candidates) == 1 and photo_names[name] == 1:
            out[k] = rows[candidates[0]][1]
        elif candidates:
            raise BadInputError(f"{path}: no box for photo {photo!r}: its file name {name!r} is not unique "
                                f"(rows {', '.join(str(rows[c][0]) for c in candidates)})")
        else:
            raise BadInputError(f"{path}: no box for photo {photo!r}")
    return out


def read_boxes(path: str | Path, files: Sequence[str]) -> np.ndarray:
    """(len(files), 4) boxes x0, y0, x1, y1 from a CSV with columns file,x0,y0,x1,y1.

    A `file` entry matches a photo by its exact string or, when unique on
    both sides, by file name. Errors (BadInputError) name the CSV and the
    data row (1-based, below the header) or the photo without a box.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the boxes CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("file", *BOX_COLUMNS) if c not in table.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)} (needs file,x0,y0,x1,y1)")
    return _match(path, _box_rows(path, table), files)
