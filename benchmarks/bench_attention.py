"""Figure 6: the batched attention rollout against a bare forward pass and against vit_keras' attention_map.

- attention_vs_forward: seconds of the project's `AttentionExplainer.rollout`
  on a batch (32 images, quick: 4; masks, upsampling, the post's picture and
  the overlay included) over seconds of a bare forward pass of the same
  batch through the same vit_keras graph (`predict.forward` with vit_keras'
  own attention, no XLA: the pass that produces the attention weights the
  rollout needs, without returning them). 1.0 would be a rollout for free.
  details.vs_package_forward is the same rollout over the package's default
  prediction graph (fused attention), which cannot return the weights.
- attention_batched_vs_vitkeras: seconds of `vit_keras.visualize.attention_map`
  called once per image (it builds a Keras model and predicts one image each
  call) over seconds of the project's `AttentionExplainer.rollout` on the same
  images in one batch (sub-model cached, built on a warm-up call), ViT-B/16
  (weights none) at 224, the same images.
- attention_max_abs_diff: the largest difference between the project's masks
  and vit_keras' masks, the latter computed by vit_keras' own math (its
  sub-model on one image at a time, mean over heads, + identity, divide by the
  matrix sum, multiply the layers, class token row, divided by its max).
  Also the largest pixel difference between the masked uint8 images.
"""

from __future__ import annotations

import common as c

KEYS = ["attention_vs_forward", "attention_batched_vs_vitkeras", "attention_max_abs_diff"]


def vit_keras_masks(backbone, batch):
    """vit_keras.visualize.attention_map's mask for each image (grid, before upsampling)."""
    import cv2
    import keras
    import numpy as np
    from vit_keras import layers, vit

    h, w = backbone.input_shape[1], backbone.input_shape[2]
    outputs = [l.output[1] for l in backbone.layers if isinstance(l, layers.TransformerBlock)]
    sub = keras.models.Model(inputs=backbone.inputs, outputs=outputs)
    masks = []
    for image in batch:
        x = vit.preprocess_inputs(cv2.resize(image, (h, w)))[np.newaxis, :]
        weights = np.array(sub.predict(x, verbose=0))[:, 0]  # layers, heads, T, T
        reshaped = weights.mean(axis=1)
        reshaped = reshaped + np.eye(reshaped.shape[1])
        reshaped = reshaped / reshaped.sum(axis=(1, 2))[:, np.newaxis, np.newaxis]
        v = reshaped[-1]
        for n in range(1, len(reshaped)):
            v = np.matmul(v, reshaped[-1 - n])
        side = int(np.sqrt(weights.shape[-1] - 1))
        mask = v[0, 1:].reshape(side, side)
        masks.append(cv2.resize(mask / mask.max(), (image.shape[1], image.shape[0])))
    return np.stack(masks)


def main(argv=None) -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args(argv)
    c.quiet_tensorflow()
    import numpy as np
    from vit_keras import visualize

    from vit_flowers.attention import explainer_for
    from vit_flowers.images import load_images
    from vit_flowers.model import build_classifier, model_config
    from vit_flowers.predict import forward

    n, repeats = (4, 2) if args.quick else (32, 3)
    model = build_classifier(model_config("b16", c.CLASS_NAMES, 224), load_pretrained=False)
    backbone = model.layers[0]
    photos = c.flower_files()
    if photos:
        images = load_images(c.replicate(photos[::max(1, len(photos) // n)], n), (224, 224), progress=False).images
    else:
        images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    explainer = explainer_for(model)
    first, _ = c.timed(lambda: explainer.rollout(images[:1]))  # builds and traces the graph once

    last: dict = {}  # each side's output of its last timed run, compared below

    def batched():
        last["batched"] = explainer.rollout(images, batch_size=n)

    def one_by_one():
        last["vit_keras"] = [visualize.attention_map(model=backbone, image=im) for im in images]

    x = explainer.prepare(images)  # the rollout's own inputs

    def bare():  # the same graph, attention weights computed but not returned
        return forward(model, x, batch_size=n, fused=False, jit_compile=False)

    def package():  # the package's prediction graph (fused attention)
        return forward(model, x, batch_size=n)

    bare(), package(), batched()  # each side run once at the timed batch size before timing (as warm as each other)
    t = c.interleaved({"vit_keras": one_by_one, "batched": batched, "forward": bare, "package_forward": package},
                      repeats, warmup=0)
    maps = last["batched"]
    vk_images = np.stack(last["vit_keras"])
    reference = vit_keras_masks(backbone, images)
    mask_diff = float(np.abs(maps.mask - reference).max())
    pixel_diff = int(np.abs(maps.masked.astype(int) - vk_images.astype(int)).max())
    med = {k: c.median(v) for k, v in t.items()}
    results = {"attention_vs_forward": med["batched"] / med["forward"],
               "attention_batched_vs_vitkeras": med["vit_keras"] / med["batched"], "attention_max_abs_diff": mask_diff}
    details = {"images": n, "vs_package_forward": med["batched"] / med["package_forward"],
               "per_image_s": {k: v / n for k, v in med.items()}, "median_s": med, "runs_s": t, "first_call_s": first, "max_pixel_diff": pixel_diff,
               "pixels_equal_share": float((maps.masked == vk_images).mean())}
    c.emit(args, results, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
