"""Figure 11: scoring every attention map's faithfulness against the bare forward passes it needs.

- faithfulness_vs_forward: seconds of `faithfulness_job.score_faithfulness`
  (every map the package makes, deletion, insertion and negative curves)
  over seconds of the same number of forward passes through the same traced
  model on ready float32 inputs, same batch. 1.0 would mean the maps, the
  perturbed inputs and the tables cost nothing beside the model.
- faithfulness_seconds: the scoring's own time, for the record.
Full run: the shipped model on 100 flower photos (random images without
them), 16 steps, batch 32. Quick: the `small` config at 64 px on 8 images.
"""

from __future__ import annotations

import common as c

KEYS = ["faithfulness_vs_forward", "faithfulness_seconds"]


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np

    from vit_flowers.faithfulness_job import predictor, score_faithfulness
    from vit_flowers.images import load_images
    from vit_flowers.model import build_classifier, load_run, model_config, resolve_run

    steps, batch = 16, 32
    if args.quick:
        n, repeats = 8, 1
        model = build_classifier(model_config("small", c.CLASS_NAMES, 64), load_pretrained=False)
        size = (64, 64)
    else:
        n, repeats = 100, 1
        model, config = load_run(resolve_run(None))
        size = tuple(config.model.image_size)
    photos = c.flower_files()
    if photos:
        images = load_images(c.replicate(photos[::max(1, len(photos) // n)], n), size, progress=False).images
    else:
        images = np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)
    files = [f"photo_{i}" for i in range(n)]

    result = {}

    def scoring():
        result["r"] = score_faithfulness(model, images, files, c.CLASS_NAMES, steps, batch)

    scoring()  # traces every graph once
    methods = len(result["r"].maps)
    passes = 2 * n + 1 + n * methods * 3 * (steps - 1)  # untouched, blurred, all grey, the interior steps
    predict = predictor(model)
    x = np.zeros((batch, *size, 3), np.float32)
    predict(x)

    def bare():
        for _ in range(0, passes, batch):
            predict(x)

    t = c.interleaved({"scoring": scoring, "bare": bare}, repeats)
    seconds, forward = c.median(t["scoring"]), c.median(t["bare"])
    results = {"faithfulness_vs_forward": c.rounded(seconds / forward), "faithfulness_seconds": c.rounded(seconds, 3)}
    details = {"photos": n, "methods": methods, "steps": steps, "batch": batch, "forward_passes": passes,
               "forward_seconds": c.rounded(forward, 3), "model": "small 64 px (random weights)" if args.quick
               else "the shipped model", "input": list(size)}
    c.emit(args, results, details, [c.photos_note()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
