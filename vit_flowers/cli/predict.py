"""`vit-flowers predict`: predictions, metrics, figures and the report page of
files, folders or a list."""

from __future__ import annotations

import argparse

from ..choices import AUTO, OPTION_HELP, parse_attention_option
from ..errors import EXIT_OK, BadInputError
from ..outputs import REPORT_FILE, SKIPPED_FILE, claim_output_dir
from .common import add_input_args, add_shared, read_inputs


def add_predict_args(p: argparse.ArgumentParser) -> None:
    add_input_args(p)
    add_shared(p, "--out", "predict")
    add_shared(p, "--batch-size", "predict")
    add_shared(p, "--strict", "predict")
    p.add_argument("--mirror-tta", action="store_true",
                   help="average each image's probabilities with its left-right mirror image's "
                        "(test-time augmentation; twice the model time)")
    add_report_args(p)


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The options of predict's report.html."""
    g = p.add_argument_group("report page")
    add_shared(g, "--no-report", "predict")
    g.add_argument("--report-attention", type=parse_attention_option, default=AUTO, metavar="auto|all|none|N",
                   help=OPTION_HELP.replace("%", "%%"))  # argparse reads % as a format
    g.add_argument("--report-class-maps", action="store_true",
                   help="also a class-specific (gradient-weighted) map for the predictions with attention "
                        "(about 4 times the cost of the rollout)")


def run_predict(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py) load once the options are parsed, and the engine (TensorFlow)
    # once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    run_dir = resolve_run(args.run)
    run_config = check_run_files(run_dir)
    inputs = read_inputs(args, run_config.model.class_names)
    with claim_output_dir(args.out, "predict", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        out, stage = claim.folder, claim.staging()

        from ..model import load_run  # TensorFlow starts here
        from ..predict import OWNED_OUTPUTS, metrics_summary, predict_inputs, write_outputs

        model, run_config = load_run(run_dir)
        result = predict_inputs(model, run_config, inputs, args.batch_size, strict=args.strict,
                                mirror=args.mirror_tta)
        if len(result.table) == 0 and len(result.skipped):
            # every input was unreadable: not a success; the reasons are written, an earlier run's outputs kept
            from ..images import none_readable_message, write_skipped

            write_skipped(result.skipped, stage / SKIPPED_FILE)
            raise BadInputError(none_readable_message(result.skipped, out / SKIPPED_FILE))
        write_outputs(result, run_config.model.class_names, stage)
        if not args.no_report:
            from ..pages import prediction_page

            prediction_page(model, result, run_config.model.class_names, stage, run_dir, args.report_attention,
                            args.report_class_maps, args.batch_size)
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(result.table)} predicted, {len(result.skipped)} skipped -> {out}")
    if len(result.skipped):
        print(f"skipped files and reasons: {out / SKIPPED_FILE}")
    if not args.no_report:
        print(f"report: {out / REPORT_FILE} (open it in a browser)")
    print(metrics_summary(result.metrics))
    return EXIT_OK
