"""Figure 5: model FLOPs utilisation of ViT-B/16 at 224, inference and training.

MFU = (FLOPs per image x images per second) / (fp32 matmul FLOP/s of this
machine, measured in the same run: TensorFlow, 2048 x 2048 float32 matmul in
a tf.function, median of repeats).

FLOPs per image, counted from the architecture (2 FLOPs per multiply-add;
P patches, T = P + 1 tokens, D hidden, M mlp, L layers, p patch side):
    patch embedding 2*P*(p*p*3)*D
    per layer: QKV 3*2*T*D^2 + out proj 2*T*D^2 + scores 2*T^2*D
               + weighted sum 2*T^2*D + MLP 2*2*T*D*M
    head 2*D*21 + 2*21*classes
    training step = 3 x forward
For B/16 at 224 that is about 35.1 GFLOPs forward (17.6 G multiply-adds).
Cross-checked against tf.profiler's float_ops count of the traced forward.

infer_mfu: the project's inference (`predict.predict_arrays` on preprocessed
arrays, what `vit-flowers predict` runs on each chunk).
train_mfu: `model.fit` steps through train.array_dataset + train.compile_model
on random uint8 images, the first (tracing) step excluded, with op
determinism on as `vit-flowers train` has it by default (then Keras compiles
without XLA); details.train_no_deterministic_xla is the same with
--no-deterministic, where Keras compiles the step with XLA (full run only).
"""

from __future__ import annotations

import time

import common as c

KEYS = ["infer_mfu", "train_mfu", "infer_img_s", "train_img_s", "matmul_gflops", "vit_b16_gflops_per_image"]
GPU_KEYS = ["gpu_infer_mfu", "gpu_train_mfu"]


def train_step_seconds(model_cfg, train_cfg, batch: int, steps: int, deterministic: bool = False) -> list[float]:
    """Seconds of each `fit` step after the first, through the project's training path.

    `deterministic` first makes TensorFlow's ops deterministic, as `vit-flowers
    train` does by default (`train.set_seed`); Keras then compiles the step
    without XLA. Without it (`--no-deterministic`) Keras' `jit_compile="auto"`
    compiles the step with XLA. Op determinism cannot be turned off again in
    a process: measure the other way first."""
    import keras
    import numpy as np
    import tensorflow as tf

    if deterministic:
        keras.utils.set_random_seed(0)  # determinism refuses random ops (dropout, initialisers) without a seed
        tf.config.experimental.enable_op_determinism()

    from vit_flowers.datasets import array_dataset
    from vit_flowers.model import build_classifier
    from vit_flowers.train import compile_model

    h, w = model_cfg.image_size
    rng = np.random.default_rng(0)
    n = batch * 2
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, model_cfg.num_classes, n)
    ds = array_dataset(images, labels, model_cfg.num_classes, batch, training=True, augment=train_cfg.augment,
                       seed=0)
    model = build_classifier(model_cfg, load_pretrained=False)
    compile_model(model, train_cfg, steps)
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Clock()], shuffle=False)
    return list(np.diff(ends))  # step k's time = end k - end k-1: the first step is left out


def profiler_flops(model, size: int) -> float | None:
    """tf.profiler's float_ops of one image's forward pass, or None if it fails."""
    try:
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        from tensorflow.python.profiler import model_analyzer, option_builder

        fn = tf.function(lambda x: model(x, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
        opts = option_builder.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = model_analyzer.profile(graph=frozen.graph, options=opts)
        return float(info.total_float_ops)
    except Exception as err:  # best effort cross-check
        print(f"tf.profiler float_ops failed: {type(err).__name__}: {err}")
        return None


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    from vit_flowers.config import TrainConfig
    from vit_flowers.datasets import preprocess
    from vit_flowers.model import build_classifier, model_config
    from vit_flowers.predict import predict_arrays

    gpu = bool(tf.config.list_physical_devices("GPU"))
    if args.quick:
        infer_batch, infer_repeats, train_batch, train_steps, mm_repeats = 8, 2, 4, 3, 5
    else:
        infer_batch, infer_repeats, train_batch, train_steps, mm_repeats = 32, 5, 16, 8, 15
    cfg = model_config("b16", c.CLASS_NAMES, 224)
    flops = c.vit_forward_flops((224, 224), cfg.patch_size, cfg.hidden_size, cfg.num_layers, cfg.mlp_dim,
                                cfg.num_classes, cfg.head_units)
    model = build_classifier(cfg, load_pretrained=False)
    profiled = None if args.quick else profiler_flops(model, 224)  # minutes on 2 cores: full run only

    mm = c.matmul_gflops(2048, mm_repeats)
    x = np.asarray(preprocess(np.random.default_rng(0).integers(0, 256, (infer_batch, 224, 224, 3), np.uint8)))
    infer = c.repeat(lambda m=model: predict_arrays(m, x, batch_size=infer_batch), infer_repeats, warmup=1)
    infer_img_s = infer_batch / c.median(infer)
    del model
    tcfg = TrainConfig(batch_size=train_batch, learning_rate=1e-4, augment="none")
    # --no-deterministic (XLA): a reported variant, full run only (it doubles the figure's time)
    steps_xla = None if args.quick else train_step_seconds(cfg, tcfg, train_batch, train_steps)
    steps = train_step_seconds(cfg, tcfg, train_batch, train_steps, deterministic=True)  # the default
    train_img_s = train_batch / c.median(steps)
    train_xla_img_s = train_batch / c.median(steps_xla) if steps_xla else None
    mm_after = c.matmul_gflops(2048, mm_repeats)  # the machine is shared: measure it on both sides
    peak = c.median(mm["seconds"] + mm_after["seconds"])
    peak_gflops = 2.0 * 2048 ** 3 / peak / 1e9
    infer_mfu = flops["forward"] * infer_img_s / (peak_gflops * 1e9)
    train_mfu = flops["train"] * train_img_s / (peak_gflops * 1e9)
    train_xla_mfu = flops["train"] * train_xla_img_s / (peak_gflops * 1e9) if train_xla_img_s else None
    results = {
        "infer_mfu": infer_mfu, "train_mfu": train_mfu, "infer_img_s": infer_img_s, "train_img_s": train_img_s,
        "matmul_gflops": peak_gflops, "vit_b16_gflops_per_image": flops["forward"] / 1e9,
        "gpu_infer_mfu": infer_mfu if gpu else None, "gpu_train_mfu": train_mfu if gpu else None,
    }
    details = {"flops": flops, "profiler_float_ops": profiled,
               "profiler_vs_formula": profiled / flops["forward"] if profiled else None,
               "infer_batch": infer_batch, "infer_runs_s": infer, "train_batch": train_batch,
               "train_steps_s": steps, "train_mode": "deterministic ops, no XLA (vit-flowers train's default)",
               "train_no_deterministic_xla": {"img_s": train_xla_img_s, "mfu": train_xla_mfu, "steps_s": steps_xla}, "matmul_s_before": mm["seconds"], "matmul_s_after": mm_after["seconds"],
               "device": "GPU" if gpu else "CPU"}
    notes = [] if gpu else ["no GPU visible to TensorFlow: gpu_* keys not measured (run `make bench` on a GPU machine)"]
    c.emit(args, results, details, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
