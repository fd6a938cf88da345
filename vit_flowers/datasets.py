"""tf.data pipelines: augment, preprocess as vit_keras expects, batch.

Images travel as uint8 until the last step, where `vit.preprocess_inputs`
scales them to [-1, 1]. Augmentation is the seed's ImageDataGenerator
(flips, small rotations and zooms) as Keras preprocessing layers; `strong`
adds translation and contrast for training from scratch; `crop` zooms into
the model-size image with Keras layers (random zoom, shifts, flips, small
rotations, brightness / contrast / less saturation). `resized-crop` is the
one for training from scratch on real photos: Inception-style random resized
crops (`tf.image.stateless_sample_distorted_bounding_box`) cut from images
kept larger than the model's input, so a crop keeps its detail instead of
being an upsampled corner, then flips and colour jitter (brightness,
contrast, saturation both ways; hue is left alone, as colour tells these
flowers apart), every draw seeded by the example's position in the stream.
MixUp mixes pairs of examples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

AUGMENTATIONS = ("none", "seed", "strong", "crop", "resized-crop")
# the area share and aspect ratio range of a resized crop (Inception / torchvision use 0.08-1;
# small images lose the flower at 0.08)
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
COLOUR_JITTER = 0.2


def preprocess(images):
    """uint8 RGB -> float32 in [-1, 1], as vit_keras' `preprocess_inputs`
    (mode "tf": x / 127.5 - 1), in TensorFlow ops so that it runs inside
    tf.data whatever the Keras backend."""
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 127.5 - 1.0


def augmenter(kind: str, seed: int) -> list:
    """Keras preprocessing layers for `kind` (none, seed, strong, crop).

    A plain list, applied one by one: each layer then runs on TensorFlow
    inside tf.data even on the JAX backend (a Sequential would not).
    """
    import keras

    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTATIONS}")
    if kind in ("none", "resized-crop"):  # resized-crop is not a layer stack: `resized_crop_example`
        return []
    if kind == "crop":
        return crop_layers(seed)
    layers = [
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
    ]
    if kind == "strong":
        layers += [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            keras.layers.RandomContrast(0.2, seed=seed + 4),
        ]
    return layers


def apply_layers(x, layers: list):
    """Run augmentation layers in training mode, in order."""
    for layer in layers:
        x = layer(x, training=True)
    return x


def crop_layers(seed: int) -> list:
    """Random resized crop + flip + rotation + colour jitter, on 0..255 floats.

    The crop is a zoom in of 0-50% of each side drawn separately for height
    and width (so the aspect ratio varies too), moved by up to 15% of the
    side; borders it uncovers are reflected.
    """
    import keras

    return [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom((-0.5, 0.0), (-0.5, 0.0), fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomTranslation(0.15, 0.15, fill_mode="reflect", seed=seed + 3),
        keras.layers.RandomBrightness(0.2, value_range=(0.0, 255.0), seed=seed + 4),
        keras.layers.RandomContrast(0.2, seed=seed + 5),
        # desaturate only: Keras 3.15's RandomSaturation above 0.5 pushes
        # saturated pixels below 0 (it does not clip the saturation to 1)
        keras.layers.RandomSaturation((0.3, 0.5), value_range=(0.0, 255.0), seed=seed + 6),
    ]


def resized_crop_example(image, size: tuple[int, int], seed):
    """One random resized crop of `image` (uint8 HxWx3), flipped and colour
    jittered, as float32 0..255 at `size`. `seed` is a stateless seed pair:
    the same pair gives the same crop, whatever the engine or a resume."""
    import tensorflow as tf

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


def augment_example(image, augment: str, layers: list, output_size: tuple[int, int], seed: int, draw):
    """A training example's augmentation, float32 0..255: a resized crop of
    `output_size` seeded by (seed, draw), or the Keras `layers` in order."""
    import tensorflow as tf

    if augment == "resized-crop":
        return resized_crop_example(image, output_size, tf.stack([tf.cast(seed, tf.int64), tf.cast(draw, tf.int64)]))
    return apply_layers(tf.cast(image, tf.float32), layers)


def check_output_size(stored: tuple[int, int], output_size: tuple[int, int] | None, augment: str) -> tuple[int, int]:
    """The size examples leave at: `output_size`, which only a resized crop
    can make differ from the size the images are stored at."""
    size = tuple(output_size or stored)
    if size != tuple(stored) and augment != "resized-crop":
        raise ValueError(f"images of {tuple(stored)} need augment 'resized-crop' to reach {size}")
    return size


def mixup_pair(a, b, alpha: float, seed):
    """MixUp of two examples (image, one-hot label) with a Beta(alpha, alpha) weight."""
    import tensorflow as tf

    (xa, ya), (xb, yb) = a, b
    seed = tf.cast(seed, tf.int32)
    g1 = tf.random.stateless_gamma([], seed=tf.stack([seed, 1]), alpha=alpha)
    g2 = tf.random.stateless_gamma([], seed=tf.stack([seed, 2]), alpha=alpha)
    lam = g1 / (g1 + g2)
    return xa * lam + xb * (1 - lam), ya * lam + yb * (1 - lam)


def epoch_orders(num_examples: int, per_epoch: int, seed: int, start_epoch: int = 0):
    """An endless stream of example indices: epoch e is the first `per_epoch`
    of a permutation drawn statelessly from (seed, e).

    Stateless, so the order does not depend on the engine (a distribution
    strategy clones the input pipeline and would re-seed a `shuffle`) and a
    resumed run sees the epochs an uninterrupted run would have seen.
    """
    import tensorflow as tf

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order[:per_epoch])

    return tf.data.Dataset.counter(start=start_epoch).flat_map(one_epoch)


def _training_examples(images: np.ndarray, onehot: np.ndarray, per_epoch: int, augment: str, seed: int,
                       start_epoch: int, output_size: tuple[int, int]):
    """Augmented, preprocessed (image, label) examples in epoch order, endless."""
    import tensorflow as tf

    height, width = images.shape[1:3]
    table = tf.constant(onehot)
    layers = augmenter(augment, seed)

    def fetch(index, position):
        image = tf.numpy_function(lambda i: images[i], [index], tf.uint8)
        image.set_shape((height, width, 3))
        x = augment_example(image, augment, layers, output_size, seed, position)
        return preprocess(x), tf.gather(table, index)

    orders = epoch_orders(len(images), per_epoch, seed, start_epoch)
    # the example's position in the whole stream seeds its crop: a resumed run draws the same ones
    positions = tf.data.Dataset.counter(start=start_epoch * per_epoch)
    return tf.data.Dataset.zip((orders, positions)).map(fetch, num_parallel_calls=tf.data.AUTOTUNE)


def array_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    num_classes: int,
    batch_size: int,
    training: bool = False,
    augment: str = "none",
    mixup_alpha: float = 0.0,
    seed: int = 0,
    drop_remainder: bool = False,
    start_epoch: int = 0,
    output_size: tuple[int, int] | None = None,
):
    """Batches of (preprocessed images, one-hot labels) from a uint8 array.

    For evaluation: one pass in order. For training: an endless stream of
    `len(images) // batch_size` full batches per epoch (fit it with
    `steps_per_epoch`), in a fresh seeded order every epoch, augmented;
    MixUp pairs each example with one from a second order. `output_size`
    (training with `resized-crop`) is the model's input when the images are
    kept larger; by default the images' own size. Every step works
    on single examples and batching comes last, so that Keras' distribution
    API can read the batch size and shard the stream.
    """
    import tensorflow as tf

    onehot = None if labels is None else np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]
    if not training:
        ds = tf.data.Dataset.from_tensor_slices(images if onehot is None else (images, onehot))

        def transform(x, y=None):
            x = preprocess(x)
            return x if y is None else (x, y)

        ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

    if onehot is None:
        raise ValueError("training needs labels")
    size = check_output_size(images.shape[1:3], output_size, augment)
    per_epoch = (len(images) // batch_size) * batch_size
    ds = _training_examples(images, onehot, per_epoch, augment, seed, start_epoch, size)
    if mixup_alpha > 0:
        partners = _training_examples(images, onehot, per_epoch, augment, seed + 7919, start_epoch, size)
        counter = tf.data.Dataset.counter(start=(seed * 1_000_003 + start_epoch * per_epoch))
        ds = tf.data.Dataset.zip((ds, partners, counter)).map(
            lambda a, b, step: mixup_pair(a, b, mixup_alpha, step), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def file_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    num_classes: int,
    image_size: tuple[int, int],
    batch_size: int,
    skipped: list[tuple[str, str]],
    training: bool = False,
    augment: str = "none",
    seed: int = 0,
    output_size: tuple[int, int] | None = None,
):
    """Stream a list too large for memory: decode with PIL in parallel.

    Files that fail to decode are dropped from the stream and appended to
    `skipped` as (file, reason), so the caller can report them. Images are
    decoded at `image_size`; training with `resized-crop` cuts crops of
    `output_size` (the model's input) from them.
    """
    import tensorflow as tf

    from .images import UnreadableImage, decode_image

    height, width = image_size
    paths = [str(p) for p in paths]

    def load(index):
        i = int(index)
        try:
            return decode_image(paths[i], (height, width)), True
        except UnreadableImage as err:
            skipped.append((paths[i], str(err)))
            return np.zeros((height, width, 3), np.uint8), False

    def tf_load(index):
        image, ok = tf.numpy_function(load, [index], [tf.uint8, tf.bool])
        image.set_shape((height, width, 3))
        ok.set_shape(())
        return index, image, ok

    ds = tf.data.Dataset.range(len(paths))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE).filter(lambda index, image, ok: ok)
    augment = augment if training else "none"
    layers = augmenter(augment, seed)
    size = check_output_size(image_size, output_size, augment)
    onehot = None if labels is None else tf.constant(np.eye(num_classes, dtype=np.float32)[np.asarray(labels)])

    def finish(index, image, ok, draw):
        x = preprocess(augment_example(image, augment, layers, size, seed, draw))
        return x if onehot is None else (x, tf.gather(onehot, index))

    # one seeded random number per example (new ones each pass) seeds its crop
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, draws)).map(lambda item, draw: finish(*item, draw),
                                              num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
