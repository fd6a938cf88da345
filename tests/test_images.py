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
