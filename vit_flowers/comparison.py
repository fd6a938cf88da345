"""The `plot` command's work: attention figures for one run dir, or two side by side.

Takes the images (rows file, true), predicts them with the first run,
keeps all, the correct or the wrong predictions, picks up to `limit` spread
over the list, and writes for those:

- `attention_<k>_<name>.png`: Original | Attention Map (the post's masked
  image) | Overlay, titled with true label, prediction and confidence; with
  `--class`, a fourth panel holds the class-specific map;
- `attention_grid.png`: the prediction grid with each image's attention beneath;
- `comparison_grid.png` (two runs): both runs' attention on the same images;
- `per_head.png`, `attention_distance.png`: the first run's heads;
- `vit_keras_attention.png`: the post's own call (vit_keras) on the first image, for reference;
- `attention_selection.csv` (the images shown) and `skipped_files.csv`;
- with `faithfulness`, the scores of every map on the images shown
  (`faithfulness_job`).

Filters (`--only`) use the first run's predictions. Figures an earlier run
left in the folder that this one does not rewrite are removed, so the
folder shows one run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from keras.utils import Progbar

from . import atomic, plots
from . import report as report_page
from .attention import AttentionExplainer, AttentionMaps, AttentionSummary, explainer_for, vit_keras_attention_map
from .choices import FAITHFULNESS_STEPS, PREDICTED
from .command_options import check_plot_options
from .errors import BadInputError
from .faithfulness_job import OWNED_OUTPUTS as FAITHFULNESS_OUTPUTS
from .faithfulness_job import report_rows, score_faithfulness, write_faithfulness
from .images import SKIPPED_COLUMNS, load_images, none_readable_message, write_skipped
from .model import load_run
from .outputs import REPORT_FILE, SKIPPED_FILE, remove_stale
from .predict import predict_files, predictions_table

DISPLAY_MIN = 192  # images smaller than this are shown enlarged, the mask drawn at that size
PER_HEAD_IMAGES = 4
GRID_FILE = "attention_grid.png"
COMPARISON_FILE = "comparison_grid.png"
PER_HEAD_FILE = "per_head.png"
DISTANCE_FILE = "attention_distance.png"
VIT_KERAS_FILE = "vit_keras_attention.png"
SELECTION_FILE = "attention_selection.csv"
# every file name the command writes: an earlier run's that this one did not rewrite are removed
OWNED_OUTPUTS = ("attention_[0-9][0-9]_*.png", GRID_FILE, COMPARISON_FILE, PER_HEAD_FILE, DISTANCE_FILE,
                 "vit_keras_attention.png", SELECTION_FILE, SKIPPED_FILE, REPORT_FILE, *FAITHFULNESS_OUTPUTS)


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """Short distinct names for figure titles: the dir name, with its parent when needed."""
    paths = [Path(d).resolve() for d in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n} #{k + 1}" for k, n in enumerate(names)]
    return names


def display_size(model_size: Sequence[int]) -> tuple[int, int]:
    """Model input size scaled up by a whole factor until the longer side is at least DISPLAY_MIN."""
    height, width = int(model_size[0]), int(model_size[1])
    factor = max(1, math.ceil(DISPLAY_MIN / max(height, width)))
    return height * factor, width * factor


def select_rows(table: pd.DataFrame, only: str, limit: int) -> pd.DataFrame:
    """Rows matching `only` (correct/wrong need a true label), `limit` spread over them."""
    labelled = table["true"] != ""
    if only == "correct":
        table = table[labelled & (table["true"] == table["pred"])]
    elif only == "wrong":
        table = table[labelled & (table["true"] != table["pred"])]
    return table.iloc[plots.evenly_spaced(len(table), limit)]


def _safe_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"


def _decode(files: Sequence[str], sizes: Sequence[tuple[int, int]]):
    """Decode `files` at each size: (one array per size, kept indices, skipped (file, reason))."""
    first = load_images(files, sizes[0], progress=False)
    kept = first.kept.tolist()
    others = [load_images([files[i] for i in kept], size, progress=False).images for size in sizes[1:]]
    return [first.images, *others], kept, list(first.skipped.itertuples(index=False, name=None))


def _check_layers(num_layers: int, start: int, stop: int | None, head_layer: int, run_dir: Path) -> None:
    if not range(num_layers)[start:stop]:
        raise BadInputError(f"--start-layer {start} --stop-layer {stop}: no layer of the {num_layers} of {run_dir}")
    if not -num_layers <= head_layer < num_layers:
        raise BadInputError(f"--head-layer {head_layer}: {run_dir} has {num_layers} layers")


def _class_target(class_name: str | None, class_names: Sequence[str], run_dir: Path) -> int | None:
    """-1 for 'predicted', the class index for a name, None for no class-specific map."""
    if class_name is None:
        return None
    if class_name == PREDICTED:
        return -1
    if class_name not in class_names:
        raise BadInputError(f"--class {class_name!r}: not a class of {run_dir} ({', '.join(class_names)})")
    return list(class_names).index(class_name)


@dataclass
class RunView:
    """One run's predictions and attention on the chosen images."""

    name: str
    pred: list[str]
    confidence: np.ndarray
    maps: AttentionMaps
    summary: AttentionSummary
    explainer: AttentionExplainer
    class_maps: AttentionMaps | None = None
    class_names: Sequence[str] = ()


def explain_run(model, class_names: Sequence[str], name: str, model_images: np.ndarray, display: np.ndarray,
                options: dict, target: int | None, batch_size: int, progress: bool) -> RunView:
    """Predictions, rollout maps (drawn on `display`) and, with a target, class-specific maps."""
    explainer = explainer_for(model)
    summary = explainer.summarize(model_images, options["head_fusion"], batch_size, progress=progress)
    rollout = {k: options[k] for k in ("discard_ratio", "start", "stop", "normalize")}
    maps = explainer.maps(summary, display, **rollout)
    class_maps = None
    if target is not None:
        class_maps = explainer.class_rollout(model_images, None if target < 0 else target, display=display,
                                             batch_size=batch_size, **rollout)
    return RunView(name=name, pred=[class_names[i] for i in summary.probs.argmax(axis=1)],
                   confidence=summary.probs.max(axis=1), maps=maps, summary=summary, explainer=explainer,
                   class_maps=class_maps, class_names=class_names)


def write_figures(out_dir: Path, files: Sequence[str], true: Sequence[str], display: np.ndarray,
                  views: Sequence[RunView], head_layer: int, progress: bool) -> tuple[list[Path], list[str]]:
    """Every figure of the command; returns (files written, per-image figure names)."""
    first = views[0]
    written, figure_names = [], []
    bar = Progbar(len(files), unit_name="figure") if progress and len(files) > 1 else None
    for i, f in enumerate(files):
        name = f"attention_{i:02d}_{_safe_name(f)}.png"
        figure_names.append(name)
        title = plots.prediction_title(true[i], first.pred[i], first.confidence[i]).replace("\n", "   ")
        extra = None
        if first.class_maps is not None:
            extra = (first.class_maps.overlay[i], f"class map: {first.class_names[first.class_maps.class_index[i]]}")
        written.append(plots.attention_figure(display[i], first.maps.masked[i], first.maps.overlay[i],
                                              f"{first.name}: {title}", out_dir / name,
                                              wrong=bool(true[i]) and true[i] != first.pred[i], extra=extra))
        if bar is not None:
            bar.update(i + 1)
    written.append(plots.attention_grid(display, first.maps.masked, true, first.pred, out_dir / GRID_FILE,
                                        confidence=first.confidence))
    if len(views) > 1:
        written.append(plots.comparison_grid(display, [v.maps.masked for v in views], [v.name for v in views], true,
                                             [v.pred for v in views], [v.confidence for v in views],
                                             out_dir / COMPARISON_FILE))
    explainer = first.explainer
    layer = range(explainer.num_layers)[head_layer]
    written.append(plots.per_head_figure(
        display[:PER_HEAD_IMAGES], explainer.per_head(first.summary, head_layer)[:PER_HEAD_IMAGES],
        f"layer {layer} of {explainer.num_layers} ({first.name})", out_dir / PER_HEAD_FILE))
    written.append(plots.attention_distance_figure(
        first.summary.distance.mean(axis=0), out_dir / DISTANCE_FILE,
        f"mean attention distance, {first.name}\n({len(files)} images, patch {explainer.patch_size} px)"))
    return written, figure_names


def plot_comparison(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    inputs: pd.DataFrame,
    limit: int = 16,
    only: str = "all",
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    class_name: str | None = None,
    batch_size: int = 32,
    normalize: str = "matrix",
    start_layer: int = 0,
    stop_layer: int | None = None,
    head_layer: int = -1,
    progress: bool = True,
    report: bool = True,
    final_dir: str | Path | None = None,
    faithfulness: bool = False,
    faithfulness_steps: int = FAITHFULNESS_STEPS,
    boxes: str | Path | None = None,
) -> list[Path]:
    """Write the attention figures of the images `inputs` (rows file, true)
    for one or two run dirs, and with `report` the page `report.html` (each
    image across the runs, side by side); returns the files written.
    `final_dir`: where the outputs end up when `out_dir` is a staging folder
    (for the messages). `faithfulness`: also score every map of the first
    run on the images shown, in `faithfulness_steps` steps, with `boxes`
    (a CSV of file, x0, y0, x1, y1) the pointing game too."""
    check_plot_options(run_dirs, limit, only, discard_ratio, batch_size)
    out_dir = Path(out_dir)
    runs = [load_run(d) for d in run_dirs]
    names = run_names(run_dirs)
    model, config = runs[0]
    class_names = config.model.class_names
    for (_, c), d in zip(runs, run_dirs):
        _check_layers(c.model.num_layers, start_layer, stop_layer, head_layer, Path(d))
    target = _class_target(class_name, class_names, Path(run_dirs[0]))  # class maps: first run

    # predict everything with the first run, then choose the images to show
    probs, kept, skipped = predict_files(model, inputs["file"].tolist(), tuple(config.model.image_size),
                                         batch_size, progress=progress)
    rows = inputs.iloc[kept]
    table = predictions_table(rows["file"].tolist(), rows["true"].tolist(), probs, class_names)
    chosen = select_rows(table, only, limit)
    sizes = [display_size(config.model.image_size)] + [tuple(c.model.image_size) for _, c in runs]
    (display, *model_images), ok, bad = _decode(chosen["file"].tolist(), sizes)
    chosen = chosen.iloc[ok]

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped = pd.concat([skipped, pd.DataFrame(bad, columns=SKIPPED_COLUMNS)], ignore_index=True)
    skipped_report = write_skipped(skipped, out_dir / SKIPPED_FILE)
    if skipped_report is not None:
        written.append(skipped_report)
    if table.empty and len(skipped):  # every input was unreadable: not a success
        raise BadInputError(none_readable_message(skipped, Path(final_dir or out_dir) / SKIPPED_FILE))
    if chosen.empty:
        print(f"no image to show: {len(table)} predicted, none with --only {only}")
        empty = pd.DataFrame(columns=["file", "true", "pred", "confidence", "figure"])
        written.append(atomic.write_csv(out_dir / SELECTION_FILE, empty))
        remove_stale(out_dir, written, OWNED_OUTPUTS)
        return written

    options = {"head_fusion": head_fusion, "discard_ratio": discard_ratio, "start": start_layer,
               "stop": stop_layer, "normalize": normalize}
    views = [explain_run(m, c.model.class_names, name, imgs, display, options, target if k == 0 else None,
                         batch_size, progress)
             for k, ((m, c), name, imgs) in enumerate(zip(runs, names, model_images))]
    # the first run's labels are the ones the filter used (the same numbers up to float noise)
    views[0].pred = chosen["pred"].tolist()
    views[0].confidence = chosen[[f"prob_{c}" for c in class_names]].max(axis=1).to_numpy()
    files, true = chosen["file"].tolist(), chosen["true"].tolist()
    figures, figure_names = write_figures(out_dir, files, true, display, views, head_layer, progress)
    written += figures
    written.append(plots.vit_keras_attention_figure(display[0], vit_keras_attention_map(model, display[0]),
                                                    out_dir / VIT_KERAS_FILE))

    selection = pd.DataFrame({"file": files, "true": true})
    for k, view in enumerate(views):
        suffix = "" if k == 0 else f"_{view.name}"
        selection[f"pred{suffix}"] = view.pred
        selection[f"confidence{suffix}"] = view.confidence
    selection["figure"] = figure_names
    written.append(atomic.write_csv(out_dir / SELECTION_FILE, selection))
    faithful_rows = None
    if faithfulness:
        scored = score_faithfulness(model, model_images[0], files, class_names, faithfulness_steps, batch_size, boxes)
        written += write_faithfulness(out_dir, scored)
        faithful_rows = report_rows(scored)
    if report:
        written.append(report_page.write_comparison_report(out_dir, files, true, display, views, skipped,
                                                           faithfulness=faithful_rows))
    remove_stale(out_dir, written, OWNED_OUTPUTS)
    return written
