"""tf.data pipelines: augment, preprocess as vit_keras expects, batch.

Images travel as uint8 until the last step, where `vit.preprocess_inputs`
scales them to [-1, 1]. Training examples are augmented by `augment` (pure
functions of the image and a seed taken from the example's place in the
stream, so a resumed run and every engine see the same draws); MixUp and
CutMix mix pairs of examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from keras.utils import to_categorical

from . import images as image_files  # the module: `images` names arrays here
from .augment import augment_example
from .images import UnreadableImage


def preprocess(images):
    """uint8 RGB -> float32 in [-1, 1], as vit_keras' `preprocess_inputs`
    (mode "tf": x / 127.5 - 1), in TensorFlow ops so that it runs inside
    tf.data whatever the Keras backend."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def one_hot(labels, num_classes: int) -> np.ndarray:
    """Integer labels -> float32 one-hot rows (Keras' `to_categorical`)."""
    return to_categorical(np.asarray(labels), num_classes).astype(np.float32)


def check_output_size(stored: tuple[int, int], output_size: tuple[int, int] | None, augment: str) -> tuple[int, int]:
    """The size examples leave at: `output_size`, which only a resized crop
    can make differ from the size the images are stored at."""
    size = tuple(output_size or stored)
    if size != tuple(stored) and augment != "resized-crop":
        raise ValueError(f"images of {tuple(stored)} need augment 'resized-crop' to reach {size}")
    return size


def mixup_pair(a, b, alpha: float, seed):
    """MixUp of two examples (image, one-hot label) with a Beta(alpha, alpha) weight."""
    (xa, ya), (xb, yb) = a, b
    seed = tf.cast(seed, tf.int32)
    g1 = tf.random.stateless_gamma([], seed=tf.stack([seed, 1]), alpha=alpha)
    g2 = tf.random.stateless_gamma([], seed=tf.stack([seed, 2]), alpha=alpha)
    lam = g1 / (g1 + g2)
    return xa * lam + xb * (1 - lam), ya * lam + yb * (1 - lam)


def cutmix_pair(a, b, share: float, seed):
    """CutMix of two examples (image, one-hot label): with chance `share`, a
    box of a uniform share of the area, centred anywhere (clipped at the
    borders), is cut from b and pasted into a; the labels are mixed by the
    area each image keeps. Otherwise a is returned as it is."""
    (xa, ya), (xb, yb) = a, b
    height, width = xa.shape[0], xa.shape[1]
    u = tf.random.stateless_uniform([4], seed=tf.stack([tf.cast(seed, tf.int32), 3]))
    side = tf.sqrt(u[1])  # the box's sides, as shares of the image's: its area is uniform in 0..1
    half_h = tf.cast(tf.round(side * height / 2), tf.int32)
    half_w = tf.cast(tf.round(side * width / 2), tf.int32)
    cy = tf.cast(u[2] * height, tf.int32)
    cx = tf.cast(u[3] * width, tf.int32)
    y0, y1 = tf.maximum(cy - half_h, 0), tf.minimum(cy + half_h, height)
    x0, x1 = tf.maximum(cx - half_w, 0), tf.minimum(cx + half_w, width)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1) & (u[0] < share)
    mask = tf.cast(inside, xa.dtype)[:, :, None]
    kept = 1.0 - tf.reduce_mean(mask)  # the share of a left
    return xa * (1 - mask) + xb * mask, ya * kept + yb * (1 - kept)


def epoch_orders(num_examples: int, per_epoch: int, seed: int, start_epoch: int = 0):
    """An endless stream of example indices: epoch e is the first `per_epoch`
    of a permutation drawn statelessly from (seed, e).

    Stateless, so the order does not depend on the engine (a distribution
    strategy clones the input pipeline and would re-seed a `shuffle`) and a
    resumed run sees the epochs an uninterrupted run would have seen.
    """
    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order[:per_epoch])

    return tf.data.Dataset.counter(start=start_epoch).flat_map(one_epoch)


def _training_examples(images: np.ndarray, onehot: np.ndarray, per_epoch: int, augment: str, seed: int,
                       start_epoch: int, output_size: tuple[int, int], rand_ops: int = 0, rand_strength: float = 0.5):
    """Augmented, preprocessed (image, label) examples in epoch order, endless."""
    height, width = images.shape[1:3]
    table = tf.constant(onehot)

    def fetch(index, position):
        image = tf.numpy_function(lambda i: images[i], [index], tf.uint8)
        image.set_shape((height, width, 3))
        x = augment_example(image, augment, output_size, seed, position, rand_ops, rand_strength)
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
    cutmix: float = 0.0,
    rand_ops: int = 0,
    rand_strength: float = 0.5,
):
    """Batches of (preprocessed images, one-hot labels) from a uint8 array.

    For evaluation: one pass in order. For training: an endless stream of
    `len(images) // batch_size` full batches per epoch (fit it with
    `steps_per_epoch`), in a fresh seeded order every epoch, augmented;
    MixUp (or CutMix, on a `cutmix` share of the examples) pairs each example
    with one from a second order. `output_size`
    (training with `resized-crop`) is the model's input when the images are
    kept larger; by default the images' own size. `rand_ops` RandAugment-style
    operations at `rand_strength` follow the augmentation. Every step works
    on single examples and batching comes last, so that Keras' distribution
    API can read the batch size and shard the stream.
    """
    onehot = None if labels is None else one_hot(labels, num_classes)
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
    ds = _training_examples(images, onehot, per_epoch, augment, seed, start_epoch, size, rand_ops, rand_strength)
    if mixup_alpha > 0 and cutmix > 0:
        raise ValueError("MixUp or CutMix, not both")
    if mixup_alpha > 0 or cutmix > 0:
        partners = _training_examples(images, onehot, per_epoch, augment, seed + 7919, start_epoch, size, rand_ops,
                                      rand_strength)
        counter = tf.data.Dataset.counter(start=(seed * 1_000_003 + start_epoch * per_epoch))

        def pair(a, b, step):
            return mixup_pair(a, b, mixup_alpha, step) if mixup_alpha > 0 else cutmix_pair(a, b, cutmix, step)

        ds = tf.data.Dataset.zip((ds, partners, counter)).map(pair, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def feature_dataset(features: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                    training: bool = False, seed: int = 0, start_epoch: int = 0, drop_remainder: bool = False):
    """Batches of (stored features, one-hot labels) for `--cache-features`:
    for training, `len // batch_size` full batches an epoch in the order
    `array_dataset` draws for the same seed and epoch (`epoch_orders`); for
    evaluation, one pass in order."""
    onehot = one_hot(labels, num_classes)
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((features, onehot))
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    per_epoch = (len(features) // batch_size) * batch_size
    table_x, table_y = tf.constant(features), tf.constant(onehot)
    ds = epoch_orders(len(features), per_epoch, seed, start_epoch).map(
        lambda i: (tf.gather(table_x, i), tf.gather(table_y, i)), num_parallel_calls=tf.data.AUTOTUNE)
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
    rand_ops: int = 0,
    rand_strength: float = 0.5,
):
    """Stream a list too large for memory: decode with PIL in parallel.

    Files that fail to decode are dropped from the stream and appended to
    `skipped` as (file, reason), so the caller can report them. Images are
    decoded at `image_size`; training with `resized-crop` cuts crops of
    `output_size` (the model's input) from them; `rand_ops` RandAugment-style
    operations follow in training.
    """
    height, width = image_size
    paths = [str(p) for p in paths]

    def load(index):
        i = int(index)
        try:
            return image_files.decode_image(paths[i], (height, width)), True
        except UnreadableImage as err:
            skipped.append((paths[i], str(err)))
        except Exception as err:  # a decoder's own failure on this file: skip it, keep the stream
            skipped.append((paths[i], f"cannot decode ({type(err).__name__}: {err})"))
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
    size = check_output_size(image_size, output_size, augment)
    onehot = None if labels is None else tf.constant(one_hot(labels, num_classes))

    def finish(index, image, ok, draw):
        x = preprocess(augment_example(image, augment, size, seed, draw, rand_ops if training else 0, rand_strength))
        return x if onehot is None else (x, tf.gather(onehot, index))

    # one seeded random number per example (new ones each pass) seeds its crop
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, draws)).map(lambda item, draw: finish(*item, draw),
                                              num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
