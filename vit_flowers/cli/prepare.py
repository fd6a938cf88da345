"""`vit-flowers prepare`: training, validation and testing lists from folders, the
download or a generator."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..command_options import PrepareOptions
from ..errors import EXIT_OK
from ..options import add_settings, values_from
from ..outputs import InputFolders, claim_output_dir
from .common import add_shared


def generators() -> dict[str, Callable]:
    """The data sets this package can generate, by --source name."""
    # their modules (NumPy, pandas, PIL, matplotlib) are imported when a generator runs: the parser, which
    # imports this module, imports the standard library alone
    def synthetic(folder: Path, per_class: int, size: int, seed: int):
        from ..synthetic import write_synthetic_flowers

        return write_synthetic_flowers(folder, per_class, size, seed)

    def inspection(folder: Path, per_class: int, size: int, seed: int):
        from ..filelists import scan_class_folders
        from ..primer.inspection import write_inspection_classes

        write_inspection_classes(folder, n_per_class=per_class, image_size=size, seed=seed)
        return scan_class_folders(folder)

    return {"synthetic": synthetic, "inspection": inspection}


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers prepare`: `PrepareOptions`, --out and --seed."""
    groups = add_settings(p, PrepareOptions)
    add_shared(groups["data"], "--out", "prepare")
    add_shared(groups["split"], "--seed", "prepare", default=0)


def run_prepare(args: argparse.Namespace) -> int:
    # local: pandas loads once the options are parsed (the parser imports the standard library alone);
    # prepare starts no TensorFlow (only --source download uses Keras' file cache)
    from ..data_sources import source_rows
    from ..filelists import check_fractions, class_names_of, write_file_lists

    options = PrepareOptions(**values_from(PrepareOptions, args))
    check_fractions(options.test_fraction, options.val_fraction)
    with claim_output_dir(args.out, "prepare", mark=False):  # its lists are not photos: a photo folder may hold them
        folders = InputFolders(out=args.out)
        rows = source_rows(options.source, args.out, options.per_class, options.image_size, args.seed, generators(),
                           folders)
        if folders.left_out_line():
            print(f"note: {folders.left_out_line()}")
        lists = write_file_lists(rows, args.out, options.test_fraction, args.seed, options.val_fraction)
    print(f"{len(rows)} images in classes {class_names_of(rows)}")
    print("wrote " + ", ".join(str(path) for path in lists.values()))
    return EXIT_OK
