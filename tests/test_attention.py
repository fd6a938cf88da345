"""Attention rollout: equal to vit_keras, batched, non-square, class-specific,
and the `plot` command end to end on a tiny run dir."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vit_flowers import attention as at

NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


# ------------------------------------------------------------ helpers
def softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_attention(rng, n=2, layers=3, heads=2, grid=(3, 4), sharp=3.0) -> np.ndarray:
    tokens = grid[0] * grid[1] + 1
    return softmax_rows(sharp * rng.normal(size=(n, layers, heads, tokens, tokens)))


def reference_mask(weights: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """vit_keras' rollout math for one image: weights (layers, heads, T, T) -> grid mask."""
    reshaped = weights.mean(axis=1)
    reshaped = reshaped + np.eye(reshaped.shape[1])
    reshaped = reshaped / reshaped.sum(axis=(1, 2))[:, np.newaxis, np.newaxis]
    v = reshaped[-1]
    for n in range(1, len(reshaped)):
        v = np.matmul(v, reshaped[-1 - n])
    mask = v[0, 1:].reshape(grid)
    return mask / mask.max()


def vit_keras_masks(backbone, batch: np.ndarray) -> list[np.ndarray]:
    """The upsampled masks vit_keras.visualize.attention_map multiplies each image by
    (its steps replicated; the sub-model built once for the batch)."""
    import keras
    from vit_keras import layers, vit

    h, w = backbone.input_shape[1], backbone.input_shape[2]
    outputs = [l.output[1] for l in backbone.layers if isinstance(l, layers.TransformerBlock)]
    sub = keras.models.Model(inputs=backbone.inputs, outputs=outputs)
    masks = []
    for image in batch:
        x = vit.preprocess_inputs(cv2.resize(image, (h, w)))[np.newaxis, :]
        weights = np.array(sub.predict(x, verbose=0))
        side = int(np.sqrt(weights.shape[3] - 1))
        grid = reference_mask(weights[:, 0], (side, side))
        masks.append(cv2.resize(grid, (image.shape[1], image.shape[0])))
    return masks


def images(seed: int, n: int, size=(32, 32)) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, *size, 3)) * 255).astype("uint8")


# ------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def classifier():
    import keras

    from vit_flowers.model import build_classifier, model_config

    keras.utils.set_random_seed(7)
    return build_classifier(model_config("tiny", NAMES, 32, num_layers=3), load_pretrained=False)


@pytest.fixture(scope="module")
def wide_classifier():
    import keras

    from vit_flowers.model import build_classifier, model_config

    keras.utils.set_random_seed(8)
    return build_classifier(model_config("tiny", NAMES, [32, 48], num_layers=2), load_pretrained=False)


@pytest.fixture(scope="session")
def runs(tiny_run, synthetic_data, tmp_path_factory):
    """The shared tiny run (conftest's, two epochs on the synthetic flowers), and an untrained twin."""
    import keras

    from vit_flowers.model import build_classifier, load_run, save_run

    _, config = load_run(tiny_run)
    keras.utils.set_random_seed(3)
    untrained = tmp_path_factory.mktemp("attn") / "untrained" / "run"
    save_run(build_classifier(config.model, load_pretrained=False), config, untrained)
    return {"trained": tiny_run, "untrained": untrained, "test_list": synthetic_data / "testing_files.csv",
            "images": synthetic_data / "images"}


# ------------------------------------------------------------ pure rollout
def test_uniform_attention_gives_uniform_map():
    tokens = 13
    uniform = np.full((1, 3, 2, tokens, tokens), 1.0 / tokens)
    mask = at.rollout(uniform, (3, 4))
    np.testing.assert_allclose(mask, np.ones((1, 3, 4)), atol=1e-12)


def test_identity_attention_gives_a_flat_zero_map():
    # Every token attends only to itself: no patch reaches the class token,
    # so the map is flat (all zeros), with no division by zero.
    identity = np.broadcast_to(np.eye(13), (2, 3, 2, 13, 13))
    mask = at.rollout(identity, (3, 4))
    assert np.all(np.isfinite(mask)) and np.all(mask == 0.0)
    maps = at.render_maps(mask, images(0, 2, (30, 40)))
    assert maps.masked.max() == 0


def test_rollout_matches_vit_keras_math_on_synthetic_attention():
    rng = np.random.default_rng(0)
    attention = random_attention(rng, n=3, grid=(3, 3))
    mask = at.rollout(attention, (3, 3))
    for i in range(3):
        np.testing.assert_allclose(mask[i], reference_mask(attention[i], (3, 3)), atol=1e-12)


def test_discard_zero_equals_no_discard():
    rng = np.random.default_rng(1)
    attention = random_attention(rng)
    for fusion in at.HEAD_FUSIONS:
        for norm in at.NORMALIZATIONS:
            np.testing.assert_array_equal(
                at.rollout(attention, (3, 4), fusion, discard_ratio=0.0, normalize=norm),
                at.rollout(attention, (3, 4), fusion, normalize=norm))


def test_discard_applies_to_every_image_of_a_batch():
    rng = np.random.default_rng(2)
    attention = random_attention(rng, n=2)
    batch = at.rollout(attention, (3, 4), discard_ratio=0.6)
    for i in range(2):
        alone = at.rollout(attention[i:i + 1], (3, 4), discard_ratio=0.6)
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-12)
        # and it changed every image, not only the first
        assert np.abs(batch[i] - at.rollout(attention[i:i + 1], (3, 4))[0]).max() > 1e-3


def test_discard_lowest_zeroes_patch_entries_only():
    rng = np.random.default_rng(3)
    fused = at.fuse_heads(random_attention(rng, n=2), "mean", axis=2)  # (2, 3, 13, 13)
    out = at.discard_lowest(fused, 0.5)
    expected = int(0.5 * 12 * 12)
    zeros = (out[..., 1:, 1:] == 0).reshape(2 * 3, -1).sum(axis=1)
    assert np.all(zeros == expected)
    np.testing.assert_array_equal(out[..., 0, :], fused[..., 0, :])  # class token row kept
    np.testing.assert_array_equal(out[..., :, 0], fused[..., :, 0])  # class token column kept
    for before, after in zip(fused.reshape(-1, 13, 13), out.reshape(-1, 13, 13)):
        patches_before, patches_after = before[1:, 1:], after[1:, 1:]
        assert patches_before[patches_after == 0].max() <= patches_after[patches_after > 0].min()


@pytest.mark.parametrize("tokens, ratio", [(5, 0.07), (5, 0.5), (5, 0.9), (50, 0.3), (50, 0.9)])
def test_discard_lowest_zeroes_exactly_the_lowest_entries(tokens, ratio):
    """Against a full sort, on random matrices of 4 x 4 and 49 x 49 patch
    entries: the zeroed entries are the int(entries * ratio) smallest, no more,
    no fewer (0.07 of 16 zeroes exactly one), and the others are kept as they were."""
    rng = np.random.default_rng(11)
    fused = rng.random((200 if tokens == 5 else 300, tokens, tokens))  # a wrong partition point shows rarely
    out = at.discard_lowest(fused, ratio)
    entries = (tokens - 1) ** 2
    count = int(entries * ratio)
    for before, after in zip(fused, out):
        lowest = np.sort(np.argsort(before[1:, 1:].ravel())[:count])
        np.testing.assert_array_equal(np.flatnonzero(after[1:, 1:].ravel() == 0), lowest)
        kept = np.ones(entries, bool)
        kept[lowest] = False
        np.testing.assert_array_equal(after[1:, 1:].ravel()[kept], before[1:, 1:].ravel()[kept])


def test_discard_lowest_bounds_types_and_input_left_alone():
    fused = np.random.default_rng(12).random((2, 5, 5))
    kept = fused.copy()
    np.testing.assert_array_equal(at.discard_lowest(fused, 0.0), fused)  # 0 is allowed: nothing discarded
    out = at.discard_lowest(fused, 0.5)
    np.testing.assert_array_equal(fused, kept)  # a float64 input is copied, not zeroed in place
    assert at.discard_lowest(fused.astype(np.float32), 0.5).dtype == np.float64
    for ratio in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"discard ratio must be in \[0, 1\), got {ratio}"):
            at.discard_lowest(fused, ratio)
    assert (out[..., 1:, 1:] == 0).sum() == 2 * 8


def test_fuse_heads_default_and_unknown_mode():
    attention = np.random.default_rng(13).random((2, 3, 4, 5, 5))
    np.testing.assert_array_equal(at.fuse_heads(attention), attention.mean(axis=-3))  # mean over heads by default
    with pytest.raises(ValueError, match=r"unknown head fusion 'median'; choose one of \('mean', 'max', 'min'\)"):
        at.fuse_heads(attention, "median")


def test_attention_forced_onto_one_patch_peaks_there():
    grid = (4, 6)
    tokens = grid[0] * grid[1] + 1
    target = (2, 5)
    k = 1 + target[0] * grid[1] + target[1]
    attention = np.full((1, 3, 2, tokens, tokens), 0.1 / (tokens - 1))
    attention[..., k] = 0.9  # every query attends to patch k
    mask = at.rollout(attention, grid)
    assert np.unravel_index(mask[0].argmax(), grid) == target
    assert mask[0].max() == 1.0 and np.sort(mask[0].ravel())[-2] < 0.5
    maps = at.render_maps(mask, images(0, 1, (32, 48)))
    assert maps.mask.shape == (1, 32, 48)
    row, col = np.unravel_index(maps.mask[0].argmax(), (32, 48))
    assert 16 <= row < 24 and 40 <= col < 48  # inside the patch's pixels: (height, width) not swapped


def test_row_normalisation_is_the_papers():
    rng = np.random.default_rng(4)
    attention = random_attention(rng, n=1)
    fused = at.fuse_heads(attention, "max", axis=2)[0]
    a = fused + np.eye(fused.shape[-1])
    a = a / a.sum(axis=-1, keepdims=True)
    joint = a[0]
    for layer in a[1:]:
        joint = layer @ joint
    expected = joint[0, 1:] / joint[0, 1:].max()
    got = at.rollout(attention, (3, 4), "max", normalize="row")[0].ravel()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_layer_range_selects_layers():
    rng = np.random.default_rng(5)
    attention = random_attention(rng, n=1, layers=4)
    np.testing.assert_allclose(at.rollout(attention, (3, 4), start=1, stop=3),
                               at.rollout(attention[:, 1:3], (3, 4)), atol=1e-12)
    with pytest.raises(ValueError):
        at.rollout(attention, (3, 4), start=3, stop=1)


def test_distance_matrix_and_mean_distance():
    d = at.distance_matrix((2, 3), 8)
    assert d[0, 5] == pytest.approx(8 * np.sqrt(5)) and d[0, 0] == 0 and d[1, 3] == pytest.approx(8 * np.sqrt(2))
    attention = np.zeros((1, 7, 7))
    attention[0, 1:, 6] = 1.0  # every patch attends to the last patch (1, 2)
    expected = np.mean([d[q, 5] for q in range(6)])
    assert at.mean_attention_distance(attention, (2, 3), 8)[0] == pytest.approx(expected)


def test_distance_matrix_and_mean_distance_against_loops():
    """Every pair of a 3 x 4 grid against a loop (a pair sharing a row or column
    hides a + for a -), and the mean distance of random attention, whose rows
    and columns differ (a sum over queries instead of keys shows)."""
    grid, patch = (3, 4), 16
    d = at.distance_matrix(grid, patch)
    for q in range(12):
        for k in range(12):
            (qr, qc), (kr, kc) = divmod(q, 4), divmod(k, 4)
            assert d[q, k] == pytest.approx(patch * np.hypot(qr - kr, qc - kc))
    attention = random_attention(np.random.default_rng(14), n=2, layers=1, heads=3, grid=grid)[:, 0]
    got = at.mean_attention_distance(attention, grid, patch)
    assert got.shape == (2, 3)
    for n in range(2):
        for h in range(3):
            a = attention[n, h, 1:, 1:]
            expected = np.mean([sum(a[q, k] * d[q, k] for k in range(12)) for q in range(12)])
            assert got[n, h] == pytest.approx(expected, rel=1e-12)


def test_rollout_defaults_and_messages():
    fused = at.fuse_heads(random_attention(np.random.default_rng(15), n=2, layers=3), axis=2)
    np.testing.assert_array_equal(at.rollout_fused(fused),
                                  at.rollout_fused(fused, 0.0, 0, None, "matrix"))  # no discard, every layer
    with pytest.raises(ValueError, match=r"unknown normalisation 'col'; choose one of \('matrix', 'row'\)"):
        at.rollout_fused(fused, normalize="col")
    with pytest.raises(ValueError, match=r"^layer range 3:None selects no layer of 3$"):
        at.rollout_fused(fused, start=3)


def test_matrix_normalisation_is_vit_keras_where_it_differs_from_rows():
    """With a discard, rows no longer sum alike, so dividing by the matrix's sum
    (vit_keras, the default) and by each row's sum (the paper) give different
    maps; each is checked against its own loop."""
    attention = random_attention(np.random.default_rng(16), n=1, layers=3, grid=(3, 4))
    fused = at.discard_lowest(at.fuse_heads(attention, axis=2), 0.5)[0] + np.eye(13)
    by_matrix = fused / fused.sum(axis=(1, 2), keepdims=True)
    by_row = fused / fused.sum(axis=2, keepdims=True)
    expected = {}
    for name, a in (("matrix", by_matrix), ("row", by_row)):
        joint = a[-1]
        for layer in a[-2::-1]:
            joint = joint @ layer
        expected[name] = joint[0, 1:] / joint[0, 1:].max()
    assert np.abs(expected["matrix"] - expected["row"]).max() > 1e-3
    for name in ("matrix", "row"):
        got = at.rollout(attention, (3, 4), discard_ratio=0.5, normalize=name)[0].ravel()
        np.testing.assert_allclose(got, expected[name], atol=1e-12)
    np.testing.assert_array_equal(at.rollout(attention, (3, 4), discard_ratio=0.5),
                                  at.rollout(attention, (3, 4), discard_ratio=0.5, normalize="matrix"))


def test_overlay_and_masked_pixels_exactly():
    """Every mask level 0..255 over a grey image: half the image plus half of
    OpenCV's jet colour (read back as RGB), truncated; the post's picture is
    mask * image truncated; both uint8."""
    levels = np.arange(256) / 255.0
    masks = np.tile(levels, (2, 1)).reshape(2, 16, 16)
    image = np.full((2, 16, 16, 3), 201, np.uint8)
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    overlay = at.overlay_images(masks, image)
    assert overlay.dtype == np.uint8
    expected = (0.5 * 201 + 0.5 * jet.astype(np.float64)).astype(np.uint8)  # (256, 3)
    np.testing.assert_array_equal(overlay[0].reshape(256, 3), expected)
    assert tuple(overlay[0, -1, -1]) == (164, 100, 100)  # the top of jet is red: (128, 0, 0) over 201
    assert tuple(overlay[0, 0, 0]) == (100, 100, 164)  # the bottom blue: (0, 0, 128)
    black = at.overlay_images(masks[:1], np.zeros((1, 16, 16, 3), np.uint8))
    np.testing.assert_array_equal(black[0].reshape(256, 3), (0.5 * jet).astype(np.uint8))  # zeros stay zeros
    masked = at.masked_images(masks, image)
    assert masked.dtype == np.uint8
    np.testing.assert_array_equal(masked[0].reshape(256, 3)[:, 0], (levels * 201).astype(np.uint8))


# ------------------------------------------------------------ against vit_keras
def test_the_posts_vit_keras_map_prints_no_progress_bar_and_keeps_keras_logging_as_it_was(classifier, capsys):
    """vit_keras' attention_map calls model.predict with its default progress
    bar: plot's output got a stray "1/1 step" line per run."""
    import keras

    capsys.readouterr()
    masked = at.vit_keras_attention_map(classifier, images(1, 3)[0])
    assert masked.dtype == np.uint8 and masked.shape == images(1, 3)[0].shape
    out = capsys.readouterr()
    assert "step" not in out.out + out.err
    assert keras.utils.is_interactive_logging_enabled()


def test_equal_to_vit_keras_attention_map(classifier):
    from vit_keras import visualize

    backbone = classifier.layers[0]
    batch = images(10, 3)
    maps = at.explainer_for(classifier).rollout(batch)
    worst_mask, worst_pixel = 0.0, 0
    for i, (image, reference) in enumerate(zip(batch, vit_keras_masks(backbone, batch))):
        vk = visualize.attention_map(model=backbone, image=image)
        np.testing.assert_array_equal(vk, (reference[..., np.newaxis] * image).astype("uint8"))
        worst_mask = max(worst_mask, float(np.abs(maps.mask[i] - reference).max()))
        diff = np.abs(maps.masked[i].astype(int) - vk.astype(int))
        worst_pixel = max(worst_pixel, int(diff.max()))
        assert (diff == 0).mean() > 0.99  # uint8 truncation may flip a rare pixel by one
    print(f"max |mask - vit_keras mask| = {worst_mask:.2e}, max pixel diff = {worst_pixel}")
    assert worst_mask < 1e-4
    assert worst_pixel <= 1


def test_equal_to_vit_keras_on_other_image_sizes(classifier):
    """Images of any size are resized to the model and the mask back to the image."""
    from vit_keras import visualize

    backbone = classifier.layers[0]
    image = images(11, 1, (30, 50))[0]
    got = at.attention_map(classifier, image)
    assert got.shape == image.shape
    reference = vit_keras_masks(backbone, image[np.newaxis])[0]
    mask = at.explainer_for(backbone).rollout(image).mask[0]
    assert np.abs(mask - reference).max() < 1e-4
    assert np.abs(got.astype(int) - visualize.attention_map(model=backbone, image=image).astype(int)).max() <= 1


def test_explainer_is_cached_and_traced_once(classifier):
    first = at.explainer_for(classifier)
    assert at.explainer_for(classifier) is first
    first.summarize(images(1, 3), batch_size=2)
    first.summarize(images(2, 5), batch_size=4)
    assert first._summary_fn("mean").experimental_get_tracing_count() == 1


def test_batched_equals_one_by_one_with_discard(classifier):
    explainer = at.explainer_for(classifier)
    batch = images(12, 2)
    together = explainer.rollout(batch, discard_ratio=0.5, head_fusion="max")
    for i in range(2):
        alone = explainer.rollout(batch[i:i + 1], discard_ratio=0.5, head_fusion="max")
        np.testing.assert_allclose(together.grid[i], alone.grid[0], atol=1e-5)


def test_summary_matches_full_attention(classifier):
    explainer = at.explainer_for(classifier)
    batch = images(13, 2)
    full = explainer.attention_weights(batch)
    assert full.shape == (2, 3, 4, 17, 17)
    summary = explainer.summarize(batch, "min")
    np.testing.assert_allclose(summary.fused, full.min(axis=2), atol=1e-6)
    np.testing.assert_allclose(explainer.per_head(summary, 1), full[:, 1, :, 0, 1:].reshape(2, 4, 4, 4), atol=1e-6)
    np.testing.assert_allclose(summary.distance, at.mean_attention_distance(full, (4, 4), 8), rtol=1e-4)
    probs = classifier.predict(explainer.prepare(batch), verbose=0)
    np.testing.assert_allclose(summary.probs, probs, atol=1e-5)


def test_explainer_rollout_passes_every_option_on(classifier, capsys):
    """The explainer's rollout equals the NumPy rollout of its full attention with
    the same options (layer range, normalisation, fusion, discard); it is silent
    unless asked for progress."""
    explainer = at.explainer_for(classifier)
    batch = images(16, 3)
    full = explainer.attention_weights(batch, batch_size=2)
    for options in ({"start": 1}, {"stop": 2}, {"normalize": "row", "head_fusion": "max"},
                    {"discard_ratio": 0.3, "head_fusion": "min", "start": 1, "stop": 3}):
        maps = explainer.rollout(batch, batch_size=2, **options)
        np.testing.assert_allclose(maps.grid, at.rollout(full, (4, 4), **options), atol=1e-5, err_msg=str(options))
    assert capsys.readouterr().out == ""
    explainer.rollout(batch, batch_size=2, progress=True)
    assert "image" in capsys.readouterr().out  # Keras' progress bar
    one = at.attention_map(classifier, batch[0], head_fusion="max", discard_ratio=0.5)
    np.testing.assert_array_equal(one, explainer.rollout(batch[:1], head_fusion="max", discard_ratio=0.5).masked[0])
    assert at.attention_map(classifier, batch).shape == (3, 32, 32, 3)  # a batch in, a batch out


def test_class_rollout_defaults_and_silence(classifier, capsys):
    explainer = at.explainer_for(classifier)
    batch = images(17, 3)
    np.testing.assert_array_equal(explainer.class_rollout(batch, 2, batch_size=2).grid,
                                  explainer.class_rollout(batch, 2, batch_size=2, start=0).grid)
    assert np.abs(explainer.class_rollout(batch, 2, batch_size=2, start=1).grid
                  - explainer.class_rollout(batch, 2, batch_size=2).grid).max() > 1e-4
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="is a bare backbone: class-specific maps need the classifier"):
        at.explainer_for(classifier.layers[0]).class_rollout(batch, 0)


def test_class_specific_maps_differ_between_classes(classifier):
    explainer = at.explainer_for(classifier)
    image = images(14, 1)
    zero = explainer.class_rollout(image, 0)
    one = explainer.class_rollout(image, 1)
    assert zero.class_index.tolist() == [0] and one.class_index.tolist() == [1]
    assert np.abs(zero.grid - one.grid).max() > 1e-2
    predicted = explainer.class_rollout(images(15, 3))
    np.testing.assert_array_equal(predicted.class_index, predicted.probs.argmax(axis=1))
    with pytest.raises(ValueError):
        explainer.class_rollout(image, 5)
    with pytest.raises(ValueError):
        at.explainer_for(classifier.layers[0]).class_rollout(image, 0)


def test_non_square_grid(wide_classifier):
    from vit_keras import visualize

    with pytest.raises(ValueError):  # vit_keras assumes a square grid
        visualize.attention_map(model=wide_classifier.layers[0], image=images(18, 1, (32, 48))[0])
    explainer = at.explainer_for(wide_classifier)
    assert explainer.grid == (4, 6) and explainer.input_size == (32, 48)
    batch = images(16, 2, (32, 48))
    maps = explainer.rollout(batch, display=images(17, 2, (64, 96)))
    assert maps.grid.shape == (2, 4, 6)
    assert maps.mask.shape == (2, 64, 96) and maps.overlay.shape == (2, 64, 96, 3)
    np.testing.assert_allclose(maps.grid, at.rollout(explainer.attention_weights(batch), (4, 6)), atol=1e-6)
    own = explainer.rollout(batch)
    assert own.mask.shape == (2, 32, 48) and own.masked.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(own.mask[0], cv2.resize(own.grid[0], (48, 32)), atol=1e-12)
    assert explainer.per_head(explainer.summarize(batch)).shape == (2, 4, 4, 6)


def test_explainer_reads_the_model(classifier, wide_classifier):
    """What the explainer reads off a classifier and off a bare backbone (built
    here, not taken from the cache, so that this test is one that builds them)."""
    explainer = at.AttentionExplainer(classifier)
    assert explainer.name == classifier.name and explainer._graph.name == f"{classifier.name}_attention"
    assert (explainer.num_layers, explainer.num_heads, explainer.grid, explainer.patch_size) == (3, 4, (4, 4), 8)
    assert explainer.has_head is True and explainer.num_classes == 5
    wide = at.AttentionExplainer(wide_classifier)
    assert wide.patch_size == 8 and isinstance(wide.patch_size, int)  # 32 x 48 pixels over 4 x 6 tokens
    bare = at.AttentionExplainer(classifier.layers[0])
    assert bare.name == classifier.layers[0].name and bare.has_head is False and bare.num_classes == 0
    assert bare.summarize(images(19, 2)).probs is None
    prepared = explainer.prepare(images(19, 2, (40, 24)))
    assert prepared.shape == (2, 32, 32, 3) and prepared.dtype == np.float32
    with pytest.raises(ValueError, match=rf"^'{classifier.layers[0].name}' is a bare backbone"):
        bare.class_rollout(images(19, 1), 0)


def test_wide_grid_distances_use_both_sides(wide_classifier):
    explainer = at.explainer_for(wide_classifier)
    batch = images(20, 2, (32, 48))
    summary = explainer.summarize(batch)
    expected = at.mean_attention_distance(explainer.attention_weights(batch), (4, 6), 8)
    np.testing.assert_allclose(summary.distance, expected, rtol=1e-4)


def test_split_model_refuses_what_is_not_a_vit():
    import keras

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="plain_dense")
    with pytest.raises(ValueError, match=r"^'plain_dense' has no vit_keras TransformerBlock layers$"):
        at.split_model(dense)
    wrapped = keras.Sequential([keras.Input((4,)), keras.Sequential([keras.layers.Dense(3)])], name="wrapped")
    with pytest.raises(ValueError, match=r"^'wrapped' has no vit_keras TransformerBlock layers$"):
        at.split_model(wrapped)  # a model as its first layer, but not a vit_keras one


@pytest.fixture(scope="module")
def trained_like_classifier():
    """The tiny classifier with the head's batch norms and biases set as if
    trained (an untrained batch norm is nearly the identity, and a zero bias
    hides a sign): the head is then only right if every layer of it runs."""
    import keras

    from vit_flowers.model import build_classifier, model_config

    keras.utils.set_random_seed(9)
    model = build_classifier(model_config("tiny", NAMES, 32, num_layers=2), load_pretrained=False)
    rng = np.random.default_rng(9)
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 2, gamma), rng.normal(size=beta), rng.normal(size=mean),
                               rng.uniform(0.5, 2, var)])
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(size=bias.shape)])
    return model


def test_probabilities_and_class_scores_of_a_trained_head(trained_like_classifier):
    """The explainer's probabilities are the model's; the class score it
    differentiates is the logit before the softmax, bias included."""
    model = trained_like_classifier
    explainer = at.explainer_for(model)
    x = explainer.prepare(images(21, 3))
    np.testing.assert_allclose(explainer.summarize(images(21, 3)).probs, model.predict(x, verbose=0), atol=1e-5)
    features = model.layers[0](x, training=False)
    for layer in model.layers[1:-1]:
        features = layer(features, training=False)
    kernel, bias = model.layers[-1].get_weights()
    logits = np.asarray(features) @ kernel + bias
    probs, scores = explainer._scores(model.layers[0](x, training=False))
    np.testing.assert_allclose(np.asarray(scores), logits, atol=1e-4)
    np.testing.assert_allclose(np.asarray(probs), model.predict(x, verbose=0), atol=1e-5)


def test_a_head_without_softmax_scores_its_own_output(classifier):
    """A head ending in another activation (sigmoid here) is scored on its output."""
    import keras

    backbone = classifier.layers[0]
    model = keras.Sequential([backbone, keras.layers.Dense(3, activation="sigmoid")], name="sigmoid_head")
    model.build((None, 32, 32, 3))
    explainer = at.AttentionExplainer(model)
    batch = images(22, 2)
    expected = model.predict(explainer.prepare(batch), verbose=0)
    np.testing.assert_allclose(explainer.summarize(batch).probs, expected, atol=1e-5)
    probs, scores = explainer._scores(backbone(explainer.prepare(batch), training=False))
    np.testing.assert_allclose(np.asarray(scores), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs), expected, atol=1e-5)
    assert explainer.class_rollout(batch, 1).class_index.tolist() == [1, 1]


def test_explainer_defaults_messages_and_progress(classifier, capsys):
    """Defaults: one batch of 32, mean fusion, no discard, every layer, matrix
    normalisation, silent; a progress bar only when asked and there is more
    than one batch, counting every image."""
    explainer = at.explainer_for(classifier)
    batch = images(23, 33)
    summary = explainer.summarize(batch)
    assert summary.head_fusion == "mean" and explainer.summarize(batch[:2], "max").head_fusion == "max"
    maps = explainer.maps(summary, batch)
    np.testing.assert_array_equal(maps.grid, explainer.maps(summary, batch, 0.0, 0, None, "matrix").grid)
    np.testing.assert_array_equal(maps.probs, summary.probs)
    sliced = explainer.maps(summary, batch, start=1, stop=2, normalize="row")
    np.testing.assert_allclose(sliced.grid, at.grid_masks(at.rollout_fused(summary.fused[:, 1:2], normalize="row"),
                                                          (4, 4)), atol=1e-12)
    np.testing.assert_array_equal(explainer.rollout(batch).grid, maps.grid)
    explainer.class_rollout(batch)
    explainer.attention_weights(batch)
    assert capsys.readouterr().out == ""
    explainer.summarize(batch[:32], progress=True)  # one batch: no bar
    assert capsys.readouterr().out == ""
    explainer.summarize(batch, progress=True, batch_size=8)
    out = capsys.readouterr().out
    assert "33/33" in out and "/image" in out
    with pytest.raises(ValueError, match=r"^no images to explain$"):
        explainer.summarize(batch[:0])
    with pytest.raises(ValueError, match=r"^unknown head fusion 'median'; choose one of \('mean', 'max', 'min'\)$"):
        explainer.summarize(batch[:1], "median")
    with pytest.raises(ValueError, match=r"^class index 5 out of range for 5 classes$"):
        explainer.class_rollout(batch[:1], 5)
    with pytest.raises(ValueError, match=r"^expected RGB images \(N, H, W, 3\) or \(H, W, 3\), got shape \(2, 8, 8\)$"):
        explainer.prepare(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(8, 8, 4\)$"):
        explainer.prepare(np.zeros((8, 8, 4), np.uint8))  # 3 dimensions, but not RGB


def test_class_rollout_per_image_classes_across_batches(classifier, capsys):
    """One class per image over several batches equals each image alone; the
    options reach the rollout; maps are drawn on the display images; progress
    is shown when asked."""
    explainer = at.explainer_for(classifier)
    batch = images(24, 5)
    classes = [4, 0, 3, 1, 2]
    display = images(25, 5, (48, 40))
    options = {"discard_ratio": 0.5, "start": 0, "stop": 2, "normalize": "row"}
    together = explainer.class_rollout(batch, classes, batch_size=2, display=display, **options)
    assert together.class_index.tolist() == classes
    assert together.mask.shape == (5, 48, 40) and together.overlay.shape == (5, 48, 40, 3)
    for i in range(5):
        alone = explainer.class_rollout(batch[i:i + 1], classes[i], **options)
        np.testing.assert_allclose(together.grid[i], alone.grid[0], atol=1e-5)
    for option, other in (("discard_ratio", 0.0), ("start", 1), ("stop", None), ("normalize", "matrix")):
        changed = explainer.class_rollout(batch, classes, batch_size=2, **{**options, option: other})
        assert np.abs(together.grid - changed.grid).max() > 1e-3, option  # each option reaches the rollout
    assert capsys.readouterr().out == ""
    explainer.class_rollout(batch, classes, batch_size=2, progress=True)
    assert "5/5" in capsys.readouterr().out


# ------------------------------------------------------------ the plot command
def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _predicted(run_dir: Path, test_list: Path) -> pd.DataFrame:
    from vit_flowers.model import load_run
    from vit_flowers.predict import collect_list, predict_inputs

    model, config = load_run(run_dir)
    return predict_inputs(model, config, collect_list(test_list, NAMES), progress=False).table


def test_plot_command_two_runs(runs, tmp_path):
    from vit_flowers.cli import main

    out = tmp_path / "plot"
    code = main(["plot", "--run", str(runs["untrained"]), "--run", str(runs["trained"]),
                 "--list", str(runs["test_list"]), "--out", str(out), "--limit", "3", "--class", "predicted",
                 "--discard-ratio", "0.2"])
    assert code == 0
    selection = pd.read_csv(out / "attention_selection.csv", keep_default_na=False)
    assert len(selection) == 3
    for name in ["attention_grid.png", "comparison_grid.png", "per_head.png", "attention_distance.png",
                 "vit_keras_attention.png", *selection["figure"]]:
        pixels = _png(out / name)
        assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300, name
        assert pixels.std() > 10, f"{name} looks blank"
    per_image = _png(out / selection["figure"][0])
    assert per_image.shape[1] > 3.0 * per_image.shape[0]  # four panels with --class
    assert not (out / "skipped_files.csv").exists()


def test_plot_only_wrong_and_correct(runs, tmp_path):
    from vit_flowers.comparison import plot_comparison, select_rows
    from vit_flowers.predict import collect_list

    table = _predicted(runs["untrained"], runs["test_list"])
    wrong = table[table["true"] != table["pred"]]
    right = table[table["true"] == table["pred"]]
    assert len(wrong) > 0 and len(right) > 0
    for only, expected in (("wrong", wrong), ("correct", right)):
        out = tmp_path / only
        plot_comparison([runs["untrained"]], out, inputs=collect_list(runs["test_list"], NAMES), limit=4,
                        only=only, progress=False)
        selection = pd.read_csv(out / "attention_selection.csv", keep_default_na=False)
        assert len(selection) == min(4, len(expected))
        assert set(selection["file"]) <= set(expected["file"])
        # with room for every image: exactly the wrong (correct) ones
        assert set(select_rows(table, only, len(table))["file"]) == set(expected["file"])
        if only == "wrong":
            assert (selection["true"] != selection["pred"]).all()
            assert not (out / "comparison_grid.png").exists()
        else:
            assert (selection["true"] == selection["pred"]).all()


def test_plot_skips_bad_images(runs, tmp_path):
    from vit_flowers.cli import main

    folder = tmp_path / "inputs"
    (folder / "roses").mkdir(parents=True)
    good = sorted((runs["images"] / "roses").iterdir())[:2]
    for f in good:
        (folder / "roses" / f.name).write_bytes(f.read_bytes())
    (folder / "roses" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "plot"
    assert main(["plot", "--run", str(runs["trained"]), "--images", str(folder), "--out", str(out)]) == 0
    skipped = pd.read_csv(out / "skipped_files.csv")
    assert skipped["file"].tolist() == [str(folder / "roses" / "broken.jpg")]
    assert skipped["reason"].str.len().min() > 0
    assert len(pd.read_csv(out / "attention_selection.csv")) == 2
    assert len(list(out.glob("attention_0*.png"))) == 2


def test_plot_nothing_to_show_still_finishes(runs, tmp_path):
    from vit_flowers.cli import main

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for f in sorted((runs["images"] / "daisy").iterdir())[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "plot"
    # no true labels: no prediction can be called correct
    assert main(["plot", "--run", str(runs["trained"]), "--images", str(folder), "--out", str(out),
                 "--only", "correct"]) == 0
    assert pd.read_csv(out / "attention_selection.csv").empty
    assert not list(out.glob("*.png"))


def test_plot_bad_options_exit_2(runs, tmp_path):
    from vit_flowers.cli import main

    base = ["plot", "--list", str(runs["test_list"]), "--out", str(tmp_path / "x")]
    assert main(base + ["--run", str(runs["trained"]), "--class", "orchid"]) == 2
    assert main(base + ["--run", str(runs["trained"])] * 3) == 2
    assert main(base + ["--run", str(runs["trained"]), "--head-layer", "7"]) == 2
    assert main(base + ["--run", str(tmp_path / "nowhere")]) == 2
