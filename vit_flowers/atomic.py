"""Write outputs under a temporary name and rename, so a crash never leaves
a half-written file and never destroys the previous good one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, optional: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    The temporary name keeps the suffix, so writers that pick a format from
    it (Keras' `.weights.h5`, matplotlib's `.png`) still work. `optional`:
    the writer may decide to write nothing, and `path` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        if not (optional and not tmp.exists()):
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically, indented for people to read."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def csv_options() -> dict[str, Any]:
    """How every CSV is written: UTF-8 without the index; a file name that is
    not valid UTF-8 (a str with surrogate escapes, as `os.listdir` gives it)
    is written back as its original bytes, so it round-trips exactly when
    read with `encoding_errors="surrogateescape"`. Rows end in CRLF, as RFC
    4180 has it: Python's csv writer quotes a field holding any character of
    the line terminator, so a file name with a carriage return or a newline
    in it is quoted and reads back whole (with "\n" alone, a bare "\r" in a
    name would be written unquoted and split the row)."""
    return {"index": False, "encoding": "utf-8", "errors": "surrogateescape", "lineterminator": "\r\n"}


def write_csv(path: str | os.PathLike, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV atomically (see `csv_options`)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **csv_options())
    return Path(path)
