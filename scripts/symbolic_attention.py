"""Self-attention with SymPy symbols (seed note 002): print S = X^T X, softmax(S) and o = X A^T."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_flowers.primer import symbolic  # noqa: E402


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, each with help text."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--channels", type=positive, default=2, help="C, number of channels (note: 2)")
    p.add_argument("--width", type=positive, default=2, help="W, image width (note: 2)")
    p.add_argument("--height", type=positive, default=2, help="H, image height (note: 2)")
    p.add_argument("--full", action="store_true",
                   help="print every element of softmax(S) and o, not only the first")
    p.add_argument("--numbers", type=int, metavar="SEED",
                   help="substitute random numbers (this seed) and compare with the NumPy version")
    p.add_argument("--check-keras", action="store_true",
                   help="compare the NumPy multi-head attention with Keras and vit_keras (imports TensorFlow)")
    p.add_argument("--figure", type=Path,
                   help="draw rows of softmax(X^T X) on the inspection standard image to this PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    c, w, h = args.channels, args.width, args.height
    for line in symbolic.report_lines(c, w, h, full=args.full):
        print(line)
    if args.numbers is not None:
        import numpy as np

        from vit_flowers.primer.self_attention import image_to_tokens, note_self_attention

        values = np.random.default_rng(args.numbers).normal(size=(c, w, h))
        s, a, o = symbolic.self_attention(symbolic.tokens(c, w, h))
        num_o, num_a, num_s = note_self_attention(image_to_tokens(values[None]))
        for name, sym, num in (("S", s, num_s), ("A", a, num_a), ("o", o, num_o)):
            diff = np.abs(symbolic.substitute(sym, values) - num[0]).max()
            print(f"{name}: symbolic with numbers vs NumPy, max abs diff {diff:.2e}")
    if args.check_keras:
        from vit_flowers.primer.self_attention import check_against_keras

        r = check_against_keras()
        print(f"NumPy MHA vs keras.layers.MultiHeadAttention: output {r.keras_output:.2e}, "
              f"weights {r.keras_weights:.2e}")
        print(f"NumPy MHA vs vit_keras MultiHeadSelfAttention: output {r.vit_keras_output:.2e}, "
              f"weights {r.vit_keras_weights:.2e}")
    if args.figure:
        import numpy as np

        from vit_flowers.primer.inspection import standard_image
        from vit_flowers.primer.self_attention import plot_note_attention

        out = plot_note_attention(np.asarray(standard_image()), [(6, 6), (15, 15), (15, 4)], args.figure)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
