"""An output folder: refused before any work when it cannot be written,
owned by one run at a time, left holding one run's files afterwards, and
never read back as input.

- **One run at a time.** A run holds `LOCK_FILE` in its folder with an
  exclusive `fcntl.flock` for as long as it works there; a second run on the
  same folder is refused naming the process that holds it. The kernel drops
  the lock when its process dies, however it dies, so a lock file left by a
  killed run is recognised (its process no longer holds it) and taken over
  with one line saying so.
- **One run's files.** Commands that write several outputs write them into a
  staging folder inside `--out` and move them into place only when all are
  written: a run that fails (a full disk included) leaves the earlier outputs
  as they were. The move is a handful of same-folder renames, which need no
  free space.
- **Outputs are never inputs.** Every output folder gets `MARKER_FILE`;
  `InputFolders` leaves such folders (and this run's own `--out`) out of the
  folders it reads, and reads a folder reached twice through links once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import BadInputError

# file names more than one command writes
SKIPPED_FILE = "skipped_files.csv"  # the files that could not be read, and why
REPORT_FILE = "report.html"  # the page a person opens in a browser
LOCK_FILE = ".vit-flowers.lock"  # held by the run working in the folder (pid, host, command)
MARKER_FILE = ".vit-flowers-output"  # "this folder holds vit-flowers outputs": never read as input
STAGING_PREFIX = ".staging-"  # a run's outputs before they are moved into place


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


# ---------------------------------------------------------------- one run at a time
def _holder_text(info: dict) -> str:
    """'process 123 (predict, started 12:00:01 on host)' from a lock file's contents."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info.get('pid', '?')} ({info.get('command', '?')}, started {started} on {info.get('host', '?')})"


def _read_lock(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


@dataclass
class OutputClaim:
    """A folder this process holds for one run (see the module's docstring)."""

    folder: Path
    command: str
    fd: int
    took_over: str | None = None  # the stale holder's description, when a killed run's lock was taken over
    _staging: Path | None = field(default=None, repr=False)

    def staging(self) -> Path:
        """The folder to write this run's outputs into; `commit` moves them into place."""
        if self._staging is None:
            self._staging = self.folder / f"{STAGING_PREFIX}{os.getpid()}"
            self._staging.mkdir()
        return self._staging

    def commit(self, owned: Iterable[str] = (), remove_stale_outputs: bool = True) -> list[Path]:
        """Move every staged output into the folder (a folder replaces the old
        one whole); with `remove_stale_outputs`, an earlier run's files that
        match `owned` and that this run did not write are removed first."""
        if self._staging is None:
            return []
        names = sorted(p.name for p in self._staging.iterdir())
        if remove_stale_outputs:
            remove_stale(self.folder, names, owned)
        moved = [move_into_place(self._staging / name, self.folder / name) for name in names]
        self.discard()
        return moved

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def release(self) -> None:
        """Remove the lock file, then let the lock go (in that order: a run
        waiting on the old file would otherwise hold a lock on a removed file)."""
        self.discard()
        with contextlib.suppress(OSError):
            os.unlink(self.folder / LOCK_FILE)
        os.close(self.fd)


def _acquire(folder: Path, command: str, option: str) -> OutputClaim:
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_lock(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BadInputError(f"{option} {folder}: cannot lock the folder ({err.strerror or err})") from err
            raise BadInputError(f"{option} {folder}: in use by {_holder_text(holder)}; wait for it to finish "
                                f"or choose another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    previous = _read_lock(fd)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
    claim = OutputClaim(folder, command, fd, took_over=_holder_text(previous) if previous else None)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(mine).encode("utf-8"))
    except OSError as err:  # a full disk, say: let the folder go as it was
        claim.release()
        err.filename = err.filename or str(path)
        raise
    for stale in folder.glob(f"{STAGING_PREFIX}*"):  # a killed run's half-written outputs
        shutil.rmtree(stale, ignore_errors=True)
    return claim


@contextlib.contextmanager
def claim_output_dir(folder: str | os.PathLike, command: str, option: str = "--out",
                     keep_on_bad_input: Iterable[str] = (), mark: bool = True) -> Iterator[OutputClaim]:
    """Check, create and lock `folder` for one run of `command`, and (with
    `mark`) mark it as an output folder. On success staged outputs must be
    committed by the caller; on any error they are discarded, except the
    names in `keep_on_bad_input` when the error is bad input (the reasons a
    run could read nothing, say), which are moved in beside the earlier
    outputs. A folder this run created and that ends holding nothing of it
    is removed: a refused run leaves nothing behind."""
    new = not os.path.lexists(folder)
    folder = prepare_output_dir(folder, option)
    claim = _acquire(folder, command, option)
    try:
        if claim.took_over:
            print(f"note: {option} {folder}: taking over the lock left by {claim.took_over}, which is no longer "
                  f"running", file=sys.stderr)
        if mark:
            mark_output_dir(folder, command)
        try:
            yield claim
        except BaseException as err:
            staged = claim._staging
            for name in keep_on_bad_input if isinstance(err, BadInputError) else ():
                if staged is not None and (staged / name).exists():
                    move_into_place(staged / name, folder / name)
            raise
    finally:
        claim.release()
        if new:
            with contextlib.suppress(OSError):
                leftovers = {p.name for p in folder.iterdir()}
                if leftovers <= {MARKER_FILE}:
                    shutil.rmtree(folder)


def mark_output_dir(folder: str | os.PathLike, command: str) -> None:
    """Write the marker that keeps this folder out of every command's inputs."""
    path = Path(folder) / MARKER_FILE
    if not path.exists():
        path.write_text(json.dumps({"written_by": f"vit-flowers {__version__}", "command": command}) + "\n",
                        encoding="utf-8")


def move_into_place(source: Path, target: Path) -> Path:
    """Rename `source` onto `target`; a folder replaces the old one whole."""
    if source.is_dir():
        old = target.with_name(f".old-{os.getpid()}-{target.name}")
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
    return target


# ---------------------------------------------------------------- outputs are never inputs
@dataclass
class InputFolders:
    """Which folders an input walk reads: not an output folder of this
    package (one holding `MARKER_FILE`, or this run's own `--out`), and not a
    folder already read through another path (a link back to a parent, say).
    What it left out is said once, by `left_out_line`."""

    out: Path | None = None
    seen: set = field(default_factory=set)
    left_out: list = field(default_factory=list)

    def admit(self, folder: Path, top: bool = False) -> bool:
        """True when `folder` is to be read; a `top` folder (named by the user)
        is read even when it holds outputs, but not twice."""
        try:
            info = os.stat(folder)
        except OSError:
            return True  # not readable: the caller reports it
        key = (info.st_dev, info.st_ino)
        if key in self.seen:
            self._leave_out(f"{folder} (read already, through another path)")
            return False
        if top and self._is_out(info):
            raise BadInputError(f"--out {self.out} is also an input folder: its outputs would be read as photos by "
                                f"the next run; choose another folder for --out (inside the input folder is fine)")
        if not top and (self._is_out(info) or (folder / MARKER_FILE).exists()):
            self._leave_out(f"{folder} (a folder of vit-flowers outputs)")
            return False
        self.seen.add(key)
        return True

    def _leave_out(self, what: str) -> None:
        if what not in self.left_out:
            self.left_out.append(what)

    def _is_out(self, info: os.stat_result) -> bool:
        if self.out is None:
            return False
        try:
            mine = os.stat(self.out)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (info.st_dev, info.st_ino)

    def left_out_line(self) -> str | None:
        """One line naming every folder left out, or None."""
        if not self.left_out:
            return None
        return f"left out {len(self.left_out)} folder{'s' if len(self.left_out) > 1 else ''}: " + "; ".join(self.left_out)
