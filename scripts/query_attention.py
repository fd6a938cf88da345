"""Attention on pixels (seed note 000): an image beside one attention map per query pixel."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_flowers.primer import pixel_attention as pa  # noqa: E402


def query(text: str) -> tuple[int, int]:
    """Parse 'Y,X' into two ints (argparse type)."""
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"query {text!r} is not 'Y,X' with two integers") from None
    return y, x


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, each with help text."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("image", type=Path, help="RGB image file (any format Pillow reads)")
    p.add_argument("--query", type=query, action="extend", nargs="+", metavar="Y,X",
                   help="query pixel(s) as row,column; give several after one --query or repeat it "
                        f"(default: {' '.join(f'{y},{x}' for y, x in pa.DEFAULT_QUERIES)}, as in the note)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder for the figure")
    p.add_argument("--name", help="figure file name inside OUT (default: <image stem>_query_attention.png)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    queries = args.query or list(pa.DEFAULT_QUERIES)
    try:
        image = pa.load_rgb(args.image)
    except (OSError, ValueError) as err:
        print(f"error: cannot read image {args.image}: {err}", file=sys.stderr)
        return 2
    try:
        results = pa.pixel_attention(image, queries)
    except pa.QueryOutOfBounds as err:
        print(f"error: --query: {err}", file=sys.stderr)
        return 2
    name = args.name or f"{args.image.stem}_query_attention.png"
    out = pa.plot_query_attention(image, results, args.out / name)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
