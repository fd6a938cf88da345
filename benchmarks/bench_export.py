"""Figure 10: the exported model (SavedModel, TFLite) against the package's predict, same images, same run.

The shipped model is exported by `vit_flowers.export.export_run` (SavedModel
and both TFLite files) into a temporary folder; then, in this process,
every side predicts the same real photos (512, quick: 128) in batches of 32,
the sides taking turns:

- export_savedmodel_vs_predict: images/s of the SavedModel's
  `predict_images` (uint8 arrays at the model's size, loaded with
  `tf.saved_model.load`) over the package's `predict.predict_arrays` on the
  same arrays (`datasets.preprocess` included, as `predict` does).
- export_serving_vs_predict: images/s of `serving_default` on the photos'
  encoded bytes (decoding and resizing in the graph) over the package's
  `predict.predict_files` on the same files (decoding included).
- export_tflite_vs_predict, export_tflite_int8_vs_predict: images/s of
  `export.tflite_predict` (`model.tflite`, `model_int8.tflite`, the
  interpreter of `export.tflite_interpreter` with as many threads as cores)
  over `predict_arrays`, same arrays.
- tflite_mib, tflite_int8_mib: the files' sizes; tflite_ms_per_image,
  tflite_int8_ms_per_image: latency of one image per call (median), for the
  record, beside details.package_ms_per_image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import common as c

KEYS = ["export_savedmodel_vs_predict", "export_serving_vs_predict", "export_tflite_vs_predict",
        "export_tflite_int8_vs_predict", "tflite_mib", "tflite_int8_mib", "tflite_ms_per_image",
        "tflite_int8_ms_per_image"]


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    from vit_flowers import export as ex
    from vit_flowers.datasets import preprocess
    from vit_flowers.images import load_images, read_image_bytes
    from vit_flowers.model import DEFAULT_MODEL_DIR, load_run
    from vit_flowers.predict import predict_arrays, predict_files

    n, batch, repeats = (128, 32, 3) if args.quick else (512, 32, 5)
    latency_calls = 20 if args.quick else 50
    model, run_config = load_run(DEFAULT_MODEL_DIR)
    size = tuple(run_config.model.image_size)
    photos = c.flower_files()
    notes = [c.photos_note()]
    if photos:
        files = c.replicate(photos[::max(1, len(photos) // n)], n)
        images = load_images(files, size, progress=False).images
    else:
        files = []
        images = np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)
        notes.append("no photos: random arrays, serving_default not measured")
    data = [read_image_bytes(f) for f in files]
    tmp = Path(tempfile.mkdtemp(prefix="vit_flowers_export_"))
    try:
        export_s, result = c.timed(lambda: ex.export_run(DEFAULT_MODEL_DIR, tmp / "export", "savedmodel,tflite"))
        folder = result.out_dir
        loaded = tf.saved_model.load(str(folder / ex.SAVED_MODEL_DIR))
        predict_images = loaded.signatures["predict_images"]
        serving = loaded.signatures["serving_default"]
        threads = os.cpu_count() or 1
        interpreters = {name: ex.tflite_interpreter(folder / f, num_threads=threads)
                        for name, f in (("tflite", ex.TFLITE_FILE), ("tflite_int8", ex.TFLITE_INT8_FILE))}

        def batches(fn, items):
            return [fn(items[i:i + batch]) for i in range(0, len(items), batch)]

        sides = {
            "package": lambda: predict_arrays(model, preprocess(images), batch),
            "savedmodel": lambda: batches(lambda b: predict_images(images=tf.constant(b))["probabilities"].numpy(),
                                          images),
            "tflite": lambda: batches(lambda b: ex.tflite_predict(interpreters["tflite"], b), images),
            "tflite_int8": lambda: batches(lambda b: ex.tflite_predict(interpreters["tflite_int8"], b), images),
        }
        if files:
            sides["package_files"] = lambda: predict_files(model, files, size, batch_size=batch, progress=False)
            sides["serving"] = lambda: batches(
                lambda b: serving(image_bytes=tf.constant(b))["probabilities"].numpy(), data)
        t = c.interleaved(sides, repeats, warmup=1)
        img_s = {k: n / c.median(v) for k, v in t.items()}

        one = images[:1]
        latency = {
            "package": c.repeat(lambda: predict_arrays(model, preprocess(one), 1), latency_calls, warmup=2),
            "tflite": c.repeat(lambda: ex.tflite_predict(interpreters["tflite"], one), latency_calls, warmup=2),
            "tflite_int8": c.repeat(lambda: ex.tflite_predict(interpreters["tflite_int8"], one), latency_calls,
                                    warmup=2),
        }
        ms = {k: 1e3 * c.median(v) for k, v in latency.items()}
        # agreement on these photos, for the record
        reference = predict_arrays(model, preprocess(images), batch)
        agree = {"savedmodel": np.concatenate(sides["savedmodel"]()),
                 "tflite": np.concatenate(sides["tflite"]()), "tflite_int8": np.concatenate(sides["tflite_int8"]())}
        if files:
            agree["serving"] = np.concatenate(sides["serving"]())
        agreement = {k: {"max_abs_diff": float(np.abs(v - reference).max()),
                         "same_class": float((v.argmax(1) == reference.argmax(1)).mean())} for k, v in agree.items()}
        sizes = {name: (folder / f).stat().st_size / 2 ** 20
                 for name, f in (("tflite", ex.TFLITE_FILE), ("tflite_int8", ex.TFLITE_INT8_FILE))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "export_savedmodel_vs_predict": img_s["savedmodel"] / img_s["package"],
        "export_serving_vs_predict": img_s["serving"] / img_s["package_files"] if files else None,
        "export_tflite_vs_predict": img_s["tflite"] / img_s["package"],
        "export_tflite_int8_vs_predict": img_s["tflite_int8"] / img_s["package"],
        "tflite_mib": sizes["tflite"], "tflite_int8_mib": sizes["tflite_int8"],
        "tflite_ms_per_image": ms["tflite"], "tflite_int8_ms_per_image": ms["tflite_int8"],
    }
    details = {"model": DEFAULT_MODEL_DIR.name, "image_size": list(size), "images": n, "batch": batch,
               "export_s": export_s, "img_s": img_s, "runs_s": t, "package_ms_per_image": ms["package"],
               "latency_ms": ms, "agreement_on_photos": agreement, "tflite_threads": threads,
               "tflite_runtime": type(interpreters["tflite"]).__module__}
    c.emit(args, results, details, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
