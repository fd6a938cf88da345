"""`vit-flowers export`: SavedModel, TFLite and ONNX files that run without this package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import EXPORT_FORMATS, parse_formats
from ..errors import EXIT_OK
from ..outputs import claim_output_dir
from ..resources import DEFAULT_MODEL_DIR
from .common import add_shared


def add_export_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers export`."""
    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help=f"run dir to export (default: the shipped model {DEFAULT_MODEL_DIR})")
    add_shared(p, "--out", "export")
    p.add_argument("--format", default=",".join(EXPORT_FORMATS),
                   help="comma-separated formats: savedmodel (TensorFlow Serving: image bytes in, probabilities "
                        "and label out), tflite (float32 and int8 weights), onnx (ONNX Runtime)")
    p.add_argument("--no-check", action="store_true",
                   help="skip checking every export against the package on random images")


def run_export(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py) load once the options are parsed, and the engine (TensorFlow)
    # once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    run_dir = resolve_run(args.run)
    check_run_files(run_dir)
    formats = parse_formats(args.format)
    with claim_output_dir(args.out, "export") as claim:
        out = claim.folder

        from ..export import export_run  # TensorFlow starts here

        export_run(run_dir, out, formats, check=not args.no_check, log=print)
    print(f"exported {run_dir} as {', '.join(formats)} -> {out} (what each file takes and gives: {out / 'README.md'})")
    return EXIT_OK
