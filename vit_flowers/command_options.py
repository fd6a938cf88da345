"""The settings of prepare, predict, plot, export and demo, each declared once as a field
(`vit_flowers.options.setting`): its help, flag, choices or range. The
parser of each command is built from these classes, and a command hands
the filled-in dataclass to the code that uses it, so a new option is the
field plus its use.

The run's own settings (model, training) are `vit_flowers.config`'s; the
options several commands share (--out, --batch-size, ...) are
`vit_flowers.cli.common.SHARED_OPTIONS`. Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .choices import (
    AUTO,
    EXPORT_FORMATS,
    FAITHFULNESS_STEPS,
    HEAD_FUSIONS,
    MAX_RUNS,
    NORMALIZATIONS,
    ONLY,
    OPTION_HELP,
    PREDICTED,
    parse_attention_option,
)
from .config import MAX_IMAGE_SIDE, MAX_TOKENS  # no model has more patches than tokens
from .errors import BadInputError
from .options import check_options, setting

MAX_IMAGES = 1_000_000  # --limit's upper end: far beyond any list, a typo's guard


@dataclass(frozen=True)
class PrepareOptions:
    """Where prepare's images come from and how they are split (`vit_flowers.filelists`)."""

    source: list[str] = setting(
        default_factory=lambda: ["synthetic"], group="data", metavar="SOURCE", help=(
            "'synthetic' (procedural flowers), 'inspection' (shapes: normal, errorA, errorB), "
            "'download' (the flower_photos archive) or folders of class subfolders (several folders "
            "are split as one set, for example flower_photos and flower_photos_extra)"))
    test_fraction: float = setting(0.2, group="split", share="the test fraction",
                                   help="share of each class kept for testing")
    val_fraction: float = setting(0.1, group="split", share="the validation fraction",
                                  help="share of each class kept for validation (early stopping, choices); "
                                       "0: no validation list")
    per_class: int = setting(120, group="generated sources", low=1, high=MAX_IMAGES,
                             help="images per class for generated sources")
    image_size: int = setting(64, group="generated sources", low=1, high=MAX_IMAGE_SIDE,
                              help="side in pixels of generated images")


@dataclass(frozen=True)
class DemoOptions:
    """The demo's drawn flowers and its tiny ViT's training."""

    per_class: int = setting(120, group="demo", low=1, high=MAX_IMAGES, help="synthetic images per class")
    image_size: int = setting(48, group="demo", low=1, high=MAX_IMAGE_SIDE,
                              help="image side in pixels (multiple of 8)")
    epochs: int = setting(25, group="demo", low=1, high=100_000, help="maximum training epochs")


@dataclass(frozen=True)
class PredictOptions:
    """What `predict` does beyond its inputs and --out."""

    mirror_tta: bool = setting(False, group="prediction", help=(
        "average each image's probabilities with its left-right mirror image's "
        "(test-time augmentation; twice the model time)"))
    report_attention: int | str = setting(AUTO, group="report page", option_type=parse_attention_option,
                                          metavar="auto|all|none|N", help=OPTION_HELP)
    report_class_maps: bool = setting(False, group="report page", help=(
        "also a class-specific (gradient-weighted) map for the predictions with attention "
        "(about 4 times the cost of the rollout)"))


@dataclass(frozen=True)
class RolloutOptions:
    """How plot's attention maps are made (`vit_flowers.attention`)."""

    head_fusion: str = setting("mean", group="attention maps", choices=HEAD_FUSIONS,
                               help="how heads are fused in each layer before the rollout (vit_keras: mean)")
    discard_ratio: float = setting(0.0, group="attention maps", share="the discard ratio", help=(
        "share of the lowest patch-to-patch attentions zeroed in every layer (0 = none, "
        "as vit_keras); the class token's attention is never discarded"))
    normalize: str = setting("matrix", group="attention maps", choices=NORMALIZATIONS,
                             help="matrix: divide A+I by its total (vit_keras); row: by each row (the rollout paper)")
    start_layer: int = setting(0, group="attention maps", help="first layer of the rollout (Python index)")
    stop_layer: int | None = setting(None, group="attention maps",
                                     help="layer after the last one rolled out (None: through the last layer)")
    head_layer: int = setting(-1, group="attention maps", help="layer shown in per_head.png (-1: the last)")
    class_name: str | None = setting(None, group="attention maps", flag="--class", metavar="NAME", help=(
        f"add a class-specific (gradient-weighted) map of the first run for class NAME, or "
        f"'{PREDICTED}' for each image's predicted class"))


@dataclass(frozen=True)
class PlotOptions:
    """Which images plot shows, and the scores of their maps (`vit_flowers.faithfulness_job`)."""

    only: str = setting("all", group="images", choices=ONLY,
                        help="show all images, or only those the first run predicts correctly / wrongly")
    limit: int = setting(16, group="images", low=1, high=MAX_IMAGES, help="most images to show, spread over the list")
    faithfulness: bool = setting(False, group="faithfulness", help=(
        "also score every map of the first run on the images shown: deletion, insertion and "
        "negative perturbation AUCs per photo and method (faithfulness.csv), their means with "
        "bootstrap intervals (faithfulness_summary.csv), the maps (faithfulness_maps.npz), the "
        "mean curves (faithfulness_curves.png) and a table on report.html"))
    faithfulness_steps: int = setting(FAITHFULNESS_STEPS, group="faithfulness", low=1, high=MAX_TOKENS, metavar="N",
                                      help="with --faithfulness: patches are changed in N equal steps "
                                           "(at most the model's patch count)")
    boxes: Path | None = setting(None, group="faithfulness", metavar="CSV", help=(
        "with --faithfulness: a box per photo (columns file, x0, y0, x1, y1 in the photo's "
        "pixels; the inspection set's defects.csv has this form) for the pointing game and the "
        "share of each map's mass inside the box"))


@dataclass(frozen=True)
class ExportOptions:
    """What `export` writes."""

    format: str = setting(",".join(EXPORT_FORMATS), group="export", help=(
        "comma-separated formats: savedmodel (TensorFlow Serving: image bytes in, probabilities "
        "and label out), tflite (float32 and int8 weights), onnx (ONNX Runtime)"))
    check: bool = setting(True, group="export", flag="--no-check",
                          help="skip checking every export against the package on random images")


def check_plot_options(run_dirs: Sequence, limit: int, only: str, discard_ratio: float, batch_size: int) -> None:
    """The plot options that need no model, checked before any work: the run
    count, and the values `plot_comparison` takes from Python against the
    declarations above (on the command line the parser has refused them already)."""
    if not 1 <= len(run_dirs) <= MAX_RUNS:
        raise BadInputError(f"--run: give one or two run dirs, got {len(run_dirs)}")
    check_options(PlotOptions(only=only, limit=limit))
    check_options(RolloutOptions(discard_ratio=discard_ratio))
    if batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1, got {batch_size}")
