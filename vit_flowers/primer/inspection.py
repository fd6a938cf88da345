"""Synthetic inspection images (seed note 001): standard, fluctuations, errors, mosaic CSV.

The standard image is the note's 500x500 drawing, every shape, coordinate and
colour as in the note: a dark green background (13, 77, 13); four corner
circles (red/orange) with blue crossed lines on the top-left and bottom-right
ones; a green central square with a blue X; four magenta chords at the middle
of each side.

Fluctuation ("yuragi"): every group of shapes (a corner circle with its cross,
the square with its X, each chord) is shifted by up to ``shift`` pixels, each
shape is scaled by up to +-``scale`` about its centre and each colour channel
moves by up to +-``colour`` levels; all drawn from a seeded numpy Generator.

Error versions (defined here; the note only names them), drawn on top of a
fluctuation so that they must be told apart from normal variation:

* error A, a missing part: one of the four corner circles (together with the
  cross drawn on it, if any) or the centre X is not drawn;
* error B, a wrong colour or an extra part: one of the two plain corner
  circles (top right, bottom left: the other two are mostly hidden under
  their cross) or one chord is drawn in a colour the standard never uses
  (cyan for the red/orange circles, yellow for the magenta chords: whichever
  is farther from the part's colour), or an extra yellow disc (radius 40 at
  500 px) appears at a random place.

Each error generator also returns the defect's bounding box (x0, y0, x1, y1)
in pixel coordinates of the image drawn (x1, y1 exclusive), so that a model's
attention can later be checked against it. All parts are large (the smallest,
a chord or the extra disc, is 80-100 px at 500 px, 10-13 px at 64 px), so the
defects stay visible at small training sizes.

Mosaic CSV, as the note does with OpenCV without needing it: nearest-neighbour
resize by ``ratio`` (0.06: 500 -> 30 px) taking source index
floor(i * (1 / ratio)) like cv2.INTER_NEAREST with fx=fy=ratio, then cv2's
BGR2GRAY for 8-bit images, (9798 R + 19235 G + 3735 B + 2**14) >> 15, i.e.
0.299 R + 0.587 G + 0.114 B rounded in 15-bit fixed point. Both match OpenCV
exactly (tests/test_inspection.py compares with cv2 when it is installed).
The CSV holds the 30x30 gray levels as integers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from vit_flowers.primer.figures import pyplot, save_png

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

STANDARD_SIZE = 500
BACKGROUND: RGB = (13, 77, 13)
BLACK: RGB = (0, 0, 0)
#: Colours the standard never uses, for error B.
WRONG_COLOURS: tuple[RGB, ...] = ((250, 220, 30), (20, 220, 220))
EXTRA_BLOB_RADIUS = 40
JPEG_QUALITY = 95
MOSAIC_RATIO = 0.06


@dataclass(frozen=True)
class Shape:
    """One PIL drawing call in 500-px units: kind is ellipse, line, rectangle or chord."""

    kind: str
    xy: tuple[float, float, float, float]
    fill: RGB
    part: str
    group: str
    outline: RGB | None = None
    width: float = 0
    start: float = 0
    end: float = 0


def _circle(xy, fill, part):
    return Shape("ellipse", xy, fill, part, part.split("_")[1], outline=BLACK)


def _line(xy, fill, width, part, group):
    return Shape("line", xy, fill, part, group, width=width)


def _chord(xy, start, end, part):
    return Shape("chord", xy, (200, 55, 200), part, part, outline=BLACK, start=start, end=end)


#: The note's drawing, in the note's order.
STANDARD_SHAPES: tuple[Shape, ...] = (
    _circle((40, 40, 160, 160), (255, 10, 50), "circle_tl"),
    _circle((340, 40, 460, 160), (255, 50, 10), "circle_tr"),
    _circle((40, 340, 160, 460), (255, 10, 50), "circle_bl"),
    _circle((340, 340, 460, 460), (255, 50, 10), "circle_br"),
    _line((50, 100, 150, 100), (10, 130, 250), 30, "cross_tl", "tl"),
    _line((100, 50, 100, 150), (10, 130, 250), 30, "cross_tl", "tl"),
    _line((350, 400, 450, 400), (40, 80, 250), 30, "cross_br", "br"),
    _line((400, 350, 400, 450), (40, 80, 250), 30, "cross_br", "br"),
    Shape("rectangle", (150, 150, 350, 350), (50, 250, 10), "square", "centre", outline=BLACK),
    _line((200, 200, 300, 300), (50, 10, 250), 60, "x", "centre"),
    _line((300, 200, 200, 300), (50, 10, 250), 60, "x", "centre"),
    _chord((30, 200, 130, 300), 30, 270, "chord_left"),
    _chord((370, 200, 470, 300), 120, 360, "chord_right"),
    _chord((200, 30, 300, 130), 30, 270, "chord_top"),
    _chord((200, 370, 300, 470), 120, 360, "chord_bottom"),
)

ERROR_A_PARTS = ("circle_tl", "circle_tr", "circle_bl", "circle_br", "x")
#: Error B recolours only the two plain circles: the other two are mostly covered by their cross.
ERROR_B_PARTS = ("circle_tr", "circle_bl",
                 "chord_left", "chord_right", "chord_top", "chord_bottom", "extra_blob")


@dataclass(frozen=True)
class Defect:
    """An error image's defect: kind (errorA/errorB), the part and its box in pixels."""

    kind: str
    part: str
    box: Box


# --- drawing ------------------------------------------------------------------------------

def draw_shapes(
    shapes: Sequence[Shape], size: int = STANDARD_SIZE, background: RGB = BACKGROUND
) -> Image.Image:
    """Draw shapes (500-px units) on a size x size RGB image; at 500 px the calls are the note's."""
    s = size / STANDARD_SIZE
    img = Image.new("RGB", (size, size), tuple(background))
    draw = ImageDraw.Draw(img)
    for sh in shapes:
        xy = tuple(int(round(v * s)) for v in sh.xy)
        fill = tuple(int(c) for c in sh.fill)
        outline = None if sh.outline is None else tuple(sh.outline)
        if sh.kind == "ellipse":
            draw.ellipse(xy, fill=fill, outline=outline)
        elif sh.kind == "rectangle":
            draw.rectangle(xy, fill=fill, outline=outline)
        elif sh.kind == "chord":
            draw.chord(xy, start=sh.start, end=sh.end, fill=fill, outline=outline)
        elif sh.kind == "line":
            draw.line(xy, fill=fill, width=max(1, int(round(sh.width * s))))
        else:
            raise ValueError(f"unknown shape kind {sh.kind!r}")
    return img


def standard_image(size: int = STANDARD_SIZE) -> Image.Image:
    """The note's standard image (exact at 500 px)."""
    return draw_shapes(STANDARD_SHAPES, size)


# --- fluctuation and errors -----------------------------------------------------------------

def _centre(xy) -> tuple[float, float]:
    return (xy[0] + xy[2]) / 2.0, (xy[1] + xy[3]) / 2.0


def fluctuate(
    shapes: Sequence[Shape],
    rng: np.random.Generator,
    shift: float = 6.0,
    scale: float = 0.05,
    colour: int = 12,
) -> list[Shape]:
    """Shift each group, scale each shape about its centre and jitter its colour (500-px units)."""
    groups = sorted({sh.group for sh in shapes})
    shifts = {g: rng.uniform(-shift, shift, size=2) for g in groups}
    out = []
    for sh in shapes:
        dx, dy = shifts[sh.group]
        f = 1.0 + rng.uniform(-scale, scale)
        cx, cy = _centre(sh.xy)
        x0, y0, x1, y1 = sh.xy
        xy = (cx + (x0 - cx) * f + dx, cy + (y0 - cy) * f + dy,
              cx + (x1 - cx) * f + dx, cy + (y1 - cy) * f + dy)
        fill = tuple(int(v) for v in np.clip(np.add(sh.fill, rng.integers(-colour, colour + 1, 3)), 0, 255))
        out.append(replace(sh, xy=xy, fill=fill, width=sh.width * f))
    return out


def shape_box(sh: Shape) -> tuple[float, float, float, float]:
    """Bounding box of a shape in its own units (lines include their width, PIL's flat ends)."""
    x0, y0, x1, y1 = sh.xy
    if sh.kind != "line":
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length * sh.width / 2, (x1 - x0) / length * sh.width / 2
    xs = [x0 + nx, x0 - nx, x1 + nx, x1 - nx]
    ys = [y0 + ny, y0 - ny, y1 + ny, y1 - ny]
    return min(xs), min(ys), max(xs), max(ys)


def pixel_box(box: Sequence[float], size: int = STANDARD_SIZE, margin: int = 1) -> Box:
    """A 500-px-unit box as integer pixels (x0, y0, x1, y1), x1/y1 exclusive, clipped to the image."""
    s = size / STANDARD_SIZE
    x0 = max(0, math.floor(box[0] * s) - margin)
    y0 = max(0, math.floor(box[1] * s) - margin)
    x1 = min(size, math.ceil(box[2] * s) + 1 + margin)
    y1 = min(size, math.ceil(box[3] * s) + 1 + margin)
    return x0, y0, x1, y1


def _union(boxes) -> tuple[float, float, float, float]:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def error_a(
    shapes: Sequence[Shape], rng: np.random.Generator, part: str | None = None
) -> tuple[list[Shape], str, tuple[float, float, float, float]]:
    """Error A: drop a corner circle (and the cross on it) or the centre X; returns (shapes, part, box)."""
    part = part or str(rng.choice(ERROR_A_PARTS))
    if part not in ERROR_A_PARTS:
        raise ValueError(f"error A part must be one of {ERROR_A_PARTS}, got {part!r}")
    group = part.split("_")[1] if part.startswith("circle_") else None
    gone = [sh.part == part or (group is not None and sh.part == f"cross_{group}") for sh in shapes]
    removed = [sh for sh, g in zip(shapes, gone) if g]
    kept = [sh for sh, g in zip(shapes, gone) if not g]
    return kept, part, _union(shape_box(sh) for sh in removed)


def _farthest_wrong_colour(fill: Sequence[int]) -> RGB:
    """The colour of WRONG_COLOURS farthest (L1) from fill, so the defect is as visible as possible."""
    return max(WRONG_COLOURS, key=lambda c: int(np.abs(np.subtract(c, fill)).sum()))


def error_b(
    shapes: Sequence[Shape], rng: np.random.Generator, part: str | None = None
) -> tuple[list[Shape], str, tuple[float, float, float, float]]:
    """Error B: recolour a plain corner circle or a chord, or add an extra yellow disc; returns (shapes, part, box)."""
    part = part or str(rng.choice(ERROR_B_PARTS))
    if part not in ERROR_B_PARTS:
        raise ValueError(f"error B part must be one of {ERROR_B_PARTS}, got {part!r}")
    if part == "extra_blob":
        r = EXTRA_BLOB_RADIUS
        cx, cy = rng.uniform(r + 10, STANDARD_SIZE - r - 10, size=2)
        blob = Shape("ellipse", (cx - r, cy - r, cx + r, cy + r), WRONG_COLOURS[0], part, part, outline=BLACK)
        return [*shapes, blob], part, shape_box(blob)
    out = [replace(sh, fill=_farthest_wrong_colour(sh.fill)) if sh.part == part else sh for sh in shapes]
    return out, part, _union(shape_box(sh) for sh in shapes if sh.part == part)


def normal_image(rng: np.random.Generator, size: int = STANDARD_SIZE) -> Image.Image:
    """A fluctuation of the standard image."""
    return draw_shapes(fluctuate(STANDARD_SHAPES, rng), size)


def error_image(
    kind: str, rng: np.random.Generator, size: int = STANDARD_SIZE, part: str | None = None
) -> tuple[Image.Image, Defect]:
    """An error image (kind 'errorA' or 'errorB') on a fluctuation, with its defect box in pixels.

    The fluctuation is drawn from rng first, so the same seed gives the same
    fluctuation as normal_image: the two differ only by the defect.
    """
    shapes = fluctuate(STANDARD_SHAPES, rng)
    if kind == "errorA":
        shapes, part, box = error_a(shapes, rng, part)
    elif kind == "errorB":
        shapes, part, box = error_b(shapes, rng, part)
    else:
        raise ValueError(f"kind must be 'errorA' or 'errorB', got {kind!r}")
    return draw_shapes(shapes, size), Defect(kind, part, pixel_box(box, size))


# --- mosaic (OpenCV-free) ---------------------------------------------------------------------

def nearest_indices(n: int, ratio: float) -> np.ndarray:
    """Source indices of cv2.resize(..., fx=ratio, interpolation=INTER_NEAREST) along one axis.

    The output length is round(n * ratio); output i reads floor(i * (1 / ratio)),
    clipped to n - 1 (OpenCV uses the given ratio, not out/in, for the mapping).
    """
    m = int(np.rint(n * ratio))
    if m < 1:
        raise ValueError(f"ratio {ratio} gives an empty image for size {n}")
    inv = 1.0 / ratio
    return np.minimum(np.floor(np.arange(m) * inv).astype(np.int64), n - 1)


def gray_cv2(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> uint8 gray exactly as cv2.cvtColor(bgr, COLOR_BGR2GRAY)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got {rgb.dtype}")
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def mosaic_gray(rgb: np.ndarray, ratio: float = MOSAIC_RATIO) -> np.ndarray:
    """The note's small grayscale mosaic: nearest-neighbour shrink by ratio, then BGR2GRAY."""
    rgb = np.asarray(rgb)
    rows = nearest_indices(rgb.shape[0], ratio)
    cols = nearest_indices(rgb.shape[1], ratio)
    return gray_cv2(rgb[rows][:, cols])


def read_rgb_uint8(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) RGB array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def write_mosaic_csv(image_path: str | Path, ratio: float = MOSAIC_RATIO) -> Path:
    """Write the mosaic of a saved image next to it (same name, .csv), read back from the file like the note."""
    image_path = Path(image_path)
    small = mosaic_gray(read_rgb_uint8(image_path), ratio)
    out = image_path.with_suffix(".csv")
    tmp = out.with_name(out.name + ".tmp")
    np.savetxt(tmp, small, delimiter=",", fmt="%d")
    os.replace(tmp, out)
    return out


# --- writing sets ---------------------------------------------------------------------------

def save_jpeg(img: Image.Image, path: str | Path, quality: int = JPEG_QUALITY) -> Path:
    """Save as JPEG via a temporary file and a rename, so no half-written file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="JPEG", quality=quality)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class InspectionCounts:
    """How many images of each kind the note makes."""

    standard: int = 1
    learn: int = 50
    normal: int = 10
    error_a: int = 10
    error_b: int = 10


_STREAM = {"learn": 1, "normal": 2, "errorA": 3, "errorB": 4}
BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


def _rng(seed: int, kind: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[kind], i])


def _table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["file", "label", *BOX_COLUMNS, "part"])
    for c in BOX_COLUMNS:
        df[c] = df[c].astype("Int64")
    return df


def _write_table(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _row(path: Path, label: str, defect: Defect | None) -> dict:
    box = defect.box if defect else (None,) * 4
    return {"file": str(path), "label": label, **dict(zip(BOX_COLUMNS, box)),
            "part": defect.part if defect else ""}


def write_inspection_set(
    out_dir: str | Path,
    counts: InspectionCounts = InspectionCounts(),
    seed: int = 0,
    size: int = STANDARD_SIZE,
    ratio: float = MOSAIC_RATIO,
    csv: bool = True,
) -> pd.DataFrame:
    """Write the note's folders and names (JPEG quality 95) and a mosaic CSV next to each image.

    image_standard.jpg, learn/image_base_fluctuate_{i}.jpg, normal/image_normal_{i}.jpg,
    error/image_errorA_{i}.jpg, error/image_errorB_{i}.jpg; also defects.csv listing every
    image with its label and, for errors, the defect box.
    """
    out_dir = Path(out_dir)
    rows: list[dict] = []

    def put(img, rel: str, label: str, defect: Defect | None = None) -> None:
        path = save_jpeg(img, out_dir / rel)
        if csv:
            write_mosaic_csv(path, ratio)
        rows.append(_row(path, label, defect))

    for i in range(counts.standard):
        put(standard_image(size), "image_standard.jpg" if i == 0 else f"image_standard_{i}.jpg", "standard")
    for i in range(counts.learn):
        put(normal_image(_rng(seed, "learn", i), size), f"learn/image_base_fluctuate_{i}.jpg", "learn")
    for i in range(counts.normal):
        put(normal_image(_rng(seed, "normal", i), size), f"normal/image_normal_{i}.jpg", "normal")
    for kind, n in (("errorA", counts.error_a), ("errorB", counts.error_b)):
        for i in range(n):
            img, defect = error_image(kind, _rng(seed, kind, i), size)
            put(img, f"error/image_{kind}_{i}.jpg", kind, defect)
    df = _table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_table(df, out_dir / "defects.csv")
    return df


def write_inspection_classes(
    out_dir: Path, n_per_class: int = 60, image_size: int = 500, seed: int = 0
) -> pd.DataFrame:
    """Write class folders normal/, errorA/, errorB/ of JPEGs for training; return and save the table.

    normal images are fluctuations; errorA/errorB are error versions of fluctuations.
    Columns: file (path), label, x0, y0, x1, y1 (defect box in the image's pixels,
    empty for normal), part (what is wrong). Also written as out_dir/defects.csv.
    """
    out_dir = Path(out_dir)
    rows: list[dict] = []
    for i in range(n_per_class):
        path = save_jpeg(normal_image(_rng(seed, "normal", i), image_size),
                         out_dir / "normal" / f"normal_{i:03d}.jpg")
        rows.append(_row(path, "normal", None))
    for kind in ("errorA", "errorB"):
        for i in range(n_per_class):
            img, defect = error_image(kind, _rng(seed, kind, i), image_size)
            path = save_jpeg(img, out_dir / kind / f"{kind}_{i:03d}.jpg")
            rows.append(_row(path, kind, defect))
    df = _table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_table(df, out_dir / "defects.csv")
    return df


def plot_overview(out_path: str | Path, seed: int = 0, size: int = STANDARD_SIZE,
                  ratio: float = MOSAIC_RATIO) -> Path:
    """Figure: standard, a fluctuation, error A and error B (defect boxes drawn) over their mosaics."""
    plt = pyplot()
    panels = [("standard", np.asarray(standard_image(size)), None),
              ("fluctuation", np.asarray(normal_image(_rng(seed, "normal", 0), size)), None)]
    for kind, i in (("errorA", 0), ("errorA", 1), ("errorB", 0), ("errorB", 1)):
        img, d = error_image(kind, _rng(seed, kind, i), size)
        panels.append((f"{kind}: {d.part}", np.asarray(img), d.box))
    fig, axes = plt.subplots(2, len(panels), figsize=(1.9 * len(panels), 4.0))
    for j, (title, arr, box) in enumerate(panels):
        axes[0, j].imshow(arr)
        axes[0, j].set_title(title, fontsize=8)
        if box is not None:
            x0, y0, x1, y1 = box
            axes[0, j].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                               fill=False, ec="white", lw=1.2, ls="--"))
        small = mosaic_gray(arr, ratio)
        axes[1, j].imshow(small, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[1, j].set_title(f"mosaic {small.shape[0]}x{small.shape[1]}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_png(fig, out_path, dpi=64)
