"""Figure 4: the project's predict path against a bare `model.predict`.

- predict_vs_raw: images/s of the project's path on decoded uint8 arrays
  (`datasets.preprocess` then `predict.predict_arrays`, what `predict_files`
  does with each chunk) over images/s of `model.predict` on already preprocessed float32
  arrays, same model, same batch.
- predict_files_vs_raw: images/s of `predict.predict_files` from JPEG files
  end to end (decoding in background chunks while the model predicts) over
  the same bare `model.predict`.
Full run: ViT-B/16 (weights none) at 224. Quick: the `small` config at 64.
"""

from __future__ import annotations

import common as c

KEYS = ["predict_vs_raw", "predict_files_vs_raw"]


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np

    from vit_flowers.datasets import preprocess
    from vit_flowers.model import build_classifier, model_config
    from vit_flowers.predict import predict_arrays, predict_files

    if args.quick:
        arch, size, n, batch, repeats = "small", 64, 512, 32, 5
    else:
        arch, size, n, batch, repeats = "b16", 224, 64, 16, 3
    model = build_classifier(model_config(arch, c.CLASS_NAMES, size), load_pretrained=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = np.asarray(preprocess(images))
    photos = c.flower_files()
    files = c.replicate(photos, n) if photos else []
    chunk = max(batch, n // 4)  # several chunks, so decoding overlaps predicting

    fns = {
        "raw": lambda: model.predict(x, batch_size=batch, verbose=0),
        "project": lambda: predict_arrays(model, preprocess(images), batch_size=batch),
    }
    if files:
        fns["files"] = lambda: predict_files(model, files, (size, size), batch_size=batch, chunk_size=chunk,
                                             progress=False)
    t = c.interleaved(fns, repeats, warmup=1)
    img_s = {k: n / c.median(v) for k, v in t.items()}
    results = {"predict_vs_raw": img_s["project"] / img_s["raw"],
               "predict_files_vs_raw": img_s["files"] / img_s["raw"] if files else None}
    notes = [] if files else [f"{c.FLOWERS} absent: predict_files_vs_raw not measured"]
    c.emit(args, results, {"model": arch, "image_size": size, "images": n, "batch": batch, "chunk": chunk,
                           "img_s": img_s, "runs_s": t}, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
