"""Decoding into one uint8 array: sizes, colours, orientation, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vit_flowers.images import decode_image, load_images

from awkward import BAD, GOOD, make_awkward_folder


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
    for name, expected in BAD.items():
        assert expected in reasons[name], (name, reasons[name])
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
