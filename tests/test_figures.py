"""Figures read as a person reads them, not sized.

Each figure is drawn from known inputs and its PNG opened: the prediction
grid frames the wrong panels red and the right ones not, and each title
shows its own panel's labels (two renders that differ in one label differ
in that panel's title line and nowhere else); the confusion matrix's cells
have the colour and the number of their count; the attention overlay is
hottest where the attention peak was put; the training curves go through
the values of the history; the `plot` command's figures put each map under
(or beside) its own image and frame and colour each run's verdict, each
head's panel is brightest at that head's peak, and the attention distances
lie on one axis. Finally the `predict` command's own figures are checked
against its `metrics.json` and `predictions.csv`.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CLASS_NAMES
from vit_flowers import attention, cli, plots

WRONG_RGB = np.array([int(plots.WRONG_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
TITLE_POINTS = 9  # the grid's title font size


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def near(pixels: np.ndarray, colour, tolerance: int = 3) -> np.ndarray:
    """Mask of the pixels within `tolerance` of `colour` in every channel."""
    return np.abs(pixels - np.asarray(colour)).max(axis=-1) <= tolerance


# ------------------------------------------------------------ prediction grid
def panel_colour(i: int) -> tuple[int, int, int]:
    """A flat colour of its own for image i (no red, no grey)."""
    return (20 + 7 * i, 180, 100 + 4 * i)


def flat_images(count: int) -> np.ndarray:
    images = np.zeros((count, 8, 8, 3), np.uint8)
    for i in range(count):
        images[i] = panel_colour(i)
    return images


def image_box(png: np.ndarray, colour) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels of a panel's flat colour."""
    ys, xs = np.nonzero(near(png, colour, 1))
    assert len(ys) > 1000, f"panel of colour {colour} not found"
    return ys.min(), ys.max(), xs.min(), xs.max()


def frame_share(png: np.ndarray, box) -> float:
    """Share of red pixels on two rings 2 and 4 px outside a panel's image (a
    frame of 4 points is about 6 px wide, half of it outside the image; a
    hairline would not reach the outer ring), over the middle 80% of each side."""
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    ring = np.concatenate([
        np.concatenate([png[top - d, left + w // 10:right - w // 10], png[bottom + d, left + w // 10:right - w // 10],
                        png[top + h // 10:bottom - h // 10, left - d], png[top + h // 10:bottom - h // 10, right + d]])
        for d in (2, 4)
    ])
    return float(near(ring, WRONG_RGB).mean())


def title_band(png: np.ndarray, box) -> tuple[slice, slice]:
    """Rows and columns of the two title lines above a panel's image (titles are narrower than panels)."""
    top, _, left, right = box
    return slice(max(0, top - 40), top - 4), slice(left, right + 1)


def ink_count(png: np.ndarray, box, colour, tolerance: int = 40) -> int:
    """Pixels near `colour` in a panel's title band; rows that are mostly red
    (the frame of the panel above) and their corners do not count."""
    rows, cols = title_band(png, box)
    band = png[rows, cols]
    frame_rows = np.convolve(near(band, WRONG_RGB, 40).mean(axis=1) > 0.5, np.ones(5), mode="same") > 0
    found = near(band, colour, tolerance)
    found[frame_rows] = False
    return int(found.sum())


def title_inks(png: np.ndarray, box) -> tuple[int, int]:
    """(red text pixels, black text pixels) in a panel's title band, the frame above left out of the red."""
    rows, cols = title_band(png, box)
    return ink_count(png, box, WRONG_RGB), int((png[rows, cols].max(axis=-1) < 60).sum())


def framed_cells(png: np.ndarray, rows: int = 4, cols: int = 4, side: int = 150) -> set[int]:
    """Grid cells (row-major) holding a red frame: a connected red outline at
    least `side` pixels wide and high, placed by its centre."""
    red = near(png, WRONG_RGB).astype(np.uint8)
    n, _, stats, centres = cv2.connectedComponentsWithStats(red)
    height, width = png.shape[:2]
    return {
        int(centres[i][1] * rows // height) * cols + int(centres[i][0] * cols // width)
        for i in range(1, n)
        if stats[i, cv2.CC_STAT_WIDTH] >= side and stats[i, cv2.CC_STAT_HEIGHT] >= side
    }


LABELS_TRUE = [CLASS_NAMES[i % 5] for i in range(16)]
WRONG = {1: "sunflowers", 6: "daisy", 11: "tulips", 12: "dandelion"}
LABELS_PRED = [WRONG.get(i, t) for i, t in enumerate(LABELS_TRUE)]
LABELS_TRUE[14] = None  # unknown truth: never wrong, no frame
LABELS_PRED[14] = "roses"


def draw_grid(path: Path, true=LABELS_TRUE, pred=LABELS_PRED, images=None) -> np.ndarray:
    images = flat_images(16) if images is None else images
    plots.prediction_grid(images, list(true), list(pred), path, confidence=np.linspace(0.3, 0.99, len(images)))
    return read_png(path)


@pytest.fixture(scope="module")
def grid_png(tmp_path_factory) -> np.ndarray:
    return draw_grid(tmp_path_factory.mktemp("grid") / "grid.png")


def test_wrong_predictions_are_framed_red_and_right_ones_not(grid_png):
    for k in range(16):
        box = image_box(grid_png, panel_colour(k))
        share = frame_share(grid_png, box)
        red, black = title_inks(grid_png, box)
        if k in WRONG:
            assert share > 0.95, f"panel {k} ({LABELS_TRUE[k]} -> {LABELS_PRED[k]}) is wrong but {share:.0%} framed"
            assert red > 100 and black == 0, f"panel {k}: wrong, its title should be red ({red} red, {black} black)"
        else:
            assert share == 0, f"panel {k} ({LABELS_TRUE[k]} -> {LABELS_PRED[k]}) is right but framed ({share:.0%})"
            assert red == 0 and black > 100, f"panel {k}: right, its title should be black ({red} red, {black} black)"
    assert framed_cells(grid_png) == set(WRONG)


def test_panels_are_in_reading_order(grid_png):
    """Panel k sits in row k // 4, column k % 4 of the figure."""
    height, width = grid_png.shape[:2]
    for k in range(16):
        top, bottom, left, right = image_box(grid_png, panel_colour(k))
        assert ((top + bottom) // 2 * 4 // height, (left + right) // 2 * 4 // width) == divmod(k, 4), k


def test_more_images_than_panels_shows_evenly_spaced_ones(tmp_path):
    """31 images: the panels show images 0, 2, ..., 30, each framed by its own labels."""
    true = [CLASS_NAMES[i % 5] for i in range(31)]
    pred = [CLASS_NAMES[(i + 1) % 5] if i % 4 == 0 else true[i] for i in range(31)]
    png = draw_grid(tmp_path / "g.png", true, pred, flat_images(31))
    shown = plots.evenly_spaced(31, 16)
    assert shown.tolist() == list(range(0, 31, 2))
    for k, i in enumerate(shown):
        share = frame_share(png, image_box(png, panel_colour(i)))
        assert share > 0.95 if i % 4 == 0 else share == 0, (k, i, share)
    for i in range(1, 31, 2):  # the others are not drawn
        assert near(png, panel_colour(i), 1).sum() == 0, i
    assert framed_cells(png) == {k for k, i in enumerate(shown) if i % 4 == 0}


def changed_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero((a != b).any(axis=-1))
    return ys, xs


@pytest.mark.parametrize("k", [6, 9])
def test_each_title_shows_its_own_panels_labels(grid_png, tmp_path, k):
    """Changing one panel's true label changes the first line of that panel's
    title and nothing else; changing its prediction, the second line only.
    (Panel 6 is wrong and stays wrong; panel 9 is right and both labels change together.)"""
    box = image_box(grid_png, panel_colour(k))
    rows, cols = title_band(grid_png, box)
    others = [c for c in CLASS_NAMES if c not in (LABELS_TRUE[k], LABELS_PRED[k])]

    def changed(true, pred, name):
        ys, xs = changed_rows(grid_png, draw_grid(tmp_path / name, true, pred))
        assert len(ys) > 50, f"{name}: changing a label of panel {k} changed nothing"
        assert rows.start <= ys.min() and ys.max() < rows.stop and cols.start <= xs.min() and xs.max() < cols.stop, (
            f"{name}: changes at rows {ys.min()}-{ys.max()}, columns {xs.min()}-{xs.max()}; "
            f"panel {k}'s title is rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop}")
        return ys

    if LABELS_TRUE[k] != LABELS_PRED[k]:
        true = list(LABELS_TRUE)
        true[k] = others[0]
        first = changed(true, LABELS_PRED, "true.png")
        pred = list(LABELS_PRED)
        pred[k] = others[1]
        second = changed(LABELS_TRUE, pred, "pred.png")
        assert first.max() < second.min(), "the true label is the first line, the prediction the second"
    else:
        true, pred = list(LABELS_TRUE), list(LABELS_PRED)
        true[k] = pred[k] = others[0]
        both = changed(true, pred, "both.png")
        assert both.max() - both.min() > 20  # both lines


def test_prediction_title_text():
    assert plots.prediction_title("daisy", "roses", 0.874) == "True Label : daisy\nPredicted Label : roses (87%)"
    assert plots.prediction_title(None, "roses") == "True Label : ?\nPredicted Label : roses"


# ------------------------------------------------------------ the words on the figures
@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib figures the plots save, in order, to read their words
    (the pixels say where things are and in which colour; the artists say what the text is)."""
    figures = []
    save = plots.save_figure

    def keep(path, figure, **kwargs):
        figures.append(figure)
        return save(path, figure, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def colour_of(artist) -> tuple:
    from matplotlib.colors import to_rgb

    return to_rgb(artist.get_color())


def test_prediction_grid_titles_carry_each_panels_labels_and_confidence(drawn, tmp_path):
    confidence = np.linspace(0.3, 0.99, 16)
    draw_grid(tmp_path / "g.png")
    plots.prediction_grid(flat_images(3), ["daisy", None, "roses"], ["daisy", "tulips", "tulips"], tmp_path / "n.png")
    titled = [ax for ax in drawn[0].axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [
        plots.prediction_title(t, p, c) for t, p, c in zip(LABELS_TRUE, LABELS_PRED, confidence)]
    assert [ax.get_title() for ax in drawn[1].axes if ax.get_title()] == [
        "True Label : daisy\nPredicted Label : daisy", "True Label : ?\nPredicted Label : tulips",
        "True Label : roses\nPredicted Label : tulips"]  # no confidence given: none shown
    assert sum(not ax.get_title() for ax in drawn[1].axes) == 13  # the unused panels stay empty
    # axes are shown (as a red frame, no ticks) on the wrong panels only: no black frame on the others
    assert [ax.axison for ax in drawn[0].axes if ax.get_title()] == [i in WRONG for i in range(16)]
    assert [ax.axison for ax in drawn[1].axes] == [False, False, True] + [False] * 13
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in drawn[0].axes if ax.axison)


def test_confusion_matrix_words_axes_and_cell_text_colours(drawn, tmp_path):
    matrix = np.array([[9, 1, 0], [0, 4, 5], [2, 0, 10]])
    plots.confusion_matrix_figure(matrix, ["daisy", "roses", "tulips"], tmp_path / "cm.png")
    (ax,) = drawn[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["daisy", "roses", "tulips"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["daisy", "roses", "tulips"]
    assert all(t.get_rotation() == 45 and t.get_ha() == "right" for t in ax.get_xticklabels())
    assert ax.get_title() == "accuracy 0.742 on 31 images"  # 23 of 31
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    for (r, c), value in np.ndenumerate(matrix):
        text = cells[(r, c)]
        assert text.get_text() == str(value) and (text.get_ha(), text.get_va()) == ("center", "center")
        assert colour_of(text) == ((1, 1, 1) if value > 5 else (0, 0, 0)), (r, c)  # white on the dark cells
    plots.confusion_matrix_figure(np.zeros((2, 2), int), ["x", "y"], tmp_path / "empty.png")
    assert drawn[1].axes[0].get_title() == "accuracy 0.000 on 0 images"
    plots.confusion_matrix_figure(np.array([[1, 0], [0, 0]]), ["x", "y"], tmp_path / "one.png")
    assert drawn[2].axes[0].get_title() == "accuracy 1.000 on 1 images"


def test_attention_figure_words(drawn, tmp_path):
    image = flat_images(1)[0]
    plots.attention_figure(image, image, image, "True Label : roses", tmp_path / "a.png")
    plots.attention_figure(image, image, image, "T", tmp_path / "b.png", wrong=True, extra=(image, "class map"))
    assert [ax.get_title() for ax in drawn[0].axes] == ["Original", "Attention Map", "Overlay"]
    assert [ax.get_title() for ax in drawn[1].axes] == ["Original", "Attention Map", "Overlay", "class map"]
    assert drawn[0]._suptitle.get_text() == "True Label : roses"
    assert colour_of(drawn[0]._suptitle) == (0, 0, 0)  # not wrong unless told
    assert colour_of(drawn[1]._suptitle) == tuple(WRONG_RGB / 255)
    assert not any(ax.axison for figure in drawn for ax in figure.axes)
    plots.vit_keras_attention_figure(image, image, tmp_path / "vk.png")
    assert [(ax.get_title(), ax.axison) for ax in drawn[2].axes] == [("Original", False), ("Attention Map", False)]


def test_training_curves_words_and_epochs_from_one(drawn, tmp_path):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7],
                            "val_loss": [1.1, 0.9, 0.95], "val_accuracy": [0.4, 0.5, 0.55]})
    plots.training_curves(history, tmp_path / "c.png")
    for ax, metric in zip(drawn[0].axes, ["loss", "accuracy"]):
        assert (ax.get_title(), ax.get_xlabel()) == (metric, "epoch")
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == sorted([metric, f"val_{metric}"])
        for name, style in ((metric, "-"), (f"val_{metric}", "--")):
            assert lines[name].get_xdata().tolist() == [1, 2, 3]  # epochs counted from one, as Keras prints them
            assert lines[name].get_ydata().tolist() == history[name].tolist()
            assert lines[name].get_linestyle() == style
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [metric, f"val_{metric}"]


def test_attention_grid_and_comparison_words(drawn, tmp_path):
    images = flat_images(3)
    plots.attention_grid(images, images, ["daisy", None, "roses"], ["daisy", "tulips", "tulips"], tmp_path / "g.png",
                         confidence=[0.5, 0.25, 0.75])
    assert [ax.get_title() for ax in drawn[0].axes if ax.get_title()] == [
        plots.prediction_title("daisy", "daisy", 0.5), plots.prediction_title(None, "tulips", 0.25),
        plots.prediction_title("roses", "tulips", 0.75)]
    plots.comparison_grid(images[:2], [images[:2], images[:2]], ["first", "second"], ["daisy", None],
                          [["daisy", "roses"], ["tulips", "tulips"]], [[0.5, 0.25], [0.75, 1.0]], tmp_path / "c.png")
    assert [ax.get_title() for ax in drawn[1].axes if ax.get_title()] == [
        "True Label : daisy", "first\ndaisy (50%)", "second\ntulips (75%)",
        "True Label : ?", "first\nroses (25%)", "second\ntulips (100%)"]
    # a wrong pair keeps its axes (the red frame), every other panel hides them
    assert [ax.axison for ax in drawn[0].axes] == [False, False, False, False, True, True]
    assert [ax.axison for ax in drawn[1].axes] == [False, False, True, False, False, False]
    plots.attention_grid(images, images, ["daisy", None, "roses"], ["daisy", "tulips", "tulips"], tmp_path / "n.png")
    assert [ax.get_title() for ax in drawn[2].axes if ax.get_title()][0] == plots.prediction_title("daisy", "daisy")


def test_attention_grid_fills_its_figure_four_to_a_row_by_default(tmp_path):
    """One image: one block, the image centred and its map reaching the
    figure's bottom; five images: four to a row, the fifth in a second block."""
    png = read_png(plots.attention_grid(flat_images(1), flat_maps(1), ["daisy"], ["daisy"], tmp_path / "one.png"))
    height, width = png.shape[:2]
    image, att = image_box(png, panel_colour(0)), image_box(png, map_colour(0))
    assert abs((image[2] + image[3]) / 2 - width / 2) < 0.05 * width, "one image: centred, not in one of two columns"
    assert att[1] > 0.95 * height and image[0] < 0.12 * height, "one image: one block, the map at the bottom"
    assert ink_count(png, image, (0, 0, 0), 60) > 100, "the title is inside the figure"
    png = read_png(plots.attention_grid(flat_images(5), flat_maps(5), ["daisy"] * 5, ["daisy"] * 5, tmp_path / "five.png"))
    height, width = png.shape[:2]
    for i in range(5):
        box = image_box(png, panel_colour(i))
        assert ((box[0] + box[1]) // 2 * 2 // height, (box[2] + box[3]) // 2 * 4 // width) == divmod(i, 4), i


def test_comparison_grid_puts_two_images_to_a_row_by_default(tmp_path):
    """One image: one row of Original | run, filling the width; three images: two to a row."""
    one = read_png(plots.comparison_grid(flat_images(1), [flat_maps(1)], ["a"], ["daisy"], [["daisy"]], [[0.5]],
                                         tmp_path / "one.png"))
    height, width = one.shape[:2]
    original, run = image_box(one, panel_colour(0)), image_box(one, map_colour(0))
    assert original[2] < 0.1 * width and run[3] > 0.9 * width, "one image: its two panels fill the width"
    assert original[1] > 0.85 * height, "one image: one row"
    three = read_png(plots.comparison_grid(flat_images(3), [flat_maps(3)], ["a"], ["daisy"] * 3, [["daisy"] * 3],
                                           [[0.5] * 3], tmp_path / "three.png"))
    height, width = three.shape[:2]
    for i in range(3):
        box = image_box(three, panel_colour(i))
        assert ((box[0] + box[1]) // 2 * 2 // height, (box[2] + box[3]) // 2 * 4 // width) == (i // 2, (i % 2) * 2), i


def test_per_head_and_distance_figures_words(drawn, tmp_path):
    heads = np.zeros((1, 2, 2, 2))
    heads[0, 0, 0, 1], heads[0, 1, 1, 1] = 0.25, 0.5
    plots.per_head_figure(flat_images(1), heads, "layer 3", tmp_path / "h.png")
    assert [ax.get_title() for ax in drawn[0].axes] == ["Original", "head 0 (max 0.25)", "head 1 (max 0.50)"]
    assert drawn[0]._suptitle.get_text() == "class token attention per head, layer 3"
    assert not any(ax.axison for ax in drawn[0].axes)
    plots.attention_distance_figure(np.ones((3, 2)), tmp_path / "d.png")
    plots.attention_distance_figure(np.ones((3, 17)), tmp_path / "d17.png", "run a")
    plots.attention_distance_figure(np.ones((3, 16)), tmp_path / "d16.png")
    ax = drawn[1].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer (network depth)", "mean attention distance (pixels)")
    assert ax.get_title() == "mean attention distance per head" and drawn[2].axes[0].get_title() == "run a"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["head 0", "head 1"]
    assert ax.get_xticks().tolist() == [0, 1, 2]
    assert drawn[2].axes[0].get_legend() is None  # 17 heads: no legend of 17 entries
    assert len(drawn[3].axes[0].get_legend().get_texts()) == 16  # ViT-L's 16 heads still get one


# ------------------------------------------------------------ confusion matrix
def ink_of_text(text: str, fontsize: float) -> np.ndarray:
    """Text rendered black on white by matplotlib, as ink (0..1) cropped to its box."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 1), dpi=100)
    fig.text(0.5, 0.5, text, fontsize=fontsize, color="black", ha="center", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    gray = np.asarray(Image.open(buffer).convert("L")).astype(float)
    return crop_ink((255 - gray) / 255)


def crop_ink(ink: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    ys, xs = np.nonzero(ink > threshold)
    assert len(ys), "no text found"
    return ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def likeness(found: np.ndarray, reference: np.ndarray) -> float:
    """Normalised correlation of two inks of the same size (+-1 px), at the best
    small shift; -1 when their sizes differ."""
    if abs(found.shape[0] - reference.shape[0]) > 1 or abs(found.shape[1] - reference.shape[1]) > 1:
        return -1.0
    big = cv2.GaussianBlur(np.pad(found, 3).astype(np.float32), (0, 0), 0.8)
    small = cv2.GaussianBlur(np.pad(reference, 1).astype(np.float32), (0, 0), 0.8)
    return float(cv2.matchTemplate(big, small, cv2.TM_CCOEFF_NORMED).max())


def read_number(ink: np.ndarray, candidates, fontsize: float) -> tuple[int, float, float]:
    """The candidate number whose rendering looks most like `ink`: (number, its likeness, the runner-up's)."""
    scores = sorted(((likeness(ink, ink_of_text(str(v), fontsize)), v) for v in candidates), reverse=True)
    return scores[0][1], scores[0][0], scores[1][0]


def matrix_box(png: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the matrix: its black frame's lines."""
    dark = png.max(axis=-1) < 80
    rows, cols = dark.sum(axis=1), dark.sum(axis=0)
    ys, xs = np.nonzero(rows >= 0.9 * rows.max())[0], np.nonzero(cols >= 0.9 * cols.max())[0]
    return ys.min(), ys.max(), xs.min(), xs.max()


def read_matrix(png: np.ndarray, n: int, largest: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell background colours (n, n, 3) and the numbers written in the cells (n, n)."""
    import matplotlib

    top, bottom, left, right = matrix_box(png)
    h, w = (bottom - top) / n, (right - left) / n
    colours = np.zeros((n, n, 3))
    numbers = np.zeros((n, n), int)
    fontsize = matplotlib.rcParams["font.size"]
    for r, c in itertools.product(range(n), range(n)):
        y, x = top + r * h, left + c * w
        corner = png[int(y + 0.08 * h):int(y + 0.22 * h), int(x + 0.08 * w):int(x + 0.22 * w)]
        colours[r, c] = np.median(corner.reshape(-1, 3), axis=0)
        middle = png[int(y + 0.25 * h):int(y + 0.75 * h), int(x + 0.2 * w):int(x + 0.8 * w)].astype(float)
        # the text's ink: how far each pixel went from the cell colour towards black or white
        ink = np.maximum(np.abs(middle - colours[r, c]).max(axis=-1) / 255.0, 0)
        ink = ink / max(ink.max(), 1e-9)
        number, best, runner_up = read_number(crop_ink(ink, 0.3), range(largest + 6), fontsize)
        assert best > 0.8 and best - runner_up > 0.05, f"cell ({r}, {c}): unreadable ({best:.3f} vs {runner_up:.3f})"
        numbers[r, c] = number
    return colours, numbers


def expected_colours(matrix: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    low, high = matrix.min(), matrix.max()
    return np.asarray(colormaps["Blues"]((matrix - low) / max(high - low, 1)))[..., :3] * 255


def assert_matrix_figure_shows(png: np.ndarray, matrix: np.ndarray) -> None:
    colours, numbers = read_matrix(png, len(matrix), int(matrix.max()))
    np.testing.assert_array_equal(numbers, matrix, err_msg="the numbers written in the cells")
    np.testing.assert_allclose(colours, expected_colours(matrix), atol=2.5, err_msg="the cell colours (Blues by count)")
    # darker for larger counts
    lightness = colours.sum(axis=-1).ravel()
    order = np.argsort(matrix.ravel(), kind="stable")
    assert np.all(np.diff(lightness[order]) <= 1.0)


def test_confusion_matrix_cells_show_their_counts(tmp_path):
    matrix = np.array([[9, 1, 0, 2, 0], [0, 7, 3, 0, 1], [4, 0, 12, 0, 0], [0, 2, 0, 5, 6], [1, 0, 0, 0, 8]])
    png = read_png(plots.confusion_matrix_figure(matrix, CLASS_NAMES, tmp_path / "cm.png"))
    assert_matrix_figure_shows(png, matrix)


def test_confusion_matrix_rows_are_true_columns_predicted(tmp_path):
    """One count off the diagonal, at true tulips (last row), predicted daisy (first column)."""
    matrix = np.zeros((3, 3), int)
    matrix[2, 0] = 5
    png = read_png(plots.confusion_matrix_figure(matrix, ["daisy", "roses", "tulips"], tmp_path / "cm.png"))
    assert_matrix_figure_shows(png, matrix)
    colours, _ = read_matrix(png, 3, 5)
    assert colours[2, 0].sum() < colours[0, 2].sum() - 300  # the dark cell is bottom-left, not top-right


def test_confusion_matrix_title_states_the_accuracy(tmp_path):
    """The title depends on the accuracy and the total alone: matrices that
    share them share the title; another accuracy changes it."""
    a = np.array([[5, 1], [2, 4]])
    b = np.array([[4, 1], [2, 5]])  # same total, same accuracy: only two cells change
    c = np.array([[3, 1], [2, 4]])  # accuracy and total change: the title changes
    pa, pb, pc = (read_png(plots.confusion_matrix_figure(m, ["x", "y"], tmp_path / f"{i}.png")) for i, m in enumerate((a, b, c)))
    top = matrix_box(pa)[0]
    ys, _ = changed_rows(pa, pb)
    assert len(ys) and ys.min() > top, "same accuracy: the title stays"
    ys, _ = changed_rows(pa, pc)
    assert ys.min() < top, "another accuracy: the title changes"


# ------------------------------------------------------------ attention overlay
def hotness(overlay: np.ndarray, image: np.ndarray, alpha: float = attention.OVERLAY_ALPHA) -> np.ndarray:
    """Recover the jet colour under an overlay and read its position on the jet scale (0..255)."""
    heat = (overlay.astype(float) - (1 - alpha) * image.astype(float)) / alpha
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)[:, 0, ::-1].astype(float)
    distance = ((heat[..., None, :] - jet) ** 2).sum(axis=-1)
    return distance.argmin(axis=-1)


def peak_grid(shape: tuple[int, int], peak: tuple[int, int], floor: float = 0.1) -> np.ndarray:
    grid = np.full(shape, floor)
    grid[peak] = 1.0
    return grid


def cell_of(point, grid_shape, image_shape) -> tuple[int, int]:
    return int(point[0] * grid_shape[0] // image_shape[0]), int(point[1] * grid_shape[1] // image_shape[1])


@pytest.mark.parametrize("grid_shape, peaks, size", [((4, 4), [(1, 2), (3, 0)], (64, 64)), ((3, 5), [(2, 4), (0, 1)], (30, 50))])
def test_overlay_is_hottest_where_the_attention_peak_is(grid_shape, peaks, size):
    rng = np.random.default_rng(0)
    grids = np.stack([peak_grid(grid_shape, p) for p in peaks])
    images = rng.integers(60, 200, size=(len(peaks), *size, 3)).astype(np.uint8)
    maps = attention.render_maps(grids, images)
    for i, peak in enumerate(peaks):
        heat = hotness(maps.overlay[i], images[i])
        hottest = np.unravel_index(heat.argmax(), heat.shape)
        assert cell_of(hottest, grid_shape, size) == peak
        assert heat.max() >= 230 and np.median(heat) < 60  # red at the peak, blue elsewhere
        hot = np.argwhere(heat >= heat.max() - 8).mean(axis=0)
        assert cell_of(hot, grid_shape, size) == peak
        mask_peak = np.unravel_index(maps.mask[i].argmax(), size)
        assert cell_of(mask_peak, grid_shape, size) == peak
    flat = np.full((1, *size, 3), 120, np.uint8)
    masked = attention.render_maps(grids[:1], flat).masked[0].astype(int).sum(axis=-1)
    assert cell_of(np.unravel_index(masked.argmax(), size), grid_shape, size) == peaks[0]  # brightest at the peak


def test_overlay_images_blends_jet_over_the_image():
    image = np.full((1, 4, 4, 3), 100, np.uint8)
    masks = np.zeros((1, 4, 4))
    masks[0, 0, 0] = 1.0
    out = attention.overlay_images(masks, image).astype(int)
    jet = cv2.applyColorMap(np.array([[0], [255]], np.uint8), cv2.COLORMAP_JET)[:, 0, ::-1].astype(int)
    np.testing.assert_allclose(out[0, 0, 0], 0.5 * 100 + 0.5 * jet[1], atol=1)  # dark red over grey
    np.testing.assert_allclose(out[0, 3, 3], 0.5 * 100 + 0.5 * jet[0], atol=1)  # dark blue over grey


def panels(png: np.ndarray, count: int) -> list[tuple[int, int, int, int]]:
    """Boxes (top, bottom, left, right) of the `count` largest non-white regions, left to right."""
    ink = (png.min(axis=-1) < 245).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink)
    biggest = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:count]
    boxes = [(stats[i, 1], stats[i, 1] + stats[i, 3], stats[i, 0], stats[i, 0] + stats[i, 2]) for i in biggest]
    return sorted(boxes, key=lambda b: b[2])


@pytest.mark.parametrize("wrong", [False, True])
def test_attention_figure_shows_the_peak_in_its_panels(tmp_path, wrong):
    size, grid_shape, peak = (60, 90), (4, 6), (3, 1)
    image = np.full((*size, 3), 110, np.uint8)
    maps = attention.render_maps(peak_grid(grid_shape, peak)[None], image[None])
    extra = (maps.overlay[0][:, ::-1], "mirrored")  # a fourth panel, hottest at the mirrored place
    path = plots.attention_figure(image, maps.masked[0], maps.overlay[0], "True Label : roses", tmp_path / "a.png",
                                  wrong=wrong, extra=extra)
    png = read_png(path)
    boxes = panels(png, 4)
    original, masked, overlay, mirrored = (png[t:b, l:r] for t, b, l, r in boxes)
    assert near(original[5:-5, 5:-5], (110, 110, 110), 1).mean() > 0.99

    def relative_cell(panel: np.ndarray, score: np.ndarray) -> tuple[int, int]:
        at = np.argwhere(score >= score.max() - 3).mean(axis=0)
        return int(at[0] * grid_shape[0] // panel.shape[0]), int(at[1] * grid_shape[1] // panel.shape[1])

    assert relative_cell(masked, masked.sum(axis=-1)) == peak  # brightest
    redness = lambda p: p[..., 0] - p[..., 2]  # noqa: E731
    assert relative_cell(overlay, redness(overlay)) == peak  # hottest
    assert relative_cell(mirrored, redness(mirrored)) == (peak[0], grid_shape[1] - 1 - peak[1])
    title = png[: min(b[0] for b in boxes) - 20]
    assert (near(title, WRONG_RGB, 40).sum() > 50) == wrong


# ------------------------------------------------------------ training curves
def markers(png: np.ndarray, colour, count: int) -> np.ndarray:
    """Centres (x, y) of the `count` round markers of `colour` lying on one
    evenly spaced run of x (the epochs): drops the legend's marker."""
    mask = near(png, colour, 12).astype(np.uint8)
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    n, _, stats, centres = cv2.connectedComponentsWithStats(opened)
    found = sorted(tuple(centres[i]) for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 30)
    assert count <= len(found) <= count + 1, f"{len(found)} markers of colour {colour}, expected {count} (+ legend)"

    def unevenness(subset):
        xs = np.array([p[0] for p in subset])
        fit = np.polyval(np.polyfit(np.arange(count), xs, 1), np.arange(count))
        return np.abs(xs - fit).max()

    best = min(itertools.combinations(found, count), key=unevenness)
    assert unevenness(best) < 1.5
    return np.array(best)


def assert_curves_follow(png: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
    """Both curves' markers map linearly to their values on one shared y axis,
    larger values higher up; the epochs go left to right."""
    blue, orange = markers(png, (31, 119, 180), len(train)), markers(png, (255, 127, 14), len(val))
    values = np.concatenate([train, val])
    ys = np.concatenate([blue[:, 1], orange[:, 1]])
    slope, intercept = np.polyfit(values, ys, 1)
    residual = np.abs(ys - (slope * values + intercept)).max()
    assert slope < 0 and residual < 1.5, f"markers do not follow the history (off by {residual:.1f} px)"
    np.testing.assert_allclose(blue[:, 0], orange[:, 0], atol=1)  # the same epochs


def test_training_curves_draw_the_history(tmp_path):
    history = pd.DataFrame({
        "epoch": range(8),
        "loss": [2.0, 1.5, 1.2, 1.3, 0.9, 0.7, 0.75, 0.5],  # falls, with bumps
        "val_loss": [2.4, 2.3, 2.2, 2.35, 2.0, 1.7, 1.65, 1.3],
        "accuracy": [0.2, 0.3, 0.42, 0.4, 0.55, 0.62, 0.6, 0.7],
        "val_accuracy": [0.5, 0.62, 0.68, 0.75, 0.72, 0.82, 0.86, 0.9],
    })
    png = read_png(plots.training_curves(history, tmp_path / "curves.png"))
    half = png.shape[1] // 2
    assert_curves_follow(png[:, :half], history["loss"].to_numpy(), history["val_loss"].to_numpy())
    assert_curves_follow(png[:, half:], history["accuracy"].to_numpy(), history["val_accuracy"].to_numpy())
    loss = markers(png[:, :half], (31, 119, 180), 8)
    assert loss[-1, 1] > loss[0, 1] + 100  # the falling loss ends lower in the picture than it starts
    assert loss[3, 1] < loss[2, 1]  # and its bump at epoch 4 goes up


# ------------------------------------------------------------ the predict command
def test_predict_figures_agree_with_metrics_and_predictions(tiny_run, synthetic_data, tmp_path):
    out = tmp_path / "pred"
    assert cli.main(["predict", "--run", str(tiny_run), "--list", str(synthetic_data / "testing_files.csv"),
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"])
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert matrix.sum() == len(table)
    assert_matrix_figure_shows(read_png(out / "confusion_matrix.png"), matrix)
    shown = table.iloc[plots.evenly_spaced(len(table), 16)]
    wrong = {k for k, (t, p) in enumerate(zip(shown["true"], shown["pred"])) if t != p}
    assert framed_cells(read_png(out / "prediction_grid.png")) == wrong


# ------------------------------------------------------------ attention figures of `plot`
RIGHT_RGB = np.array([int(plots.RIGHT_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])


def map_colour(i: int) -> tuple[int, int, int]:
    """A flat colour for attention map i, apart from every panel_colour and from red and grey."""
    return (90 + 9 * i, 40, 230)


def flat_maps(count: int, offset: int = 0) -> np.ndarray:
    maps = np.zeros((count, 8, 8, 3), np.uint8)
    for i in range(count):
        maps[i] = map_colour(i + offset)
    return maps


def test_attention_grid_puts_each_map_under_its_image_and_frames_wrong_pairs(tmp_path):
    """Six images in rows of four: image i above map i in block i // 4, column
    i % 4; a wrong prediction frames both its panels red and reddens its title,
    a right one (or one of unknown truth) frames neither."""
    true = ["daisy", "roses", "tulips", None, "daisy", "roses"]
    pred = ["daisy", "tulips", "tulips", "roses", "dandelion", "roses"]
    wrong = {1, 4}
    png = read_png(plots.attention_grid(flat_images(6), flat_maps(6), true, pred, tmp_path / "ag.png",
                                        confidence=[0.5] * 6, cols=4))
    height, width = png.shape[:2]
    for i in range(6):
        image, att = image_box(png, panel_colour(i)), image_box(png, map_colour(i))
        assert image[1] < att[0] < image[1] + 40 and abs(image[2] - att[2]) <= 2, f"map {i} is not under image {i}"
        block = (image[0] + att[1]) // 2 * 2 // height
        column = (image[2] + image[3]) // 2 * 4 // width
        assert (block, column) == divmod(i, 4), i
        for box in (image, att):
            share = frame_share(png, box)
            assert share > 0.95 if i in wrong else share == 0, (i, share)
        red, black = title_inks(png, image)
        assert (red > 100 and black == 0) if i in wrong else (red == 0 and black > 100), (i, red, black)


def test_comparison_grid_colours_each_runs_verdict(tmp_path):
    """Two runs on four images, two images to a row: Original | run a | run b.
    A run's panel is framed red with a red title where that run is wrong, has
    a green title where it is right, and a black one where the truth is unknown;
    the originals are never framed."""
    true = ["daisy", "roses", None, "tulips"]
    preds = [["daisy", "tulips", "roses", "tulips"], ["roses", "roses", "daisy", "daisy"]]
    wrong = {(0, 1), (1, 0), (1, 3)}
    png = read_png(plots.comparison_grid(flat_images(4), [flat_maps(4), flat_maps(4, offset=4)], ["a", "b"], true,
                                         preds, [[0.9] * 4, [0.6] * 4], tmp_path / "cg.png", per_row=2))
    height, width = png.shape[:2]
    for i in range(4):
        original = image_box(png, panel_colour(i))
        assert frame_share(png, original) == 0
        assert ((original[0] + original[1]) // 2 * 2 // height, (original[2] + original[3]) // 2 * 6 // width) == (
            i // 2, (i % 2) * 3)
        for k in range(2):
            box = image_box(png, map_colour(i + 4 * k))
            assert abs(box[0] - original[0]) <= 4 and box[2] > original[3], f"run {k}'s panel {i} is not beside its image"
            assert (box[2] + box[3]) // 2 * 6 // width == (i % 2) * 3 + 1 + k
            share = frame_share(png, box)
            red, green = ink_count(png, box, WRONG_RGB), ink_count(png, box, RIGHT_RGB)
            black = ink_count(png, box, (0, 0, 0), 60)
            if (k, i) in wrong:
                assert share > 0.95 and red > 40 and green == 0 and black == 0, (k, i, share, red, green, black)
            elif true[i]:
                assert share == 0 and green > 40 and red == 0 and black == 0, (k, i, share, red, green, black)
            else:
                assert share == 0 and black > 40 and red == 0 and green == 0, (k, i, share, red, green, black)


def row_panels(png: np.ndarray, rows: int, per_row: int) -> list[list[tuple[int, int, int, int]]]:
    """Boxes of the rows x per_row largest non-white regions, row by row, left to right."""
    found = panels(png, rows * per_row)
    found.sort(key=lambda b: b[0])
    return [sorted(found[r * per_row:(r + 1) * per_row], key=lambda b: b[2]) for r in range(rows)]


def test_per_head_figure_shows_each_heads_peak_on_its_own_scale(tmp_path):
    """Two images, three heads: head h's panel in row r is brightest (inferno's
    yellow) in the cell where that head's peak was put, however small the
    head's values (each panel on its own colour scale)."""
    from matplotlib import colormaps

    grid = (4, 4)
    peaks = [[(0, 0), (1, 3), (3, 2)], [(2, 1), (0, 2), (3, 3)]]
    heads = np.zeros((2, 3, *grid))
    for r, h in itertools.product(range(2), range(3)):
        heads[r, h][peaks[r][h]] = 0.01 * 10 ** h  # 0.01, 0.1, 1: the colour scale is each panel's own
    images = flat_images(2)[:, :1, :1].repeat(40, axis=1).repeat(40, axis=2)
    png = read_png(plots.per_head_figure(images, heads, "layer 3", tmp_path / "ph.png"))
    top_colour = np.asarray(colormaps["inferno"](1.0)[:3]) * 255
    for r, boxes in enumerate(row_panels(png, 2, 4)):
        t, b, l, rt = boxes[0]
        assert near(png[t + 3:b - 3, l + 3:rt - 3], panel_colour(r), 1).mean() > 0.99, f"row {r} starts with image {r}"
        for h in range(3):
            t, b, l, rt = boxes[h + 1]
            panel = png[t:b, l:rt]
            bright = np.argwhere(near(panel, top_colour, 12)).mean(axis=0)
            assert cell_of(bright, grid, panel.shape[:2]) == peaks[r][h], (r, h)
            assert near(panel, top_colour, 12).mean() == pytest.approx(1 / 16, abs=0.02)  # one cell of 16


def test_attention_distance_figure_plots_each_heads_distance_per_layer(tmp_path):
    """One dot per layer and head, in the colour of its head; the dots of all
    heads lie on one linear y axis (larger distances higher), layers left to right."""
    distance = np.array([[3.0, 9.0, 5.5], [6.0, 11.0, 4.0], [10.0, 12.5, 8.0], [14.0, 13.0, 15.5], [15.0, 7.0, 12.0]])
    png = read_png(plots.attention_distance_figure(distance, tmp_path / "d.png", "test"))
    png = png[:, : int(png.shape[1] * 0.8)]  # the legend, right of the axes, left out
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
    found = [markers(png, colour, len(distance)) for colour in colours]
    values = distance.T.ravel()
    ys = np.concatenate([f[:, 1] for f in found])
    slope, intercept = np.polyfit(values, ys, 1)
    assert slope < 0 and np.abs(ys - (slope * values + intercept)).max() < 1.5, "dots do not follow the distances"
    for f in found[1:]:
        np.testing.assert_allclose(f[:, 0], found[0][:, 0], atol=1)  # every head at the same layers


def test_vit_keras_attention_figure_shows_the_image_then_the_map(tmp_path):
    image, attention_map = flat_images(1)[0], flat_maps(1)[0]
    png = read_png(plots.vit_keras_attention_figure(image.repeat(5, 0).repeat(5, 1), attention_map.repeat(5, 0).repeat(5, 1),
                                                    tmp_path / "vk.png"))
    left, right = image_box(png, panel_colour(0)), image_box(png, map_colour(0))
    assert left[3] < right[2] and abs(left[0] - right[0]) <= 2
    assert frame_share(png, left) == 0 and frame_share(png, right) == 0
