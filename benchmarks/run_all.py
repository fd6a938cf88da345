"""Run every figure script, merge their JSON into benchmarks/results.json and
rewrite the generated table in benchmarks/README.md.

Each script runs in its own process (`--quick` passed on); a script that
fails leaves its keys null with the error, and the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common as c  # noqa: E402

# (script, figure title, keys and targets: (key, op, target) with op ">=" / "<=" / None for the record)
FIGURES = [
    ("bench_load_seed.py", "1. loader vs the seed's loop", [
        ("load_vs_seed", ">=", 20), ("load_seed_exponent", None, "~2 (quadratic)"),
        ("load_project_exponent", "<=", 1.15)]),
    ("bench_load_keras.py", "2. loader vs Keras / vs decoding alone", [
        ("load_vs_keras", ">=", 1.0), ("load_vs_decode_only", ">=", 0.9)]),
    ("bench_load_memory.py", "3. loader's peak memory", [("load_peak_mem_ratio", "<=", 1.3)]),
    ("bench_predict.py", "4. predict path vs bare model.predict", [
        ("predict_vs_raw", ">=", 0.95), ("predict_files_vs_raw", ">=", 0.8)]),
    ("bench_mfu.py", "5. ViT-B/16 model FLOPs utilisation", [
        ("infer_mfu", ">=", 0.65), ("train_mfu", ">=", 0.75), ("infer_img_s", None, ""),
        ("train_img_s", None, ""), ("matmul_gflops", None, ""), ("vit_b16_gflops_per_image", None, ""),
        ("gpu_infer_mfu", None, "GPU only"), ("gpu_train_mfu", None, "GPU only")]),
    ("bench_attention.py", "6. batched rollout vs a forward pass / vs vit_keras", [
        ("attention_vs_forward", "<=", 1.15), ("attention_batched_vs_vitkeras", None, "reported"),
        ("attention_max_abs_diff", "<=", 1e-4)]),
    ("bench_torch.py", "7. predict path vs PyTorch (transformers ViT)", [
        ("infer_vs_torch", ">=", 1.0), ("torch_infer_img_s", None, ""), ("tf_infer_img_s", None, "")]),
    ("bench_tiny.py", "8. the demo's tiny config", [("tiny_train_img_s", None, ""), ("tiny_infer_img_s", None, "")]),
    ("bench_scale.py", "9. predict and train --stream as the input grows", [
        ("predict_scale_time_exponent", "<=", 1.1), ("predict_scale_mem_ratio", "<=", 1.2),
        ("train_stream_mem_ratio", "<=", 1.2)]),
    ("bench_export.py", "10. exported model vs the package's predict", [
        ("export_savedmodel_vs_predict", None, "reported"), ("export_serving_vs_predict", None, "reported"),
        ("export_tflite_vs_predict", None, "reported"), ("export_tflite_int8_vs_predict", None, "reported"),
        ("tflite_mib", None, ""), ("tflite_int8_mib", None, ""), ("tflite_ms_per_image", None, ""),
        ("tflite_int8_ms_per_image", None, "")]),
    ("bench_faithfulness.py", "11. scoring every map's faithfulness vs the forward passes it needs", [
        ("faithfulness_vs_forward", "<=", 1.5), ("faithfulness_seconds", None, "")]),
]
BEGIN = "<!-- BEGIN GENERATED: benchmarks/run_all.py rewrites this block -->"
END = "<!-- END GENERATED -->"


def verdict(value, op, target) -> str:
    if op is None:
        return ""
    if value is None:
        return "not measured"
    ok = value >= target if op == ">=" else value <= target
    return "met" if ok else "MISSED"


def fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table(merged: dict) -> str:
    m = merged["meta"]
    v = m["machine"]["versions"]
    lines = [
        BEGIN,
        "",
        f"Command: `{m['command']}` ({'quick' if m['quick'] else 'full'} run), {m['date']}, "
        f"{m['wall_s']:.0f} s wall" + (f" (then {'; '.join(m['reruns'])})" if m.get("reruns") else "") + ".",
        "",
        f"Machine: {m['machine']['cores']} cores, {m['machine']['cpu_model']}, "
        f"{m['machine']['memory_gib']} GiB, {m['machine']['platform']}; GPU: {m['gpu']}.",
        "",
        f"Photos: {m.get('photos', 'not recorded')}.",
        "",
        "Load average (1, 5, 15 min) at the start: " + ", ".join(str(v) for v in m.get("load_average", {}).get(
            "start", [])) + "; at the end: " + ", ".join(str(v) for v in m.get("load_average", {}).get("end", []))
        + f" ({m['machine']['cores']} cores).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None) + ".",
        "",
        "| figure | key | value | target | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _script, title, keys in FIGURES:
        for key, op, target in keys:
            value = merged["results"].get(key)
            tgt = f"{op} {target}" if op else str(target)
            lines.append(f"| {title} | `{key}` | {fmt(value)} | {tgt} | {verdict(value, op, target)} |")
    notes = [f"- {s}: {n}" for s, d in merged["scripts"].items() for n in d.get("notes", [])]
    if notes:
        lines += ["", "Notes from the scripts:", ""] + notes
    lines += ["", END]
    return "\n".join(lines)


def write_readme(merged: dict) -> None:
    path = HERE / "README.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = table(merged)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (make bench-quick); same keys")
    p.add_argument("--only", nargs="*", default=None, help="run only these scripts (e.g. bench_mfu.py); "
                   "the other keys keep their values from the existing results.json")
    p.add_argument("--out", type=Path, default=HERE / "results.json", help="merged JSON")
    args = p.parse_args(argv)
    start = time.perf_counter()
    load_start = os.getloadavg()
    previous = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    results = dict(previous.get("results", {}))
    scripts = dict(previous.get("scripts", {}))
    tmpdir = HERE / ".parts"
    tmpdir.mkdir(exist_ok=True)
    for script, title, keys in FIGURES:
        if args.only and script not in args.only:
            continue
        part = tmpdir / (script.replace(".py", ".json"))
        part.unlink(missing_ok=True)
        cmd = [sys.executable, str(HERE / script), "--out", str(part)] + (["--quick"] if args.quick else [])
        print(f"== {script} ({title})", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=str(HERE.parent), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode == 0 and part.exists():
            data = json.loads(part.read_text())
        else:
            err = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            data = {"results": {k: None for k, _, _ in keys}, "details": {}, "notes": [f"failed: {err[0]}"]}
        data["seconds"] = round(elapsed, 1)
        results.update(data["results"])
        scripts[script] = data
        print("   " + ", ".join(f"{k}={fmt(v)}" for k, v in data["results"].items()) + f"  [{elapsed:.0f} s]",
              flush=True)
        part.unlink(missing_ok=True)
    try:
        tmpdir.rmdir()
    except OSError:
        pass
    import tensorflow as tf  # noqa: E402  (only to say whether a GPU is there)

    gpus = tf.config.list_physical_devices("GPU")
    command = "make bench-quick" if args.quick else "make bench"
    wall = round(time.perf_counter() - start, 1)
    meta = {"command": command, "quick": args.quick, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": wall, "machine": c.machine_info(), "photos": c.photos_note(),
            "load_average": {"start": [round(v, 2) for v in load_start],
                             "end": [round(v, 2) for v in os.getloadavg()]},
            "gpu": ", ".join(g.name for g in gpus) if gpus else "none (the gpu_* keys stay null)"}
    if args.only and previous.get("meta"):  # keep the whole run's command and wall time; say what was rerun
        meta = {**previous["meta"], "machine": meta["machine"], "photos": meta["photos"],
                "reruns": previous["meta"].get("reruns", []) + [
                    f"{' '.join(args.only)} rerun alone ({wall:.0f} s) at {meta['date']}"]}
    merged = {
        "meta": meta,
        "results": results,
        "targets": {k: (f"{op} {t}" if op else None) for _, _, keys in FIGURES for k, op, t in keys},
        "scripts": scripts,
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(args.out)
    write_readme(merged)
    print(f"wrote {args.out} and {HERE / 'README.md'} in {merged['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
