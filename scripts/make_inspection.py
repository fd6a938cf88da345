"""Synthetic inspection images (seed note 001): standard, fluctuations, errors A/B, 30x30 mosaic CSVs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_flowers.primer import inspection as ins  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, each with help text."""
    d = ins.InspectionCounts()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="output folder (the note's ./soart/)")
    p.add_argument("--counts", type=int, nargs=5,
                   metavar=("STANDARD", "LEARN", "NORMAL", "ERROR_A", "ERROR_B"),
                   default=[d.standard, d.learn, d.normal, d.error_a, d.error_b],
                   help="number of images of each kind (default: the note's 1 50 10 10 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the numpy Generator for fluctuations and errors")
    p.add_argument("--size", type=int, default=ins.STANDARD_SIZE,
                   help="image side in pixels (500 = the note's drawing; others scale it)")
    p.add_argument("--ratio", type=float, default=ins.MOSAIC_RATIO,
                   help="mosaic shrink ratio (0.06 turns 500 px into 30x30)")
    p.add_argument("--no-csv", action="store_true", help="do not write the mosaic CSV next to each JPEG")
    p.add_argument("--classes", type=int, metavar="N",
                   help="instead write training class folders normal/ errorA/ errorB/ with N images each")
    p.add_argument("--figure", type=Path, help="also draw an overview figure to this PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in (("--size", args.size), ("--ratio", args.ratio)):
        if value <= 0:
            print(f"error: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    if min(args.counts) < 0 or (args.classes is not None and args.classes < 0):
        print("error: counts must not be negative", file=sys.stderr)
        return 2
    if args.classes is not None:
        table = ins.write_inspection_classes(args.out, args.classes, args.size, args.seed)
    else:
        counts = ins.InspectionCounts(*args.counts)
        table = ins.write_inspection_set(args.out, counts, args.seed, args.size, args.ratio,
                                         csv=not args.no_csv)
    print(f"wrote {len(table)} images under {args.out} (list: {args.out / 'defects.csv'})")
    print(table["label"].value_counts().to_string())
    if args.figure:
        print(f"wrote {ins.plot_overview(args.figure, seed=args.seed, size=args.size, ratio=args.ratio)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
