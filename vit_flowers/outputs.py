"""An output folder: refused before any work when it cannot be written, and
left holding one run's files afterwards."""

from __future__ import annotations

import fnmatch
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import BadInputError

# file names more than one command writes
SKIPPED_FILE = "skipped_files.csv"  # the files that could not be read, and why
REPORT_FILE = "report.html"  # the page a person opens in a browser


def prepare_output_dir(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Create `folder` and check a file can be written in it, before the work
    whose results would go there: a path that is a file, or a folder without
    write permission, is refused naming it (exit 2)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{option} {folder}: is a file, not a folder; choose a folder for the outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise BadInputError(f"{option} {folder}: cannot write there ({err.strerror or err})") from err
    return folder


def remove_stale(folder: str | os.PathLike, written: Iterable[str | os.PathLike], owned: Iterable[str]) -> list[Path]:
    """Remove files of `folder` that match the `owned` name patterns (the
    outputs a command writes) but were not `written` by this run: an earlier
    run's metrics or figures must not sit beside this run's predictions."""
    folder = Path(folder)
    keep = {Path(p).name for p in written}
    removed = []
    for item in folder.iterdir() if folder.is_dir() else ():
        if item.is_file() and item.name not in keep and any(fnmatch.fnmatch(item.name, pat) for pat in owned):
            item.unlink()
            removed.append(item)
    return removed
