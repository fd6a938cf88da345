"""Self-attention by hand in NumPy (seed notes 002 and 003), checked against Keras.

Step 1, the notes' form without weights: an image X of shape (B, C, W, H) is
flattened to (B, C, N) tokens (one token per pixel, its channels are the
feature vector), S = X^T X holds every pixel's dot product with every other
pixel, A = softmax(S) over the last axis makes each row a set of weights
summing to 1, and the output o = X A^T is, for every pixel, the weighted mean
of all pixels' feature vectors.

Correction to note 002: it transposes twice and computes o = X S. Without a
softmax that equals X S^T because S is symmetric, but after a softmax over the
last axis A is no longer symmetric and the weights must be applied as A^T
(o[:, j] = sum_i X[:, i] A[j, i]); otherwise an output is not a weighted mean.

Step 2, with learned projections (note 003): tokens x (B, N, D) are projected
to queries, keys and values per head, scores are divided by sqrt(head_dim),
each head's softmax-weighted values are concatenated and a final dense layer
maps them back to D. Weights use Keras' MultiHeadAttention layout: query/key/
value kernels (D, heads, head_dim), biases (heads, head_dim), output kernel
(heads, head_dim, D), output bias (D,). vit_keras' MultiHeadSelfAttention holds
the same numbers as (D, D) Dense kernels (heads are consecutive column blocks).
Everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vit_flowers.primer.figures import pyplot, save_png

# Keras and vit_keras are imported inside the cross-checks, not here: the primer's NumPy lessons import
# without TensorFlow (tests/test_primer.py)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (subtract the max) in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def image_to_tokens(x: np.ndarray) -> np.ndarray:
    """(B, C, W, H) -> (B, C, N) with N = W * H, pixel (w, h) at n = w * H + h (as the note)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, W, H), got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])


def note_self_attention(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The notes' weightless self-attention on X (B, C, N): returns (o, A, S).

    S = X^T X (B, N, N); A = softmax(S, axis=-1); o = X A^T (B, C, N).
    """
    x = np.asarray(x, dtype=np.float64)
    s = np.transpose(x, (0, 2, 1)) @ x
    a = softmax(s, axis=-1)
    o = x @ np.transpose(a, (0, 2, 1))
    return o, a, s


def scaled_dot_product_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(q k^T / sqrt(d)) v over the last two axes; returns (output, weights)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    weights = softmax(scores, axis=-1)
    return weights @ v, weights


def single_head_attention(
    x: np.ndarray,
    wq: np.ndarray, wk: np.ndarray, wv: np.ndarray,
    bq: np.ndarray | None = None, bk: np.ndarray | None = None, bv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One head on tokens x (B, N, D) with projections w* (D, d): returns (B, N, d), (B, N, N)."""
    x = np.asarray(x, dtype=np.float64)

    def proj(w, b):
        y = x @ np.asarray(w, dtype=np.float64)
        return y if b is None else y + np.asarray(b, dtype=np.float64)

    return scaled_dot_product_attention(proj(wq, bq), proj(wk, bk), proj(wv, bv))


@dataclass(frozen=True)
class MHAParams:
    """Multi-head self-attention weights in Keras' MultiHeadAttention layout."""

    wq: np.ndarray  # (D, H, dh)
    bq: np.ndarray  # (H, dh)
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray  # (H, dh, D)
    bo: np.ndarray  # (D,)

    @property
    def dim(self) -> int:
        return int(self.wq.shape[0])

    @property
    def heads(self) -> int:
        return int(self.wq.shape[1])

    @property
    def head_dim(self) -> int:
        return int(self.wq.shape[2])


def random_mha_params(
    dim: int, heads: int, head_dim: int | None = None, seed: int = 0, bias: bool = True
) -> MHAParams:
    """Random weights (Glorot-like scale, optional non-zero biases) for tests and demos."""
    rng = np.random.default_rng(seed)
    dh = dim // heads if head_dim is None else head_dim

    def w(*shape, fan):
        return rng.normal(0.0, 1.0 / np.sqrt(fan), size=shape)

    def b(*shape):
        return rng.normal(0.0, 0.1, size=shape) if bias else np.zeros(shape)

    return MHAParams(
        wq=w(dim, heads, dh, fan=dim), bq=b(heads, dh),
        wk=w(dim, heads, dh, fan=dim), bk=b(heads, dh),
        wv=w(dim, heads, dh, fan=dim), bv=b(heads, dh),
        wo=w(heads, dh, dim, fan=heads * dh), bo=b(dim),
    )


def multi_head_self_attention(x: np.ndarray, p: MHAParams) -> tuple[np.ndarray, np.ndarray]:
    """Multi-head self-attention on tokens x (B, N, D): returns output (B, N, D), weights (B, H, N, N)."""
    x = np.asarray(x, dtype=np.float64)
    heads = []
    weights = []
    for h in range(p.heads):
        out_h, w_h = single_head_attention(
            x, p.wq[:, h], p.wk[:, h], p.wv[:, h], p.bq[h], p.bk[h], p.bv[h]
        )
        heads.append(out_h)
        weights.append(w_h)
    concat = np.concatenate(heads, axis=-1)  # (B, N, H * dh), head-major
    out = concat @ np.asarray(p.wo, np.float64).reshape(p.heads * p.head_dim, p.dim) + p.bo
    return out, np.stack(weights, axis=1)


# --- Keras MultiHeadAttention -------------------------------------------------------------

_KERAS_NAMES = {
    "query/kernel": "wq", "query/bias": "bq", "key/kernel": "wk", "key/bias": "bk",
    "value/kernel": "wv", "value/bias": "bv",
    "attention_output/kernel": "wo", "attention_output/bias": "bo",
}


def _keras_variables(layer: Any) -> dict[str, Any]:
    found = {}
    for var in layer.weights:
        path = getattr(var, "path", var.name)
        for suffix, field_name in _KERAS_NAMES.items():
            if path.endswith(suffix):
                found[field_name] = var
    missing = set(_KERAS_NAMES.values()) - set(found)
    if missing:
        raise ValueError(f"layer {layer.name} lacks weights {sorted(missing)}; is it built with biases?")
    return found


def params_from_keras_mha(layer: Any) -> MHAParams:
    """Copy a built keras.layers.MultiHeadAttention's kernels and biases into MHAParams."""
    v = _keras_variables(layer)
    return MHAParams(**{k: np.asarray(var.numpy(), np.float64) for k, var in v.items()})


def set_keras_mha_weights(layer: Any, p: MHAParams) -> None:
    """Assign MHAParams to a built keras.layers.MultiHeadAttention (shapes must match)."""
    for k, var in _keras_variables(layer).items():
        value = getattr(p, k)
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{k}: layer has shape {tuple(var.shape)}, params {value.shape}")
        var.assign(value.astype(var.dtype))


def keras_mha(p: MHAParams) -> Any:
    """A keras.layers.MultiHeadAttention built for p's shapes and holding p's weights."""
    import keras  # local: see the note at the imports

    layer = keras.layers.MultiHeadAttention(num_heads=p.heads, key_dim=p.head_dim)
    x = np.zeros((1, 2, p.dim), np.float32)
    layer(x, x)
    set_keras_mha_weights(layer, p)
    return layer


# --- vit_keras MultiHeadSelfAttention -----------------------------------------------------

def _vit_dense(layer: Any) -> dict[str, Any]:
    return {"q": layer.query_dense, "k": layer.key_dense, "v": layer.value_dense, "o": layer.combine_heads}


def set_vit_keras_weights(layer: Any, p: MHAParams) -> None:
    """Assign MHAParams to a vit_keras MultiHeadSelfAttention (its (D, D) Dense layers).

    vit_keras splits the D features into heads as consecutive blocks of D / heads, so
    the (D, H, dh) kernels are reshaped to (D, H * dh) and the (H, dh, D) output kernel to
    (H * dh, D); it requires H * dh == D.
    """
    if p.heads * p.head_dim != p.dim:
        raise ValueError(f"vit_keras needs heads * head_dim == dim, got {p.heads}*{p.head_dim} != {p.dim}")
    if p.heads != layer.num_heads:
        raise ValueError(f"layer has {layer.num_heads} heads, params {p.heads}")
    d = p.dim
    if not getattr(layer, "built", False) or not layer.query_dense.built:
        layer(np.zeros((1, 2, d), np.float32))
    kernels = {
        "q": (p.wq.reshape(d, d), p.bq.reshape(d)),
        "k": (p.wk.reshape(d, d), p.bk.reshape(d)),
        "v": (p.wv.reshape(d, d), p.bv.reshape(d)),
        "o": (p.wo.reshape(d, d), p.bo),
    }
    for key, dense in _vit_dense(layer).items():
        kernel, bias = kernels[key]
        dense.kernel.assign(kernel.astype(np.float32))
        dense.bias.assign(bias.astype(np.float32))


def vit_keras_mhsa(p: MHAParams) -> Any:
    """A vit_keras.layers.MultiHeadSelfAttention holding p's weights."""
    from vit_keras.layers import MultiHeadSelfAttention  # local: see the note at the imports

    layer = MultiHeadSelfAttention(num_heads=p.heads)
    set_vit_keras_weights(layer, p)
    return layer


@dataclass(frozen=True)
class KerasCheck:
    """Max abs differences between the NumPy function and the Keras layers."""

    keras_output: float
    keras_weights: float
    vit_keras_output: float
    vit_keras_weights: float

    @property
    def worst(self) -> float:
        return max(self.keras_output, self.keras_weights, self.vit_keras_output, self.vit_keras_weights)


def check_against_keras(
    batch: int = 2, tokens: int = 7, dim: int = 16, heads: int = 4, seed: int = 0
) -> KerasCheck:
    """Run NumPy MHA, keras.layers.MultiHeadAttention and vit_keras' layer on the same float32 input.

    Keras' own kernels (Glorot init) are copied into the NumPy function, with random
    non-zero biases assigned first so the bias paths are checked too; the same numbers
    are then given to vit_keras.
    """
    import keras  # local: see the note at the imports

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, tokens, dim)).astype(np.float32)
    keras.utils.set_random_seed(seed)
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=dim // heads)
    mha(x, x)
    for name, var in _keras_variables(mha).items():
        if name.startswith("b"):
            var.assign(rng.normal(0.0, 0.1, size=tuple(var.shape)).astype(np.float32))
    p = params_from_keras_mha(mha)
    ref_out, ref_w = multi_head_self_attention(x, p)
    k_out, k_w = mha(x, x, return_attention_scores=True)
    vit = vit_keras_mhsa(p)
    v_out, v_w = vit(x)

    def diff(a, b):
        return float(np.max(np.abs(np.asarray(a, np.float64) - b)))

    return KerasCheck(diff(k_out, ref_out), diff(k_w, ref_w), diff(v_out, ref_out), diff(v_w, ref_w))


def plot_note_attention(
    image: np.ndarray, queries: list[tuple[int, int]], out_path, side: int = 30
):
    """Figure: the notes' weightless self-attention on a small RGB image's pixels.

    The image (H, W, 3) is reduced to side x side by nearest neighbour, pixels become
    tokens with their RGB in [0, 1] as features, and for each query pixel (y, x) in the
    reduced image its row of A = softmax(X^T X) is drawn as a map.
    """
    image = np.asarray(image)
    ys = np.arange(side) * image.shape[0] // side
    xs = np.arange(side) * image.shape[1] // side
    small = image[ys][:, xs, :3].astype(np.float64) / 255.0
    tokens = np.transpose(small, (2, 0, 1))[None]  # (1, C, H, W)
    _, a, _ = note_self_attention(image_to_tokens(tokens))
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(queries), figsize=(2.6 * (1 + len(queries)), 2.9))
    axes[0].imshow(small, interpolation="nearest")
    axes[0].set_title(f"image ({side}x{side} tokens)", fontsize=9)
    for i, (y, x) in enumerate(queries):
        row = a[0, y * side + x].reshape(side, side)
        axes[0].plot(x, y, "o", mfc="none", mec="yellow", ms=8, mew=1.5)
        axes[i + 1].imshow(row, cmap="gray", interpolation="nearest")
        axes[i + 1].plot(x, y, "o", mfc="none", mec="red", ms=8, mew=1.5)
        axes[i + 1].set_title(f"pixel (y={y}, x={x})", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("rows of A = softmax(X^T X): each pixel's weights over all pixels (RGB in [0, 1])",
                 fontsize=9)
    fig.tight_layout()
    return save_png(fig, out_path, dpi=72)
