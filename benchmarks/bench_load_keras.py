"""Figure 2: the project's loader against Keras' directory loader and against decoding alone.

The files: every photo of flower_photos and, when present,
flower_photos_extra (2,934 JPEGs, mostly about 320x240).

- load_vs_keras: seconds of `keras.utils.image_dataset_from_directory`
  (each folder, labels inferred, 224 x 224, iterated to the end) over
  seconds of `load_images` on the same files at the same size.
- load_vs_decode_only: seconds of only reading and decoding the same files
  at full size with the fastest decoder here (Python reads the bytes,
  `cv2.imdecode` to RGB: no resize, no copy into an array) in the loader's
  number of threads, over the loader's seconds at the shipped model's input
  size (64 x 64, `vit-flowers predict` without --run). There the target is
  at most half the photo, so the loader decodes at half scale (DCT scaling,
  `cv2.IMREAD_REDUCED_*`) and resizes: above 1 means the loader costs less
  than any full decode would. details.vs_decode_at_224 is the same floor
  against the loader at 224, where no reduction applies (the photos are
  barely bigger than the target), so what is left there is the loader's
  resize and its per-file checks; details.pil_decode_s is PIL's full decode.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import common as c

KEYS = ["load_vs_keras", "load_vs_decode_only"]
SHIPPED_SIZE = (64, 64)


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    folders = c.photo_folders()
    if not folders:
        print(f"{c.FLOWERS} not found: figure 2 skipped")
        c.emit(args, {k: None for k in KEYS}, notes=[f"{c.FLOWERS} absent: skipped"])
        return 0
    import io

    import cv2
    import keras
    import numpy as np
    from PIL import Image

    from vit_flowers.images import load_images, read_image_bytes

    repeats = 2 if args.quick else 5
    size = (224, 224)
    threads = min(8, os.cpu_count() or 1)  # load_images' default

    def make_keras():
        parts = [keras.utils.image_dataset_from_directory(
            str(folder), labels="inferred", image_size=size, batch_size=32, shuffle=False, verbose=False)
            for folder in folders]
        return parts

    files = [f for part in make_keras() for f in part.file_paths]  # the very files Keras reads

    def run_keras():
        n = 0
        for part in make_keras():
            for x, _ in part:
                n += int(x.shape[0])
        assert n == len(files)

    def loader(target):
        def run():
            out = load_images(files, target, num_threads=threads, progress=False)
            assert out.images.shape[0] == len(files)
        return run

    def pool_map(fn):
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(fn, files, chunksize=4):
                pass

    def cv2_decode(path):
        return cv2.imdecode(np.frombuffer(read_image_bytes(path), np.uint8), cv2.IMREAD_COLOR_RGB)

    def pil_decode(path):
        with Image.open(io.BytesIO(read_image_bytes(path))) as im:
            return im.convert("RGB")

    sides = {"keras": run_keras, "project_224": loader(size), "project_64": loader(SHIPPED_SIZE),
             "decode": lambda: pool_map(cv2_decode), "pil_decode": lambda: pool_map(pil_decode)}
    t = c.interleaved(sides, repeats, warmup=1)
    med = {k: c.median(v) for k, v in t.items()}
    results = {"load_vs_keras": med["keras"] / med["project_224"],
               "load_vs_decode_only": med["decode"] / med["project_64"]}
    details = {"files": len(files), "folders": [f.name for f in folders], "threads": threads,
               "median_s": med, "runs_s": t, "img_s": {k: len(files) / v for k, v in med.items()},
               "vs_decode_at_224": med["decode"] / med["project_224"],
               "pil_decode_vs_cv2_decode": med["pil_decode"] / med["decode"],
               "keras_vs_project_64": med["keras"] / med["project_64"], "shipped_size": list(SHIPPED_SIZE)}
    c.emit(args, results, details, notes=[c.photos_note(), "the loader decodes JPEGs with OpenCV straight to RGB, "
                                          "at half scale or less where the target is at most half the photo"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
