"""Figure 8: the demo's small config (tiny at 48 px), images/s for the record.

tiny_train_img_s: `model.fit` steps through the project's training path
(train.array_dataset + train.compile_model, the demo's AdamW + cosine), batch
32, first (tracing) step excluded. tiny_infer_img_s: `model.predict`, batch 32.
"""

from __future__ import annotations

import common as c

KEYS = ["tiny_train_img_s", "tiny_infer_img_s"]


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np
    from bench_mfu import train_step_seconds

    from vit_flowers.config import TrainConfig
    from vit_flowers.model import build_classifier, model_config

    batch = 32
    steps = 10 if args.quick else 60
    n_infer = 512 if args.quick else 4096
    cfg = model_config("tiny", c.CLASS_NAMES, 48)
    tcfg = TrainConfig(epochs=1, batch_size=batch, learning_rate=1e-3, optimizer="adamw", weight_decay=1e-4,
                       lr_schedule="cosine", warmup_epochs=1, augment="basic")
    step_s = train_step_seconds(cfg, tcfg, batch, steps)
    model = build_classifier(cfg, load_pretrained=False)
    images = np.random.default_rng(0).integers(0, 256, (n_infer, 48, 48, 3), dtype=np.uint8)
    from vit_flowers.datasets import preprocess

    x = np.asarray(preprocess(images))
    t = c.repeat(lambda: model.predict(x, batch_size=batch, verbose=0), 3, warmup=1)
    results = {"tiny_train_img_s": batch / c.median(step_s), "tiny_infer_img_s": n_infer / c.median(t)}
    c.emit(args, results, {"batch": batch, "train_steps_timed": len(step_s), "train_step_s": c.median(step_s),
                           "infer_images": n_infer, "infer_runs_s": t, "augment": "basic"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
