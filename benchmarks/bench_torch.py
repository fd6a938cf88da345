"""Figure 7: the package's ViT-B/16 predict path against the same model in PyTorch.

The peer: Hugging Face transformers' `ViTForImageClassification` from a
random-weight `ViTConfig` of ViT-B/16 at 224 (attn_implementation="sdpa",
torch.set_num_threads(cores), torch.inference_mode()). The package: the
classifier of `model.build_classifier` (weights none) through
`predict.forward`, the cached graph `vit-flowers predict` runs on every
batch, with its default options. infer_vs_torch = package images/s over
PyTorch images/s at the same batch (16, quick and full alike).

Each side runs in its own fresh process (so neither's thread pool spins
against the other), the sides taking turns (quick: one turn, full: two).
The full run adds the TensorFlow-side variants (details.tf_variants_vs_torch), each in its own
process against the same PyTorch figure (the default is fused attention,
`keras.ops.dot_product_attention`, without XLA): the plain `tf.function`
with vit_keras' attention, XLA (`jit_compile=True`) with either attention, `tf.config.threading` intra =
cores / inter = 1, and oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`). The full run
adds a batch sweep (4, 16, 32) of both sides (details.batch_sweep).
Needs benchmarks/requirements-peer.txt; without it the keys are null with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import common as c

KEYS = ["infer_vs_torch", "torch_infer_img_s", "tf_infer_img_s"]
BATCH = 16
# name -> (variant, extra environment)
VARIANTS = {
    "plain tf.function (vit_keras attention, no XLA)": ("plain", {}),
    "XLA, vit_keras attention": ("plain-xla", {}),
    "XLA + fused attention": ("fused-xla", {}),
    "default + threads intra=cores inter=1": ("threads", {}),
    "default + oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": ("default", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}
SWEEP = (4, 16, 32)


def measure_torch(batch: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, num_labels=5, attn_implementation="sdpa")
    model = ViTForImageClassification(config).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32))

    def run():
        with torch.inference_mode():
            model(pixel_values=x).logits.numpy()

    t = c.repeat(run, repeats, warmup=1)
    return {"img_s": batch / c.median(t), "runs_s": t, "torch_threads": torch.get_num_threads(),
            "attn_implementation": model.config._attn_implementation}


def measure_tf(batch: int, repeats: int, variant: str) -> dict:
    import tensorflow as tf

    if variant == "threads":
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import numpy as np

    from vit_flowers import predict
    from vit_flowers.datasets import preprocess
    from vit_flowers.model import build_classifier, model_config

    model = build_classifier(model_config("b16", c.CLASS_NAMES, 224), load_pretrained=False)
    x = np.asarray(preprocess(np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), np.uint8)))
    options = {}
    if variant not in ("default", "threads"):
        options = {"fused": variant.startswith("fused"), "jit_compile": variant.endswith("xla")}
    first_s, _ = c.timed(lambda: predict.forward(model, x, batch, **options))  # traces (and compiles) once
    t = c.repeat(lambda: predict.forward(model, x, batch, **options), repeats)
    return {"img_s": batch / c.median(t), "runs_s": t, "first_call_s": first_s,
            "options": options or predict.forward_options(model)}


def child(side: str, batch: int, repeats: int, variant: str = "default", env: dict | None = None) -> dict:
    """Run one side in a fresh process; its last stdout line is the JSON."""
    cmd = [sys.executable, __file__, "--side", side, "--batch", str(batch), "--repeats", str(repeats),
           "--variant", variant]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"{side}/{variant} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--side", choices=["torch", "tf"], help="internal: measure one side in this process")
    p.add_argument("--variant", default="default",
                   choices=["default", "plain", "fused", "plain-xla", "fused-xla", "threads"],
                   help="internal: the TensorFlow-side variant")
    p.add_argument("--batch", type=int, default=BATCH, help="images per forward pass")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per side")
    p.add_argument("--no-variants", action="store_true", help="only the headline pair")
    args = p.parse_args(argv)
    c.quiet_tensorflow()
    repeats = args.repeats or (2 if args.quick else 5)
    if args.side == "torch":
        print(json.dumps(measure_torch(args.batch, repeats)))
        return 0
    if args.side == "tf":
        print(json.dumps(measure_tf(args.batch, repeats, args.variant)))
        return 0

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        reason = f"PyTorch peer not installed ({err}); pip install -r benchmarks/requirements-peer.txt"
        print(reason)
        c.emit(args, {k: None for k in KEYS}, notes=[reason])
        return 0
    batch = args.batch
    turns = 1 if args.quick else 2
    tf_runs, torch_runs = [], []
    for _ in range(turns):
        tf_runs.append(child("tf", batch, repeats))
        torch_runs.append(child("torch", batch, repeats))
        print(f"batch {batch}: tf {tf_runs[-1]['img_s']:.2f} img/s, torch {torch_runs[-1]['img_s']:.2f} img/s",
              flush=True)
    tf_img_s = c.median(r["img_s"] for r in tf_runs)
    torch_img_s = c.median(r["img_s"] for r in torch_runs)
    variants, variant_runs = {"package default": tf_img_s}, {}
    for name, (variant, env) in ({} if args.no_variants or args.quick else VARIANTS).items():
        try:
            r = child("tf", batch, 3, variant, env)
            variants[name], variant_runs[name] = r["img_s"], r
        except RuntimeError as err:
            variants[name], variant_runs[name] = None, {"error": str(err)}
        print(f"{name}: {variants[name]}", flush=True)
    sweep = {}
    if not args.quick and not args.no_variants:
        for b in SWEEP:
            if b == batch:
                sweep[b] = {"tf_img_s": tf_img_s, "torch_img_s": torch_img_s}
                continue
            r_tf = child("tf", b, 3)
            r_torch = child("torch", b, 3)
            sweep[b] = {"tf_img_s": r_tf["img_s"], "torch_img_s": r_torch["img_s"]}
        for v in sweep.values():
            v["tf_vs_torch"] = v["tf_img_s"] / v["torch_img_s"]
    results = {"infer_vs_torch": tf_img_s / torch_img_s, "torch_infer_img_s": torch_img_s, "tf_infer_img_s": tf_img_s}
    details = {"batch": batch, "turns": turns, "tf_options": tf_runs[0]["options"], "tf_runs": tf_runs,
               "torch_runs": torch_runs, "tf_variants_img_s": variants,
               "tf_variants_vs_torch": {k: (v / torch_img_s if v else None) for k, v in variants.items()},
               "tf_variant_runs": variant_runs, "batch_sweep": sweep}
    c.emit(args, results, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
