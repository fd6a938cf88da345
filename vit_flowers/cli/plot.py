"""`vit-flowers plot`: attention figures of one or two run dirs on the same
images, and their page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import (
    FAITHFULNESS_STEPS,
    HEAD_FUSIONS,
    NORMALIZATIONS,
    ONLY,
    PREDICTED,
    check_faithfulness_steps,
    check_plot_options,
)
from ..errors import EXIT_OK, BadInputError
from ..outputs import SKIPPED_FILE, claim_output_dir
from .common import add_input_args, add_shared, positive_int, read_inputs


def add_plot_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers plot`."""
    add_input_args(p, several_runs=True)
    add_shared(p, "--out", "plot")
    p.add_argument("--only", choices=ONLY, default="all",
                   help="show all images, or only those the first run predicts correctly / wrongly")
    p.add_argument("--limit", type=positive_int, default=16, help="most images to show, spread over the list")
    p.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean",
                   help="how heads are fused in each layer before the rollout (vit_keras: mean)")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="share of the lowest patch-to-patch attentions zeroed in every layer (0 = none, "
                        "as vit_keras); the class token's attention is never discarded")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="matrix",
                   help="matrix: divide A+I by its total (vit_keras); row: by each row (the rollout paper)")
    p.add_argument("--start-layer", type=int, default=0, help="first layer of the rollout (Python index)")
    p.add_argument("--stop-layer", type=int, default=None,
                   help="layer after the last one rolled out (None: through the last layer)")
    p.add_argument("--head-layer", type=int, default=-1, help="layer shown in per_head.png (-1: the last)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help=f"add a class-specific (gradient-weighted) map of the first run for class NAME, or "
                        f"'{PREDICTED}' for each image's predicted class")
    p.add_argument("--faithfulness", action="store_true",
                   help="also score every map of the first run on the images shown: deletion, insertion and "
                        "negative perturbation AUCs per photo and method (faithfulness.csv), their means with "
                        "bootstrap intervals (faithfulness_summary.csv), the maps (faithfulness_maps.npz), the "
                        "mean curves (faithfulness_curves.png) and a table on report.html")
    p.add_argument("--faithfulness-steps", type=positive_int, default=FAITHFULNESS_STEPS, metavar="N",
                   help="with --faithfulness: patches are changed in N equal steps")
    p.add_argument("--boxes", type=Path, default=None, metavar="CSV",
                   help="with --faithfulness: a box per photo (columns file, x0, y0, x1, y1 in the photo's "
                        "pixels; the inspection set's defects.csv has this form) for the pointing game and the "
                        "share of each map's mass inside the box")
    add_shared(p, "--batch-size", "plot")
    add_shared(p, "--no-report", "plot")


def run_plot(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py, OpenCV) load once the options are parsed, and the engine
    # (TensorFlow) once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    runs = list(args.run) if args.run else [resolve_run(None)]
    check_plot_options(runs, args.limit, args.only, args.discard_ratio, args.batch_size)
    configs = [check_run_files(run) for run in runs]
    inputs = read_inputs(args, configs[0].model.class_names)
    if args.faithfulness:
        check_faithfulness_steps(args.faithfulness_steps, configs[0].model.grid)  # before the model loads
    if args.boxes is not None:
        if not args.faithfulness:
            raise BadInputError("--boxes scores maps: it needs --faithfulness")
        from ..boxes import read_boxes  # local: pandas loads once the options are parsed

        read_boxes(args.boxes, inputs["file"].tolist())  # a bad row: exit 2 before the model loads
    with claim_output_dir(args.out, "plot", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        from ..comparison import OWNED_OUTPUTS, plot_comparison  # TensorFlow starts here

        written = plot_comparison(
            runs, claim.staging(), inputs=inputs, limit=args.limit, only=args.only, head_fusion=args.head_fusion,
            discard_ratio=args.discard_ratio, class_name=args.class_name, batch_size=args.batch_size,
            normalize=args.normalize, start_layer=args.start_layer, stop_layer=args.stop_layer,
            head_layer=args.head_layer, report=not args.no_report, final_dir=claim.folder,
            faithfulness=args.faithfulness, faithfulness_steps=args.faithfulness_steps, boxes=args.boxes,
        )
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(written)} files -> {claim.folder}")
    return EXIT_OK
