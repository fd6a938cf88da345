"""Which predictions get attention on the report page, and their encoded images.

Attention costs about one forward pass per image (the rollout needs every
layer's attention), so by default the page gets it for a bounded set: every
wrong prediction, the most confident mistakes first, then the least
confident of the others, up to `DEFAULT_SHARE` of the predictions.

How the share was chosen: on ViT-B/16 at 224 px (2 CPU cores, batches of
32) `predict` spent 192 ms per image and the rollout with its pictures
(decoding the photo again at two sizes, the forward pass, upsampling,
overlay, JPEG) 278 ms per image, 1.45 times as much. A fifth of predict's
time thus buys attention for 0.2 / 1.45 = 14% of the images; 12% leaves
room for the thumbnails (about 2 ms per image). Class-specific maps cost a
backward pass on top (802 ms per image, 4.2 times), so they are off unless
asked for. `all`, `none` or a number of images overrides the bound.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from keras.utils import Progbar

from .attention import explainer_for
from .choices import ALL, AUTO, DEFAULT_SHARE, NONE, OPTION_HELP, parse_attention_option  # noqa: F401
from .errors import BadInputError
from .images import load_images
from .report import LARGE_SIZE, AttentionImages, AttentionSet, SpilledImages, encode_jpeg, probability_columns


def attention_budget(option: int | str, rows: int) -> int:
    """How many of `rows` predictions get attention under `option`."""
    option = _parsed(option)
    if option == ALL:
        return rows
    if option == NONE:
        return 0
    if option == AUTO:
        return min(rows, math.ceil(DEFAULT_SHARE * rows - 1e-9))
    return min(rows, int(option))


def attention_order(table: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    """Every row position, in the order attention is given: the wrong ones (most
    confident first: the mistakes a person most wants explained), then the rest
    (least confident first). Ties keep the table's order."""
    confidence = table[probability_columns(class_names)].to_numpy(dtype=np.float64).max(axis=1) if len(table) else np.zeros(0)
    true = table["true"].fillna("").astype(str).to_numpy()
    wrong = (true != "") & (true != table["pred"].astype(str).to_numpy())
    positions = np.arange(len(table))
    first = positions[wrong][np.argsort(-confidence[wrong], kind="stable")]
    rest = positions[~wrong][np.argsort(confidence[~wrong], kind="stable")]
    return np.concatenate([first, rest]).astype(np.int64)


def select_for_attention(table: pd.DataFrame, class_names: Sequence[str], option: int | str = AUTO) -> np.ndarray:
    """Row positions of the predictions that get attention, in priority order."""
    return attention_order(table, class_names)[:attention_budget(option, len(table))]


def attention_note(table: pd.DataFrame, chosen: np.ndarray, option: int | str) -> str:
    """One line for the page: how many got attention and which."""
    option = _parsed(option)
    rows = len(table)
    if option == NONE or len(chosen) == 0:
        return f"attention not computed ({'--report-attention none' if option == NONE else 'no prediction chosen'})"
    if len(chosen) >= rows:
        return f"attention computed for every prediction ({rows})"
    true = table["true"].fillna("").astype(str).to_numpy()
    wrong = int(((true != "") & (true != table["pred"].astype(str).to_numpy())).sum())
    how = f"up to {DEFAULT_SHARE:.0%} of the predictions" if option == AUTO else f"--report-attention {option}"
    if wrong == 0:
        which = f"the {len(chosen)} least confident"
    elif len(chosen) == wrong:
        which = f"every wrong one ({wrong})"
    elif len(chosen) < wrong:
        which = f"the {len(chosen)} most confident of the {wrong} wrong ones"
    else:
        which = f"every wrong one ({wrong}) and the {len(chosen) - wrong} least confident others"
    return f"attention computed for {len(chosen)} of {rows} predictions ({how}): {which}; --report-attention all for every one"


def compute_attention(model, files: Sequence[str], positions: Sequence[int], class_maps: bool = False,
                      class_names: Sequence[str] = (), batch_size: int = 32, chunk_size: int = 64,
                      progress: bool = False) -> SpilledImages:
    """Rollout overlays (and, with `class_maps`, the predicted class's gradient-weighted
    map) for `files`, keyed by `positions`, kept in a temporary file
    (`report.SpilledImages`); a file that no longer reads is left out.

    Each file is decoded again at the model's input size (the input `predict`
    gave the model) and at LARGE_SIZE (the picture the overlay is drawn on),
    `chunk_size` images at a time so that memory stays bounded with `all`.
    """
    explainer = explainer_for(model)
    if class_maps and not explainer.has_head:
        raise BadInputError(f"{explainer.name!r} is a bare backbone: class-specific maps need the classifier")
    bar = None
    if progress and len(files):
        bar = Progbar(len(files), unit_name="image")
    out = SpilledImages()  # encoded images wait on disk, not in memory, until the page is written
    for start in range(0, len(files), chunk_size):
        part = list(files[start:start + chunk_size])
        small = load_images(part, explainer.input_size, progress=False)
        kept = [int(k) for k in small.kept]
        large = load_images([part[k] for k in kept], (LARGE_SIZE, LARGE_SIZE), progress=False)
        both = [kept[j] for j in large.kept]  # indices into `part` that read at both sizes
        if both:
            inputs = small.images[large.kept]
            display = large.images
            maps = explainer.rollout(inputs, display=display, batch_size=batch_size)
            cmaps = explainer.class_rollout(inputs, None, display=display, batch_size=batch_size) if class_maps else None
            for n, k in enumerate(both):
                item = AttentionImages(photo=encode_jpeg(display[n]), overlay=encode_jpeg(maps.overlay[n]))
                if cmaps is not None:
                    index = int(cmaps.class_index[n])
                    item.class_map = encode_jpeg(cmaps.overlay[n])
                    item.class_label = str(class_names[index]) if index < len(class_names) else str(index)
                out[int(positions[start + k])] = item
        if bar is not None:
            bar.update(min(start + chunk_size, len(files)))
    return out


def report_attention(model, table: pd.DataFrame, class_names: Sequence[str], option: int | str = AUTO,
                     class_maps: bool = False, batch_size: int = 32, progress: bool = False) -> AttentionSet:
    """Choose the predictions of `table` that get attention and compute their images."""
    option = _parsed(option)
    chosen = select_for_attention(table, class_names, option)
    files = table["file"].to_numpy()[chosen].tolist()
    images = compute_attention(model, files, chosen.tolist(), class_maps, class_names, batch_size,
                               progress=progress) if len(chosen) else {}
    return AttentionSet(images=images, note=attention_note(table, chosen, option))


def _parsed(option: int | str) -> int | str:
    try:
        return parse_attention_option(option)
    except argparse.ArgumentTypeError as err:
        raise BadInputError(f"--report-attention: {err}") from None
