"""`vit-flowers predict`: predictions, metrics, figures and the report page of
files, folders or a list."""

from __future__ import annotations

import argparse

from ..command_options import PredictOptions
from ..errors import EXIT_OK, BadInputError
from ..options import add_settings, values_from
from ..outputs import REPORT_FILE, SKIPPED_FILE, claim_output_dir
from .common import add_input_args, add_shared, read_inputs


def add_predict_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers predict`: the inputs, the shared ones, then `PredictOptions`."""
    add_input_args(p)
    add_shared(p, "--out", "predict")
    add_shared(p, "--batch-size", "predict")
    add_shared(p, "--strict", "predict")
    groups = add_settings(p, PredictOptions)
    add_shared(groups["report page"], "--no-report", "predict")


def run_predict(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py) load once the options are parsed, and the engine (TensorFlow)
    # once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    options = PredictOptions(**values_from(PredictOptions, args))
    run_dir = resolve_run(args.run)
    run_config = check_run_files(run_dir)
    inputs = read_inputs(args, run_config.model.class_names)
    with claim_output_dir(args.out, "predict", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        out, stage = claim.folder, claim.staging()

        from ..model import load_run  # TensorFlow starts here
        from ..predict import OWNED_OUTPUTS, metrics_summary, predict_inputs, write_outputs

        model, run_config = load_run(run_dir)
        result = predict_inputs(model, run_config, inputs, args.batch_size, strict=args.strict,
                                mirror=options.mirror_tta)
        if len(result.table) == 0 and len(result.skipped):
            # every input was unreadable: not a success; the reasons are written, an earlier run's outputs kept
            from ..images import none_readable_message, write_skipped

            write_skipped(result.skipped, stage / SKIPPED_FILE)
            raise BadInputError(none_readable_message(result.skipped, out / SKIPPED_FILE))
        write_outputs(result, run_config.model.class_names, stage)
        if not args.no_report:
            from ..pages import prediction_page

            prediction_page(model, result, run_config.model.class_names, stage, run_dir, options.report_attention,
                            options.report_class_maps, args.batch_size)
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(result.table)} predicted, {len(result.skipped)} skipped -> {out}")
    if len(result.skipped):
        print(f"skipped files and reasons: {out / SKIPPED_FILE}")
    if not args.no_report:
        print(f"report: {out / REPORT_FILE} (open it in a browser)")
    print(metrics_summary(result.metrics))
    return EXIT_OK
