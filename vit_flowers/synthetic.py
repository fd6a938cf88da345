"""Procedural flower photos: the embedded default data set.

Five classes drawn with PIL so that every command works offline on data a
machine can make in seconds: daisies (white petals, yellow heart), dandelions
(a dense yellow puff of thin rays), roses (round whorls of red or pink),
sunflowers (yellow petals around a large brown heart) and tulips (a cup on a
green stem). Position, size, petal count, rotation, colours and the
background vary with a seeded numpy Generator, so a split is reproducible.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from .config import DEFAULT_CLASS_NAMES

DRAW_SCALE = 2  # draw at twice the size, then downsample: smooth edges


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A vertical gradient between two natural colours, with grain."""
    palette = [(40, 90, 35), (70, 120, 50), (110, 160, 210), (90, 70, 50), (150, 170, 120), (30, 60, 40)]
    top = np.array(_jitter(rng, palette[rng.integers(len(palette))], 30), dtype=np.float32)
    bottom = np.array(_jitter(rng, palette[rng.integers(len(palette))], 30), dtype=np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = top * (1 - t) + bottom * t + rng.normal(0, 8, (size, size, 3))
    pixels = np.broadcast_to(pixels, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _petal_ring(draw: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, count: int,
                length: float, width: float, colour, rng: np.random.Generator) -> None:
    """Petals as ellipses whose long axis points away from the centre."""
    offset = rng.uniform(0, 2 * math.pi)
    for k in range(count):
        angle = offset + 2 * math.pi * k / count
        px = cx + math.cos(angle) * (radius + length / 2)
        py = cy + math.sin(angle) * (radius + length / 2)
        # a petal: polygon approximating a rotated ellipse
        points = []
        for s in np.linspace(0, 2 * math.pi, 14, endpoint=False):
            ex, ey = math.cos(s) * length / 2, math.sin(s) * width / 2
            points.append((px + ex * math.cos(angle) - ey * math.sin(angle),
                           py + ex * math.sin(angle) + ey * math.cos(angle)))
        draw.polygon(points, fill=_jitter(rng, colour, 12))


def _daisy(draw, cx, cy, r, rng):
    _petal_ring(draw, cx, cy, r * 0.2, int(rng.integers(12, 20)), r * 0.8, r * 0.22, (245, 245, 240), rng)
    heart = r * 0.26
    draw.ellipse((cx - heart, cy - heart, cx + heart, cy + heart), fill=_jitter(rng, (240, 200, 30), 15))


def _dandelion(draw, cx, cy, r, rng):
    offset = rng.uniform(0, 2 * math.pi)
    for k in range(70):
        angle = offset + 2 * math.pi * k / 70
        length = r * rng.uniform(0.7, 1.0)
        draw.line((cx, cy, cx + math.cos(angle) * length, cy + math.sin(angle) * length),
                  fill=_jitter(rng, (250, 215, 20), 20), width=max(1, int(r * 0.05)))
    heart = r * 0.55
    draw.ellipse((cx - heart, cy - heart, cx + heart, cy + heart), fill=_jitter(rng, (245, 190, 10), 15))


def _rose(draw, cx, cy, r, rng):
    base = [(200, 20, 40), (230, 80, 120), (160, 10, 30), (240, 120, 150)][rng.integers(4)]
    dark = tuple(int(c * 0.6) for c in base)
    for k, frac in enumerate(np.linspace(1.0, 0.15, 7)):
        rr = r * frac
        dx, dy = rng.normal(0, r * 0.05, 2)
        colour = base if k % 2 == 0 else dark
        draw.ellipse((cx - rr + dx, cy - rr + dy, cx + rr + dx, cy + rr + dy), fill=_jitter(rng, colour, 15))
        start = rng.uniform(0, 360)
        draw.arc((cx - rr, cy - rr, cx + rr, cy + rr), start, start + 200, fill=dark, width=max(1, int(r * 0.05)))


def _sunflower(draw, cx, cy, r, rng):
    _petal_ring(draw, cx, cy, r * 0.45, int(rng.integers(16, 26)), r * 0.6, r * 0.2, (250, 190, 10), rng)
    heart = r * 0.5
    draw.ellipse((cx - heart, cy - heart, cx + heart, cy + heart), fill=_jitter(rng, (90, 50, 20), 15))
    for _ in range(25):
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, heart * 0.9)
        x, y = cx + math.cos(a) * d, cy + math.sin(a) * d
        draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(50, 25, 10))


def _tulip(draw, cx, cy, r, rng):
    colour = [(220, 30, 50), (240, 110, 160), (140, 40, 150), (250, 140, 30), (245, 220, 40)][rng.integers(5)]
    size = draw.im.size[1]
    draw.line((cx, cy + r * 0.5, cx + rng.normal(0, r * 0.2), size), fill=_jitter(rng, (40, 140, 40), 15),
              width=max(2, int(r * 0.15)))
    leaf = [(cx, cy + r * 1.6), (cx - r * 0.7, cy + r * 0.9), (cx - r * 0.1, cy + r * 1.1)]
    draw.polygon(leaf, fill=_jitter(rng, (50, 150, 50), 15))
    w, h = r * 0.7, r * 0.9
    draw.ellipse((cx - w, cy - h * 0.3, cx + w, cy + h), fill=_jitter(rng, colour, 15))
    for k in (-1, 0, 1):  # three pointed petal tips make the cup's rim
        tip = (cx + k * w * 0.6, cy - h * (0.9 if k == 0 else 0.7))
        draw.polygon([(cx + k * w * 0.6 - w * 0.45, cy + h * 0.3), tip, (cx + k * w * 0.6 + w * 0.45, cy + h * 0.3)],
                     fill=_jitter(rng, colour, 20))


DRAWERS = {"daisy": _daisy, "dandelion": _dandelion, "roses": _rose, "sunflowers": _sunflower, "tulips": _tulip}


def draw_flower(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One flower of class `kind` on a random background, `size` pixels square."""
    if kind not in DRAWERS:
        raise ValueError(f"unknown synthetic class {kind!r}; known: {sorted(DRAWERS)}")
    big = size * DRAW_SCALE
    image = _background(rng, big)
    draw = ImageDraw.Draw(image)
    r = big * rng.uniform(0.22, 0.34)
    cx = big * rng.uniform(0.35, 0.65)
    cy = big * rng.uniform(0.35, 0.6)
    DRAWERS[kind](draw, cx, cy, r, rng)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 1.0)))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def write_synthetic_flowers(
    out_dir: str | Path, n_per_class: int = 120, size: int = 64, seed: int = 0,
    class_names: list[str] | None = None,
) -> pd.DataFrame:
    """Write `out_dir/<class>/<class>_NNNN.jpg` and return the list rows."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for kind in class_names or DEFAULT_CLASS_NAMES:
        folder = out_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            name = f"{kind}_{i:04d}.jpg"
            draw_flower(kind, rng, size).save(folder / name, quality=92)
            rows.append((str(out_dir), kind, name))
    return pd.DataFrame(rows, columns=["base_path", "type_dir", "file_name"])
