"""Attention rollout for vit_keras models: faithful to vit_keras, batched, fast.

`vit_keras.visualize.attention_map` builds a new Keras model on every call,
runs one image, assumes a square patch grid and hands `cv2.resize` (height,
width) where it wants (width, height). Here the attention sub-model is built
once per model (`explainer_for` caches it), a batch goes through one forward
pass that returns every TransformerBlock's attention (`layer.output[1]`),
heads are fused inside that pass, and the rollout runs over the whole batch
in NumPy. Non-square grids (h x w patches) work.

Rollout, as vit_keras does it (the default, `normalize="matrix"`): fuse the
heads, add the identity for the residual path, divide by the sum over the
whole matrix, multiply the layers from the last to the first and read the
class token's row over the patches; the mask is divided by its max. The
rollout paper (Abnar & Zuidema 2020) normalises each row instead
(`normalize="row"`). With mean fusion and no discard the two give the same
mask (every row of `A + I` sums to 2, so the factor is a constant that the
division by the max cancels); with max/min fusion or a discard they differ.

Class-specific maps weight each attention by its gradient for a class score
(the logit before the softmax), keep the positive part and average over
heads (Chefer et al. 2021; vit-explain's grad rollout), then roll out.

This module computes; `plots` draws; `comparison` runs the command.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras.utils import Progbar
from vit_keras import layers as vit_layers
from vit_keras import visualize, vit

from .choices import HEAD_FUSIONS, NORMALIZATIONS

OVERLAY_ALPHA = 0.5


# ------------------------------------------------------------ pure NumPy
def fuse_heads(attention: np.ndarray, mode: str = "mean", axis: int = -3) -> np.ndarray:
    """Fuse the heads axis of (..., heads, T, T) attention by mean, max or min."""
    if mode == "mean":
        return attention.mean(axis=axis)
    if mode == "max":
        return attention.max(axis=axis)
    if mode == "min":
        return attention.min(axis=axis)
    raise ValueError(f"unknown head fusion {mode!r}; choose one of {HEAD_FUSIONS}")


def discard_lowest(fused: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the lowest `ratio` share of each (T, T) matrix's patch-to-patch entries.

    Works on every matrix of a (..., T, T) stack: every image and every layer
    (vit-explain zeroes them only in the first image of a batch). Entries
    where the class token is the query or the key are never discarded.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"discard ratio must be in [0, 1), got {ratio}")
    out = np.array(fused, dtype=np.float64, copy=True)
    tokens = out.shape[-1]
    patches = out[..., 1:, 1:].reshape(-1, (tokens - 1) ** 2)
    count = int(patches.shape[1] * ratio)
    if count == 0:
        return out
    lowest = np.argpartition(patches, count - 1, axis=1)[:, :count]
    np.put_along_axis(patches, lowest, 0.0, axis=1)
    out[..., 1:, 1:] = patches.reshape(out[..., 1:, 1:].shape)
    return out


def rollout_fused(
    fused: np.ndarray,
    discard_ratio: float = 0.0,
    start: int = 0,
    stop: int | None = None,
    normalize: str = "matrix",
) -> np.ndarray:
    """Roll out head-fused attention (N, layers, T, T) -> class token row (N, T - 1).

    `start`/`stop` slice the layers (Python slice rules). The product runs
    from the last chosen layer to the first, as vit_keras multiplies.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; choose one of {NORMALIZATIONS}")
    layers = np.asarray(fused)[:, start:stop]
    if layers.shape[1] == 0:
        raise ValueError(f"layer range {start}:{stop} selects no layer of {fused.shape[1]}")
    layers = discard_lowest(layers, discard_ratio) if discard_ratio > 0 else layers.astype(np.float64)
    layers = layers + np.eye(layers.shape[-1])
    axes = (-2, -1) if normalize == "matrix" else (-1,)
    layers = layers / layers.sum(axis=axes, keepdims=True)
    # Only the class token's row is read, so carry a row vector, not a matrix.
    row = layers[:, -1, 0, :]
    for n in range(layers.shape[1] - 2, -1, -1):
        row = np.einsum("nt,nts->ns", row, layers[:, n])
    return row[:, 1:]


def grid_masks(patch_rows: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, T - 1) patch values -> (N, h, w) masks divided by their max (zeros stay zeros)."""
    masks = np.asarray(patch_rows, dtype=np.float64).reshape(len(patch_rows), grid[0], grid[1])
    top = masks.max(axis=(1, 2), keepdims=True)
    return np.divide(masks, top, out=np.zeros_like(masks), where=top > 0)


def rollout(
    attention: np.ndarray,
    grid: tuple[int, int],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start: int = 0,
    stop: int | None = None,
    normalize: str = "matrix",
) -> np.ndarray:
    """Full attention (N, layers, heads, T, T) -> rollout masks (N, h, w) in [0, 1]."""
    fused = fuse_heads(np.asarray(attention), head_fusion, axis=2)
    return grid_masks(rollout_fused(fused, discard_ratio, start, stop, normalize), grid)


def upsample(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) masks -> (N, height, width), bilinear as vit_keras (cv2 takes width first)."""
    height, width = size
    out = np.empty((len(masks), height, width), dtype=np.float64)
    for i, mask in enumerate(masks):
        out[i] = cv2.resize(np.ascontiguousarray(mask, dtype=np.float64), (width, height))
    return out


def masked_images(masks: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The post's picture: mask * image, truncated to uint8 as vit_keras does."""
    return (masks[..., np.newaxis] * images).astype("uint8")


def _colour_table(colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """(256, 3) RGB colours of an OpenCV colour map."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), colormap)[:, 0, ::-1]


def overlay_images(masks: np.ndarray, images: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """A jet colour map of the mask blended over the image, uint8."""
    index = np.clip(np.rint(masks * 255.0), 0, 255).astype(np.uint8)
    heat = _colour_table()[index].astype(np.float32)
    return np.clip((1.0 - alpha) * images.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


@dataclass
class AttentionMaps:
    """Rollout results for a batch; masks are in [0, 1]."""

    grid: np.ndarray  # (N, h, w) patch-grid mask
    mask: np.ndarray  # (N, H, W) mask upsampled to the images
    masked: np.ndarray  # (N, H, W, 3) uint8, the post's mask * image
    overlay: np.ndarray  # (N, H, W, 3) uint8, colour map over the image
    probs: np.ndarray | None = None  # (N, classes) when the model has a head
    class_index: np.ndarray | None = None  # (N,) target class of class-specific maps


def render_maps(grid: np.ndarray, images: np.ndarray, probs: np.ndarray | None = None,
                class_index: np.ndarray | None = None) -> AttentionMaps:
    """Upsample grid masks to `images` (N, H, W, 3) and draw the post's picture and an overlay."""
    images = _as_batch(images)
    mask = upsample(grid, images.shape[1:3])
    return AttentionMaps(grid=grid, mask=mask, masked=masked_images(mask, images),
                         overlay=overlay_images(mask, images), probs=probs, class_index=class_index)


def distance_matrix(grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """Pixel distance between the centres of every pair of patches, (h*w, h*w)."""
    rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    return patch_size * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])


def mean_attention_distance(attention: np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """Mean attention distance of (..., heads, T, T) attention -> (..., heads).

    As keras.io's "Investigating Vision Transformer representations": drop
    the class token, weight the pixel distance from each query patch to each
    key patch by the attention, sum over keys, average over query patches.
    """
    patches = np.asarray(attention)[..., 1:, 1:]
    return (patches * distance_matrix(grid, patch_size)).sum(axis=-1).mean(axis=-1)


def _as_batch(images) -> np.ndarray:
    """(N, H, W, 3) images from a batch or one (H, W, 3) image; the error names the shape given."""
    given = np.asarray(images)
    batch = given[np.newaxis] if given.ndim == 3 else given
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected RGB images (N, H, W, 3) or (H, W, 3), got shape {given.shape}")
    return batch


# ------------------------------------------------------------ the model side
@dataclass
class AttentionSummary:
    """What one forward pass over a batch gives, reduced inside the graph."""

    probs: np.ndarray | None  # (N, classes), None for a bare backbone
    fused: np.ndarray  # (N, layers, T, T) head-fused attention
    cls_heads: np.ndarray  # (N, layers, heads, T) class token's attention per head
    distance: np.ndarray  # (N, layers, heads) mean attention distance in pixels
    head_fusion: str = "mean"


def transformer_blocks(model) -> list:
    """The vit_keras TransformerBlock layers of a backbone, in order."""
    return [layer for layer in model.layers if isinstance(layer, vit_layers.TransformerBlock)]


def split_model(model):
    """(backbone, head layers) of a classifier whose layers[0] is the backbone,
    or (model, []) for a bare vit_keras backbone."""
    if transformer_blocks(model):
        return model, []
    layers = list(getattr(model, "layers", []))
    if layers and hasattr(layers[0], "layers") and transformer_blocks(layers[0]):
        return layers[0], layers[1:]
    raise ValueError(f"{getattr(model, 'name', model)!r} has no vit_keras TransformerBlock layers")


class AttentionExplainer:
    """Attention maps for one model; builds its graph once, reuses it for every batch.

    `model` is the package's classifier (a Sequential whose layers[0] is the
    vit_keras backbone) or a bare vit_keras backbone (no probabilities, no
    class-specific maps then).
    """

    def __init__(self, model) -> None:
        backbone, head = split_model(model)
        blocks = transformer_blocks(backbone)
        self.name = getattr(model, "name", "model")
        self.input_size: tuple[int, int] = (int(backbone.input_shape[1]), int(backbone.input_shape[2]))
        embedding = backbone.get_layer("embedding")
        self.grid: tuple[int, int] = (int(embedding.output.shape[1]), int(embedding.output.shape[2]))
        # pixels per token (the patch size, also behind a convolutional stem)
        self.patch_size = self.input_size[0] // self.grid[0]
        self.num_layers = len(blocks)
        self.num_heads = int(blocks[0].num_heads)
        self.has_head = bool(head)
        self.num_classes = int(model.output_shape[-1]) if head else 0
        # One graph from existing nodes (no layer gets a new one): the backbone's
        # output and every block's attention; the head runs on its output.
        self._graph = keras.Model(backbone.inputs, [backbone.output] + [b.output[1] for b in blocks],
                                  name=f"{self.name}_attention")
        self._head = head[:-1]
        self._last = head[-1] if head else None
        self._summaries: dict[str, Callable] = {}
        self._weights_fn: Callable | None = None
        self._gradient_fn: Callable | None = None

    # -- inputs
    def prepare(self, images) -> np.ndarray:
        """uint8 images (N, H, W, 3) -> float32 model inputs: cv2 bilinear resize to
        the model's size when needed, then vit_keras' `preprocess_inputs`."""
        images = _as_batch(images)
        height, width = self.input_size
        if images.shape[1:3] != (height, width):
            images = np.stack([cv2.resize(np.ascontiguousarray(im), (width, height)) for im in images])
        return vit.preprocess_inputs(images.astype(np.float32))

    def _batches(self, images, batch_size: int, progress: bool):
        images = _as_batch(images)
        bar = None
        if progress and len(images) > batch_size:
            bar = Progbar(len(images), unit_name="image")
        for start in range(0, len(images), batch_size):
            yield self.prepare(images[start:start + batch_size])
            if bar is not None:
                bar.update(min(start + batch_size, len(images)))

    # -- graph functions, each traced once
    def _spec(self):
        return tf.TensorSpec((None, *self.input_size, 3), tf.float32)

    def _scores(self, features):
        """(probabilities, score per class) from the backbone's output: the logit before
        a softmax head, else the head's output."""
        last = self._last
        if last is None:
            return None, None
        for layer in self._head:
            features = layer(features, training=False)
        if isinstance(last, keras.layers.Dense) and getattr(last.activation, "__name__", "") == "softmax":
            logits = tf.matmul(tf.cast(features, tf.float32), tf.cast(last.kernel, tf.float32))
            if last.use_bias:
                logits = logits + tf.cast(last.bias, tf.float32)
            return tf.nn.softmax(logits), logits
        out = tf.cast(last(features, training=False), tf.float32)
        return out, out

    def _summary_fn(self, head_fusion: str) -> Callable:
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"unknown head fusion {head_fusion!r}; choose one of {HEAD_FUSIONS}")
        if head_fusion in self._summaries:
            return self._summaries[head_fusion]
        reduce = {"mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min}[head_fusion]
        # The mean attention distance as one matrix-vector product per layer: the patch-to-patch
        # distances padded with zeros where the class token is the query or the key, flattened,
        # and divided by the number of query patches.
        patches = self.grid[0] * self.grid[1]
        padded = np.pad(distance_matrix(self.grid, self.patch_size), ((1, 0), (1, 0))) / patches
        distances = tf.constant(padded.reshape(-1, 1), tf.float32)

        @tf.function(input_signature=[self._spec()])
        def summarise(x):
            features, *attention = self._graph(x, training=False)
            probs, _ = self._scores(features)
            fused, cls_heads, distance = [], [], []
            # Each layer is reduced as it comes (N, H, T, T -> N, T, T and smaller): stacking the
            # raw weights first would copy all of them (0.7 GB for ViT-B/16 at batch 32) once more.
            for a in attention:
                a = tf.cast(a, tf.float32)
                shape = tf.shape(a)
                fused.append(reduce(a, axis=1))
                cls_heads.append(a[:, :, 0, :])
                flat = tf.reshape(a, [shape[0] * shape[1], -1])
                distance.append(tf.reshape(tf.matmul(flat, distances), [shape[0], shape[1]]))
            out = {"fused": tf.stack(fused, axis=1), "cls_heads": tf.stack(cls_heads, axis=1),
                   "distance": tf.stack(distance, axis=1)}
            if probs is not None:
                out["probs"] = probs
            return out

        self._summaries[head_fusion] = summarise
        return summarise

    def _weights(self) -> Callable:
        if self._weights_fn is None:
            @tf.function(input_signature=[self._spec()])
            def weights(x):
                _, *attention = self._graph(x, training=False)
                return tf.stack([tf.cast(a, tf.float32) for a in attention], axis=1)

            self._weights_fn = weights
        return self._weights_fn

    def _gradient(self) -> Callable:
        if self._last is None:
            raise ValueError(f"{self.name!r} is a bare backbone: class-specific maps need the classifier")
        if self._gradient_fn is None:
            @tf.function(input_signature=[self._spec(), tf.TensorSpec((None,), tf.int32)])
            def gradient(x, target):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    features, *attention = self._graph(x, training=False)
                    probs, scores = self._scores(features)
                    target = tf.where(target < 0, tf.argmax(scores, axis=-1, output_type=tf.int32), target)
                    score = tf.reduce_sum(tf.gather(scores, target, batch_dims=1))
                grads = tape.gradient(score, attention, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                stack = tf.stack([tf.cast(a, tf.float32) for a in attention], axis=1)
                grad = tf.stack([tf.cast(g, tf.float32) for g in grads], axis=1)
                fused = tf.reduce_mean(tf.nn.relu(stack * grad), axis=2)
                return probs, fused, target

            self._gradient_fn = gradient
        return self._gradient_fn

    # -- public
    def attention_weights(self, images, batch_size: int = 32) -> np.ndarray:
        """Every block's attention, (N, layers, heads, T, T). Large for big models."""
        return np.concatenate([self._weights()(x).numpy() for x in self._batches(images, batch_size, False)])

    def summarize(self, images, head_fusion: str = "mean", batch_size: int = 32,
                  progress: bool = False) -> AttentionSummary:
        """One forward pass per batch: probabilities, fused attention, per-head class
        token rows and mean attention distances for every image."""
        fn = self._summary_fn(head_fusion)
        if len(_as_batch(images)) == 0:
            raise ValueError("no images to explain")
        parts = [{k: v.numpy() for k, v in fn(x).items()} for x in self._batches(images, batch_size, progress)]
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return AttentionSummary(probs=joined.get("probs"), fused=joined["fused"], cls_heads=joined["cls_heads"],
                                distance=joined["distance"], head_fusion=head_fusion)

    def maps(self, summary: AttentionSummary, display, discard_ratio: float = 0.0, start: int = 0,
             stop: int | None = None, normalize: str = "matrix") -> AttentionMaps:
        """Rollout maps from a summary, drawn on `display` images (any size)."""
        grid = grid_masks(rollout_fused(summary.fused, discard_ratio, start, stop, normalize), self.grid)
        return render_maps(grid, display, summary.probs)

    def rollout(self, images, head_fusion: str = "mean", discard_ratio: float = 0.0, start: int = 0,
                stop: int | None = None, normalize: str = "matrix", display=None, batch_size: int = 32,
                progress: bool = False) -> AttentionMaps:
        """Attention rollout for a batch of uint8 images; maps drawn on `display` (default: the images)."""
        summary = self.summarize(images, head_fusion, batch_size, progress)
        return self.maps(summary, images if display is None else display, discard_ratio, start, stop, normalize)

    def class_rollout(self, images, class_index: int | Sequence[int] | None = None, discard_ratio: float = 0.0,
                      start: int = 0, stop: int | None = None, normalize: str = "matrix", display=None,
                      batch_size: int = 32, progress: bool = False) -> AttentionMaps:
        """Gradient-weighted rollout for `class_index` (one for all, one per image, or
        None for each image's predicted class)."""
        images = _as_batch(images)
        if class_index is None:
            targets = np.full(len(images), -1, np.int32)
        else:
            targets = np.broadcast_to(np.asarray(class_index, np.int32), (len(images),)).copy()
        fn = self._gradient()
        if np.any(targets >= self.num_classes):
            raise ValueError(f"class index {targets.max()} out of range for {self.num_classes} classes")
        probs, fused, used = [], [], []
        for k, x in enumerate(self._batches(images, batch_size, progress)):
            p, f, t = fn(x, tf.constant(targets[k * batch_size:(k + 1) * batch_size]))
            probs.append(p.numpy())
            fused.append(f.numpy())
            used.append(t.numpy())
        rows = rollout_fused(np.concatenate(fused), discard_ratio, start, stop, normalize)
        return render_maps(grid_masks(rows, self.grid), images if display is None else display,
                           np.concatenate(probs), np.concatenate(used))

    def per_head(self, summary: AttentionSummary, layer: int = -1) -> np.ndarray:
        """The class token's attention to each patch in one layer, (N, heads, h, w)."""
        rows = summary.cls_heads[:, layer, :, 1:]
        return rows.reshape(rows.shape[0], rows.shape[1], *self.grid)


_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainer_for(model) -> AttentionExplainer:
    """The cached explainer of `model`: its graph is built on the first call only."""
    explainer = _EXPLAINERS.get(model)
    if explainer is None:
        explainer = AttentionExplainer(model)
        _EXPLAINERS[model] = explainer
    return explainer


def attention_map(model, image: np.ndarray, **options) -> np.ndarray:
    """Drop-in for `vit_keras.visualize.attention_map`: the masked uint8 image(s),
    with a cached graph, any grid shape, and the rollout options of `rollout`."""
    maps = explainer_for(model).rollout(image, **options)
    return maps.masked[0] if np.asarray(image).ndim == 3 else maps.masked


def vit_keras_attention_map(model, image: np.ndarray) -> np.ndarray:
    """The post's own call, kept as it was: `vit_keras.visualize.attention_map`
    on the classifier's backbone `model.layers[0]`, for one uint8 image.

    vit_keras calls `model.predict` with its default progress bar, a stray
    "1/1 step" line in plot's output: Keras' interactive logging is off for
    the call (`keras.utils.disable_interactive_logging`) and restored after."""
    was_on = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        return visualize.attention_map(model=model.layers[0], image=image)
    finally:
        if was_on:
            keras.utils.enable_interactive_logging()
