"""`vit-flowers export`: SavedModel, TFLite and ONNX files that run without this package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import parse_formats
from ..command_options import ExportOptions
from ..errors import EXIT_OK
from ..options import add_settings, values_from
from ..outputs import claim_output_dir
from ..resources import DEFAULT_MODEL_DIR
from .common import add_shared


def add_export_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers export`."""
    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help=f"run dir to export (default: the shipped model {DEFAULT_MODEL_DIR})")
    add_shared(p, "--out", "export")
    add_settings(p, ExportOptions)


def run_export(args: argparse.Namespace) -> int:
    # local: the checks' modules (pandas, h5py) load once the options are parsed, and the engine (TensorFlow)
    # once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..rundir import check_run_files, resolve_run

    options = ExportOptions(**values_from(ExportOptions, args))
    run_dir = resolve_run(args.run)
    check_run_files(run_dir)
    formats = parse_formats(options.format)
    with claim_output_dir(args.out, "export") as claim:
        out = claim.folder

        from ..export import export_run  # TensorFlow starts here

        export_run(run_dir, out, formats, check=options.check, log=print)
    print(f"exported {run_dir} as {', '.join(formats)} -> {out} (what each file takes and gives: {out / 'README.md'})")
    return EXIT_OK
