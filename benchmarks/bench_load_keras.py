"""Figure 2: the project's loader against Keras' directory loader and against decoding alone.

- load_vs_keras: seconds of `keras.utils.image_dataset_from_directory`
  (flower_photos, labels inferred, 224 x 224, iterated to the end) over
  seconds of `load_images` on the same files at the same size.
- load_vs_decode_only: seconds of only decoding the same JPEGs at full size
  with PIL (`Image.open(...).convert("RGB")`, which loads; no resize, no copy
  into an array) in the same number of threads as the loader, over the
  loader's seconds. The loader decodes JPEGs with OpenCV (outside the GIL)
  and other formats with PIL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import common as c

KEYS = ["load_vs_keras", "load_vs_decode_only"]


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    photos = c.flower_files()
    if not photos:
        print(f"{c.FLOWERS} not found: figure 2 skipped")
        c.emit(args, {k: None for k in KEYS}, notes=[f"{c.FLOWERS} absent: skipped"])
        return 0
    import keras
    from PIL import Image

    from vit_flowers.images import load_images

    repeats = 2 if args.quick else 5
    size = (224, 224)
    threads = min(8, os.cpu_count() or 1)  # load_images' default

    def make_keras():
        return keras.utils.image_dataset_from_directory(
            str(c.FLOWERS), labels="inferred", image_size=size, batch_size=32, shuffle=False, verbose=False)

    files = list(make_keras().file_paths)  # the very files Keras reads

    def run_keras():
        n = 0
        for x, _ in make_keras():
            n += int(x.shape[0])
        assert n == len(files)

    def run_project():
        out = load_images(files, size, num_threads=threads, progress=False)
        assert out.images.shape[0] == len(files)

    def decode(path):
        with Image.open(path) as im:
            im.convert("RGB")

    def run_decode():
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(decode, files, chunksize=4):
                pass

    t = c.interleaved({"keras": run_keras, "project": run_project, "decode": run_decode}, repeats, warmup=1)
    med = {k: c.median(v) for k, v in t.items()}
    results = {"load_vs_keras": med["keras"] / med["project"], "load_vs_decode_only": med["decode"] / med["project"]}
    details = {"files": len(files), "threads": threads, "median_s": med, "runs_s": t,
               "img_s": {k: len(files) / v for k, v in med.items()}}
    c.emit(args, results, details, notes=["the loader decodes JPEGs with OpenCV and other formats with PIL "
                                          "(draft mode for big JPEGs that OpenCV refuses)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
