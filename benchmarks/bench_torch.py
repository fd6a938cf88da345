"""Figure 7: the project's ViT-B/16 inference against the same model in PyTorch.

The peer: Hugging Face transformers' `ViTForImageClassification` from a
random-weight `ViTConfig` of ViT-B/16 at 224 (attn_implementation="sdpa",
torch.set_num_threads(cores), torch.inference_mode()). The project: the
classifier of `model.build_classifier` (weights none) through `model.predict`.
infer_vs_torch = project images/s over PyTorch images/s at the same batch.

Each side runs in its own fresh process (so neither's thread pool spins
against the other), the sides taking turns. The TensorFlow-side variants
tried to close the gap (XLA, batch size, thread settings, oneDNN off) are in
details.tf_variants (full run only; XLA compiles for minutes here).
Needs benchmarks/requirements-peer.txt; without it the key is null with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import common as c

KEYS = ["infer_vs_torch", "torch_infer_img_s", "tf_infer_img_s"]


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

    from vit_flowers.datasets import preprocess
    from vit_flowers.model import build_classifier, model_config

    model = build_classifier(model_config("b16", c.CLASS_NAMES, 224), load_pretrained=False)
    x = np.asarray(preprocess(np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), np.uint8)))
    if variant in ("xla", "call"):
        fn = tf.function(lambda v: model(v, training=False), jit_compile=variant == "xla")
        xt = tf.constant(x)
        compile_s, _ = c.timed(lambda: fn(xt).numpy())

        def run():
            fn(xt).numpy()
    else:
        compile_s = None

        def run():
            model.predict(x, batch_size=batch, verbose=0)

    t = c.repeat(run, repeats, warmup=1)
    return {"img_s": batch / c.median(t), "runs_s": t, "first_call_s": compile_s}


def child(side: str, batch: int, repeats: int, variant: str = "predict", env: dict | None = None) -> dict:
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
    p.add_argument("--variant", default="predict", choices=["predict", "call", "xla", "threads"],
                   help="internal: the TensorFlow-side variant")
    p.add_argument("--batch", type=int, default=None, help="images per forward pass (default 8 quick, 16 full)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per side")
    args = p.parse_args(argv)
    c.quiet_tensorflow()
    batch = args.batch or (4 if args.quick else 16)
    repeats = args.repeats or (2 if args.quick else 5)
    if args.side == "torch":
        print(json.dumps(measure_torch(batch, repeats)))
        return 0
    if args.side == "tf":
        print(json.dumps(measure_tf(batch, repeats, args.variant)))
        return 0

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        reason = f"PyTorch peer not installed ({err}); pip install -r benchmarks/requirements-peer.txt"
        print(reason)
        c.emit(args, {k: None for k in KEYS}, notes=[reason])
        return 0
    turns = 1 if args.quick else 2
    tf_runs, torch_runs = [], []
    for _ in range(turns):
        tf_runs.append(child("tf", batch, repeats))
        torch_runs.append(child("torch", batch, repeats))
    tf_img_s = c.median(r["img_s"] for r in tf_runs)
    torch_img_s = c.median(r["img_s"] for r in torch_runs)
    variants = {"predict": tf_img_s}
    tried = []
    if not args.quick:  # XLA compiles for minutes on 2 cores: full run only
        tried += [("xla", "xla", batch, {}), ("call (tf.function, no XLA)", "call", batch, {}), (f"predict batch {2 * batch}", "predict", 2 * batch, {}),
                  ("threads intra=cores inter=1", "threads", batch, {}),
                  ("oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)", "predict", batch, {"TF_ENABLE_ONEDNN_OPTS": "0"})]
    variant_details = {}
    for name, variant, b, env in tried:
        try:
            r = child("tf", b, repeats, variant, env)
            variants[name] = r["img_s"]
            variant_details[name] = r
        except RuntimeError as err:
            variants[name] = None
            variant_details[name] = {"error": str(err)}
    results = {"infer_vs_torch": tf_img_s / torch_img_s, "torch_infer_img_s": torch_img_s, "tf_infer_img_s": tf_img_s}
    details = {"batch": batch, "tf_runs": tf_runs, "torch_runs": torch_runs,
               "tf_variants_img_s": variants,
               "tf_variants_vs_torch": {k: (v / torch_img_s if v else None) for k, v in variants.items()},
               "tf_variant_runs": variant_details}
    c.emit(args, results, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
