"""Decoding into one uint8 array: sizes, colours, orientation, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from awkward import BAD, GOOD, make_awkward_folder
from vit_flowers.images import decode_image, load_images


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    return make_awkward_folder(tmp_path_factory.mktemp("awkward"))


def test_load_preallocates_in_order_and_skips_bad_files(awkward):
    names = sorted(BAD) + GOOD
    loaded = load_images([awkward / n for n in names], (24, 32), num_threads=2, progress=False)
    assert loaded.images.shape == (len(GOOD), 24, 32, 3)
    assert loaded.images.dtype == np.uint8
    assert [names[i] for i in loaded.kept] == GOOD
    reasons = dict(zip(loaded.skipped["file"].map(lambda f: f.split("/")[-1]), loaded.skipped["reason"]))
    assert set(reasons) == set(BAD)
    assert list(loaded.skipped.columns) == ["file", "reason"]
    assert list(loaded.skipped["file"]) == [str(awkward / n) for n in sorted(BAD)]  # in the input's order
    for name, expected in BAD.items():
        assert expected in reasons[name], (name, reasons[name])
    assert reasons == {
        "zero_bytes.jpg": "empty file (0 bytes)",
        "truncated.jpg": reasons["truncated.jpg"],  # PIL's own words, after this prefix:
        "random_bytes.jpg": "not an image PIL can identify (wrong format or random bytes)",
        "text.png": "not an image PIL can identify (wrong format or random bytes)",
        "folder.jpg": "is a directory, not an image file",
        "bomb.png": f"10000x10000 pixels is over PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}",
    }
    assert reasons["truncated.jpg"].startswith("cannot decode: ")
    # each kept row is the same image decoded alone (compaction kept the order)
    for row, index in enumerate(loaded.kept):
        np.testing.assert_array_equal(loaded.images[row], decode_image(awkward / names[index], (24, 32)))


def left_right(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = image.shape[1]
    return image[:, : w // 4].reshape(-1, 3).mean(0), image[:, -w // 4 :].reshape(-1, 3).mean(0)


def test_exif_rotated_jpeg_comes_out_upright(awkward):
    image = decode_image(awkward / "exif_rotated.jpg", (40, 80))
    left, right = left_right(image)
    assert left[0] > 150 and left[2] < 80, left  # red on the left
    assert right[2] > 150 and right[0] < 80, right  # blue on the right


def test_cmyk_and_palette_keep_their_colours(awkward):
    for name in ("cmyk.jpg", "palette.gif"):
        left, right = left_right(decode_image(awkward / name, (40, 80)))
        assert left[0] > 150 and right[2] > 150, (name, left, right)


def test_rgba_is_composited_on_white(awkward):
    image = decode_image(awkward / "rgba.png", (40, 40))
    np.testing.assert_array_equal(image[5, 5], [255, 255, 255])  # transparent -> background
    np.testing.assert_array_equal(image[5, 35], [0, 0, 255])


def test_16_bit_gray_is_rescaled_not_clipped(awkward):
    image = decode_image(awkward / "gray16.png", (16, 64))
    row = image[8, :, 0].astype(int)
    assert row[0] <= 5 and row[-1] >= 250
    assert 100 < row[32] < 160  # mid-grey, not white
    assert np.all(np.diff(row) >= 0)


def test_tiny_and_extreme_aspect_images_are_resized(awkward):
    one = decode_image(awkward / "one_pixel.png", (8, 8))
    assert one.shape == (8, 8, 3) and np.all(one == [10, 200, 30])
    wide = decode_image(awkward / "wide.png", (8, 8))
    assert wide.shape == (8, 8, 3) and np.all(np.abs(wide.astype(int) - [200, 200, 0]) <= 1)


def test_jpeg_draft_decoding_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (15, 20, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    import cv2

    fast = decode_image(tmp_path / "big.jpg", (60, 80)).astype(int)
    with Image.open(tmp_path / "big.jpg") as im:
        full = cv2.resize(np.asarray(im.convert("RGB")), (80, 60), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(fast - full).mean() < 3.0


def test_jpeg_over_the_bomb_limit_is_skipped_not_decoded(tmp_path):
    from vit_flowers.images import UnreadableImage

    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) + 100
    Image.new("RGB", (side, side), (10, 20, 30)).save(tmp_path / "huge.jpg", quality=30)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(UnreadableImage, match="decompression-bomb"):
        decode_image(tmp_path / "huge.jpg", (32, 32))


# ------------------------------------------------------------- reduced-scale JPEG decoding
def test_jpeg_size_reads_the_frame_header(tmp_path):
    from vit_flowers.images import jpeg_size

    exif = Image.Exif()
    exif[0x0112] = 6
    for name, options in [("plain.jpg", {}), ("progressive.jpg", {"progressive": True}),
                          ("exif.jpg", {"exif": exif}), ("gray.jpg", {})]:
        image = Image.new("L" if name.startswith("gray") else "RGB", (123, 45), 90)
        image.save(tmp_path / name, quality=80, **options)
        assert jpeg_size((tmp_path / name).read_bytes()) == (45, 123), name  # as stored, before the EXIF turn
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None  # cut before the frame header
    assert jpeg_size(b"\xff\xd8not a marker at all") is None


@pytest.mark.parametrize("stored, size, scale", [
    ((240, 320), (224, 224), 1),  # a 224 px model on flower_photos: no reduction (it would upsample)
    ((240, 320), (64, 64), 2),  # the shipped 64 px model: half size (120 x 160), not a quarter (60 < 64)
    ((240, 320), (96, 96), 2),
    ((240, 320), (120, 120), 2),  # exactly half
    ((240, 320), (121, 121), 1),
    ((768, 1024), (96, 96), 8),
    ((1024, 768), (48, 96), 8),  # either way round: the longer side of the target against the shorter photo side
    ((500, 4000), (64, 64), 4),
    (None, (64, 64), 1),
])
def test_reduced_scale_only_where_the_target_is_at_most_half_the_photo(stored, size, scale):
    from vit_flowers.images import reduced_scale

    assert reduced_scale(stored, size) == scale


def test_reduced_decoding_is_close_to_a_full_decode_and_shrink(tmp_path):
    """On a real-looking photo (smooth areas and edges), decoding at half scale
    then shrinking differs from the full decode shrunk by area averaging by
    about one grey level on average."""
    import cv2

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3)).astype(np.uint8), (0, 0), 3)
    base[60:180, 100:220] = (200, 40, 40)  # a sharp-edged patch
    Image.fromarray(base).save(tmp_path / "photo.jpg", quality=90)
    fast = decode_image(tmp_path / "photo.jpg", (64, 64)).astype(int)
    with Image.open(tmp_path / "photo.jpg") as im:
        full = cv2.resize(np.asarray(im.convert("RGB")), (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(fast - full).mean() < 2.0
    assert np.abs(fast - full).max() < 40
    # at 224 the same photo is decoded at full size: the loader equals a full decode resized bilinearly
    exact = decode_image(tmp_path / "photo.jpg", (224, 224))
    with Image.open(tmp_path / "photo.jpg") as im:
        bilinear = cv2.resize(cv2.imdecode(np.fromfile(tmp_path / "photo.jpg", np.uint8), cv2.IMREAD_COLOR_RGB),
                              (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(exact, bilinear)


def test_reduced_decoding_turns_by_exif_and_keeps_colours(tmp_path):
    """Every EXIF orientation at a reduced scale (a 4x photo for a quarter-size
    target): upright, RGB not BGR."""
    from test_decoders import HEIGHT, WIDTH, assert_upright, stored, write

    for orientation in range(1, 9):
        big = np.kron(stored(orientation), np.ones((4, 4, 1), np.uint8))
        path = write(tmp_path / f"big{orientation}.jpg", big, orientation, quality=95)
        assert_upright(decode_image(path, (HEIGHT // 2, WIDTH // 2)))  # 192 >= 4 x 32: a quarter-scale decode
        assert_upright(decode_image(path, (HEIGHT, WIDTH)))  # 192 >= 2 x 64: half scale


def sof_segment(height: int, width: int) -> bytes:
    """A baseline frame header (SOF0) for a 3-component photo."""
    return (b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03"
            + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01")


def test_jpeg_size_reads_sides_over_255_and_long_segments(tmp_path):
    """Both bytes of each side, and segments of 256 bytes or more (a long
    comment, a big EXIF block) skipped by their two-byte length."""
    from vit_flowers.images import jpeg_size

    exif = Image.Exif()
    exif[0x010E] = "a long description " * 40  # ImageDescription: EXIF of over 700 bytes
    Image.new("RGB", (300, 260), 90).save(tmp_path / "big.jpg", quality=50, comment=b"c" * 1000, exif=exif)
    data = (tmp_path / "big.jpg").read_bytes()
    assert data.index(b"\xff\xfe") < data.index(b"\xff\xc0")  # the comment is before the frame header
    assert jpeg_size(data) == (260, 300)
    assert jpeg_size(b"\xff\xd8" + sof_segment(0x1234, 0xABCD) + b"\xff\xd9") == (0x1234, 0xABCD)


@pytest.mark.parametrize("inserted", [b"\xff", b"\xff\x01", b"\xff\xd0", b"\xff\xd7", b"\xff\xd8"])
def test_jpeg_size_skips_fill_bytes_and_markers_without_a_length(tmp_path, inserted):
    """A fill byte (0xFF before a marker) and the markers that have no length
    (TEM, RST0-RST7, SOI) between the start and the frame header."""
    from vit_flowers.images import jpeg_size

    Image.new("RGB", (123, 45), 90).save(tmp_path / "plain.jpg", quality=80)
    data = (tmp_path / "plain.jpg").read_bytes()
    sof = data.index(b"\xff\xc0")
    assert jpeg_size(data[:2] + inserted + data[2:]) == (45, 123)  # after the start marker
    assert jpeg_size(data[:sof] + inserted + data[sof:]) == (45, 123)  # just before the frame header


def test_jpeg_size_needs_the_frame_header_up_to_its_component_count():
    from vit_flowers.images import jpeg_size

    sof = sof_segment(300, 400)
    assert jpeg_size(b"\xff\xd8" + sof[:10]) == (300, 400)  # marker, length, precision, sides, component count
    assert jpeg_size(b"\xff\xd8" + sof[:9]) is None  # cut before the component count
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10" + b"\x00" * 14 + sof[:9]) is None  # the same after a segment
    assert jpeg_size(b"\xff\xd8") is None and jpeg_size(b"") is None


def test_opencv_without_a_target_decodes_at_full_size(tmp_path):
    import cv2

    from vit_flowers.images import _opencv_jpeg

    Image.fromarray(np.random.default_rng(2).integers(0, 255, (240, 320, 3), np.uint8)).save(tmp_path / "p.jpg")
    data = (tmp_path / "p.jpg").read_bytes()
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    np.testing.assert_array_equal(_opencv_jpeg(data), full)
    assert _opencv_jpeg(data, (64, 64)).shape == (120, 160, 3)
    assert _opencv_jpeg(data + b"trailer") is None and _opencv_jpeg(b"\x89PNG" + data[4:]) is None


def test_jpeg_looking_junk_is_left_to_pil(tmp_path):
    """JPEG start and end markers around junk: no frame header, OpenCV cannot
    read it, PIL gives the reason."""
    from vit_flowers.images import UnreadableImage, _opencv_jpeg

    junk = b"\xff\xd8\xff" + b"\x00" * 50 + b"\xff\xd9"
    assert _opencv_jpeg(junk, (32, 32)) is None
    (tmp_path / "junk.jpg").write_bytes(junk)
    with pytest.raises(UnreadableImage) as refused:
        decode_image(tmp_path / "junk.jpg", (32, 32))
    assert str(refused.value) == "not an image PIL can identify (wrong format or random bytes)"


def test_a_large_output_array_is_mapped_whole_and_behaves_as_any_array(tmp_path, monkeypatch):
    import vit_flowers.images as images

    big = images.new_image_array((images.POPULATE_BYTES // (32 * 32 * 3) + 1, 32, 32, 3))
    assert big.dtype == np.uint8 and big.flags.c_contiguous and big.flags.writeable
    big[-1] = 7
    assert int(big[-1].sum()) == 7 * 32 * 32 * 3
    small = images.new_image_array((2, 4, 4, 3))
    assert small.flags.owndata  # a plain np.empty below the threshold
    # the loader's rows are the same whichever way the array was made
    rng = np.random.default_rng(2)
    paths = []
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{k}.png")
        paths.append(tmp_path / f"{k}.png")
    plain = load_images(paths, (24, 32), progress=False).images
    monkeypatch.setattr(images, "POPULATE_BYTES", 1)  # every array mapped
    mapped = load_images(paths + [tmp_path / "missing.png"], (24, 32), progress=False)
    assert not mapped.images.flags.owndata and mapped.kept.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(mapped.images, plain)


def resident_bytes(array: np.ndarray) -> int:
    """How much of the mapping that holds `array` is in memory now (Linux's /proc/self/smaps)."""
    address = array.__array_interface__["data"][0]
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "Rss:":
            return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the array")


def mapping_of(array: np.ndarray):
    import mmap

    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads page residency from Linux's /proc/self/smaps")
def test_a_large_array_is_a_private_mapping_with_its_pages_made(monkeypatch):
    """From POPULATE_BYTES on, the array is an anonymous mapping whose pages
    are all in memory before anything is written (MAP_POPULATE); one byte
    less is a plain np.empty."""
    import vit_flowers.images as images

    monkeypatch.setattr(images, "POPULATE_BYTES", 8 << 20)
    rows = (8 << 20) // (32 * 32 * 3)  # 2730 rows: just under 8 MiB
    exact = images.new_image_array((8 << 20,))
    assert mapping_of(exact) is not None and exact.shape == (8 << 20,) and exact.dtype == np.uint8
    assert resident_bytes(exact) >= 8 << 20
    big = images.new_image_array((rows + 1, 32, 32, 3))
    assert mapping_of(big) is not None and big.shape == (rows + 1, 32, 32, 3)
    assert resident_bytes(big) >= big.nbytes
    smaller = images.new_image_array(((8 << 20) - 1,))
    assert mapping_of(smaller) is None and smaller.flags.owndata and smaller.dtype == np.uint8


def test_a_large_array_falls_back_to_numpy_when_it_cannot_be_mapped(monkeypatch):
    import mmap

    import vit_flowers.images as images

    def no_room(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(images, "POPULATE_BYTES", 1)
    monkeypatch.setattr(mmap, "mmap", no_room)
    array = images.new_image_array((3, 4, 5, 3))
    assert array.shape == (3, 4, 5, 3) and array.dtype == np.uint8 and array.flags.owndata


def test_a_palette_with_alpha_of_its_own_is_composited_on_white():
    """A palette image whose palette holds the alpha (as PIL opens a TGA with
    a 16-bit colour map), with no `transparency` entry: the transparent entry
    becomes white, the opaque one keeps its colour."""
    from vit_flowers.images import _to_rgb

    image = Image.new("P", (2, 1))
    image.putpalette(bytes([255, 0, 0, 0, 0, 255, 0, 255]), "RGBA")  # entry 0: transparent red, 1: opaque green
    image.putpixel((1, 0), 1)
    assert "transparency" not in image.info
    np.testing.assert_array_equal(np.asarray(_to_rgb(image)), [[[255, 255, 255], [0, 255, 0]]])


def test_a_system_without_map_populate_gets_a_plain_array(monkeypatch):
    import mmap

    import vit_flowers.images as images

    monkeypatch.setattr(images, "POPULATE_BYTES", 1)
    monkeypatch.delattr(mmap, "MAP_POPULATE", raising=False)
    array = images.new_image_array((3, 4, 5, 3))
    assert array.shape == (3, 4, 5, 3) and array.dtype == np.uint8 and array.flags.owndata


def test_the_none_readable_line_names_the_count_the_first_file_its_reason_and_the_report():
    """The one line predict and plot end with when no input could be read."""
    import pandas as pd

    from vit_flowers.images import none_readable_message

    skipped = pd.DataFrame({"file": ["a/x.jpg", "b/y.png"], "reason": ["truncated file", "not an image"]})
    assert none_readable_message(skipped, Path("out") / "skipped_files.csv") == (
        "none of the 2 input files could be read (first: a/x.jpg: truncated file); "
        "the reasons are in out/skipped_files.csv")
