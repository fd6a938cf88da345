"""Training augmentations, each a pure function of an image and a seed.

Every draw (a flip, an angle, a zoom, a crop, a colour change) comes from
TensorFlow's stateless random ops, seeded by the run's seed and the example's
place in the training stream. So the same run draws the same augmentations
whatever the engine (one device, MirroredStrategy, JAX over several
processes), and a resumed run draws exactly those an uninterrupted run would
have drawn: no random state lives outside the stream. (Keras' preprocessing
layers keep a stateful seed generator, which a resume restarts and which the
JAX engine does not reproduce from run to run.)

The policies:

- `basic`, the source post's ImageDataGenerator: flips both ways, rotations
  up to 18 degrees (Keras' `RandomRotation(0.05)`), zooms of +-10%, borders
  reflected;
- `strong`: `basic` and shifts up to 10% of each side, contrast +-20%;
- `crop`: a horizontal flip, rotations up to 18 degrees, zooms into 50-100%
  of each side drawn separately (so the aspect ratio varies), shifts up to
  15%, brightness and contrast +-20%, less saturation (never more: colour
  tells these flowers apart);
- `resized-crop`: Inception-style random resized crops
  (`tf.image.stateless_sample_distorted_bounding_box`, 25-100% of the area,
  aspect 3:4 to 4:3) cut from images kept larger than the model's input, so
  a crop keeps its detail, then a flip and colour jitter both ways (hue left
  alone).

Any of them may be followed by RandAugment-style operations (`rand_augment`:
N operations per image drawn from RAND_OPS, at one strength), seeded apart.

Rotations, zooms, shifts and flips are one affine map per image, applied
with the projective-transform kernel Keras' own layers use on TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from .config import AUGMENTATION_ALIASES, AUGMENTATIONS

# the area share and aspect ratio range of a resized crop (Inception / torchvision use 0.08-1;
# small images lose the flower at 0.08)
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
COLOUR_JITTER = 0.2
# seeds drawn per example: flips, angle, zoom (4), colour (3), shift (1)
_DRAWS = 8


@dataclass(frozen=True)
class Policy:
    """What one augmentation policy draws for each image."""

    flip_horizontal: bool = False
    flip_vertical: bool = False
    rotate: float = 0.0  # largest angle, as a share of a full turn (Keras' RandomRotation factor)
    zoom: tuple[float, float] = (0.0, 0.0)  # scale of the sampled area - 1: negative zooms in
    zoom_each_axis: bool = False  # draw height and width zooms separately
    translate: float = 0.0  # largest shift, as a share of each side
    brightness: float = 0.0  # largest shift of the 0..1 values
    contrast: float = 0.0  # largest relative change of the contrast
    saturation: tuple[float, float] = (1.0, 1.0)  # range of the saturation factor


POLICIES: dict[str, Policy] = {
    "none": Policy(),
    "basic": Policy(flip_horizontal=True, flip_vertical=True, rotate=0.05, zoom=(-0.1, 0.1)),
    "strong": Policy(flip_horizontal=True, flip_vertical=True, rotate=0.05, zoom=(-0.1, 0.1), translate=0.1,
                     contrast=0.2),
    # saturation 3/7..1: Keras' RandomSaturation((0.3, 0.5)), which only ever desaturates
    "crop": Policy(flip_horizontal=True, rotate=0.05, zoom=(-0.5, 0.0), zoom_each_axis=True, translate=0.15,
                   brightness=0.2, contrast=0.2, saturation=(3 / 7, 1.0)),
}


def policy(kind: str) -> Policy:
    """The policy of an augmentation name (aliases taken); `resized-crop` has none."""
    kind = AUGMENTATION_ALIASES.get(kind, kind)
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")
    if kind == "resized-crop":
        raise ValueError("resized-crop is not a policy: use `augment_example`")
    return POLICIES[kind]


def _uniform(seed, low: float, high: float, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high, dtype=tf.float32)


def _sign(seed):
    """+1 or -1 with equal chance."""
    return tf.where(_uniform(seed, 0.0, 1.0) < 0.5, -1.0, 1.0)


def affine_transform(rule: Policy, height: int, width: int, seeds):
    """The 8 numbers of TensorFlow's projective transform (output pixel ->
    input pixel) for one random flip, rotation, zoom and shift about the
    image's centre."""
    one = tf.constant(1.0)
    flip_x = _sign(seeds[0]) if rule.flip_horizontal else one
    flip_y = _sign(seeds[1]) if rule.flip_vertical else one
    angle = _uniform(seeds[2], -rule.rotate * 2 * math.pi, rule.rotate * 2 * math.pi)
    zooms = 1.0 + _uniform(seeds[3], rule.zoom[0], rule.zoom[1], shape=(2,))
    zoom_y, zoom_x = (zooms[0], zooms[1]) if rule.zoom_each_axis else (zooms[0], zooms[0])
    shift = _uniform(seeds[7], -rule.translate, rule.translate, shape=(2,))
    cos, sin = tf.cos(angle), tf.sin(angle)
    # M = rotation @ zoom @ flip, in (x, y) pixel coordinates
    m00, m01 = cos * zoom_x * flip_x, -sin * zoom_y * flip_y
    m10, m11 = sin * zoom_x * flip_x, cos * zoom_y * flip_y
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    tx, ty = shift[1] * width, shift[0] * height
    return tf.stack([m00, m01, cx + tx - m00 * cx - m01 * cy,
                     m10, m11, cy + ty - m10 * cx - m11 * cy, 0.0, 0.0])


def apply_policy(image, rule: Policy, seed):
    """One augmented draw of `image` (float32 HxWx3 in 0..255) under `rule`,
    seeded by a stateless seed pair; float32 0..255."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=_DRAWS)
    x = image
    geometric = (rule.flip_horizontal or rule.flip_vertical or rule.rotate or rule.zoom != (0.0, 0.0)
                 or rule.translate)
    if geometric:
        height, width = image.shape[0], image.shape[1]
        transform = affine_transform(rule, height, width, seeds)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x[tf.newaxis], transforms=transform[tf.newaxis], output_shape=tf.constant([height, width]),
            fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")[0]
    colour = rule.brightness or rule.contrast or rule.saturation != (1.0, 1.0)
    if colour:
        x = x / 255.0
        if rule.brightness:
            x = tf.image.stateless_random_brightness(x, rule.brightness, seeds[4])
        if rule.contrast:
            x = tf.image.stateless_random_contrast(x, 1 - rule.contrast, 1 + rule.contrast, seeds[5])
        if rule.saturation != (1.0, 1.0):
            x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), rule.saturation[0],
                                                     rule.saturation[1], seeds[6])
        x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    return x


def resized_crop_example(image, size: tuple[int, int], seed):
    """One random resized crop of `image` (uint8 HxWx3), flipped and colour
    jittered, as float32 0..255 at `size`. `seed` is a stateless seed pair:
    the same pair gives the same crop, whatever the engine or a resume."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    x = tf.image.resize(tf.cast(tf.slice(image, begin, extent), tf.float32) / 255.0, size, antialias=True)
    x = tf.image.stateless_random_flip_left_right(x, seeds[1])
    x = tf.image.stateless_random_brightness(x, COLOUR_JITTER, seeds[2])
    x = tf.image.stateless_random_contrast(x, 1 - COLOUR_JITTER, 1 + COLOUR_JITTER, seeds[3])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 1 - COLOUR_JITTER, 1 + COLOUR_JITTER,
                                             seeds[4])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


# RandAugment-style operations (Cubuk et al. 2020), each at a strength 0..1
# scaled to its range below; no hue change, solarize or inversion (colour
# tells these flowers apart); equalize is left out (no TensorFlow op)
RAND_OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast",
            "colour", "sharpness", "posterize", "autocontrast")
RAND_ROTATE = 30.0  # degrees at strength 1
RAND_SHEAR = 0.3
RAND_TRANSLATE = 0.3  # share of the side
RAND_FACTOR = 0.9  # brightness, contrast, colour, sharpness: factors 1 +- 0.9


def _transformed(x, transform):
    """`x` (HxWx3) through one projective transform, borders reflected."""
    height, width = x.shape[0], x.shape[1]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x[tf.newaxis], transforms=tf.cast(transform, tf.float32)[tf.newaxis],
        output_shape=tf.constant([height, width]), fill_value=0.0, interpolation="BILINEAR",
        fill_mode="REFLECT")[0]


def _blend(x, other, factor):
    """other + factor * (x - other), in 0..255: PIL's ImageEnhance."""
    return tf.clip_by_value(other + factor * (x - other), 0.0, 255.0)


def rand_augment_op(x, index, strength, signed):
    """RandAugment's operation number `index` (of RAND_OPS) on `x` (float32
    HxWx3 in 0..255) at `strength` (0..1) in the direction `signed` (+1/-1)."""
    height, width = x.shape[0], x.shape[1]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    amount = strength * signed
    grey = tf.image.rgb_to_grayscale(x)

    def rotate():
        angle = amount * RAND_ROTATE * math.pi / 180.0
        cos, sin = tf.cos(angle), tf.sin(angle)
        return _transformed(x, tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy,
                                         0.0, 0.0]))

    def shear(axis):
        k = amount * RAND_SHEAR
        if axis == 0:
            return lambda: _transformed(x, tf.stack([1.0, k, -k * cy, 0.0, 1.0, 0.0, 0.0, 0.0]))
        return lambda: _transformed(x, tf.stack([1.0, 0.0, 0.0, k, 1.0, -k * cx, 0.0, 0.0]))

    def translate(axis):
        if axis == 0:
            return lambda: _transformed(x, tf.stack([1.0, 0.0, amount * RAND_TRANSLATE * width, 0.0, 1.0, 0.0, 0.0,
                                                     0.0]))
        return lambda: _transformed(x, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, amount * RAND_TRANSLATE * height, 0.0,
                                                 0.0]))

    factor = 1.0 + amount * RAND_FACTOR

    def sharpness():
        kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0  # PIL's SMOOTH
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
        blurred = tf.nn.depthwise_conv2d(tf.pad(x, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")[tf.newaxis], kernel,
                                         [1, 1, 1, 1], "VALID")[0]
        return _blend(x, blurred, factor)

    def posterize():
        shift = tf.cast(tf.round(strength * 4.0), tf.float32)  # keep 8 down to 4 bits
        step = tf.pow(2.0, shift)
        return tf.where(shift > 0, tf.floor(x / step) * step, x)

    def autocontrast():
        low = tf.reduce_min(x, axis=[0, 1], keepdims=True)
        high = tf.reduce_max(x, axis=[0, 1], keepdims=True)
        return tf.where(high > low, (x - low) * 255.0 / tf.maximum(high - low, 1e-3), x)

    branches = [
        lambda: x, rotate, shear(0), shear(1), translate(0), translate(1),
        lambda: _blend(x, tf.zeros_like(x), factor),
        lambda: _blend(x, tf.reduce_mean(grey) * tf.ones_like(x), factor),
        lambda: _blend(x, tf.tile(grey, [1, 1, 3]), factor),
        sharpness, posterize, autocontrast,
    ]
    assert len(branches) == len(RAND_OPS)
    return tf.switch_case(tf.cast(index, tf.int32), branches)


def rand_augment(x, ops: int, strength: float, seed):
    """`ops` operations of RAND_OPS drawn uniformly for this image, each at
    `strength` in a random direction, seeded by a stateless seed pair;
    float32 0..255 in and out."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2 * ops)
    for k in range(ops):
        index = tf.random.stateless_uniform([], seed=seeds[2 * k], maxval=len(RAND_OPS), dtype=tf.int32)
        shape = x.shape
        x = rand_augment_op(x, index, strength, _sign(seeds[2 * k + 1]))
        x.set_shape(shape)
    return x


def augment_example(image, augment: str, output_size: tuple[int, int], seed: int, draw, rand_ops: int = 0,
                    rand_strength: float = 0.5):
    """A training example's augmentation, float32 0..255, seeded by (seed,
    draw): a resized crop of `output_size`, or the named policy; then
    `rand_ops` RandAugment-style operations at `rand_strength`, drawn from
    a seed of their own (the policy's draws stay as they were without them)."""
    augment = AUGMENTATION_ALIASES.get(augment, augment)
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(draw, tf.int64)])
    if augment == "resized-crop":
        x = resized_crop_example(image, output_size, pair)
    else:
        rule = policy(augment)
        x = tf.cast(image, tf.float32)
        x = x if rule == POLICIES["none"] else apply_policy(x, rule, pair)
    if rand_ops:
        x = rand_augment(x, rand_ops, rand_strength, tf.random.experimental.stateless_fold_in(pair, 1))
    return x
