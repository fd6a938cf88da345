"""The values the command options allow, in a module that imports nothing
heavy: building the command-line parser starts no TensorFlow, OpenCV or
pandas, so a bad option is refused at once. The modules that act on these
values (attention, comparison, export, report_attention) import them, and the
checks of them that need no model, from here.
"""

from __future__ import annotations

import argparse
import numbers
from collections.abc import Sequence

from .errors import BadInputError

# attention rollout (vit_flowers.attention)
HEAD_FUSIONS = ("mean", "max", "min")
NORMALIZATIONS = ("matrix", "row")
# the attention comparison (vit_flowers.comparison)
ONLY = ("all", "correct", "wrong")
PREDICTED = "predicted"  # --class predicted: each image's predicted class
MAX_RUNS = 2  # run dirs plot compares
# plot --faithfulness (vit_flowers.faithfulness_job): patches changed in this many steps
FAITHFULNESS_STEPS = 16
# export (vit_flowers.export)
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")

# which predictions get attention on predict's report page (vit_flowers.report_attention)
DEFAULT_SHARE = 0.12
AUTO, ALL, NONE = "auto", "all", "none"
OPTION_HELP = (f"which predictions get an attention overlay on report.html: {AUTO} (every wrong one, then the "
               f"least confident, up to {DEFAULT_SHARE:.0%} of the predictions: at most about a fifth more "
               f"time on ViT-B/16), {ALL}, {NONE}, or a number of images")


def parse_attention_option(value: str | int) -> int | str:
    """'auto', 'all', 'none' or a count >= 0; argparse shows the message of a bad value."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected a number of images >= 0, got {value}")
        return int(value)
    text = str(value).strip().lower()
    if text in (AUTO, ALL, NONE):
        return text
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {AUTO}, {ALL}, {NONE} or a number of images, got {value!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected a number of images >= 0, got {value!r}")
    return count


def check_faithfulness_steps(steps: int, grid: Sequence[int]) -> None:
    """--faithfulness-steps must change at least one patch a step: 1 to the
    model's patch count (`grid`: rows, columns). Checked from config.json
    before the model loads, and by the scoring itself."""
    patches = int(grid[0]) * int(grid[1])
    if not 1 <= steps <= patches:
        raise BadInputError(f"--faithfulness-steps {steps}: between 1 and the model's {patches} patches")


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """'savedmodel,tflite' -> ['savedmodel', 'tflite']; unknown names are bad input."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip().lower() for item in items if item.strip()]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown or not names:
        raise BadInputError(f"--format: unknown export format(s) {unknown or text!r}; choose from {','.join(EXPORT_FORMATS)}")
    return [name for name in EXPORT_FORMATS if name in names]
