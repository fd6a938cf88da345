"""Augmentations are pure functions of the image and a seed, and draw what
their policy says."""

from __future__ import annotations

import numpy as np
import pytest

from vit_flowers.augment import POLICIES, Policy, apply_policy, augment_example


def _image(size: int = 24) -> np.ndarray:
    """A picture with no symmetry: a gradient, and a red block in the top-left corner."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 64.0)], axis=-1)
    image[: size // 4, : size // 4] = (255, 0, 0)
    return image.astype(np.float32)


def _draws(rule: Policy, image: np.ndarray, n: int, seed: int = 5) -> list[np.ndarray]:
    return [np.asarray(apply_policy(image, rule, np.array([seed, k], np.int64))) for k in range(n)]


@pytest.mark.parametrize("kind", ["basic", "strong", "crop", "resized-crop"])
def test_the_same_seed_and_place_give_the_same_draw(kind):
    image = _image().astype(np.uint8)

    def draw(seed, place):
        return np.asarray(augment_example(image, kind, (24, 24), seed, place))

    first = draw(3, 10)
    np.testing.assert_array_equal(first, draw(3, 10))
    assert not np.array_equal(first, draw(3, 11)) and not np.array_equal(first, draw(4, 10))
    assert first.shape == (24, 24, 3) and first.min() >= 0 and first.max() <= 255


def test_flips_are_exact_and_drawn_both_ways_about_half_the_time():
    image = _image()
    draws = _draws(Policy(flip_horizontal=True), image, 40)
    mirrored = [np.array_equal(d, image[:, ::-1]) for d in draws]
    kept = [np.array_equal(d, image) for d in draws]
    assert all(m or k for m, k in zip(mirrored, kept))  # a flip moves whole pixels, nothing blurred
    assert 10 <= sum(mirrored) <= 30
    upside_down = [np.array_equal(d, image[::-1]) for d in _draws(Policy(flip_vertical=True), image, 40)]
    assert 10 <= sum(upside_down) <= 30


def test_rotations_and_zooms_turn_about_the_centre_within_their_range():
    size = 33
    image = np.zeros((size, size, 3), np.float32)
    image[16, 16] = 255.0  # one bright pixel in the centre stays there
    image[16, 28] = 255.0  # one 12 pixels right of it moves on a circle
    rule = Policy(rotate=0.05)  # at most 18 degrees
    angles = []
    for draw in _draws(rule, image, 30):
        assert draw[15:18, 15:18, 0].max() > 100
        ring = draw[..., 0].copy()
        ring[13:20, 13:20] = 0
        y, x = np.unravel_index(np.argmax(ring), ring.shape)
        assert abs(np.hypot(x - 16, y - 16) - 12) <= 1.5
        angles.append(np.degrees(np.arctan2(y - 16, x - 16)))
    assert max(np.abs(angles)) <= 18 + 5 and np.ptp(angles) > 15  # both ways, never beyond the range
    zoomed = _draws(Policy(zoom=(-0.5, -0.5)), image, 1)[0]  # sample half of each side: twice as large
    ring = zoomed[..., 0].copy()
    ring[10:23, 10:23] = 0
    assert ring.max() == 0  # the outer pixel left the frame (24 from the centre)


def test_crop_only_ever_desaturates():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    rule = Policy(saturation=POLICIES["crop"].saturation)

    def saturation(x):
        return float(np.mean(x.max(axis=-1) - x.min(axis=-1)))

    values = [saturation(d) for d in _draws(rule, image, 20)]
    assert max(values) <= saturation(image) * 1.001 and min(values) < saturation(image) * 0.9


def test_a_resumed_stream_draws_the_same_augmentations_for_every_policy():
    from vit_flowers.datasets import array_dataset

    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    for kind in ("basic", "strong", "crop"):
        def batches(start_epoch, kind=kind):
            ds = array_dataset(images, np.arange(6) % 3, 3, batch_size=4, training=True, augment=kind, seed=1,
                               start_epoch=start_epoch)
            return [np.asarray(x) for x, _ in ds.take(2)]

        np.testing.assert_array_equal(batches(0)[1], batches(1)[0])  # epoch 1 starts at batch 2
