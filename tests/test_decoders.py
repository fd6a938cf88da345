"""Every decoder branch of `images.py`, asserted on pixels.

Each file holds a picture with marked corners (red top-left, green
top-right, blue bottom-left, grey elsewhere), stored so that a viewer that
follows the file's EXIF orientation shows it upright. Whatever the path
(OpenCV for JPEGs, PIL for PNG, WebP, TIFF and JPEGs OpenCV does not take),
`decode_image` and `load_images` must return the upright picture: the
marks in their corners, not mirrored or turned.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

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
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=0, expected=gray_corners(*expected))


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


# ------------------------------------------------------------- which decoder, exactly which pixels
@pytest.fixture
def decoders(monkeypatch):
    """Counts, per decode, the calls of PIL's path (`_pil_decode`) and of
    OpenCV's `imdecode`; clear it before the decode under test."""
    import collections

    import cv2

    from vit_flowers import images

    used: collections.Counter = collections.Counter()
    pil, imdecode = images._pil_decode, cv2.imdecode

    def counted_pil(*args, **kwargs):
        used["pil"] += 1
        return pil(*args, **kwargs)

    def counted_imdecode(*args, **kwargs):
        used["opencv"] += 1
        return imdecode(*args, **kwargs)

    monkeypatch.setattr(images, "_pil_decode", counted_pil)
    monkeypatch.setattr(cv2, "imdecode", counted_imdecode)
    return used


def jpeg_kinds(tmp_path: Path, scale: int = 1) -> dict[str, Path]:
    """The JPEGs OpenCV must decode alone: plain, turned by EXIF, progressive, gray, CMYK."""
    picture = np.kron(upright(), np.ones((scale, scale, 1), np.uint8))
    paths = {
        "plain": write(tmp_path / "plain.jpg", picture, None, quality=95),
        "exif6": write(tmp_path / "exif6.jpg", np.ascontiguousarray(STORE[6](picture)), 6, quality=95),
        "progressive": write(tmp_path / "progressive.jpg", picture, None, quality=95, progressive=True),
        "upper.JPEG": write(tmp_path / "upper.JPEG", picture, None, format="JPEG", quality=95),
    }
    Image.fromarray(picture).convert("L").save(tmp_path / "gray.jpg", quality=95)
    cmyk(picture).save(tmp_path / "cmyk.jpg", quality=95)
    return {**paths, "gray": tmp_path / "gray.jpg", "cmyk": tmp_path / "cmyk.jpg"}


@pytest.mark.parametrize("scale", [1, 4])  # at full scale, and 4x the target (a reduced DCT decode)
def test_clean_jpegs_are_decoded_by_opencv_alone(tmp_path, decoders, scale):
    """OpenCV (which holds no GIL while it decodes) takes every cleanly ended
    JPEG, whatever its colours or orientation: PIL is never called."""
    for kind, path in jpeg_kinds(tmp_path, scale).items():
        decoders.clear()
        image = decode_image(path, (HEIGHT, WIDTH))
        assert dict(decoders) == {"opencv": 1}, kind
        if kind == "gray":
            assert_upright(image, expected=gray_corners(76, 150, 29, 128))  # ITU-R 601 luma of the marks
        else:
            assert_upright(image)


def test_other_files_are_decoded_by_pil_alone(tmp_path, decoders):
    """Bytes after the end marker, a JPEG cut short, PNG, WebP, TIFF: PIL's
    path, and OpenCV is not even tried."""
    clean = write(tmp_path / "clean.jpg", upright(), None, quality=95)
    (tmp_path / "trailer.jpg").write_bytes(clean.read_bytes() + b"camera trailer")
    (tmp_path / "cut.jpg").write_bytes(clean.read_bytes()[:-200])
    files = [tmp_path / "trailer.jpg", *(write(tmp_path / f"plain.{s}", upright(), None, **FORMATS[s])
                                        for s in ("png", "webp", "tif"))]
    for path in files:
        decoders.clear()
        assert_upright(decode_image(path, (HEIGHT, WIDTH)))
        assert dict(decoders) == {"pil": 1}, path.name
    decoders.clear()
    from vit_flowers.images import UnreadableImage

    with pytest.raises(UnreadableImage, match=r"^cannot decode: (image file is truncated|Truncated File Read)"):
        decode_image(tmp_path / "cut.jpg", (HEIGHT, WIDTH))
    assert dict(decoders) == {"pil": 1}


def photo(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth noise with a sharp-edged patch: where decoding scales and
    resize methods give different pixels."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3)).astype(np.uint8), (0, 0), 2)
    base[height // 4: height * 3 // 4, width // 3: width * 2 // 3] = (200, 40, 40)
    return base


def reduced_flag(scale: int) -> int:
    import cv2

    return {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[scale]


@pytest.mark.parametrize("stored, size, scale, method", [
    ((240, 320), (64, 64), 2, "linear"),  # the shipped 64 px model on flower_photos: half size, 120x160
    ((240, 320), (60, 60), 4, "linear"),
    ((240, 320), (30, 20), 8, "linear"),
    ((768, 1024), (32, 32), 8, "area"),  # 96x128 after an eighth is still 2x the target
    ((240, 320), (224, 224), 1, "linear"),
    ((240, 320), (100, 150), 1, "area"),
    ((240, 320), (240, 320), 1, None),  # the photo's own size: the decoded pixels as they are
])
def test_jpeg_pixels_are_opencvs_decode_at_the_scale_then_the_resize(tmp_path, decoders, small_limit, stored, size,
                                                                   scale, method):
    """The loader's pixels, exactly: OpenCV's decode at the reduced DCT scale
    (as `cv2.IMREAD_REDUCED_COLOR_<scale>` gives it, BGR turned RGB), then
    area averaging where that shrinks 2x or more, else bilinear; decoded
    once, by OpenCV, even with PIL's limit at the photo's own size (the
    check after decoding counts the reduced pixels at the photo's scale)."""
    import cv2

    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(*stored)).save(path, quality=90)
    decoded = cv2.imdecode(np.fromfile(path, np.uint8), reduced_flag(scale))[..., ::-1]
    assert decoded.shape[:2] == (-(-stored[0] // scale), -(-stored[1] // scale))
    if method is None:
        expected = decoded
    else:
        interpolation = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[method]
        expected = cv2.resize(np.ascontiguousarray(decoded), size[::-1], interpolation=interpolation)
    small_limit(stored[0] * stored[1])
    decoders.clear()
    np.testing.assert_array_equal(decode_image(path, size), expected)
    assert dict(decoders) == {"opencv": 1}


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [(64, 64), (30, 30), (224, 224)])
def test_jpeg_left_to_pil_gives_the_same_pixels_as_opencv(tmp_path, decoders, mode, orientation, size):
    """A JPEG with bytes after its end marker (PIL's path: `Image.draft` at
    the same reduced scale, the EXIF turn, the same resize) decodes to exactly
    the pixels of the same JPEG without them (OpenCV's path): both are
    libjpeg-turbo, so the two paths are one loader."""
    picture = Image.fromarray(np.ascontiguousarray(STORE[orientation](photo(240, 320)))).convert(mode)
    clean = tmp_path / "clean.jpg"
    picture.save(clean, quality=90, exif=exif_of(orientation))
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(clean.read_bytes() + b"\x00trailer")
    by_opencv = decode_image(clean, size)
    decoders.clear()
    by_pil = decode_image(trailer, size)
    assert dict(decoders) == {"pil": 1}
    np.testing.assert_array_equal(by_pil, by_opencv)


def noise_png(path: Path, height: int, width: int) -> np.ndarray:
    pixels = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.parametrize("stored, size, method", [
    ((80, 100), (40, 40), "area"),  # exactly 2x the height, more than 2x the width
    ((100, 80), (40, 40), "area"),  # exactly 2x the width
    ((79, 100), (40, 40), "linear"),  # one side just under 2x: bilinear
    ((100, 79), (40, 40), "linear"),
    ((30, 100), (20, 40), "linear"),  # a wide photo, its width over 2x both sides of the target
    ((100, 30), (40, 20), "linear"),
    ((10, 12), (40, 40), "linear"),  # enlarged
    ((37, 41), (37, 41), None),  # the target's size: untouched
])
def test_resize_is_area_averaging_only_where_both_sides_shrink_2x(tmp_path, stored, size, method):
    import cv2

    pixels = noise_png(tmp_path / "noise.png", *stored)
    decoded = decode_image(tmp_path / "noise.png", size)
    if method is None:
        np.testing.assert_array_equal(decoded, pixels)
        return
    area = cv2.resize(pixels, size[::-1], interpolation=cv2.INTER_AREA)
    linear = cv2.resize(pixels, size[::-1], interpolation=cv2.INTER_LINEAR)
    assert not np.array_equal(area, linear)  # the picture tells the two methods apart
    np.testing.assert_array_equal(decoded, area if method == "area" else linear)
    out = np.zeros(size + (3,), np.uint8)
    assert decode_image(tmp_path / "noise.png", size, out=out) is out  # written into the caller's row
    np.testing.assert_array_equal(out, decoded)


# ------------------------------------------------------------- PIL's decompression-bomb limit
@pytest.fixture
def small_limit(monkeypatch):
    """Sets PIL's pixel limit (the loader's too) for the test."""
    def set_limit(pixels):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    return set_limit


def tall_jpeg(path: Path, junk_before_frame: bool = False, height: int = 80, width: int = 25) -> Path:
    """A JPEG of height x width; with junk bytes before its frame header
    (libjpeg skips them, but the size cannot be read before decoding)."""
    buffer = io.BytesIO()
    Image.fromarray(photo(height, width)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    if junk_before_frame:
        sof = data.index(b"\xff\xc0")
        data = data[:sof] + b"\x00\x01\x02" + data[sof:]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("junk", [False, True])
def test_jpeg_over_the_limit_is_refused_with_pils_reason(tmp_path, decoders, small_limit, junk):
    """80 rows of 25 pixels (2000) against a limit of 1999: refused, in PIL's
    words, and (its size read from the header) never handed to OpenCV; with
    junk before the frame header its size is known only once OpenCV has
    decoded it, and the check after decoding refuses it."""
    from vit_flowers.images import UnreadableImage, jpeg_size

    path = tall_jpeg(tmp_path / "tall.jpg", junk)
    assert jpeg_size(path.read_bytes()) == (None if junk else (80, 25))
    small_limit(1999)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(UnreadableImage) as refused:
        decode_image(path, (8, 8))
    assert str(refused.value) == "25x80 pixels is over PIL's decompression-bomb limit of 1999"
    assert dict(decoders) == ({"opencv": 1, "pil": 1} if junk else {"pil": 1})


@pytest.mark.parametrize("junk", [False, True])
def test_jpeg_at_the_limit_is_decoded_by_opencv(tmp_path, decoders, small_limit, junk):
    import cv2

    path = tall_jpeg(tmp_path / "tall.jpg", junk)
    expected = cv2.imdecode(np.fromfile(tall_jpeg(tmp_path / "clean.jpg"), np.uint8), cv2.IMREAD_COLOR_RGB)
    small_limit(2000)
    decoders.clear()
    np.testing.assert_array_equal(decode_image(path, (80, 25)), expected)
    assert dict(decoders) == {"opencv": 1}


def test_reduced_decode_is_checked_at_the_photos_scale(tmp_path, decoders, small_limit):
    """A 129x129 JPEG decoded at half scale is 65x65: the check after decoding
    counts each decoded pixel as 2x2 of the photo (16900 > 16641), so it sends
    the photo on to PIL, which checks its own size (16641, at the limit) and
    decodes it at the same half scale: the pixels come out as OpenCV's would."""
    path = tall_jpeg(tmp_path / "square.jpg", height=129, width=129)
    at_full_limit = decode_image(path, (64, 64))
    small_limit(129 * 129)
    decoders.clear()
    np.testing.assert_array_equal(decode_image(path, (64, 64)), at_full_limit)
    assert dict(decoders) == {"opencv": 1, "pil": 1}


def test_png_over_the_limit_is_refused_and_one_at_it_is_decoded(tmp_path, small_limit):
    from vit_flowers.images import UnreadableImage

    pixels = noise_png(tmp_path / "wide.png", 10, 100)  # 1000 pixels, 10 rows of 100
    small_limit(1000)
    np.testing.assert_array_equal(decode_image(tmp_path / "wide.png", (10, 100)), pixels)
    small_limit(999)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(UnreadableImage) as refused:
        decode_image(tmp_path / "wide.png", (10, 100))
    assert str(refused.value) == "100x10 pixels is over PIL's decompression-bomb limit of 999"
    small_limit(499)  # over twice the limit: PIL itself refuses to open it
    for path in (tmp_path / "wide.png", tall_jpeg(tmp_path / "tall.jpg")):
        with pytest.raises(UnreadableImage) as refused:
            decode_image(path, (10, 100))
        pixels_there = 1000 if path.suffix == ".png" else 2000
        assert str(refused.value).startswith(
            f"over PIL's decompression-bomb limit (Image size ({pixels_there} pixels) exceeds limit of 998 pixels")


def test_no_limit_decodes_everything(tmp_path, decoders, small_limit):
    """PIL's limit switched off (None): every file decodes, JPEGs by OpenCV."""
    import cv2

    jpeg = tall_jpeg(tmp_path / "tall.jpg")
    junk = tall_jpeg(tmp_path / "junk.jpg", junk_before_frame=True)
    pixels = noise_png(tmp_path / "wide.png", 10, 100)
    expected = cv2.imdecode(np.fromfile(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)
    small_limit(None)
    decoders.clear()
    np.testing.assert_array_equal(decode_image(jpeg, (80, 25)), expected)
    np.testing.assert_array_equal(decode_image(junk, (80, 25)), expected)
    assert dict(decoders) == {"opencv": 2}
    np.testing.assert_array_equal(decode_image(tmp_path / "wide.png", (10, 100)), pixels)


# ------------------------------------------------------------- colour modes, exactly
def test_16_bit_gray_every_level_is_rescaled_exactly(tmp_path):
    """All 65536 levels of a 16-bit gray PNG (I;16) and of a big-endian TIFF
    (I;16B): level v becomes round(v * 255 / 65535)."""
    import cv2

    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(levels / 65535 * 255).astype(np.uint8)
    Image.fromarray(levels).save(tmp_path / "ramp.png")
    cv2.imwrite(str(tmp_path / "ramp.tif"), levels)  # little-endian: I;16
    Image.frombytes("I;16B", (256, 256), levels.astype(">u2").tobytes()).save(tmp_path / "ramp_big_endian.tif")
    for name, mode in (("ramp.png", "I;16"), ("ramp.tif", "I;16"), ("ramp_big_endian.tif", "I;16B")):
        with Image.open(tmp_path / name) as image:
            assert image.mode == mode, name
        decoded = decode_image(tmp_path / name, (256, 256))
        np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=2), err_msg=name)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_mode_is_rescaled(mode):
    """PIL's four 16-bit gray modes (two of which no file opens as): the same rescale."""
    from vit_flowers.images import _to_rgb

    levels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ... 65535: level v // 257
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (16, 16), levels.astype(dtype).tobytes())
    rgb = np.asarray(_to_rgb(image))
    np.testing.assert_array_equal(rgb, np.repeat((levels // 257).astype(np.uint8)[..., None], 3, axis=2))


@pytest.mark.parametrize("top", [65535, 65536])
def test_32_bit_gray_levels_are_rescaled_exactly(tmp_path, top):
    """32-bit integer gray up to 65535 is 16-bit gray (v * 255 / 65535); beyond, / its maximum."""
    levels = np.minimum(np.arange(256 * 257, dtype=np.int32), top).reshape(256, 257)
    Image.fromarray(levels).save(tmp_path / "ramp.tif")
    with Image.open(tmp_path / "ramp.tif") as image:
        assert image.mode == "I"
    expected = np.rint(levels / float(top) * 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(tmp_path / "ramp.tif", (256, 257))[..., 0], expected)


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        ((255, 128, 0, 1), np.int32, (255, 128, 0, 1)),  # at most 255: as they are
        ((256, 128, 0, 1), np.int32, (1, 0, 0, 0)),  # over 255: the 16-bit range
        ((1000, 500, 0, 2), np.int32, (4, 2, 0, 0)),  # 16-bit range though its maximum is far below 65535
        ((-40, 100, 0, 50), np.int32, (0, 100, 0, 50)),  # negative levels are black
        ((1.5, 0.75, 0.0, 0.375), np.float32, (255, 128, 0, 64)),  # floats a little over 1: / the maximum
        ((-0.5, 1.0, 0.0, 0.5), np.float32, (0, 255, 0, 128)),
    ],
)
def test_32_bit_and_float_edges(tmp_path, values, dtype, expected):
    path = tmp_path / "deep.tif"
    Image.fromarray(gray_picture(values, dtype)).save(path)
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=0, expected=gray_corners(*expected))


def test_float_gray_rounds_to_the_nearest_level(tmp_path):
    """Floats (k + 0.5) / 255 stored in single precision lie a hair above or
    below the half-way point between two levels: each goes to its nearest
    level (computed in double precision, not rounded to a tie first)."""
    values = np.append((np.arange(255) + 0.5) / 255, 1.0).astype(np.float32).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "float.tif")
    expected = np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    assert not np.array_equal(expected, np.rint(values * np.float32(255)).astype(np.uint8))
    np.testing.assert_array_equal(decode_image(tmp_path / "float.tif", (16, 16))[..., 0], expected)


def alpha_picture() -> np.ndarray:
    """RGBA: the upright picture, its top-left mark clear, the middle clear."""
    rgba = np.dstack([upright(), np.full((HEIGHT, WIDTH), 255, np.uint8)])
    rgba[:MARK, :MARK, 3] = 0
    rgba[MARK:-MARK, MARK:-MARK, 3] = 0
    return rgba


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "PA"])
def test_every_alpha_mode_is_composited_on_white(mode):
    """Straight and premultiplied alpha, gray and palette with alpha: clear is
    white, opaque keeps its colour (gray for the gray modes)."""
    from vit_flowers.images import _to_rgb

    rgba = Image.fromarray(alpha_picture(), mode="RGBA")
    if mode == "PA":
        image = palette_picture(None).convert("PA")
        image.putalpha(rgba.getchannel("A"))
    elif mode == "LA":
        image = rgba.convert("LA")
    else:
        image = rgba.convert(mode)
    assert image.mode == mode
    rgb = np.asarray(_to_rgb(image))
    if mode == "LA":
        luma = lambda c: round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])  # noqa: E731
        expected = {"top-left": WHITE, "top-right": (luma(GREEN),) * 3, "bottom-left": (luma(BLUE),) * 3}
    else:
        expected = {"top-left": WHITE, "top-right": GREEN, "bottom-left": BLUE}
    assert_upright(rgb, tolerance=1, expected=expected)
    np.testing.assert_array_equal(rgb[HEIGHT // 2, WIDTH // 2], WHITE)


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "P"])
def test_png_transparent_colour_is_composited_on_white(tmp_path, mode):
    """A PNG whose tRNS chunk names one colour transparent (as PNG optimizers
    write an RGBA picture that has only clear and opaque pixels, and GIF
    converters a palette): that colour is white, like clear alpha; the rest
    keeps its colour, and the same picture without tRNS keeps the colour."""
    path, opaque = tmp_path / f"{mode}.png", tmp_path / f"{mode}_opaque.png"
    if mode == "P":  # palette index 0, the grey background, transparent
        palette_picture(None).save(path, transparency=0)
        palette_picture(None).save(opaque)
        expected = {"top-left": RED, "top-right": GREEN, "bottom-left": BLUE, "bottom-right": WHITE}
        without = {"top-left": RED, "top-right": GREEN, "bottom-left": BLUE, "bottom-right": GREY}
    else:  # black top-left, white elsewhere; black transparent
        image = Image.fromarray(gray_picture((0, 255, 255, 255), np.uint8)).convert(mode)
        image.save(path, transparency=(0, 0, 0) if mode == "RGB" else 0)
        image.save(opaque)
        expected, without = gray_corners(255, 255, 255, 255), gray_corners(0, 255, 255, 255)
    with Image.open(path) as opened:
        assert opened.mode == mode and "transparency" in opened.info
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=0, expected=expected)
    assert_upright(decode_image(opaque, (HEIGHT, WIDTH)), tolerance=0, expected=without)


def test_16_bit_png_transparent_level_is_white(tmp_path):
    levels = gray_picture((1000, 65535, 257 * 40, 0), np.uint16)
    Image.fromarray(levels).save(tmp_path / "trns16.png", transparency=1000)
    with Image.open(tmp_path / "trns16.png") as image:
        assert image.mode == "I;16" and image.info["transparency"] == 1000
    assert_upright(decode_image(tmp_path / "trns16.png", (HEIGHT, WIDTH)), tolerance=0,
                   expected=gray_corners(255, 255, 40, 0))


def test_orientation_is_read_from_its_own_tag(tmp_path):
    """EXIF with another tag at 1 (tag 0x0001) and orientation 6: turned by the orientation."""
    exif = exif_of(6)
    exif[0x0001] = 1
    path = tmp_path / "two_tags.png"
    Image.fromarray(stored(6)).save(path, exif=exif)
    assert_upright(decode_image(path, (HEIGHT, WIDTH)), tolerance=0)
