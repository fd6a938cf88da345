"""Learn the pixel-attention W and query q on synthetic images; draw given vs learned attention."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_flowers.primer import learn_query as lq  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, each with help text."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="output folder for the figure")
    p.add_argument("--name", default="learn_query.png", help="figure file name inside OUT")
    p.add_argument("--json", type=Path,
                   help="also save the learned W, q, losses and mean masses to this JSON file")
    p.add_argument("--n-train", type=int, default=384, help="number of synthetic training images")
    p.add_argument("--size", type=int, default=32, help="side of the training images in pixels")
    p.add_argument("--epochs", type=int, default=25, help="training epochs")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed for the training images and Keras")
    p.add_argument("--show", type=int, default=3, help="number of held-out images drawn in the figure")
    p.add_argument("--show-size", type=int, default=64,
                   help="side of the held-out images in pixels (W and q work at any size)")
    p.add_argument("--eval", type=int, default=64,
                   help="number of held-out images for the mean attention mass")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = lq.train_query(n_train=args.n_train, size=args.size, epochs=args.epochs,
                            learning_rate=args.learning_rate, seed=args.seed)
    ev = lq.compare_given_learned(result, n=args.eval, size=args.size, seed=args.seed + 12345)
    shown = lq.compare_given_learned(result, n=args.show, size=args.show_size, seed=args.seed + 999)
    args.out.mkdir(parents=True, exist_ok=True)
    fig = lq.plot_given_vs_learned(shown.data, shown.given, shown.learned, args.out / args.name)
    summary = {
        "w": result.w.tolist(), "q": result.q.tolist(), "loss": result.loss,
        "given_mass_mean": float(ev.given_mass.mean()),
        "learned_mass_mean": float(ev.learned_mass.mean()),
        "eval_images": args.eval,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print(f"attention mass on target over {args.eval} held-out images: "
          f"given {summary['given_mass_mean']:.3f}, learned {summary['learned_mass_mean']:.3f}")
    print(f"wrote {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
