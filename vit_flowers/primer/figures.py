"""Matplotlib helpers shared by the primer's figures: Agg backend, small PNG files."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # non-interactive: safe on headless machines
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (safe on headless machines)."""
    return plt


def save_png(fig, out_path: str | Path, dpi: int = 72, colours: int = 256) -> Path:
    """Save a figure as a palette PNG (quantised to ``colours``) to keep docs figures small."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as img:
        small = img.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    tmp = out_path.with_name(out_path.name + ".tmp")
    small.save(tmp, format="PNG", optimize=True)
    tmp.replace(out_path)
    plt.close(fig)
    return out_path
