"""Predict images with a run dir's model; tables, metrics and figures.

Inputs are a file list (labels from `type_dir`) or paths: files, or folders
whose class subfolders give the true labels. Images are decoded chunk by
chunk in background threads while the model works on the previous chunk.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras.utils import Progbar

from . import atomic, plots
from .datasets import preprocess
from .errors import BadInputError

# the rows (file, true) predict takes are read before TensorFlow starts, so they live with the file lists;
# `predict.collect_list` (and `collect_images`) work as they did
from .filelists import collect_images, collect_list  # noqa: F401
from .images import SKIPPED_COLUMNS, decode_image, iter_image_chunks, write_skipped
from .model import fused_attention_call
from .outputs import REPORT_FILE, SKIPPED_FILE, remove_stale

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
GRID_FILE = "prediction_grid.png"
CONFUSION_FILE = "confusion_matrix.png"
# the files `predict` writes: those an earlier run left that this one does not rewrite are removed
OWNED_OUTPUTS = (PREDICTIONS_FILE, METRICS_FILE, GRID_FILE, CONFUSION_FILE, SKIPPED_FILE, REPORT_FILE)
DISPLAY_SIZE = 160


@dataclass
class PredictionResult:
    table: pd.DataFrame  # file, true, pred, prob_<class>...
    skipped: pd.DataFrame  # file, reason
    metrics: dict | None


def predict_files(
    model,
    files: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int = 32,
    chunk_size: int = 256,
    progress: bool = True,
    strict: bool = False,
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Class probabilities for the readable files: (probs, kept indices, skipped).

    `mirror` averages each image's probabilities with its left-right mirror
    image's (test-time augmentation; twice the model time)."""
    bar = None
    if progress:
        bar = Progbar(len(files), unit_name="image")
    probs, kept, skipped = [], [], []
    for offset, chunk in iter_image_chunks(list(files), image_size, chunk_size):
        if strict and len(chunk.skipped):
            first = chunk.skipped.iloc[0]
            raise BadInputError(f"{first['file']}: {first['reason']} (--strict stops at the first bad file)")
        skipped.append(chunk.skipped)
        if len(chunk.images):
            x = preprocess(chunk.images)
            probs.append(predict_arrays(model, x, batch_size, mirror))
            kept.append(chunk.kept + offset)
        if bar is not None:
            bar.update(min(offset + chunk_size, len(files)))
    num_classes = model.output_shape[-1]
    return (
        np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32),
        np.concatenate(kept) if kept else np.zeros((0,), np.int64),
        pd.concat(skipped, ignore_index=True) if skipped else pd.DataFrame(columns=SKIPPED_COLUMNS),
    )


# model -> {options: its traced forward function}; the functions hold only a
# weak reference to the model, so a model dropped by its user is freed with them
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# The package's defaults for the prediction graph (benchmarks/README.md, figure 7):
# fused attention (`keras.ops.dot_product_attention`, see `model.fused_attention_call`)
# and no XLA.
FUSED_ATTENTION = True
JIT_COMPILE = False


def forward_options(model, fused: bool | None = None, jit_compile: bool | None = None) -> dict:
    """The options `forward` uses for `model`: the defaults above where not
    given; fused attention only where the model is a vit_keras chain it knows."""
    fused = FUSED_ATTENTION if fused is None else bool(fused)
    if fused and fused_attention_call(model) is None:
        fused = False
    return {"fused": fused, "jit_compile": JIT_COMPILE if jit_compile is None else bool(jit_compile)}


def _traced_forward(model, fused: bool, jit_compile: bool):
    """A `tf.function` of `model(x, training=False)` (or its fused-attention
    equivalent) that does not keep the model alive."""
    ref = weakref.ref(model)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    if fused:
        calls = weakref.WeakKeyDictionary()  # the model -> its fused call, built once

        def run(t):
            m = ref()
            if m not in calls:
                calls[m] = fused_attention_call(m)
            return calls[m](t)
    else:
        def run(t):
            return ref()(t, training=False)
    return tf.function(run, input_signature=[spec], reduce_retracing=True, jit_compile=jit_compile)


def forward(model, x: np.ndarray, batch_size: int = 32, fused: bool | None = None,
            jit_compile: bool | None = None) -> np.ndarray:
    """`model(x)` batch by batch through one graph traced per model and options.

    On the TensorFlow backend this is a cached `tf.function`, not
    `model.predict`: on 2 CPU cores `predict`'s per-call machinery (its
    tf.data input, the step loop) left one core idle in some runs, taking
    twice as long for the same ViT-B/16 batch (benchmarks/README.md, figure
    7). `fused` computes each block's attention with
    `keras.ops.dot_product_attention` (the same weights; the attention maps
    of `vit_flowers.attention` use the blocks' explicit weights instead);
    `jit_compile` compiles the graph with XLA. None: the package's defaults
    (FUSED_ATTENTION, JIT_COMPILE). Other backends use `model.predict`.
    """
    if keras.backend.backend() != "tensorflow":
        return model.predict(x, batch_size=batch_size, verbose=0)
    options = forward_options(model, fused, jit_compile)
    key = (options["fused"], options["jit_compile"])
    cache = _FORWARD.get(model)
    if cache is None:
        cache = _FORWARD[model] = {}
    fn = cache.get(key)
    if fn is None:
        fn = cache[key] = _traced_forward(model, *key)
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate([fn(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def predict_arrays(model, x: np.ndarray, batch_size: int = 32, mirror: bool = False) -> np.ndarray:
    """Probabilities for preprocessed images (N, H, W, 3); with `mirror`, the
    mean over each image and its left-right mirror image."""
    probs = forward(model, x, batch_size)
    if mirror:
        probs = (probs + forward(model, np.ascontiguousarray(x[:, :, ::-1]), batch_size)) / 2
    return probs


def predictions_table(files: Sequence[str], true: Sequence[str], probs: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per image: file, true (empty if unknown), pred, prob_<class>..."""
    table = pd.DataFrame({"file": list(files), "true": list(true),
                          "pred": [class_names[i] for i in probs.argmax(axis=1)]})
    for k, name in enumerate(class_names):
        table[f"prob_{name}"] = probs[:, k]
    return table


def compute_metrics(table: pd.DataFrame, class_names: Sequence[str]) -> dict | None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix over
    the rows with a known true label; None when no row has one."""
    labelled = table[table["true"] != ""]
    if labelled.empty:
        return None
    matrix = (
        pd.crosstab(pd.Categorical(labelled["true"], class_names), pd.Categorical(labelled["pred"], class_names),
                    dropna=False)
        .reindex(index=class_names, columns=class_names, fill_value=0)
        .to_numpy()
    )
    per_class = {}
    for k, name in enumerate(class_names):
        tp = int(matrix[k, k])
        predicted, actual = int(matrix[:, k].sum()), int(matrix[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "count": int(matrix.sum()),
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def grid_images(files: Sequence[str], size: int = DISPLAY_SIZE) -> np.ndarray:
    """Decode a few files again at a display size for figures."""
    return np.stack([decode_image(f, (size, size)) for f in files]) if len(files) else np.zeros((0, size, size, 3), np.uint8)


def write_outputs(result: PredictionResult, class_names: Sequence[str], out_dir: str | Path) -> list[Path]:
    """predictions.csv, skipped_files.csv, metrics.json and the two figures;
    an earlier run's outputs that this one does not rewrite (its metrics when
    this run has no labels, say) are removed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic.write_csv(out_dir / PREDICTIONS_FILE, result.table)]
    skipped = write_skipped(result.skipped, out_dir / SKIPPED_FILE)
    if skipped is not None:
        written.append(skipped)
    table = result.table
    if len(table):
        picks = plots.evenly_spaced(len(table), 16)
        rows = table.iloc[picks]
        confidence = rows[[f"prob_{c}" for c in class_names]].max(axis=1).to_numpy()
        written.append(plots.prediction_grid(grid_images(rows["file"].tolist()), rows["true"].tolist(),
                                             rows["pred"].tolist(), out_dir / GRID_FILE, confidence=confidence))
    if result.metrics is not None:
        written.append(atomic.write_json(out_dir / METRICS_FILE, result.metrics))
        written.append(plots.confusion_matrix_figure(np.array(result.metrics["confusion_matrix"]), class_names,
                                                     out_dir / CONFUSION_FILE))
    remove_stale(out_dir, written, OWNED_OUTPUTS)
    return written


def predict_inputs(model, run_config, inputs: pd.DataFrame, batch_size: int = 32,
                   strict: bool = False, progress: bool = True, mirror: bool = False) -> PredictionResult:
    """Predict the rows (file, true) of `inputs` with a loaded model."""
    class_names = run_config.model.class_names
    size = tuple(run_config.model.image_size)
    probs, kept, skipped = predict_files(model, inputs["file"].tolist(), size, batch_size,
                                         progress=progress, strict=strict, mirror=mirror)
    rows = inputs.iloc[kept]
    table = predictions_table(rows["file"].tolist(), rows["true"].tolist(), probs, class_names)
    return PredictionResult(table=table, skipped=skipped, metrics=compute_metrics(table, class_names))


def metrics_summary(metrics: dict | None) -> str:
    """One line for the terminal."""
    if metrics is None:
        return "no true labels: accuracy not computed"
    return f"test accuracy: {metrics['accuracy']:.3f} ({metrics['count']} images)"

