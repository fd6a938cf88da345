"""Figure 3: peak resident memory the loader adds, over the final array's size.

Runs the load in a fresh subprocess: RSS before, the peak (VmHWM, reset via
/proc/self/clear_refs where the kernel allows, else ru_maxrss) after, and
load_peak_mem_ratio = (peak - before) / images.nbytes (1.0 is the array alone).
"""

from __future__ import annotations

import json
import subprocess
import sys

import common as c

KEYS = ["load_peak_mem_ratio"]

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {bench!r})
import common as c
import numpy as np
from vit_flowers.images import load_images
files = c.replicate(c.flower_files(), {n})
try:  # reset the high-water mark to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    how = "VmHWM after clear_refs"
except OSError:
    how = "ru_maxrss"
before, hwm0 = c.rss_bytes()
out = load_images(files, (224, 224), progress=False)
after, hwm = c.rss_bytes()
if how == "ru_maxrss":
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"before": before, "peak": hwm, "after": after, "nbytes": out.images.nbytes,
                  "how": how, "files": len(files)}}))
"""


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    if not c.flower_files():
        print(f"{c.FLOWERS} not found: figure 3 skipped")
        c.emit(args, {k: None for k in KEYS}, notes=[f"{c.FLOWERS} absent: skipped"])
        return 0
    n = 1250 if args.quick else 3000
    repeats = 2 if args.quick else 3
    runs = []
    for _ in range(repeats):
        code = CHILD.format(bench=str(c.HERE), n=n)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratios = [(r["peak"] - r["before"]) / r["nbytes"] for r in runs]
    details = {"files": n, "array_mib": runs[0]["nbytes"] / 2**20,
               "added_peak_mib": [(r["peak"] - r["before"]) / 2**20 for r in runs], "how": runs[0]["how"],
               "ratios": ratios}
    c.emit(args, {"load_peak_mem_ratio": c.median(ratios)}, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
