"""`vit-flowers plot --faithfulness`: score every attention map of a run on
the chosen photos (`faithfulness` computes) and write what a reviewer needs
to check the scores (`plots` draws the curves).

Files, beside the attention figures:
- faithfulness.csv: one row per photo and method (photos in the order of
  attention_selection.csv, each photo's methods together): file, method,
  deletion_auc, insertion_auc, negative_auc, predicted, and with --boxes
  pointing (1: the map's peak is inside the box) and mass_ratio;
- faithfulness_summary.csv: per method the mean of each AUC with a
  bootstrap 95% interval over photos, score = insertion - deletion, rank;
- faithfulness_maps.npz: one (photos, h, w) array per method, photos in the
  CSV's order, so that anyone can score the same maps again;
- faithfulness_curves.png: the mean curve of every method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import atomic
from .attention import explainer_for
from .boxes import read_boxes
from .choices import FAITHFULNESS_STEPS, check_faithfulness_steps
from .faithfulness import (
    mass_ratio,
    method_maps,
    perturbation_curves,
    pointing_hits,
    scale_boxes,
    scores_table,
    summary_table,
)
from .images import ORIENTATION
from .plots import faithfulness_curves
from .predict import forward

SCORES_FILE = "faithfulness.csv"
SUMMARY_FILE = "faithfulness_summary.csv"
MAPS_FILE = "faithfulness_maps.npz"
CURVES_FILE = "faithfulness_curves.png"
OWNED_OUTPUTS = (SCORES_FILE, SUMMARY_FILE, MAPS_FILE, CURVES_FILE)
BOOTSTRAP_SEED = 0


@dataclass
class FaithfulnessResult:
    """What `score_faithfulness` found for the chosen photos."""

    scores: pd.DataFrame
    summary: pd.DataFrame
    maps: dict[str, np.ndarray]
    curves: dict[str, dict[str, np.ndarray]]


def predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """float32 model inputs -> probabilities, one batch a call, through
    `predict.forward` (the package's traced graph, fused attention where it can)."""
    return lambda x: forward(model, x, batch_size=len(x))


def photo_sizes(files: Sequence[str]) -> np.ndarray:
    """(N, 2) height and width of each photo as the package decodes it (EXIF orientation applied)."""
    sizes = []
    for file in files:
        with Image.open(file) as image:
            width, height = image.size
            if image.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # rotated a quarter turn
                width, height = height, width
        sizes.append((height, width))
    return np.asarray(sizes, np.float64).reshape(-1, 2)


def score_faithfulness(model, images: np.ndarray, files: Sequence[str], class_names: Sequence[str],
                       steps: int = FAITHFULNESS_STEPS, batch_size: int = 32, boxes: str | Path | None = None,
                       seed: int = 0) -> FaithfulnessResult:
    """Every map the package makes for the predicted class of each photo
    (`images`: uint8 at the model's size, `files` their paths), scored by
    deletion, insertion and negative perturbation in `steps` steps, and with
    `boxes` (a CSV of file, x0, y0, x1, y1 in the photo's pixels) by the
    pointing game and the mass inside the box."""
    explainer = explainer_for(model)
    check_faithfulness_steps(steps, explainer.grid)
    maps = method_maps(explainer, images, seed=seed, batch_size=batch_size)
    curves, classes = perturbation_curves(predictor(model), images, maps, explainer.patch_size, steps,
                                          batch_size=batch_size)
    scores = scores_table(files, curves, classes, class_names)
    if boxes is not None:
        size = tuple(images.shape[1:3])
        scaled = scale_boxes(read_boxes(boxes, files), photo_sizes(files), size)
        scores["pointing"] = np.stack([pointing_hits(m, scaled, size) for m in maps.values()], 1).ravel().astype(int)
        scores["mass_ratio"] = np.stack([mass_ratio(m, scaled, size) for m in maps.values()], 1).ravel()
    return FaithfulnessResult(scores, summary_table(scores, BOOTSTRAP_SEED), maps, curves)


def write_faithfulness(out_dir: str | Path, result: FaithfulnessResult) -> list[Path]:
    """The four files of the module docstring; returns their paths."""
    out_dir = Path(out_dir)
    written = [atomic.write_csv(out_dir / SCORES_FILE, result.scores),
               atomic.write_csv(out_dir / SUMMARY_FILE, result.summary)]
    with atomic.atomic_path(out_dir / MAPS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{name: m.astype(np.float32) for name, m in result.maps.items()})
    written.append(out_dir / MAPS_FILE)
    written.append(faithfulness_curves(result.curves, out_dir / CURVES_FILE))
    return written


def report_rows(result: FaithfulnessResult) -> list[dict]:
    """The summary as rows for the report page, best first."""
    rows = []
    for _, r in result.summary.sort_values("rank").iterrows():
        row = {"method": r["method"], "rank": int(r["rank"]), "photos": int(r["photos"])}
        for column in ("deletion_auc", "insertion_auc", "negative_auc", "score"):
            row[column] = f"{r[column]:.3f} ({r[column + '_low']:.3f}-{r[column + '_high']:.3f})"
        for column in ("pointing", "mass_ratio"):
            row[column] = f"{r[column]:.2f}" if column in r else ""
        rows.append(row)
    return rows
