"""Attention on pixels with a query vector (seed note 000).

Each RGB pixel I(y, x) is projected to an 8-d feature F = I W (eq. 2.7); the
feature found at a query pixel is the query q; the attention over the image is
A(y, x) = softmax over all pixels of q . F(y, x) (eq. 2.9). For display the
map is min-max normalised to [0, 1] and turned into a uint8 grayscale image.

Corrections to the note: the weight matrix has a ',' where the note has a '.',
the softmax subtracts the maximum first (the note's plain ``exp`` overflows for
large scores), a constant map normalises to zeros instead of dividing by zero,
and the grayscale image is ``uint8`` (the note wrote ``'unit8'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vit_flowers.primer.figures import pyplot, save_png

#: The note's 3x8 weight matrix: RGB (0..255) -> 8-d features.
NOTE_W = np.array(
    [
        [0.0065, -0.0045, -0.0018, 0.0075, 0.0095, 0.0075, -0.0026, 0.0022],
        [-0.0065, 0.0081, 0.0097, -0.0070, -0.0086, -0.0107, 0.0062, -0.0050],
        [0.0024, -0.0018, 0.0002, 0.0023, 0.0017, 0.0021, -0.0017, 0.0016],
    ],
    dtype=np.float32,
)

#: The note's query pixels as (y, x): "white" at (50, 50), "pink" at (200, 200).
DEFAULT_QUERIES: tuple[tuple[int, int], ...] = ((50, 50), (200, 200))


class QueryOutOfBounds(ValueError):
    """A query pixel lies outside the image."""


@dataclass(frozen=True)
class QueryAttention:
    """Attention for one query: probabilities, [0, 1] map and uint8 image."""

    query: tuple[int, int]
    probs: np.ndarray  # (H, W) float64, sums to 1
    normalised: np.ndarray  # (H, W) float64 in [0, 1]
    gray: np.ndarray  # (H, W) uint8


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as a float32 (H, W, 3) RGB array in 0..255."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)


def project(image: np.ndarray, w: np.ndarray = NOTE_W) -> np.ndarray:
    """Project an (H, W, 3) RGB array to (H, W, D) features F = I W (eq. 2.7)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
    return image @ np.asarray(w, dtype=np.float64)


def check_query(query: Sequence[int], shape: Sequence[int]) -> tuple[int, int]:
    """Return query as (y, x) ints, raising QueryOutOfBounds if outside shape (H, W, ...)."""
    y, x = int(query[0]), int(query[1])
    h, w = int(shape[0]), int(shape[1])
    if not (0 <= y < h and 0 <= x < w):
        raise QueryOutOfBounds(
            f"query (y,x)=({y},{x}) is outside the image of height {h} and width {w}"
        )
    return y, x


def softmax_over_pixels(scores: np.ndarray) -> np.ndarray:
    """Softmax over all elements of a 2-d score map (eq. 2.8), stable: subtract the max."""
    scores = np.asarray(scores, dtype=np.float64)
    e = np.exp(scores - scores.max())
    return e / e.sum()


def attention_for_query(features: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A(y, x) = softmax over pixels of q . F(y, x) (eq. 2.9); (H, W) float64."""
    return softmax_over_pixels(features @ np.asarray(q, dtype=np.float64))


def minmax_normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] with min -> 0 and max -> 1; a constant map gives zeros."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(), a.max()
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """A [0, 1] map as a uint8 grayscale image (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(a) * 255.0), 0, 255).astype(np.uint8)


def pixel_attention(
    image: np.ndarray,
    queries: Sequence[Sequence[int]] = DEFAULT_QUERIES,
    w: np.ndarray = NOTE_W,
) -> list[QueryAttention]:
    """Attention maps of an RGB image for queries taken at pixels (y, x), as in the note."""
    image = np.asarray(image)
    checked = [check_query(q, image.shape) for q in queries]
    features = project(image, w)
    results = []
    for y, x in checked:
        probs = attention_for_query(features, features[y, x])
        norm = minmax_normalise(probs)
        results.append(QueryAttention((y, x), probs, norm, to_uint8(norm)))
    return results


def plot_query_attention(
    image: np.ndarray, results: Sequence[QueryAttention], out_path: str | Path
) -> Path:
    """Save a PNG: the original (queries marked) beside one attention image per query."""
    plt = pyplot()

    n = 1 + len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3), squeeze=False)
    axes = axes[0]
    axes[0].imshow(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    axes[0].set_title("image")
    for i, r in enumerate(results):
        y, x = r.query
        axes[0].plot(x, y, marker="o", mfc="none", mec="yellow", ms=10, mew=2)
        axes[0].annotate(f"q{i + 1}", (x, y), color="yellow", xytext=(6, -6),
                         textcoords="offset points")
        axes[i + 1].imshow(r.gray, cmap="gray", vmin=0, vmax=255)
        axes[i + 1].plot(x, y, marker="o", mfc="none", mec="red", ms=10, mew=2)
        axes[i + 1].set_title(f"q{i + 1} = pixel (y={y}, x={x})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_png(fig, out_path, dpi=80)
