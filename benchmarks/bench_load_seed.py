"""Figure 1: the project's image loader against the seed's loading loop.

The seed post (004) grows its array with `np.concatenate` once per image,
reading photos it had resized to 224 beforehand: every step copies all the
images so far, so the time is quadratic in N. The project's `load_images`
decodes the original JPEGs (resizing them itself) in threads straight into
one preallocated array.

Keys: load_vs_seed (seed seconds / project seconds on the headline list),
load_seed_exponent, load_project_exponent (slope of log time vs log N).
The file list is the real flower photos, repeated to reach N; the seed's
pre-resized copies go to a temporary folder outside the repo.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common as c

KEYS = ["load_vs_seed", "load_seed_exponent", "load_project_exponent"]


def pre_resize(files: list[str], folder: Path, size: int = 224) -> list[str]:
    """The seed's inputs: each photo resized to size x size once, saved as JPEG (quality 95)."""
    from PIL import Image

    def one(item):
        k, path = item
        out = folder / f"{k:05d}.jpg"
        with Image.open(path) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(out, quality=95)
        return str(out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, enumerate(files)))


def seed_loop(files: list[str]):
    """The seed's loop (create_vector + np.concatenate), typos fixed, prints dropped."""
    import numpy as np
    from PIL import Image

    mx = np.array([])
    for i, name in enumerate(files):
        img_arr = np.asarray(Image.open(name))
        if i == 0:
            mx = np.array([img_arr])
        else:
            mx = np.concatenate([mx, np.array([img_arr])], 0)
    return mx


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    from vit_flowers.images import load_images

    photos = c.flower_files()
    if not photos:
        print(f"{c.FLOWERS} not found: figure 1 skipped")
        return c.emit(args, {k: None for k in KEYS}, notes=[f"{c.FLOWERS} absent: skipped"]) and 0
    # the headline is the largest N of the sweep in quick mode; the full run adds 3,000
    if args.quick:
        sizes, headline = [200, 400, 800], 800
    else:
        sizes, headline = [500, 1000, 2000, 4000], 3000
    tmp = Path(tempfile.mkdtemp(prefix="vit_flowers_seed_"))
    try:
        resized = pre_resize(photos[: max(sizes + [headline])], tmp)
        size = (224, 224)

        def project(n):
            out = load_images(c.replicate(photos, n), size, progress=False)
            assert out.images.shape == (n, 224, 224, 3)

        def seed(n):
            out = seed_loop(c.replicate(resized, n))
            assert out.shape == (n, 224, 224, 3)

        runs = {}
        project(min(sizes)), seed(min(sizes))  # warm-up: imports, decoders, thread start, file cache
        for n in sorted(set(sizes + [headline])):
            seed_repeats = 3 if n <= 1000 or (n == headline and not args.quick) else 1
            if args.quick:
                seed_repeats = 2
            t = c.interleaved({"seed": lambda n=n: seed(n), "project": lambda n=n: project(n)}, seed_repeats)
            t["project"] += c.repeat(lambda n=n: project(n), max(0, 3 - seed_repeats))
            runs[n] = t
            print(f"N={n}: seed {c.median(t['seed']):.2f} s, project {c.median(t['project']):.2f} s", flush=True)
        head = runs[headline]
        seed_s, project_s = c.median(head["seed"]), c.median(head["project"])
        scaling = {"n": sizes, "seed_s": [c.median(runs[n]["seed"]) for n in sizes],
                   "project_s": [c.median(runs[n]["project"]) for n in sizes]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "load_vs_seed": seed_s / project_s,
        "load_seed_exponent": c.fitted_exponent(sizes, scaling["seed_s"]),
        "load_project_exponent": c.fitted_exponent(sizes, scaling["project_s"]),
    }
    details = {"headline_files": headline, "seed_s": seed_s, "project_s": project_s,
               "seed_runs_s": head["seed"], "project_runs_s": head["project"],
               "project_img_s": headline / project_s, "seed_img_s": headline / seed_s, "scaling": scaling}
    c.emit(args, results, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
