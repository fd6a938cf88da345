"""Figures: the post's prediction grid, the confusion matrix, training curves.

Plots only draw what they are given (arrays and tables); they compute
nothing about models. Every figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .atomic import atomic_path  # noqa: E402

WRONG_COLOUR = "#c0392b"
RIGHT_COLOUR = "#1e6f3a"
DPI = 100  # every figure's resolution: a 3-inch panel is 300 pixels


def save_figure(path: str | Path, figure, **kwargs) -> Path:
    """Save a matplotlib figure atomically and close it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, **kwargs)
    plt.close(figure)
    return Path(path)


def _save(path: str | Path, fig) -> Path:
    """Write a figure atomically at the package's resolution and close it."""
    return save_figure(path, fig, dpi=DPI)


def evenly_spaced(count: int, panels: int) -> np.ndarray:
    """Indices of `panels` items spread over `count` (the source post took every 80th)."""
    if count <= panels:
        return np.arange(count)
    return np.linspace(0, count - 1, panels).round().astype(int)


def prediction_title(true: str | None, pred: str, confidence: float | None = None) -> str:
    """The post's panel title, 'True Label : x / Predicted Label : y'."""
    head = f"True Label : {true if true else '?'}"
    tail = f"Predicted Label : {pred}"
    if confidence is not None:
        tail += f" ({confidence:.0%})"
    return f"{head}\n{tail}"


def prediction_grid(
    images: np.ndarray,
    true: Sequence[str | None],
    pred: Sequence[str],
    path: str | Path,
    confidence: Sequence[float] | None = None,
    rows: int = 4,
    cols: int = 4,
) -> Path:
    """A rows x cols grid of images titled with true and predicted labels;
    wrong predictions get a red title and frame."""
    picks = evenly_spaced(len(images), rows * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), picks):
        ax.imshow(images[i])
        wrong = bool(true[i]) and true[i] != pred[i]
        ax.set_title(
            prediction_title(true[i], pred[i], None if confidence is None else confidence[i]),
            fontsize=9, color=WRONG_COLOUR if wrong else "black",
        )
        if wrong:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(WRONG_COLOUR)
                spine.set_linewidth(4)
    fig.tight_layout()
    return _save(path, fig)


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Counts with true classes as rows and predictions as columns."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, str(int(value)), ha="center", va="center",
                color="white" if value > top / 2 else "black")
    ax.set_title(f"accuracy {np.trace(matrix) / max(matrix.sum(), 1):.3f} on {int(matrix.sum())} images")
    fig.tight_layout()
    return _save(path, fig)


def training_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Loss and accuracy per epoch, training and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["loss", "accuracy"]):
        for prefix, style in (("", "-"), ("val_", "--")):
            column = prefix + metric
            if column in history:
                ax.plot(history["epoch"] + 1, history[column], style, marker="o", label=column)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(path, fig)


# ---------------------------------------------------------------- attention
def vit_keras_attention_figure(image: np.ndarray, attention_map: np.ndarray, path: str | Path) -> Path:
    """The post's figure: 'Original' | 'Attention Map', the map being what
    `vit_keras.visualize.attention_map` returned for the image
    (`attention.vit_keras_attention_map`)."""
    fig, (ax1, ax2) = plt.subplots(ncols=2)
    ax1.axis("off")
    ax2.axis("off")
    ax1.set_title("Original")
    ax2.set_title("Attention Map")
    ax1.imshow(image)
    ax2.imshow(attention_map)
    return _save(path, fig)


def _plain(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, colour: str) -> None:
    """A coloured frame around a panel (wrong predictions are framed red)."""
    ax.axis("on")
    _plain(ax)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)


def attention_figure(
    image: np.ndarray,
    masked: np.ndarray,
    overlay: np.ndarray,
    title: str,
    path: str | Path,
    wrong: bool = False,
    extra: tuple[np.ndarray, str] | None = None,
) -> Path:
    """One image: Original | Attention Map (the post's mask * image) | Overlay,
    plus an optional extra panel (e.g. a class-specific map) given as (image, title)."""
    panels = [(image, "Original"), (masked, "Attention Map"), (overlay, "Overlay")]
    if extra is not None:
        panels.append(extra)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.8))
    for ax, (picture, name) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11, color=WRONG_COLOUR if wrong else "black")
    fig.tight_layout()
    return _save(path, fig)


def attention_grid(
    images: np.ndarray,
    attention: np.ndarray,
    true: Sequence[str | None],
    pred: Sequence[str],
    path: str | Path,
    confidence: Sequence[float] | None = None,
    cols: int = 4,
) -> Path:
    """The prediction grid with each image's attention beneath it; wrong
    predictions get a red title and frame."""
    count = len(images)
    cols = max(1, min(cols, count))
    blocks = max(1, -(-count // cols))
    fig = plt.figure(figsize=(3 * cols, 6.3 * blocks))
    outer = fig.add_gridspec(blocks, cols, left=0.02, right=0.98, bottom=0.01, top=0.97 if blocks > 1 else 0.94,
                             hspace=0.18, wspace=0.08)
    for i in range(count):
        inner = outer[i // cols, i % cols].subgridspec(2, 1, hspace=0.03)
        top, bottom = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        wrong = bool(true[i]) and true[i] != pred[i]
        top.imshow(images[i])
        top.set_title(prediction_title(true[i], pred[i], None if confidence is None else confidence[i]),
                      fontsize=9, color=WRONG_COLOUR if wrong else "black")
        bottom.imshow(attention[i])
        for ax in (top, bottom):
            if wrong:
                _frame(ax, WRONG_COLOUR)
            else:
                ax.axis("off")
    return _save(path, fig)


def comparison_grid(
    images: np.ndarray,
    attentions: Sequence[np.ndarray],
    run_names: Sequence[str],
    true: Sequence[str | None],
    preds: Sequence[Sequence[str]],
    confidences: Sequence[Sequence[float]],
    path: str | Path,
    per_row: int = 2,
) -> Path:
    """Runs side by side on the same images: Original | run A | run B, `per_row`
    images to a row; each attention panel names its run and prediction."""
    count, runs = len(images), len(attentions)
    per_row = max(1, min(per_row, count))
    rows = max(1, -(-count // per_row))
    width = 1 + runs
    fig, axes = plt.subplots(rows, width * per_row, figsize=(2.8 * width * per_row, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(count):
        r, c = i // per_row, (i % per_row) * width
        axes[r, c].imshow(images[i])
        axes[r, c].set_title(f"True Label : {true[i] if true[i] else '?'}", fontsize=9)
        for k in range(runs):
            ax = axes[r, c + 1 + k]
            ax.imshow(attentions[k][i])
            wrong = bool(true[i]) and true[i] != preds[k][i]
            ax.set_title(f"{run_names[k]}\n{preds[k][i]} ({confidences[k][i]:.0%})", fontsize=9,
                         color=WRONG_COLOUR if wrong else RIGHT_COLOUR if true[i] else "black")
            if wrong:
                _frame(ax, WRONG_COLOUR)
    fig.tight_layout()
    return _save(path, fig)


def per_head_figure(images: np.ndarray, heads: np.ndarray, layer_label: str, path: str | Path) -> Path:
    """One row per image: the image, then the class token's attention of each head
    in one layer (each panel on its own colour scale; the title gives its peak)."""
    count, num_heads = heads.shape[0], heads.shape[1]
    fig, axes = plt.subplots(count, num_heads + 1, figsize=(2.1 * (num_heads + 1), 2.6 * count), squeeze=False)
    height, width = images.shape[1:3]
    for r in range(count):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("Original", fontsize=9)
        axes[r, 0].axis("off")
        for h in range(num_heads):
            ax = axes[r, h + 1]
            ax.imshow(heads[r, h], cmap="inferno", extent=(0, width, height, 0), interpolation="nearest")
            ax.set_title(f"head {h} (max {heads[r, h].max():.2f})", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"class token attention per head, {layer_label}", fontsize=11)
    fig.tight_layout()
    return _save(path, fig)


def attention_distance_figure(distance: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Mean attention distance (pixels) per layer, one dot per head (keras.io's figure)."""
    num_layers, num_heads = distance.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * num_layers + 3), 4))
    layers = np.arange(num_layers)
    for h in range(num_heads):
        ax.scatter(layers, distance[:, h], s=22, label=f"head {h}")
    ax.set_xticks(layers)
    ax.set_xlabel("layer (network depth)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_title(title or "mean attention distance per head")
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)  # the grid under the dots, not across them
    if num_heads <= 16:
        ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(path, fig)


# ---------------------------------------------------------------- faithfulness
FAITHFULNESS_TITLES = {"deletion": "deletion (most relevant first; low is faithful)",
                       "insertion": "insertion into a blurred photo (high is faithful)",
                       "negative": "deletion, least relevant first (high is faithful)"}


def faithfulness_curves(curves: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path:
    """The mean perturbation curve of every method, one panel per kind: the
    predicted class's probability against the share of patches changed."""
    kinds = list(FAITHFULNESS_TITLES)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.2), sharey=True)
    for ax, kind in zip(axes, kinds):
        for i, (method, by_kind) in enumerate(curves.items()):
            mean = np.asarray(by_kind[kind]).mean(axis=0)
            baseline = method in ("random", "gaussian")
            # one colour per method (tab20: 14 maps for 4 heads, 22 for ViT-B/16's 12 wrap to dotted lines)
            style = "--" if baseline else ("-" if i < 20 else ":")
            ax.plot(np.linspace(0, 1, len(mean)), mean, style, color=plt.get_cmap("tab20")(i % 20), label=method,
                    linewidth=2.0 if method.startswith("rollout-mean") else 1.2)
        ax.set_title(FAITHFULNESS_TITLES[kind], fontsize=10)
        ax.set_xlabel("share of patches changed")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the predicted class")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(path, fig)
