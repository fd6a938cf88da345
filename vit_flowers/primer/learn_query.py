"""Learning the pixel-attention weights W and query q (the part note 000 left out).

Note 000 uses a hand-made 3x8 matrix W and takes the query from a pixel. Here a
one-layer Keras model holds a trainable W (3x8) and q (8,) and outputs
A = softmax over pixels of (I W) . q, exactly the note's attention. Training
starts from the note's W and the query of a target-coloured pixel and learns
from synthetic images: a random background (a gradient between two random
colours plus pixel noise), distractor blobs (two random colours and one
saturated red) and one blob of the target colour (pink) at a random place.
The loss is the cross-entropy between the attention and the blob mask
normalised to sum 1 (``loss="mass"``: -log of the attention mass on the blob).

Background and distractor colours are random but "clearly less pink" than the
target: their r - g + b is at least ``margin`` below the target's. A linear
score can then single out the target, but the note's W with a pink-pixel query
does not: the score q . F = I^T W W^T I_q is linear in the pixel, not a colour
similarity, and W W^T is dominated by a "red minus green" direction, so a
saturated red scores higher than pink itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vit_flowers.primer.figures import pyplot, save_png
from vit_flowers.primer.pixel_attention import (
    NOTE_W,
    attention_for_query,
    minmax_normalise,
    project,
)

# Keras is imported inside the functions that build and train the model, not here: the primer's NumPy
# lessons (this module's data and plots among them) import without TensorFlow (tests/test_primer.py)

#: The target colour ("pink") whose blob the learned query should find.
TARGET_RGB: tuple[int, int, int] = (235, 60, 190)


@dataclass(frozen=True)
class BlobImages:
    """Synthetic images (N, H, W, 3) float32 in 0..255, target masks (N, H, W) bool, centres (y, x)."""

    images: np.ndarray
    masks: np.ndarray
    centres: np.ndarray


@dataclass
class LearnedQuery:
    """Learned weights and the training loss per epoch."""

    w: np.ndarray
    q: np.ndarray
    loss: list[float] = field(default_factory=list)


def _pinkness(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] - rgb[..., 1] + rgb[..., 2]


def _random_colours(rng: np.random.Generator, n: int, limit: float) -> np.ndarray:
    """n random RGB colours with r - g + b <= limit (rejection sampling)."""
    out = np.empty((0, 3))
    while len(out) < n:
        c = rng.uniform(0, 255, size=(4 * n, 3))
        out = np.concatenate([out, c[_pinkness(c) <= limit]])
    return out[:n]


def _disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def make_blob_images(
    n: int,
    size: int = 32,
    seed: int | np.random.Generator = 0,
    target_rgb: Sequence[int] = TARGET_RGB,
    margin: float = 90.0,
    distractors: int = 2,
    red_distractor: bool = True,
    noise: float = 8.0,
) -> BlobImages:
    """Make n images with one target-coloured blob on a random background.

    Blob radius is 12-20% of the size; distractor blobs are 8-16%; colours other
    than the target have r - g + b at least ``margin`` below the target's.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    target = np.asarray(target_rgb, dtype=np.float64)
    limit = float(_pinkness(target)) - margin
    images = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    centres = np.empty((n, 2), dtype=np.int64)
    ramp = np.linspace(0.0, 1.0, size)
    for i in range(n):
        c0, c1 = _random_colours(rng, 2, limit)
        t = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
        img = np.broadcast_to(img, (size, size, 3)).copy()
        colours = list(_random_colours(rng, distractors, limit))
        if red_distractor:
            colours.append(rng.uniform((235, 0, 0), (255, 25, 25)))
        for colour in colours:
            r = rng.uniform(0.08, 0.16) * size
            cy, cx = rng.uniform(r, size - r, size=2)
            img[_disc(size, cy, cx, r)] = colour
        r = rng.uniform(0.12, 0.20) * size
        cy, cx = rng.uniform(r, size - 1 - r, size=2)
        mask = _disc(size, cy, cx, r)
        img[mask] = target
        img += rng.normal(0.0, noise, size=img.shape)
        images[i] = np.clip(img, 0, 255)
        masks[i] = mask
        centres[i] = (int(round(cy)), int(round(cx)))
    return BlobImages(images, masks, centres)


def attention_mass(probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Attention mass inside each mask: sum of probs over the mask, per image."""
    probs = np.asarray(probs, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    return (probs * masks).reshape(len(probs), -1).sum(axis=1)


def given_attention(data: BlobImages, w: np.ndarray = NOTE_W) -> np.ndarray:
    """The note's way: W given, query = the feature at the blob's centre pixel."""
    out = np.empty(data.masks.shape, dtype=np.float64)
    for i, (img, (y, x)) in enumerate(zip(data.images, data.centres)):
        f = project(img, w)
        out[i] = attention_for_query(f, f[y, x])
    return out


def learned_attention(images: np.ndarray, w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """NumPy attention with learned W and q: softmax over pixels of (I W) . q, per image."""
    return np.stack([attention_for_query(project(img, w), q) for img in images])


def build_query_model(
    features: int = 8, w_init: np.ndarray | None = NOTE_W, q_init: np.ndarray | None = None
):
    """A Keras model: (B, H, W, 3) RGB in 0..255 -> (B, H, W) attention over pixels."""
    import keras  # local: see the note at the imports

    layer = make_query_layer(features=features, w_init=w_init, q_init=q_init, name="query_attention")
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    return keras.Model(inputs, layer(inputs), name="learn_query")


def make_query_layer(features: int = 8, w_init=None, q_init=None, **kwargs):
    """The custom layer with trainable W (3, features) and q (features,)."""
    return _layer_class()(features=features, w_init=w_init, q_init=q_init, **kwargs)


_LAYER = None


def _layer_class():
    """Define the Keras layer lazily so importing this module does not import Keras."""
    global _LAYER
    if _LAYER is not None:
        return _LAYER
    # local: see the note at the imports
    import keras
    from keras import ops

    class PixelQueryAttention(keras.layers.Layer):
        """A = softmax over pixels of (I W) . q with trainable W and q."""

        def __init__(self, features: int = 8, w_init=None, q_init=None, **kwargs):
            super().__init__(**kwargs)
            self.features = int(features)
            self._w_init = None if w_init is None else np.asarray(w_init, np.float32)
            self._q_init = None if q_init is None else np.asarray(q_init, np.float32)

        def build(self, input_shape):
            def init(value, default):
                if value is None:
                    return default
                return keras.initializers.Constant(value)

            self.w = self.add_weight(
                shape=(3, self.features), name="w",
                initializer=init(self._w_init, keras.initializers.RandomNormal(0.0, 0.01, seed=0)),
            )
            self.q = self.add_weight(
                shape=(self.features,), name="q",
                initializer=init(self._q_init, keras.initializers.RandomNormal(0.0, 1.0, seed=1)),
            )

        def call(self, images):
            scores = ops.matmul(ops.matmul(images, self.w), self.q)  # (B, H, W)
            shape = ops.shape(scores)
            flat = ops.reshape(scores, (shape[0], -1))
            return ops.reshape(ops.softmax(flat, axis=-1), shape)

        def get_config(self):
            config = super().get_config()
            config.update({"features": self.features})
            return config

    _LAYER = PixelQueryAttention
    return _LAYER


def target_mass_loss(y_true, y_pred):
    """-log of the attention mass on the target mask (y_true: mask, y_pred: attention)."""
    from keras import ops  # local: see the note at the imports

    mass = ops.sum(ops.reshape(y_true * y_pred, (ops.shape(y_pred)[0], -1)), axis=-1)
    return -ops.log(mass + 1e-7)


def mask_cross_entropy_loss(y_true, y_pred):
    """Cross-entropy between the mask normalised to sum 1 and the attention over pixels.

    Its minimum is attention spread evenly over the target, so the learned map
    lights up the whole blob instead of its few brightest pixels.
    """
    from keras import ops  # local: see the note at the imports

    b = ops.shape(y_pred)[0]
    m = ops.reshape(y_true, (b, -1))
    m = m / ops.maximum(ops.sum(m, axis=-1, keepdims=True), 1.0)
    return -ops.sum(m * ops.log(ops.reshape(y_pred, (b, -1)) + 1e-12), axis=-1)


LOSSES = {"xent": mask_cross_entropy_loss, "mass": target_mass_loss}


def train_query(
    n_train: int = 384,
    size: int = 32,
    epochs: int = 25,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    target_rgb: Sequence[int] = TARGET_RGB,
    loss: str = "xent",
    verbose: int = 0,
) -> LearnedQuery:
    """Learn W and q on synthetic blob images; start from the note's W and a target-pixel query."""
    import keras  # local: see the note at the imports

    keras.utils.set_random_seed(seed)
    data = make_blob_images(n_train, size=size, seed=seed, target_rgb=target_rgb)
    q0 = np.asarray(target_rgb, np.float64) @ NOTE_W.astype(np.float64)
    model = build_query_model(w_init=NOTE_W, q_init=q0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=LOSSES[loss])
    hist = model.fit(
        data.images, data.masks.astype(np.float32),
        batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose,
    )
    layer = model.get_layer("query_attention")
    return LearnedQuery(
        w=np.asarray(layer.w.numpy(), np.float64),
        q=np.asarray(layer.q.numpy(), np.float64),
        loss=[float(v) for v in hist.history["loss"]],
    )


@dataclass(frozen=True)
class Comparison:
    """Given (seed W, pixel query) vs learned attention on held-out images."""

    data: BlobImages
    given: np.ndarray
    learned: np.ndarray

    @property
    def given_mass(self) -> np.ndarray:
        return attention_mass(self.given, self.data.masks)

    @property
    def learned_mass(self) -> np.ndarray:
        return attention_mass(self.learned, self.data.masks)


def compare_given_learned(
    result: LearnedQuery, n: int = 64, size: int = 32, seed: int = 12345
) -> Comparison:
    """Attention of the note's given W (query from the blob's centre pixel) and of the learned W, q."""
    data = make_blob_images(n, size=size, seed=seed)
    return Comparison(data, given_attention(data), learned_attention(data.images, result.w, result.q))


def plot_given_vs_learned(
    data: BlobImages, given: np.ndarray, learned: np.ndarray, out_path: str | Path
) -> Path:
    """One row per image: image (query pixel marked), given attention, learned attention."""
    plt = pyplot()

    n = len(data.images)
    g_mass = attention_mass(given, data.masks)
    l_mass = attention_mass(learned, data.masks)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.2 * n + 0.3), squeeze=False)
    for i in range(n):
        y, x = data.centres[i]
        axes[i, 0].imshow(data.images[i].astype(np.uint8))
        axes[i, 0].contour(data.masks[i], levels=[0.5], colors="white", linewidths=0.8)
        axes[i, 0].plot(x, y, "x", color="yellow", ms=6)
        axes[i, 1].imshow(minmax_normalise(given[i]), cmap="gray", vmin=0, vmax=1)
        axes[i, 2].imshow(minmax_normalise(learned[i]), cmap="gray", vmin=0, vmax=1)
        axes[i, 1].set_title(f"given: mass {g_mass[i]:.2f}", fontsize=9)
        axes[i, 2].set_title(f"learned: mass {l_mass[i]:.2f}", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image (x: query pixel)", fontsize=9)
    fig.suptitle("the note's W + pixel query vs learned W, q (mass on pink blob)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out_path, dpi=64)
