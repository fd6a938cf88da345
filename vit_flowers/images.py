"""Decode image files into one preallocated uint8 array, skipping bad files.

Each file is opened and read by Python (without blocking on a FIFO, without
following a path twice) and decoded from memory: no C library is handed a
path, so a file name that is not UTF-8 decodes like any other, and every
reason a file cannot be read (permission denied, not a regular file, a
symbolic link loop, too short to be an image) becomes a skipped row.

JPEGs (not truncated) are decoded by OpenCV, which holds
no GIL while it works, applies the EXIF orientation itself and writes RGB
directly; where the target is at most half the photo (a 64-96 px model on
320x240 photos) it decodes at a reduced DCT scale (`cv2.IMREAD_REDUCED_*`,
1/2 to 1/8 of each side, never below the target). Every other
file is opened with PIL, turned upright from its EXIF orientation
(`ImageOps.exif_transpose`, only when the tag asks for it), converted to RGB
the way a person would expect (alpha composited on white, 16-bit grayscale
rescaled, CMYK converted) and resized by OpenCV (area averaging to shrink
2x or more, else bilinear), which releases the GIL. JPEGs that PIL decodes are
decoded at a reduced scale when that is still at least the target size
(`Image.draft`). Threads
write straight into the final array: no per-image concatenation, no second
copy.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import write_csv

SKIPPED_COLUMNS = ["file", "reason"]
ORIENTATION = 0x0112  # the EXIF orientation tag
BACKGROUND = (255, 255, 255)
# the smallest valid image files (a 1x1 GIF, BMP or PNG) are a few dozen bytes
MIN_IMAGE_BYTES = 20
MAX_IMAGE_BYTES = 1 << 30  # a larger file is refused before it is read into memory
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"


class UnreadableImage(Exception):
    """A file that is not an image we can decode; the message is the reason."""


@dataclass
class LoadedImages:
    """Decoded images and what happened to every input file."""

    images: np.ndarray  # (N, H, W, 3) uint8, only the files that decoded
    kept: np.ndarray  # indices into the input list of the rows of `images`
    skipped: pd.DataFrame  # columns file, reason


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any PIL mode: alpha over white (also a transparent colour or
    palette entry, as PNG's tRNS and GIF give), 16/32-bit gray rescaled."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "I" and values.max(initial=0) > 255:
            top = 65535.0 if values.max() <= 65535 else float(values.max())
        elif image.mode == "F":
            top = float(values.max()) if values.max(initial=0) > 1.0 else 1.0
        else:
            top = 255.0
        gray = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        if "transparency" in image.info:  # a transparent grey level (PNG tRNS): white, as alpha would be
            gray[values == image.info["transparency"]] = 255
        return Image.fromarray(gray, mode="L").convert("RGB")
    palette_alpha = image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
    if palette_alpha or ("transparency" in image.info and image.mode in ("1", "L", "P", "RGB")):
        # a transparent colour or palette entries (PNG tRNS, GIF; a TGA's 16-bit colour map has its
        # alpha in the palette itself): an alpha channel, composited below
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _open_reason(err: OSError, path: Path) -> str:
    """What a person should read for an error opening `path`."""
    if err.errno == errno.ENOENT:
        return "dangling symbolic link (its target does not exist)" if os.path.islink(path) else "file not found"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.ELOOP:
        return "symbolic link loop"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if err.errno == errno.ENOTDIR:
        return "file not found (a folder on its path is a file)"
    return f"cannot open: {err.strerror or err}"


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, or UnreadableImage with the reason.

    Opened without blocking (a FIFO named .jpg would otherwise hang the
    command) and checked on the open descriptor: a regular file of a
    plausible size, read whole."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise UnreadableImage(_open_reason(err, path)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableImage("is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImage("not a regular file (a FIFO, socket or device)")
        if info.st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
        if info.st_size < MIN_IMAGE_BYTES:
            raise UnreadableImage(f"too short to be an image ({info.st_size} bytes)")
        if info.st_size > MAX_IMAGE_BYTES:
            raise UnreadableImage(f"{info.st_size} bytes, larger than the {MAX_IMAGE_BYTES} bytes an image may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError as err:
        raise UnreadableImage(f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)


# JPEG start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8) or DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# OpenCV's reduced-scale JPEG decoding: 1/2, 1/4, 1/8 of each side (the DCT
# scaling of libjpeg), for colour read straight as RGB
_REDUCED = ((8, 64), (4, 32), (2, 16))  # scale, cv2.IMREAD_REDUCED_GRAYSCALE_<scale> (16, 32, 64: one bit each)
REDUCED_SCALES = tuple(scale for scale, _ in _REDUCED)  # 8, 4, 2: the rule `reduced_scale` tries


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) as stored in a JPEG's frame header, read without
    decoding (before any EXIF turn); None when no frame header is found."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def reduced_scale(stored: tuple[int, int] | None, size: tuple[int, int]) -> int:
    """The largest JPEG DCT scale (1, 2, 4 or 8) that keeps both sides of the
    decoded photo at least the target's longer side, whichever way the
    photo is turned: a target at most half the photo decodes at half size
    or less, and is then shrunk as before (nothing is ever upsampled that a
    full decode would have shrunk)."""
    if not stored:
        return 1
    short, need = min(stored), max(size)
    for scale, _ in _REDUCED:
        if short >= scale * need:
            return scale
    return 1


def _opencv_jpeg(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """Decode JPEG bytes with OpenCV, which holds no GIL while it decodes and
    applies the EXIF orientation itself, as RGB (no channel swap after), at
    a reduced DCT scale when the target `size` is at most half the photo
    (`reduced_scale`). None (PIL will decide) when the
    bytes are not a cleanly ended JPEG, OpenCV cannot read them, or the image
    is over PIL's decompression-bomb limit (OpenCV's own limit is set to
    PIL's when the package is imported first, so such files are not even
    decoded)."""
    if not (data.startswith(JPEG_START) and data.endswith(JPEG_END)):
        return None
    stored = jpeg_size(data)
    if stored is not None and Image.MAX_IMAGE_PIXELS and stored[0] * stored[1] > Image.MAX_IMAGE_PIXELS:
        return None  # PIL gives the reason
    scale = reduced_scale(stored, size) if size is not None else 1
    flags = dict(_REDUCED)[scale] | cv2.IMREAD_COLOR_RGB if scale > 1 else cv2.IMREAD_COLOR_RGB
    try:
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # over OpenCV's pixel limit, among others
        return None
    if rgb is None or rgb.ndim != 3 or (
            Image.MAX_IMAGE_PIXELS and rgb.shape[0] * rgb.shape[1] * scale * scale > Image.MAX_IMAGE_PIXELS):
        return None  # PIL gives the reason
    return rgb


def _pil_decode(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode bytes with PIL: every format and colour mode, EXIF orientation;
    the reasons for files that cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.size[0] * image.size[1]
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise UnreadableImage(
                    f"{image.size[0]}x{image.size[1]} pixels is over PIL's decompression-bomb "
                    f"limit of {Image.MAX_IMAGE_PIXELS}"
                )
            return _pil_pixels(image, size)
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image PIL can identify (wrong format or random bytes)") from None
    except Image.DecompressionBombError as err:
        raise UnreadableImage(f"over PIL's decompression-bomb limit ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
            struct_error) as err:
        raise UnreadableImage(f"cannot decode: {err}") from err


def _pil_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """PIL's pixels, upright and RGB, at a reduced JPEG scale when possible."""
    if image.format == "JPEG":
        side = max(size)
        image.draft("RGB", (side, side))  # decode at a reduced DCT scale when still >= the target
    if image.getexif().get(ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return np.asarray(_to_rgb(image), dtype=np.uint8)


def decode_image(path: str | os.PathLike, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode one file to a (height, width, 3) uint8 array at `size` (h, w).

    The file is read by Python; JPEG bytes are decoded by OpenCV, everything
    else (and any JPEG OpenCV refuses) by PIL. OpenCV resizes, releasing the GIL and writing straight
    into `out` when given (a row of the caller's array). Raises UnreadableImage with a reason a person can
    act on.
    """
    height, width = size
    data = read_image_bytes(path)
    pixels = _opencv_jpeg(data, size)
    if pixels is None:
        pixels = _pil_decode(data, size)
    if out is None:
        out = np.empty((height, width, 3), np.uint8)
    if pixels.shape[:2] == (height, width):
        out[...] = pixels
    else:
        # area averaging where bilinear would alias (shrinking 2x or more), else bilinear (fast)
        halving = pixels.shape[0] >= 2 * height and pixels.shape[1] >= 2 * width
        cv2.resize(pixels, (width, height), dst=out, interpolation=cv2.INTER_AREA if halving else cv2.INTER_LINEAR)
    return out


# an array this large is mapped with its pages made at once (see `new_image_array`)
POPULATE_BYTES = 64 << 20


def new_image_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array of `shape`, every page of it made by the
    kernel in one call when it is large.

    A large `np.empty` gets its pages one fault at a time as the decoding
    threads first write each row, and NumPy asks for transparent huge
    pages, which the kernel may stop to compact memory for: on 2 cores that
    took a third of a 224 px load of 2,934 photos (benchmarks/README.md,
    figure 2). An anonymous mapping with MAP_POPULATE makes the pages in one
    call instead (about 0.5 ms per MiB here). Small arrays, and systems
    without MAP_POPULATE, get `np.empty`."""
    nbytes = int(np.prod(shape, dtype=np.int64))
    flag = getattr(mmap, "MAP_POPULATE", 0)
    if nbytes < POPULATE_BYTES or not flag:
        return np.empty(shape, np.uint8)
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flag)
    except (OSError, ValueError):  # no room for it mapped at once: let NumPy try
        return np.empty(shape, np.uint8)
    return np.frombuffer(buffer, np.uint8).reshape(shape)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int],
    num_threads: int | None = None,
    progress: bool = True,
) -> LoadedImages:
    """Decode `paths` into one (N, h, w, 3) uint8 array; report skipped files.

    The array is allocated once; each thread decodes a file and writes its
    row in place. Files that fail are compacted out afterwards, in place.
    """
    count = len(paths)
    height, width = size
    out = new_image_array((count, height, width, 3))
    reasons: dict[int, str] = {}
    lock = threading.Lock()
    bar = _progress_bar(count) if progress and count else None

    def work(index: int) -> None:
        try:
            decode_image(paths[index], size, out=out[index])
        except UnreadableImage as err:
            with lock:
                reasons[index] = str(err)
        except MemoryError:
            with lock:
                reasons[index] = "out of memory while decoding"
        except Exception as err:  # a decoder's own failure on this file: skip it, keep the others
            with lock:
                reasons[index] = f"cannot decode ({type(err).__name__}: {err})"

    threads = num_threads or min(8, os.cpu_count() or 1)
    done = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(work, range(count), chunksize=1 if count < 64 else 4):
            done += 1
            if bar is not None and (done % 16 == 0 or done == count):
                bar.update(done)
    kept = np.array([i for i in range(count) if i not in reasons], dtype=np.int64)
    if reasons:
        for slot, index in enumerate(kept):
            if slot != index:
                out[slot] = out[index]
        out = out[: len(kept)]
    skipped = pd.DataFrame(
        [(str(paths[i]), reasons[i]) for i in sorted(reasons)], columns=SKIPPED_COLUMNS
    )
    return LoadedImages(images=out, kept=kept, skipped=skipped)


def iter_image_chunks(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int],
    chunk_size: int = 256,
    num_threads: int | None = None,
) -> Iterator[tuple[int, LoadedImages]]:
    """Yield (offset, LoadedImages) chunk by chunk, decoding the next chunk
    in the background while the caller works on the current one."""
    starts = list(range(0, len(paths), chunk_size))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(load_images, paths[0:chunk_size], size, num_threads, False)
        for k, start in enumerate(starts):
            chunk = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = ahead.submit(load_images, paths[nxt : nxt + chunk_size], size, num_threads, False)
            yield start, chunk


def _progress_bar(total: int):
    """Keras' own progress bar, as `fit` and `predict` show."""
    # local: Keras' only use here, and importing it starts TensorFlow (seconds); decoding needs neither
    from keras.utils import Progbar

    return Progbar(total, unit_name="image")


def write_skipped(skipped: pd.DataFrame, path: str | os.PathLike) -> Path | None:
    """Write `skipped_files.csv` (file, reason) when any file was skipped;
    otherwise remove an old report there, which would be wrong now."""
    if skipped.empty:
        Path(path).unlink(missing_ok=True)
        return None
    return write_csv(path, skipped[SKIPPED_COLUMNS])


def none_readable_message(skipped: pd.DataFrame, report: str | os.PathLike) -> str:
    """The one line for a command none of whose input files could be read:
    how many, the first and why, and where the other reasons are."""
    first = skipped.iloc[0]
    return (f"none of the {len(skipped)} input files could be read (first: {first['file']}: {first['reason']}); "
            f"the reasons are in {report}")
