"""Reading files, loading them together, chunk by chunk, and the report of
skipped files: exact reasons, limits, progress, order and boundaries."""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vit_flowers import images
from vit_flowers.images import (
    LoadedImages,
    UnreadableImage,
    _open_reason,
    decode_image,
    iter_image_chunks,
    load_images,
    read_image_bytes,
    write_skipped,
)

SIZE = (8, 8)


def reason(path) -> str:
    with pytest.raises(UnreadableImage) as refused:
        read_image_bytes(path)
    return str(refused.value)


def colour_png(path: Path, value: int) -> Path:
    """A 4x4 PNG of one grey level: each loaded row says which file it was."""
    Image.new("RGB", (4, 4), (value, value, value)).save(path)
    return path


# ------------------------------------------------------------- why a file cannot be read
def test_missing_files_and_links(tmp_path):
    (tmp_path / "file.jpg").write_bytes(b"x" * 100)
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
    assert reason(tmp_path / "missing.jpg") == "file not found"
    assert reason(tmp_path / "dangling.jpg") == "dangling symbolic link (its target does not exist)"
    assert reason(tmp_path / "loop.jpg") == "symbolic link loop"
    assert reason(tmp_path / "file.jpg" / "inside.jpg") == "file not found (a folder on its path is a file)"
    assert reason(tmp_path / ("n" * 300 + ".jpg")) == "file name too long"


def test_directory_socket_and_device(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    os.symlink("/dev/null", tmp_path / "device.jpg")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.jpg"))
        assert reason(tmp_path / "socket.jpg") == "cannot open: No such device or address"  # ENXIO, told as it is
    assert reason(tmp_path / "folder.jpg") == "is a directory, not an image file"
    assert reason(tmp_path / "device.jpg") == "not a regular file (a FIFO, socket or device)"


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    """A FIFO named .jpg would block a plain open until something writes to
    it; the loader opens without blocking and refuses it at once."""
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def read() -> None:
        try:
            read_image_bytes(fifo)
        except UnreadableImage as err:
            outcome.append(str(err))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    blocked = reader.is_alive()
    if blocked:  # release the blocked open, so that the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert not blocked, "opening a FIFO blocked"
    assert outcome == ["not a regular file (a FIFO, socket or device)"]


@pytest.mark.parametrize("err, expected", [
    (OSError(errno.ENOENT, "No such file or directory"), "file not found"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "permission denied"),
    (OSError(errno.ELOOP, "Too many levels of symbolic links"), "symbolic link loop"),
    (OSError(errno.ENAMETOOLONG, "File name too long"), "file name too long"),
    (OSError(errno.ENOTDIR, "Not a directory"), "file not found (a folder on its path is a file)"),
    (OSError(errno.EIO, "Input/output error"), "cannot open: Input/output error"),
    (OSError("no errno, no strerror"), "cannot open: no errno, no strerror"),
])
def test_open_reasons(tmp_path, err, expected):
    """Every error `os.open` gives, as a person reads it (permission denied
    too, which a test running as root cannot provoke with chmod)."""
    assert _open_reason(err, tmp_path / "photo.jpg") == expected


def test_permission_denied_is_a_reason(tmp_path, monkeypatch):
    path = tmp_path / "secret.jpg"
    path.write_bytes(b"x" * 100)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(images.os, "open", refuse)
    assert reason(path) == "permission denied"


@pytest.mark.parametrize("err, expected", [
    (OSError(errno.EIO, "Input/output error"), "cannot read: Input/output error"),
    (OSError("the disk went away"), "cannot read: the disk went away"),
])
def test_read_errors_are_reasons(tmp_path, monkeypatch, err, expected):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"x" * 100)

    class Failing:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            raise err

    monkeypatch.setattr(images.os, "fdopen", Failing)
    assert reason(path) == expected


# ------------------------------------------------------------- size limits
def test_size_limits_are_exact(tmp_path, monkeypatch):
    """Under 20 bytes is too short; 20 is read (and then decoded, or not);
    over the largest size is refused before it is read."""
    for n in (0, 1, 19, 20, 21):
        (tmp_path / f"{n}.jpg").write_bytes(b"\x01" * n)
    assert reason(tmp_path / "0.jpg") == "empty file (0 bytes)"
    assert reason(tmp_path / "1.jpg") == "too short to be an image (1 bytes)"
    assert reason(tmp_path / "19.jpg") == "too short to be an image (19 bytes)"
    assert read_image_bytes(tmp_path / "20.jpg") == b"\x01" * 20
    with pytest.raises(UnreadableImage, match=r"^not an image PIL can identify \(wrong format or random bytes\)$"):
        decode_image(tmp_path / "20.jpg", SIZE)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 20)
    assert read_image_bytes(tmp_path / "20.jpg") == b"\x01" * 20
    assert reason(tmp_path / "21.jpg") == "21 bytes, larger than the 20 bytes an image may have"


def test_the_whole_file_is_read(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "big.bin").write_bytes(data)
    assert read_image_bytes(str(tmp_path / "big.bin")) == data  # a str path too


# ------------------------------------------------------------- loading many files
class FakeBar:
    """Stands for Keras' progress bar: records the updates."""

    made: list[FakeBar] = []

    def __init__(self, total):
        self.total, self.updates = total, []
        FakeBar.made.append(self)

    def update(self, done):
        self.updates.append(done)


@pytest.fixture
def bars(monkeypatch) -> list[FakeBar]:
    FakeBar.made = []
    monkeypatch.setattr(images, "_progress_bar", FakeBar)
    return FakeBar.made


@pytest.mark.parametrize("count, updates", [(1, [1]), (15, [15]), (16, [16]), (33, [16, 32, 33]), (48, [16, 32, 48]),
                                            (70, [16, 32, 48, 64, 70])])
def test_progress_bar_counts_files_every_16_and_at_the_end(tmp_path, bars, count, updates):
    paths = [colour_png(tmp_path / f"{i}.png", i) for i in range(count)]
    loaded = load_images(paths, SIZE)  # the progress bar is on unless turned off
    assert [(bar.total, bar.updates) for bar in bars] == [(count, updates)]
    assert loaded.kept.tolist() == list(range(count))
    np.testing.assert_array_equal(loaded.images[:, 0, 0, 0], np.arange(count))


def test_no_progress_bar_when_off_or_nothing_to_load(tmp_path, bars):
    paths = [colour_png(tmp_path / f"{i}.png", i) for i in range(3)]
    load_images(paths, SIZE, progress=False)
    load_images([], SIZE, progress=True)
    assert bars == []


def test_keras_progress_bar():
    from keras.utils import Progbar

    from vit_flowers.images import _progress_bar

    bar = _progress_bar(40)
    assert isinstance(bar, Progbar)
    assert (bar.target, bar.unit_name, bar.verbose) == (40, "image", 1)


def test_nothing_to_load(tmp_path):
    loaded = load_images([], SIZE, progress=False)
    assert loaded.images.shape == (0, 8, 8, 3) and loaded.images.dtype == np.uint8
    assert loaded.kept.dtype == np.int64 and loaded.kept.shape == (0,)
    assert loaded.skipped.empty and list(loaded.skipped.columns) == ["file", "reason"]


def test_every_file_bad(tmp_path):
    """The kept indices stay integers (they index the input list) when none is kept."""
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    loaded = load_images(paths, SIZE, progress=False)
    assert loaded.images.shape == (0, 8, 8, 3)
    assert loaded.kept.dtype == np.int64 and loaded.kept.shape == (0,)
    assert loaded.skipped.to_dict("list") == {"file": [str(p) for p in paths], "reason": ["file not found"] * 2}


@pytest.mark.parametrize("threads", [None, 0, 1, 3])
def test_default_and_given_thread_counts_load_the_same(tmp_path, threads):
    paths = [colour_png(tmp_path / f"{i}.png", 10 * i) for i in range(20)]
    paths[7] = tmp_path / "missing.png"
    loaded = load_images(paths, SIZE, num_threads=threads, progress=False)
    assert loaded.kept.tolist() == [i for i in range(20) if i != 7]
    np.testing.assert_array_equal(loaded.images[:, 3, 3, 0], [10 * i for i in range(20) if i != 7])
    assert loaded.skipped.to_dict("list") == {"file": [str(paths[7])], "reason": ["file not found"]}


def test_decoder_failures_become_reasons(tmp_path, monkeypatch):
    """Out of memory, or any exception of a decoder: that file is skipped with
    the reason, the others load."""
    paths = [colour_png(tmp_path / f"{i}.png", 50 * i) for i in range(4)]
    real = images.decode_image

    def failing(path, size, out=None):
        if Path(path).name == "1.png":
            raise MemoryError()
        if Path(path).name == "2.png":
            raise RuntimeError("the decoder broke")
        return real(path, size, out=out)

    monkeypatch.setattr(images, "decode_image", failing)
    loaded = load_images(paths, SIZE, num_threads=2, progress=False)
    assert loaded.kept.tolist() == [0, 3]
    np.testing.assert_array_equal(loaded.images[:, 0, 0, 0], [0, 150])
    assert loaded.skipped.to_dict("list") == {
        "file": [str(paths[1]), str(paths[2])],
        "reason": ["out of memory while decoding", "cannot decode (RuntimeError: the decoder broke)"],
    }


# ------------------------------------------------------------- chunk by chunk
def loaded_rows(chunks) -> list[tuple[int, list[int], list[int], list[tuple[str, str]]]]:
    return [(offset, chunk.kept.tolist(), chunk.images[:, 0, 0, 0].tolist(),
             list(zip(chunk.skipped["file"], chunk.skipped["reason"]))) for offset, chunk in chunks]


def test_chunks_cover_the_list_in_order(tmp_path):
    """Offsets 0, 4, 8 for ten files in chunks of four, the last one short;
    kept indices and skipped rows are the chunk's own."""
    paths = [colour_png(tmp_path / f"{i}.png", 20 * i) for i in range(10)]
    paths[5] = tmp_path / "missing.png"
    chunks = list(iter_image_chunks(paths, SIZE, chunk_size=4, num_threads=2))
    assert all(isinstance(chunk, LoadedImages) for _, chunk in chunks)
    assert loaded_rows(chunks) == [
        (0, [0, 1, 2, 3], [0, 20, 40, 60], []),
        (4, [0, 2, 3], [80, 120, 140], [(str(paths[5]), "file not found")]),
        (8, [0, 1], [160, 180], []),
    ]
    assert all(chunk.images.shape[1:] == (8, 8, 3) for _, chunk in chunks)
    # together they are the list loaded at once
    whole = load_images(paths, SIZE, progress=False)
    np.testing.assert_array_equal(np.concatenate([chunk.images for _, chunk in chunks]), whole.images)


@pytest.mark.parametrize("count, chunk_size, offsets", [
    (8, 4, [0, 4]),  # an exact multiple: no empty chunk after
    (3, 4, [0]),
    (4, 4, [0]),
    (5, 4, [0, 4]),
    (3, 1, [0, 1, 2]),
    (0, 4, []),
])
def test_chunk_boundaries(tmp_path, count, chunk_size, offsets):
    paths = [colour_png(tmp_path / f"{i}.png", i) for i in range(count)]
    chunks = list(iter_image_chunks(paths, SIZE, chunk_size=chunk_size))
    assert [offset for offset, _ in chunks] == offsets
    assert [chunk.images[:, 0, 0, 0].tolist() for _, chunk in chunks] == [
        list(range(o, min(o + chunk_size, count))) for o in offsets]


def test_default_chunks_are_256(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(images, "load_images", lambda paths, *a: calls.append(len(paths)) or LoadedImages(
        np.zeros((len(paths), 8, 8, 3), np.uint8), np.arange(len(paths)), pd.DataFrame(columns=["file", "reason"])))
    offsets = [offset for offset, _ in iter_image_chunks([f"{i}.png" for i in range(600)], SIZE)]
    assert offsets == [0, 256, 512] and calls == [256, 256, 88]


def test_next_chunk_decodes_while_the_caller_works(tmp_path, monkeypatch, bars):
    """When a chunk is handed over, the next one is already being decoded
    (in the background, without a progress bar), and nothing past the last."""
    paths = [colour_png(tmp_path / f"{i}.png", i) for i in range(6)]
    started: list[tuple[list[str], tuple, int | None, bool]] = []
    began = [threading.Event() for _ in range(4)]
    real = images.load_images

    def recording(chunk_paths, size, num_threads=None, progress=True):
        started.append(([Path(p).name for p in chunk_paths], size, num_threads, progress))
        began[len(started) - 1].set()
        return real(chunk_paths, size, num_threads, progress)

    monkeypatch.setattr(images, "load_images", recording)
    chunks = iter_image_chunks(paths, SIZE, chunk_size=2, num_threads=3)
    seen = []
    for k, (offset, chunk) in enumerate(chunks):
        if k < 2:
            assert began[k + 1].wait(timeout=10), f"chunk {k + 1} was not started while chunk {k} was in use"
        seen.append((offset, chunk.images[:, 0, 0, 0].tolist()))
    assert seen == [(0, [0, 1]), (2, [2, 3]), (4, [4, 5])]
    assert started == [(["0.png", "1.png"], SIZE, 3, False), (["2.png", "3.png"], SIZE, 3, False),
                       (["4.png", "5.png"], SIZE, 3, False)]
    assert bars == []


# ------------------------------------------------------------- the skipped-files report
def test_skipped_files_are_written_as_csv(tmp_path):
    skipped = pd.DataFrame({"reason": ["empty file (0 bytes)", "file not found"],
                            "file": ["a.jpg", "b, with a comma.jpg"], "extra": [1, 2]})
    target = tmp_path / "skipped_files.csv"
    assert write_skipped(skipped, str(target)) == target
    assert target.read_bytes() == (b"file,reason\r\na.jpg,empty file (0 bytes)\r\n"
                                   b'"b, with a comma.jpg",file not found\r\n')


def test_no_skipped_files_removes_an_old_report(tmp_path):
    target = tmp_path / "skipped_files.csv"
    target.write_text("file,reason\nold.jpg,from an earlier run\n")
    empty = pd.DataFrame(columns=["file", "reason"])
    assert write_skipped(empty, target) is None
    assert not target.exists()
    assert write_skipped(empty, target) is None  # and nothing to remove is fine
    assert not target.exists()
