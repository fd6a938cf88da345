"""Shared helpers for the benchmark scripts: timing, medians, JSON, machine info.

Every figure script:
- takes `--quick` (smaller sizes, same keys) and `--out FILE` (its JSON),
- measures both sides of its ratio in the same process run, several repeats,
  and reports medians,
- writes {"results": {key: value}, "details": {...}, "notes": [...]}.
`run_all.py` merges those files into `benchmarks/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLOWERS = Path(os.environ.get("VIT_FLOWERS_PHOTOS", ROOT.parent / "shared" / "flower_photos"))
# read as well when present (`VIT_FLOWERS_PHOTOS_EXTRA`; an empty value turns it off)
FLOWERS_EXTRA = Path(os.environ.get("VIT_FLOWERS_PHOTOS_EXTRA", ROOT.parent / "shared" / "flower_photos_extra"))
CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]

if str(ROOT) not in sys.path:  # runnable from a checkout without the editable install
    sys.path.insert(0, str(ROOT))


def quiet_tensorflow() -> None:
    """Fewer C++ log lines from TensorFlow; call before importing it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parser(description: str) -> argparse.ArgumentParser:
    """The options every figure script shares."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repeats (what `make bench-quick` runs); same keys")
    p.add_argument("--out", type=Path, default=None,
                   help="write this script's JSON here (default: print it only)")
    return p


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeats)]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds of each function, the functions taking turns (A B A B ...), so a
    slow patch of a shared machine hits both sides of a ratio alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn)[0])
    return times


def fitted_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Slope of log(seconds) against log(size): 1 is linear, 2 quadratic."""
    import numpy as np

    slope, _ = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)


def rounded(value, digits: int = 4):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def emit(args: argparse.Namespace, results: dict, details: dict | None = None, notes: list[str] | None = None) -> dict:
    """Print and (with --out) write the script's JSON."""
    payload = {"results": rounded(results), "details": rounded(details or {}), "notes": notes or [],
               "quick": bool(args.quick)}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    return payload


def photo_folders() -> list[Path]:
    """The folders of real photos the benchmarks read: flower_photos, and
    flower_photos_extra beside it when present ([] without the first)."""
    if not FLOWERS.is_dir():
        return []
    extra = [FLOWERS_EXTRA] if str(FLOWERS_EXTRA) not in ("", ".") and FLOWERS_EXTRA.is_dir() else []
    return [FLOWERS] + [f for f in extra if f.resolve() != FLOWERS.resolve()]


def flower_files() -> list[str]:
    """The real photos of every folder of `photo_folders`, sorted within each
    folder, or [] when flower_photos is absent."""
    return [str(p) for folder in photo_folders()
            for p in sorted(folder.glob("*/*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def photos_note() -> str:
    """One line for the results: which folders of photos were read, how many files."""
    folders = photo_folders()
    if not folders:
        return f"{FLOWERS} absent: no real photos"
    counts = [sum(1 for p in f.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) for f in folders]
    parts = [f"{f.name} ({n})" for f, n in zip(folders, counts)]
    return f"photos: {' + '.join(parts)} = {sum(counts)} files"


def replicate(items: list, count: int) -> list:
    """`items` repeated (in order, cycling) to `count` entries."""
    return [items[i % len(items)] for i in range(count)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Cores, CPU model, memory, GPU (if TensorFlow sees one) and package versions."""
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for name, dist in [("tensorflow", "tensorflow"), ("keras", "keras"), ("vit-keras", "vit-keras"),
                       ("numpy", "numpy"), ("pillow", "pillow"), ("torch", "torch"),
                       ("transformers", "transformers")]:
        v = _version(dist)
        if v is not None or name not in ("torch", "transformers"):
            versions[name] = v
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "versions": versions,
    }


def vit_forward_flops(image_size: tuple[int, int], patch: int, hidden: int, layers: int, mlp: int,
                      num_classes: int = 5, head_units: int = 21) -> dict:
    """FLOPs of one image's forward pass, counted from the architecture
    (2 FLOPs per multiply-add; softmax, layer norms, GELU and adds left out):

        P = (H/p)(W/p) patches, T = P + 1 tokens, D = hidden, M = mlp
        patch embedding   2 * P * (p*p*3) * D
        per layer:
          Q, K, V         3 * 2 * T * D * D
          out projection  2 * T * D * D
          scores Q K^T    2 * T * T * D
          weighted sum AV 2 * T * T * D
          MLP             2 * T * D * M  +  2 * T * M * D
        head              2 * D * 21 + 2 * 21 * classes
        forward = embed + layers * per_layer + head;   training step = 3 * forward
    """
    h, w = image_size
    P = (h // patch) * (w // patch)
    T = P + 1
    D, M = hidden, mlp
    embed = 2 * P * (patch * patch * 3) * D
    qkv = 3 * 2 * T * D * D
    out = 2 * T * D * D
    scores = 2 * T * T * D
    weighted = 2 * T * T * D
    mlp_flops = 2 * T * D * M * 2
    per_layer = qkv + out + scores + weighted + mlp_flops
    head = 2 * D * head_units + 2 * head_units * num_classes
    forward = embed + layers * per_layer + head
    return {"forward": forward, "train": 3 * forward, "embed": embed, "per_layer": per_layer, "head": head}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> dict:
    """fp32 matmul throughput of TensorFlow here: an n x n by n x n product in a
    tf.function, median of `repeats` (after two warm-up calls)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)

    @tf.function
    def mm(x, y):
        return tf.linalg.matmul(x, y)

    def run():
        mm(a, b).numpy()

    times = repeat(run, repeats, warmup=2)
    flops = 2.0 * n ** 3
    return {"gflops": flops / median(times) / 1e9, "n": n, "seconds": times}


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    rss = hwm = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm
