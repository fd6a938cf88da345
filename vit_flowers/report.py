"""The HTML report pages: every prediction, a training run, an attention comparison.

Each page is one self-contained file: images are embedded as small JPEG
data URIs, the style and the script are inline, and a Content-Security-Policy
allows nothing else (no request can leave the page, and an inline event
handler smuggled in through a file name could not run even if escaping
failed). It opens from disk in any browser, without a server.

A predictions page is written as it is rendered: the cards' thumbnails are
decoded chunk by chunk as the page reaches them and the attention images
are written out one by one, so the memory a page takes does not grow with
the number of predictions (the file does).

Pages are rendered from the Jinja2 templates in `vit_flowers/templates/`
with autoescaping on. File names that are not valid UTF-8 (surrogate-escaped
by Python) are shown with their bytes as `\\xNN`.

This module draws pages from plain data: a predictions table as
`predict.predictions_table` makes it, the metrics dict of
`predict.compute_metrics`, the skipped files, encoded attention images
(`report_attention` computes those). It computes nothing about models.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import jinja2
import markupsafe
import numpy as np
import pandas as pd

from . import atomic
from .images import iter_image_chunks
from .outputs import REPORT_FILE

THUMB_SIZE = 128  # px, the side of a card's thumbnail (the model's square view of the photo)
LARGE_SIZE = 224  # px, the side of the photo and overlays in a card's large view
JPEG_QUALITY = 72  # 1,000 thumbnails of real photos: about 6 MB as base64
CARD_BARS = 6  # a card shows every class's bar up to this many classes, else the top ones
CARD_TOP = 5
TEMPLATE_DIR = Path(__file__).with_name("templates")


# ---------------------------------------------------------------- text and images
def display_name(name: Any) -> str:
    """A file name as text a page can hold: bytes that are not UTF-8 (Python's
    surrogate escapes, as `os.fsdecode(b"caf\\xe9.jpg")` gives) become `\\xe9`."""
    name = str(name)
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def base_name(path: Any) -> str:
    """The last part of a path, for display (split before escaping, so `\\xNN` stays whole)."""
    return display_name(os.path.basename(str(path)) or str(path))


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """An RGB uint8 image as a `data:image/jpeg;base64,...` URI."""
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(np.asarray(image, np.uint8)[..., ::-1]),
                              [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not encode an image of shape {np.shape(image)} as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def thumbnails(files: Sequence[str], size: int = THUMB_SIZE, chunk_size: int = 256) -> list[str | None]:
    """A square JPEG data URI per file (the model's view: squashed to a square),
    None for a file that cannot be read now. Decoded chunk by chunk in threads."""
    out: list[str | None] = [None] * len(files)
    for offset, chunk in iter_image_chunks(list(files), (size, size), chunk_size):
        for row, index in enumerate(chunk.kept):
            out[offset + int(index)] = encode_jpeg(chunk.images[row])
    return out


# ---------------------------------------------------------------- attention on the page
@dataclass
class AttentionImages:
    """The large view of one prediction: its photo and attention, encoded."""

    photo: str  # data URI, the photo at LARGE_SIZE
    overlay: str  # data URI, the rollout's colour map over the photo
    class_map: str | None = None  # data URI, a class-specific map's overlay
    class_label: str = ""  # the class that map is for


class SpilledImages(Mapping):
    """AttentionImages by row position, kept in a temporary file (only the
    index is in memory), so that attention for every one of many predictions
    does not stay in memory until the page is written."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._index: dict[int, tuple[int, int]] = {}

    def __setitem__(self, key: int, item: AttentionImages) -> None:
        data = json.dumps([item.photo, item.overlay, item.class_map, item.class_label]).encode("utf-8",
                                                                                             "surrogatepass")
        self._file.seek(0, os.SEEK_END)
        self._index[int(key)] = (self._file.tell(), len(data))
        self._file.write(data)

    def __getitem__(self, key: int) -> AttentionImages:
        offset, length = self._index[key]
        self._file.seek(offset)
        photo, overlay, class_map, label = json.loads(self._file.read(length).decode("utf-8", "surrogatepass"))
        return AttentionImages(photo=photo, overlay=overlay, class_map=class_map, class_label=label)

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index


@dataclass
class AttentionSet:
    """Attention images by row position in the predictions table, and a line
    saying how the rows were chosen."""

    images: Mapping[int, AttentionImages] = field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------- rendering
def _finalize(value: Any) -> Any:
    """Every `{{ }}` passes here: None prints nothing, text with undecodable bytes prints them as \\xNN."""
    if value is None:
        return ""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return display_name(value)
    return value


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              autoescape=True, finalize=_finalize, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def _asset(env: jinja2.Environment, name: str) -> str:
    return env.loader.get_source(env, name)[0]


def csp_hash(script: str) -> str:
    """The Content-Security-Policy hash (quoted in the policy) that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"sha256-{base64.b64encode(digest).decode('ascii')}"


class StreamedJson:
    """A JSON object in a page, written piece by piece where the template puts
    it (`entries` gives the (key, value) pairs anew on each call); rendered to
    a string whole, it is the same text."""

    SLOT = "\x00streamed-json\x00"

    def __init__(self, entries) -> None:
        self.entries = entries

    def __html__(self) -> str:
        return self.SLOT

    def text(self) -> str:
        out = io.StringIO()
        write_json_object(out, self.entries())
        return out.getvalue()


def _pieces(template: str, context: dict):
    env = _environment()
    script = _asset(env, "report.js")
    return env.get_template(template).generate(
        css=markupsafe.Markup(_asset(env, "report.css")), script=markupsafe.Markup(script),
        script_hash=csp_hash(script), **context)


def _streamed(context: dict) -> list[StreamedJson]:
    return [v for v in context.values() if isinstance(v, StreamedJson)]


def render(template: str, **context: Any) -> str:
    """Render one page template with the shared style, script and policy."""
    html = "".join(_pieces(template, context))
    for value in _streamed(context):
        html = html.replace(StreamedJson.SLOT, value.text(), 1)
    return html


def write_rendered(path: str | os.PathLike, template: str, **context: Any) -> Path:
    """Render a page straight into its file (atomically), piece by piece."""
    streamed = _streamed(context)
    with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for piece in _pieces(template, context):
            while streamed and StreamedJson.SLOT in piece:
                before, piece = piece.split(StreamedJson.SLOT, 1)
                out.write(before)
                write_json_object(out, streamed.pop(0).entries())
            out.write(piece)
    return Path(path)


def write_page(path: str | os.PathLike, html: str) -> Path:
    """Write a page atomically."""
    return atomic.write_text(path, html)


def page_json(data: Any) -> str:
    """JSON safe inside a `<script type="application/json">` (no `</script>` can end it)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return markupsafe.Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


# ---------------------------------------------------------------- predictions
def probability_columns(class_names: Sequence[str]) -> list[str]:
    return [f"prob_{c}" for c in class_names]


def _check_table(table: pd.DataFrame, class_names: Sequence[str]) -> None:
    missing = [c for c in ["file", "true", "pred", *probability_columns(class_names)] if c not in table]
    if missing:
        raise ValueError(f"predictions table lacks columns {missing}")


def prediction_cards(table: pd.DataFrame, class_names: Sequence[str], thumbs: Sequence[str | None],
                     attention: Mapping[int, AttentionImages] | set, offset: int = 0) -> list[dict]:
    """One dict per row for the card template, in table order; `id` is the row
    position (`offset` + the row's place in `table`, a slice of the whole)."""
    probs = table[probability_columns(class_names)].to_numpy(dtype=np.float64)
    cards = []
    for k, (file, true, pred) in enumerate(zip(table["file"], table["true"].fillna(""), table["pred"])):
        row, i = probs[k], offset + k
        true = "" if true is None else str(true)
        if len(class_names) <= CARD_BARS:
            shown = range(len(class_names))
        else:
            shown = sorted(np.argsort(-row, kind="stable")[:CARD_TOP], key=lambda j: -row[j])
        cards.append({
            "id": i, "name": base_name(file), "path": display_name(file), "true": true, "pred": str(pred),
            "conf": float(row.max()) if len(row) else 0.0, "wrong": bool(true) and true != str(pred),
            "bars": [(class_names[j], float(row[j])) for j in shown], "thumb": thumbs[k],
            "attention": i in attention,
        })
    return cards


def prediction_summary(table: pd.DataFrame, metrics: dict | None, class_names: Sequence[str]) -> dict:
    """Counts, accuracy, per-class scores and the confusion matrix with cell shades."""
    true = table["true"].fillna("").astype(str)
    labelled = true != ""
    wrong = int((labelled & (true != table["pred"].astype(str))).sum())
    summary: dict[str, Any] = {"count": len(table), "labelled": int(labelled.sum()), "wrong": wrong,
                               "accuracy": None, "per_class": [], "matrix": None}
    if metrics is None:
        return summary
    names = list(metrics.get("class_names", class_names))
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    top = max(int(matrix.max()) if matrix.size else 0, 1)
    summary["accuracy"] = float(metrics["accuracy"])
    summary["per_class"] = [{"name": n, **metrics["per_class"][n]} for n in names if n in metrics["per_class"]]
    summary["matrix"] = {
        "names": names,
        "rows": [[{"true": t, "pred": p, "count": int(matrix[r, c]), "shade": round(0.08 + 0.72 * matrix[r, c] / top, 3)
                   if matrix[r, c] else 0.0, "diagonal": r == c} for c, p in enumerate(names)]
                 for r, t in enumerate(names)],
        "row_totals": [int(v) for v in matrix.sum(axis=1)],
        "col_totals": [int(v) for v in matrix.sum(axis=0)],
    }
    return summary


def skipped_rows(skipped: pd.DataFrame | None) -> list[dict]:
    if skipped is None or len(skipped) == 0:
        return []
    return [{"file": display_name(f), "reason": str(r)} for f, r in zip(skipped["file"], skipped["reason"])]


class Cards:
    """The cards of a page, made as the template iterates them: thumbnails
    (when not given) are decoded `chunk_size` files at a time, the next chunk
    in the background, so only one chunk's images are ever held."""

    def __init__(self, table: pd.DataFrame, class_names: Sequence[str],
                 thumbs: Sequence[str | None] | None, attention: Mapping[int, AttentionImages],
                 chunk_size: int = 256) -> None:
        self.table, self.class_names, self.thumbs = table, list(class_names), thumbs
        self.with_attention = set(attention)
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self):
        size = self.chunk_size
        if self.thumbs is not None:
            for start in range(0, len(self.table), size):
                yield from prediction_cards(self.table.iloc[start:start + size], self.class_names,
                                            self.thumbs[start:start + size], self.with_attention, start)
            return
        files = self.table["file"].tolist()
        for offset, chunk in iter_image_chunks(files, (THUMB_SIZE, THUMB_SIZE), size):
            thumbs: list[str | None] = [None] * min(size, len(files) - offset)
            for row, index in enumerate(chunk.kept):
                thumbs[int(index)] = encode_jpeg(chunk.images[row])
            yield from prediction_cards(self.table.iloc[offset:offset + len(thumbs)], self.class_names, thumbs,
                                        self.with_attention, offset)


def attention_entries(attention: AttentionSet, rows: int):
    """(key, value) of the large views the page's script reads, one at a time."""
    for i, a in attention.images.items():
        if 0 <= i < rows:
            yield str(i), {"photo": a.photo, "overlay": a.overlay, "class_map": a.class_map,
                           "class_label": display_name(a.class_label)}


def _json_text(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_json_object(out, entries) -> None:
    """Write (key, value) pairs to `out` as one JSON object, safe in a
    `<script>` as `page_json` makes it (the same text, piece by piece)."""
    out.write("{")
    for n, (key, value) in enumerate(entries):
        out.write(("," if n else "") + _json_text(key) + ":" + _json_text(value))
    out.write("}")


def predictions_context(table: pd.DataFrame, metrics: dict | None, skipped: pd.DataFrame | None,
                        class_names: Sequence[str], attention: AttentionSet | None = None,
                        thumbs: Sequence[str | None] | None = None) -> dict:
    """Everything the predictions part of a page needs (also used by the train
    page). `cards` are made as the page is rendered (`Cards`)."""
    _check_table(table, class_names)
    table = table.reset_index(drop=True)
    attention = attention or AttentionSet()
    probs = table[probability_columns(class_names)].to_numpy(dtype=np.float64)
    count = sum(1 for i in attention.images if 0 <= i < len(table))
    return {
        "class_names": list(class_names),
        "summary": prediction_summary(table, metrics, class_names),
        "cards": Cards(table, class_names, thumbs, attention.images),
        "skipped": skipped_rows(skipped),
        "attention_note": attention.note,
        "attention_count": count,
        "attention_json": StreamedJson(lambda: attention_entries(attention, len(table))),
        "probs_json": page_json({"classes": list(class_names), "probs": np.round(probs, 4).tolist()}),
    }


def write_prediction_report(out_dir: str | os.PathLike, table: pd.DataFrame, metrics: dict | None,
                            skipped: pd.DataFrame | None, class_names: Sequence[str],
                            attention: AttentionSet | None = None, title: str = "Predictions",
                            subtitle: str = "", thumbs: Sequence[str | None] | None = None,
                            file_name: str = REPORT_FILE) -> Path:
    """Write `report.html` into `out_dir`: summary, filters and one card per prediction."""
    context = predictions_context(table, metrics, skipped, class_names, attention, thumbs)
    return write_rendered(Path(out_dir) / file_name, "predictions.html", page="predictions", title=title,
                          subtitle=subtitle, **context)


# ---------------------------------------------------------------- training run
CHART_WIDTH, CHART_HEIGHT = 440, 240
CHART_PAD = {"left": 52, "right": 12, "top": 12, "bottom": 34}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((high - first) / step + 1e-9) + 1)]


def line_chart(history: pd.DataFrame, columns: Sequence[str], title: str, best_epoch: int | None) -> dict | None:
    """An SVG line chart's geometry for `columns` of `history` against the epoch (1-based)."""
    present = [c for c in columns if c in history and pd.to_numeric(history[c], errors="coerce").notna().any()]
    if not present or "epoch" not in history or history.empty:
        return None
    epochs = history["epoch"].to_numpy(dtype=np.float64) + 1
    values = {c: pd.to_numeric(history[c], errors="coerce").to_numpy(dtype=np.float64) for c in present}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    pad = 0.05 * (high - low)
    low, high = low - pad, high + pad
    x0, x1 = float(epochs.min()), float(epochs.max())
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    left, top = CHART_PAD["left"], CHART_PAD["top"]
    inner_w = CHART_WIDTH - left - CHART_PAD["right"]
    inner_h = CHART_HEIGHT - top - CHART_PAD["bottom"]

    def sx(x: float) -> float:
        return round(left + (x - x0) / (x1 - x0) * inner_w, 1)

    def sy(y: float) -> float:
        return round(top + (high - y) / (high - low) * inner_h, 1)

    series = []
    for k, c in enumerate(present):
        pts = [(sx(e), sy(v), int(e), float(v)) for e, v in zip(epochs, values[c]) if math.isfinite(v)]
        series.append({"name": c, "dashed": c.startswith("val_"), "colour": k,
                       "points": " ".join(f"{x},{y}" for x, y, _, _ in pts), "dots": pts})
    step = max(1, math.ceil((x1 - x0) / 10))
    x_ticks = [(sx(e), int(e)) for e in range(int(math.ceil(x0)), int(x1) + 1, step)]
    y_ticks = [(sy(v), f"{v:.4g}") for v in nice_ticks(low, high) if low <= v <= high]
    best = None
    if best_epoch is not None and best_epoch >= 0 and x0 <= best_epoch + 1 <= x1:
        best = sx(best_epoch + 1)
    return {"title": title, "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": left, "top": top,
            "right": CHART_WIDTH - CHART_PAD["right"], "bottom": CHART_HEIGHT - CHART_PAD["bottom"],
            "series": series, "x_ticks": x_ticks, "y_ticks": y_ticks, "best": best}


def config_sections(config: Mapping[str, Any]) -> list[dict]:
    """A nested config dict as titled tables of (key, value text)."""
    flat, sections = [], []
    for key, value in config.items():
        if isinstance(value, Mapping):
            sections.append({"title": str(key), "rows": [(str(k), _config_text(v)) for k, v in value.items()]})
        else:
            flat.append((str(key), _config_text(value)))
    if flat:
        sections.insert(0, {"title": "run", "rows": flat})
    return sections


def _config_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_config_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


class PredictionsLike(Protocol):
    table: pd.DataFrame
    metrics: dict | None
    skipped: pd.DataFrame


def write_train_report(run_dir: str | os.PathLike, history: pd.DataFrame, config: Mapping[str, Any] | Any,
                       best_epoch: int | None = None, validation: PredictionsLike | None = None,
                       skipped: pd.DataFrame | None = None, file_name: str = REPORT_FILE) -> Path:
    """Write `report.html` into a run dir: best epoch, curves, history, config and,
    with `validation` (a `predict.PredictionResult` on the validation list), its
    confusion matrix and every validation prediction as a card.

    `config` is a RunConfig or its `to_dict()`; `best_epoch` is 0-based (as
    `train_run` returns it), None or -1 when unknown.
    """
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    class_names = list(config.get("model", {}).get("class_names", []))
    history = history if history is not None else pd.DataFrame()
    best = None if best_epoch is None or best_epoch < 0 else int(best_epoch)
    best_row = None
    if best is not None and "epoch" in history and (history["epoch"] == best).any():
        row = history[history["epoch"] == best].iloc[0]
        best_row = [(c, f"{row[c]:.4g}") for c in history.columns if c != "epoch" and pd.notna(row[c])]
    charts = [line_chart(history, ["loss", "val_loss"], "loss", best),
              line_chart(history, ["accuracy", "val_accuracy"], "accuracy", best),
              line_chart(history, ["learning_rate"], "learning rate", best)]
    history_rows = [[("epoch", str(int(r["epoch"]) + 1))] +
                    [(c, f"{r[c]:.4g}" if pd.notna(r[c]) else "") for c in history.columns if c != "epoch"]
                    for _, r in history.iterrows()] if "epoch" in history else []
    context: dict[str, Any] = {
        "run_dir": display_name(Path(run_dir)), "epochs": len(history),
        "best_epoch": None if best is None else best + 1, "best_row": best_row,
        "charts": [c for c in charts if c is not None], "history_columns": [c for c in history.columns],
        "history_rows": history_rows, "config": config_sections(config),
        "train_skipped": skipped_rows(skipped), "has_validation": validation is not None,
    }
    if validation is not None:
        context.update(predictions_context(validation.table, validation.metrics, validation.skipped, class_names))
    return write_rendered(Path(run_dir) / file_name, "train.html", page="train",
                          title=f"Training run {Path(run_dir).name}", subtitle=display_name(Path(run_dir)), **context)


# ---------------------------------------------------------------- attention comparison
class MapsLike(Protocol):
    overlay: np.ndarray
    class_index: np.ndarray | None


class RunViewLike(Protocol):
    """One run's view of the chosen images (`comparison.RunView` has these)."""

    name: str
    pred: Sequence[str]
    confidence: Sequence[float]
    maps: MapsLike
    class_maps: MapsLike | None
    class_names: Sequence[str]


def comparison_rows(files: Sequence[str], true: Sequence[str], display: np.ndarray,
                    views: Sequence[RunViewLike]) -> list[dict]:
    """One row per image: the photo, then each run's prediction and overlays."""
    rows = []
    for i, file in enumerate(files):
        label = "" if true[i] is None else str(true[i])
        runs = []
        for view in views:
            pred = str(view.pred[i])
            run = {"name": view.name, "pred": pred, "conf": float(view.confidence[i]),
                   "wrong": bool(label) and pred != label, "overlay": encode_jpeg(view.maps.overlay[i]),
                   "class_map": None, "class_label": ""}
            if view.class_maps is not None:
                run["class_map"] = encode_jpeg(view.class_maps.overlay[i])
                index = view.class_maps.class_index
                run["class_label"] = str(view.class_names[int(index[i])]) if index is not None else ""
            runs.append(run)
        preds = {r["pred"] for r in runs}
        rows.append({"id": i, "name": base_name(file), "path": display_name(file), "true": label,
                     "photo": encode_jpeg(display[i]), "runs": runs, "disagree": len(preds) > 1,
                     "any_wrong": any(r["wrong"] for r in runs)})
    return rows


def write_comparison_report(out_dir: str | os.PathLike, files: Sequence[str], true: Sequence[str],
                            display: np.ndarray, views: Sequence[RunViewLike],
                            skipped: pd.DataFrame | None = None, file_name: str = REPORT_FILE,
                            faithfulness: list[dict] | None = None) -> Path:
    """Write `report.html` for the `plot` command: each image across the runs,
    side by side; with `faithfulness` (`faithfulness_job.report_rows`) the
    table of how faithful each map is."""
    names = [v.name for v in views]
    html = render("comparison.html", page="comparison", title="Attention comparison",
                  subtitle=" vs ".join(display_name(n) for n in names), run_names=names,
                  rows=comparison_rows(files, true, display, views), skipped=skipped_rows(skipped),
                  has_class_maps=any(v.class_maps is not None for v in views), faithfulness=faithfulness)
    return write_page(Path(out_dir) / file_name, html)
