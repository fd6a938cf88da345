"""Figure 9: time and memory of `vit-flowers predict` and `train --stream` as the input grows.

The inputs are the real photos repeated: a temporary folder of class
subfolders holding N symbolic links (distinct names, each to a photo of
that class), so `predict --images DIR` reads N files with their true labels and a
file list of N rows names N distinct files. Every command runs as the user
runs it (`python -m vit_flowers ...`), in its own process; its wall time
comes from the parent and its peak resident memory from the kernel
(`os.wait4`'s ru_maxrss of that child alone).

- predict_scale_time_exponent: log(t_large - t_0) / (t_small - t_0) over
  log(N_large / N_small), N = 1,000 and 10,000 (quick: 500 and 5,000), for
  `predict --no-report` with the shipped model; t_0 is the same command on
  10 files (starting Python and TensorFlow, loading the model, writing the
  figures), run first and again last, the faster taken off so that a fixed
  start cannot hide growth (nor a cold first start fake it). 1.0 is
  linear. details.report has the same figures for the command with its
  report.html (thumbnails and attention, --report-attention auto; full run
  only).
- predict_scale_mem_ratio: peak RSS at N_large over N_small, `--no-report`;
  1.0 is flat. details.report.mem_ratio: with the page.
- train_stream_mem_ratio: peak RSS of `train --stream` (the shipped model's
  architecture, small at 64 px, one epoch, --no-report) over 4x a list
  against 1x it (the shipped model's training list: 2,346 photos; quick:
  200 of its rows, every 11th, so all five classes).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as c

KEYS = ["predict_scale_time_exponent", "predict_scale_mem_ratio", "train_stream_mem_ratio"]


def run_measured(cmd: list[str], cwd: Path) -> dict:
    """Wall seconds and peak RSS (bytes) of one command in its own process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[2:5])} exited {proc.returncode}: {' | '.join(tail)}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024}


def replica_folder(photos: list[str], count: int, folder: Path) -> list[tuple[str, str]]:
    """`count` symbolic links under folder/<class>/ (the photos repeated, each
    link a new name), and their (class, file name) rows."""
    rows = []
    for k in range(count):
        photo = Path(photos[k % len(photos)])
        label = photo.parent.name
        (folder / label).mkdir(parents=True, exist_ok=True)
        name = f"{k:06d}_{photo.name}"
        os.symlink(photo.resolve(), folder / label / name)
        rows.append((label, name))
    return rows


def write_list(rows: list[tuple[str, str]], folder: Path, path: Path) -> Path:
    lines = ["base_path,type_dir,file_name"] + [f"{folder},{label},{name}" for label, name in rows]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def exponent(sizes: tuple[int, int], seconds: tuple[float, float], fixed: float) -> float:
    small, large = (max(s - fixed, 1e-6) for s in seconds)
    return math.log(large / small) / math.log(sizes[1] / sizes[0])


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    photos = c.flower_files()
    if not photos:
        print(f"{c.FLOWERS} not found: figure 9 skipped")
        c.emit(args, {k: None for k in KEYS}, notes=[f"{c.FLOWERS} absent: skipped"])
        return 0
    from vit_flowers.model import DEFAULT_MODEL_DIR

    sizes = (500, 5000) if args.quick else (1000, 10000)
    cli = [sys.executable, "-m", "vit_flowers"]
    tmp = Path(tempfile.mkdtemp(prefix="vit_flowers_scale_"))
    details: dict = {"sizes": list(sizes), "model": str(DEFAULT_MODEL_DIR.name)}
    results: dict = {}
    try:
        folders = {}
        for n in (10,) + sizes:
            folders[n] = tmp / f"photos_{n}"
            replica_folder(photos, n, folders[n])

        def predict(n: int, report: bool) -> dict:
            out = tmp / f"out_{n}_{int(report)}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_measured(cli + ["predict", "--images", str(folders[n]), "--out", str(out)] + ([] if report else ["--no-report"]),
                             c.ROOT)
            if report:
                r["page_bytes"] = (out / "report.html").stat().st_size
            return r

        for report in (False,) if args.quick else (False, True):  # the page's figures: full run only
            runs = {n: predict(n, report) for n in (10,) + sizes}
            # the start-up again, last: the first command of all starts with cold file caches (the
            # libraries, the model), which once made the 10-file run slower than the 500-file one
            # and the quick exponent 2.0; the faster of the two is the fixed cost
            again = predict(10, report)
            starts = [runs[10]["seconds"], again["seconds"]]
            runs[10] = min(runs[10], again, key=lambda r: r["seconds"])
            print({n: (round(r["seconds"], 1), r["peak_rss"] >> 20) for n, r in runs.items()}, flush=True)
            figures = {
                "start_s": starts,
                "time_exponent": exponent(sizes, (runs[sizes[0]]["seconds"], runs[sizes[1]]["seconds"]),
                                          runs[10]["seconds"]) if 10 in runs else None,
                "time_exponent_wall": exponent(sizes, (runs[sizes[0]]["seconds"], runs[sizes[1]]["seconds"]), 0.0),
                "mem_ratio": runs[sizes[1]]["peak_rss"] / runs[sizes[0]]["peak_rss"],
                "seconds": {n: r["seconds"] for n, r in runs.items()},
                "peak_rss_mib": {n: r["peak_rss"] / 2 ** 20 for n, r in runs.items()},
                "files_per_s": {n: n / r["seconds"] for n, r in runs.items()},
            }
            if report:
                figures["page_mib"] = {n: r["page_bytes"] / 2 ** 20 for n, r in runs.items()}
            details["report" if report else "no_report"] = figures
        results["predict_scale_time_exponent"] = details["no_report"]["time_exponent"]
        results["predict_scale_mem_ratio"] = details["no_report"]["mem_ratio"]

        # train --stream over 1x and 4x a list
        split = DEFAULT_MODEL_DIR / "split" / "training_files.csv"
        import pandas as pd

        listed = pd.read_csv(split)
        base = split.parent
        train_photos = [str((base / b / t / f).resolve()) for b, t, f in
                        zip(listed["base_path"], listed["type_dir"], listed["file_name"])]
        one = 200 if args.quick else len(train_photos)
        # every k-th row, not the first rows: the list is sorted by class, and training needs them all
        train_photos = train_photos[::max(1, len(train_photos) // one)][:one]
        stream = {}
        for factor in (1, 4):
            folder = tmp / f"train_{factor}"
            rows = replica_folder(train_photos[:one], factor * one, folder)
            lst = write_list(rows, folder, tmp / f"train_{factor}.csv")
            out = tmp / f"run_{factor}"
            stream[factor] = run_measured(cli + [
                "train", "--model", "small", "--image-size", "64", "--train-list", str(lst), "--epochs", "1",
                "--batch-size", "32", "--stream", "--no-report", "--out", str(out)], c.ROOT)
            print(f"train --stream x{factor}: {stream[factor]['seconds']:.0f} s, "
                  f"{stream[factor]['peak_rss'] >> 20} MiB", flush=True)
        results["train_stream_mem_ratio"] = stream[4]["peak_rss"] / stream[1]["peak_rss"]
        details["train_stream"] = {"rows": {f: f * one for f in stream},
                                   "seconds": {f: r["seconds"] for f, r in stream.items()},
                                   "peak_rss_mib": {f: r["peak_rss"] / 2 ** 20 for f, r in stream.items()}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.emit(args, results, details, notes=[c.photos_note() + " (repeated through symbolic links)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
