"""`vit-flowers plot`: attention figures of one or two run dirs on the same
images, and their page."""

from __future__ import annotations

import argparse
import dataclasses

from ..choices import check_faithfulness_steps
from ..command_options import PlotOptions, RolloutOptions, check_plot_options
from ..errors import EXIT_OK, BadInputError
from ..options import add_settings, values_from
from ..outputs import SKIPPED_FILE, claim_output_dir
from .common import add_input_args, add_shared, read_inputs


def add_plot_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers plot`: the inputs, the shared ones, then
    `PlotOptions` and `RolloutOptions`."""
    add_input_args(p, several_runs=True)
    add_shared(p, "--out", "plot")
    add_settings(p, PlotOptions, RolloutOptions)
    add_shared(p, "--batch-size", "plot")
    add_shared(p, "--no-report", "plot")


def run_plot(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py, OpenCV) load once the options are parsed, and the engine
    # (TensorFlow) once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    options = PlotOptions(**values_from(PlotOptions, args))
    rollout = RolloutOptions(**values_from(RolloutOptions, args))
    runs = list(args.run) if args.run else [resolve_run(None)]
    check_plot_options(runs, options.limit, options.only, rollout.discard_ratio, args.batch_size)
    configs = [check_run_files(run) for run in runs]
    inputs = read_inputs(args, configs[0].model.class_names)
    if options.faithfulness:
        check_faithfulness_steps(options.faithfulness_steps, configs[0].model.grid)  # before the model loads
    if options.boxes is not None:
        if not options.faithfulness:
            raise BadInputError("--boxes scores maps: it needs --faithfulness")
        from ..boxes import read_boxes  # local: pandas loads once the options are parsed

        read_boxes(options.boxes, inputs["file"].tolist())  # a bad row: exit 2 before the model loads
    with claim_output_dir(args.out, "plot", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        from ..comparison import OWNED_OUTPUTS, plot_comparison  # TensorFlow starts here

        written = plot_comparison(runs, claim.staging(), inputs=inputs, batch_size=args.batch_size,
                                  report=not args.no_report, final_dir=claim.folder,
                                  **dataclasses.asdict(options), **dataclasses.asdict(rollout))
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(written)} files -> {claim.folder}")
    return EXIT_OK
