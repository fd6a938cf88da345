"""Every decoder branch of `images.py`, asserted on pixels.

Each file holds a picture with marked corners (red top-left, green
top-right, blue bottom-left, grey elsewhere), stored so that a viewer that
follows the file's EXIF orientation shows it upright. Whatever the path
(OpenCV for JPEGs, PIL for PNG, WebP, TIFF and JPEGs OpenCV does not take),
`decode_image` and `load_images` must return the upright picture: the
marks in their corners, not mirrored or turned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from vit_flowers.images import decode_image, load_images

HEIGHT, WIDTH, MARK = 48, 64, 16
RED, GREEN, BLUE, GREY, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 255)
ORIENTATION = 0x0112

# What a viewer does to the stored pixels for each EXIF orientation (the
# EXIF 2.3 table: 2 mirror, 3 turn 180, 4 flip, 5 transpose, 6 turn 90
# clockwise, 7 transverse, 8 turn 90 counter-clockwise).
DISPLAY: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1],
    5: lambda s: s.transpose(1, 0, 2),
    6: lambda s: np.rot90(s, -1),
    7: lambda s: s.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda s: np.rot90(s, 1),
}
# The stored pixels that display upright: each is its own inverse but 6 and 8.
STORE = {**DISPLAY, 6: DISPLAY[8], 8: DISPLAY[6]}


def upright(height: int = HEIGHT, width: int = WIDTH, mark: int = MARK) -> np.ndarray:
    picture = np.empty((height, width, 3), np.uint8)
    picture[...] = GREY
    picture[:mark, :mark] = RED
    picture[:mark, -mark:] = GREEN
    picture[-mark:, :mark] = BLUE
    return picture


def stored(orientation: int, picture: np.ndarray | None = None) -> np.ndarray:
    return np.ascontiguousarray(STORE[orientation](upright() if picture is None else picture))


def exif_of(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def corners(image: np.ndarray) -> dict[str, np.ndarray]:
    """Mean colour inside each corner's mark (inset, away from blurred edges)."""
    h, w = image.shape[:2]
    a, b = max(1, h // 16), max(2, h // 4)  # inset band inside a mark of a third of the height
    return {
        "top-left": image[a:b, a:b].reshape(-1, 3).mean(0),
        "top-right": image[a:b, w - b:w - a].reshape(-1, 3).mean(0),
        "bottom-left": image[h - b:h - a, a:b].reshape(-1, 3).mean(0),
        "bottom-right": image[h - b:h - a, w - b:w - a].reshape(-1, 3).mean(0),
    }


def assert_upright(image: np.ndarray, tolerance: float = 40, expected: dict | None = None) -> None:
    expected = expected or {"top-left": RED, "top-right": GREEN, "bottom-left": BLUE, "bottom-right": GREY}
    found = corners(image)
    for where, colour in expected.items():
        assert np.abs(found[where] - colour).max() <= tolerance, (
            f"{where} is {found[where].round()} not {colour}; corners: "
            + ", ".join(f"{k} {v.round()}" for k, v in found.items())
        )


def test_the_orientation_tables_are_inverses():
    picture = upright()
    for orientation in range(1, 9):
        np.testing.assert_array_equal(DISPLAY[orientation](stored(orientation)), picture)
    # the eight stored pictures are all different (each orientation is told apart)
    assert len({stored(o).tobytes() + bytes(stored(o).shape) for o in range(1, 9)}) == 8


# ------------------------------------------------------------- orientation
def write(path: Path, pixels: np.ndarray, orientation: int | None, **options) -> Path:
    image = Image.fromarray(pixels)
    if orientation is not None:
        options["exif"] = exif_of(orientation)
    image.save(path, **options)
    return path


FORMATS = {
    "jpg": {"quality": 95},  # OpenCV
    "JPEG": {"format": "JPEG", "quality": 95},  # OpenCV, upper-case suffix
    "png": {},  # PIL from here on
    "webp": {"lossless": True},
    "tif": {},
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", FORMATS)
def test_exif_orientation_comes_out_upright(tmp_path, suffix, orientation):
    path = write(tmp_path / f"o{orientation}.{suffix}", stored(orientation), orientation, **FORMATS[suffix])
    assert_upright(decode_image(path, (HEIGHT, WIDTH)))
    assert_upright(decode_image(path, (HEIGHT // 2, WIDTH // 2)))  # shrunk after turning, not before


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "tif"])
def test_no_orientation_tag_is_left_as_stored(tmp_path, suffix):
    path = write(tmp_path / f"plain.{suffix}", upright(), None, **FORMATS[suffix])
    assert_upright(decode_image(path, (HEIGHT, WIDTH)))


@pytest.mark.parametrize("orientation", [2, 5, 6, 8])
def test_jpeg_that_opencv_leaves_to_pil_comes_out_upright(tmp_path, orientation):
    """Bytes after the end marker (some cameras write them) send a JPEG to
    PIL's path, which must turn it as OpenCV would (and decode it at a
    reduced DCT scale: the file is 4x the requested size)."""
    big = np.kron(stored(orientation), np.ones((4, 4, 1), np.uint8))
    path = write(tmp_path / f"trailer{orientation}.jpg", big, orientation, quality=95)
    with open(path, "ab") as f:
        f.write(b"camera trailer\x00\x01")
    assert_upright(decode_image(path, (HEIGHT, WIDTH)))


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "tif"])
def test_load_images_turns_every_file_and_keeps_the_order(tmp_path, suffix):
    paths = [write(tmp_path / f"o{o}.{suffix}", stored(o), o, **FORMATS[suffix]) for o in range(8, 0, -1)]
    loaded = load_images(paths, (HEIGHT, WIDTH), num_threads=3, progress=False)
    assert loaded.skipped.empty and loaded.kept.tolist() == list(range(8))
    for row, path in zip(loaded.images, paths):
        assert_upright(row)
        np.testing.assert_array_equal(row, decode_image(path, (HEIGHT, WIDTH)))


# ------------------------------------------------------------- colour modes
def cmyk(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).convert("CMYK")


def test_cmyk_jpeg_by_opencv_and_by_pil(tmp_path):
    clean = tmp_path / "cmyk.jpg"
    cmyk(upright()).save(clean, quality=95)
    assert Image.open(clean).mode == "CMYK"
    assert_upright(decode_image(clean, (HEIGHT, WIDTH)))
    trailer = tmp_path / "cmyk_trailer.jpg"
    trailer.write_bytes(clean.read_bytes() + b"trailer")  # PIL's path
    assert_upright(decode_image(trailer, (HEIGHT, WIDTH)))


@pytest.mark.parametrize("orientation", [3, 5, 6, 7, 8])
@pytest.mark.parametrize("mode", ["CMYK", "L", "RGB"])
def test_uncompressed_tiff_turned_by_its_orientation(tmp_path, mode, orientation):
    """Uncompressed one-byte-per-sample TIFFs (L, CMYK) with a turning
    orientation come out as noise from PIL when it maps the file into memory
    by name (Pillow 12.3 maps it at the turned size); decoded from the
    file's bytes they are right."""
    path = tmp_path / f"{mode}{orientation}.tif"
    Image.fromarray(stored(orientation)).convert(mode).save(path, exif=exif_of(orientation))
    expected = np.asarray(Image.fromarray(upright()).convert(mode).convert("RGB"))
    with Image.open(path) as image:
        assert image.mode == mode
    decoded = decode_image(path, (HEIGHT, WIDTH))
    np.testing.assert_allclose(decoded, expected, atol=1)


def gray_picture(values: tuple[float, float, float, float], dtype) -> np.ndarray:
    """A one-channel picture: top-left, top-right, bottom-left marks, background."""
    tl, tr, bl, rest = values
    gray = np.full((HEIGHT, WIDTH), rest, dtype)
    gray[:MARK, :MARK], gray[:MARK, -MARK:], gray[-MARK:, :MARK] = tl, tr, bl
    return gray


def gray_corners(tl, tr, bl, rest) -> dict:
    return {"top-left": (tl,) * 3, "top-right": (tr,) * 3, "bottom-left": (bl,) * 3, "bottom-right": (rest,) * 3}


def test_16_bit_gray_png_is_rescaled_and_turned(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.ascontiguousarray(STORE[8](gray_picture((65535, 32896, 257 * 40, 0), np.uint16)[..., None])[..., 0]))\
        .save(path, exif=exif_of(8))
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=1, expected=gray_corners(255, 128, 40, 0))


def test_16_bit_colour_png_keeps_its_colours(tmp_path):
    import cv2

    path = tmp_path / "rgb48.png"
    cv2.imwrite(str(path), np.ascontiguousarray(upright()[..., ::-1]).astype(np.uint16) * 257)  # BGR, 16 bits
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=1)


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        ((1000, 65535, 0, 32896), np.int32, (4, 255, 0, 128)),  # 32-bit integers in 16-bit range: /65535
        ((200, 100, 0, 50), np.int32, (200, 100, 0, 50)),  # 32-bit integers in 8-bit range: as they are
        ((400000, 200000, 0, 100000), np.int32, (255, 128, 0, 64)),  # beyond 16 bits: / the maximum
        ((1.0, 0.5, 0.0, 0.25), np.float32, (255, 128, 0, 64)),  # floats in [0, 1]
        ((0.5, 0.25, 0.0, 0.125), np.float32, (128, 64, 0, 32)),  # dim floats stay dim, not stretched
        ((8.0, 4.0, 0.0, 2.0), np.float32, (255, 128, 0, 64)),  # floats beyond 1: / the maximum
    ],
)
def test_32_bit_and_float_tiffs_are_rescaled(tmp_path, values, dtype, expected):
    path = tmp_path / "deep.tif"
    Image.fromarray(gray_picture(values, dtype)).save(path)
    with Image.open(path) as image:
        assert image.mode == ("I" if dtype is np.int32 else "F")
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=1, expected=gray_corners(*expected))


def palette_picture(transparent_index: int | None) -> Image.Image:
    """Palette image: index 0 grey, 1 red, 2 green, 3 blue; top-left is index
    `transparent_index` when given (transparent), else red."""
    index = np.zeros((HEIGHT, WIDTH), np.uint8)
    index[:MARK, :MARK], index[:MARK, -MARK:], index[-MARK:, :MARK] = 1, 2, 3
    if transparent_index is not None:
        index[:MARK, :MARK] = transparent_index
    image = Image.fromarray(index, mode="P")
    image.putpalette([*GREY, *RED, *GREEN, *BLUE, 0, 0, 0] + [0, 0, 0] * 251)
    return image


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_palette_with_transparency_is_composited_on_white(tmp_path, suffix):
    path = tmp_path / f"palette.{suffix}"
    palette_picture(4).save(path, transparency=4)
    with Image.open(path) as image:
        assert image.mode == "P" and "transparency" in image.info
    expected = {"top-left": WHITE, "top-right": GREEN, "bottom-left": BLUE, "bottom-right": GREY}
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=1, expected=expected)


def test_palette_without_transparency_keeps_its_colours(tmp_path):
    path = tmp_path / "palette.png"
    palette_picture(None).save(path)
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=1)


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    gray = gray_picture((0, 0, 200, 60), np.uint8)
    alpha = gray_picture((0, 128, 255, 255), np.uint8)  # top-left clear, top-right half
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(path)
    with Image.open(path) as image:
        assert image.mode == "LA"
    # half-transparent black over white is mid-grey
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=2, expected=gray_corners(255, 127, 200, 60))


def test_rgba_with_orientation_is_composited_and_turned(tmp_path):
    rgba = np.dstack([upright(), np.full((HEIGHT, WIDTH), 255, np.uint8)])
    rgba[MARK:-MARK, MARK:-MARK, 3] = 0  # a clear middle
    path = tmp_path / "rgba.png"
    Image.fromarray(np.ascontiguousarray(STORE[6](rgba)), mode="RGBA").save(path, exif=exif_of(6))
    image = decode_image(path, (HEIGHT, WIDTH))
    assert_upright(image, tolerance=1)
    np.testing.assert_array_equal(image[HEIGHT // 2, WIDTH // 2], WHITE)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_gray_and_bilevel_become_gray_rgb(tmp_path, mode):
    gray = gray_picture((255, 0, 255, 0), np.uint8)
    path = tmp_path / f"{mode}.png"
    Image.fromarray(gray).convert(mode).save(path)
    with Image.open(path) as image:
        assert image.mode == mode
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=0, expected=gray_corners(255, 0, 255, 0))
