"""tf.data pipelines: vit_keras' scaling, augmentation, MixUp, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from awkward import make_awkward_folder
from vit_flowers.config import AUGMENTATIONS
from vit_flowers.datasets import array_dataset, file_dataset, mixup_pair, preprocess


def test_preprocess_equals_vit_keras():
    from vit_keras import vit

    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(preprocess(x)), vit.preprocess_inputs(x.astype(np.float32)), atol=1e-6)


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_augmented_batches_keep_shape_and_range(kind):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    ds = array_dataset(images, np.arange(6) % 3, 3, batch_size=4, training=True, augment=kind, seed=1)
    x, y = next(iter(ds))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 3)
    assert -1.001 <= float(np.min(x)) and float(np.max(x)) <= 1.001
    originals = np.asarray(preprocess(images))
    untouched = [any(np.allclose(img, o) for o in originals) for img in np.asarray(x)]
    assert all(untouched) == (kind == "none")


def test_mixup_mixes_images_and_labels_alike():
    a = (np.full((2, 2, 3), 1.0, np.float32), np.array([1.0, 0.0], np.float32))
    b = (np.full((2, 2, 3), 3.0, np.float32), np.array([0.0, 1.0], np.float32))
    weights = []
    for step in range(20):
        x, y = (np.asarray(v) for v in mixup_pair(a, b, 0.4, step))
        np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(x, 1.0 * y[0] + 3.0 * y[1], rtol=1e-5)  # image mixed as its label
        weights.append(y[0])
    assert 0.2 < np.std(weights)  # Beta(0.4, 0.4) puts weight near 0 and 1
    assert all(0.0 <= w <= 1.0 for w in weights)  # a weight, never an extrapolation
    assert 0.3 < np.mean(weights) < 0.7  # symmetric: neither example favoured


def test_mixup_in_the_pipeline_gives_soft_labels():
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)
    ds = array_dataset(images, np.arange(8) % 4, 4, batch_size=8, training=True, mixup_alpha=0.4, seed=2)
    _, y = next(iter(ds))
    y = np.asarray(y)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert (y.max(axis=1) < 0.999).any()


def test_streaming_skips_and_reports_bad_files(tmp_path):
    folder = make_awkward_folder(tmp_path / "awkward")
    files = sorted(str(p) for p in folder.iterdir())
    skipped: list = []
    ds = file_dataset(files, None, 5, (16, 16), batch_size=4, skipped=skipped)
    total = sum(int(x.shape[0]) for x in ds)
    assert total + len(skipped) == len(files)
    assert {p.split("/")[-1] for p, _ in skipped} >= {"zero_bytes.jpg", "truncated.jpg", "folder.jpg"}


def _halves(n: int, side: int) -> np.ndarray:
    """Images whose left half is red and right half blue."""
    images = np.zeros((n, side, side, 3), np.uint8)
    images[:, :, : side // 2, 0] = 255
    images[:, :, side // 2:, 2] = 255
    return images


def test_resized_crop_cuts_crops_of_the_model_size_from_larger_images():
    images = _halves(8, 48)
    ds = array_dataset(images, np.arange(8) % 2, 2, batch_size=8, training=True, augment="resized-crop",
                       seed=3, output_size=(16, 16))
    x = np.asarray(next(iter(ds))[0])
    assert x.shape == (8, 16, 16, 3)
    red_share = (x[..., 0] > 0).mean(axis=(1, 2))
    # a crop sees more of one half than the other; the whole image would be 0.5 everywhere
    assert np.abs(red_share - 0.5).max() > 0.1
    assert len(np.unique(np.round(red_share, 2))) > 2


def test_resized_crop_is_seeded_and_a_resumed_stream_draws_the_same_crops():
    images = np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3)).astype(np.uint8)

    def batches(start_epoch: int, seed: int = 1):
        ds = array_dataset(images, np.arange(6) % 3, 3, batch_size=4, training=True, augment="resized-crop",
                           seed=seed, output_size=(16, 16), start_epoch=start_epoch)
        return [np.asarray(x) for x, _ in ds.take(2)]

    first, again, resumed = batches(0), batches(0), batches(1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], resumed[0])  # 4 per epoch: epoch 1 starts at batch 2
    assert not np.array_equal(first[0], batches(0, seed=2)[0])


def test_images_larger_than_the_model_need_resized_crop():
    with pytest.raises(ValueError, match="resized-crop"):
        array_dataset(_halves(4, 32), np.arange(4) % 2, 2, batch_size=2, training=True, augment="basic",
                      output_size=(16, 16))


def _png_files(folder, images) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, image in enumerate(images):
        files.append(str(folder / f"{i}.png"))
        Image.fromarray(image).save(files[-1])
    return files


def test_streaming_resized_crop_decodes_large_and_crops_to_the_model(tmp_path):
    files = _png_files(tmp_path, _halves(4, 40))
    ds = file_dataset(files, [0, 1, 0, 1], 2, (40, 40), batch_size=4, skipped=[], training=True,
                      augment="resized-crop", seed=0, output_size=(16, 16))
    x, y = next(iter(ds))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 2)


def _batches(ds) -> list:
    return [tuple(np.asarray(t) for t in b) if isinstance(b, tuple) else np.asarray(b) for b in ds]


def test_evaluation_pass_is_every_image_once_in_order_preprocessed_with_its_label():
    """The default (training=False) is one finite pass: batches in order, the last one short
    (or dropped with drop_remainder), each image preprocessed and paired with its one-hot label."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (7, 8, 8, 3)).astype(np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 1])
    batches = _batches(array_dataset(images, labels, 4, batch_size=3))  # 4 classes, the last never present
    assert [len(x) for x, _ in batches] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), np.asarray(preprocess(images)), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.eye(4, dtype=np.float32)[labels])
    assert [len(x) for x, _ in _batches(array_dataset(images, labels, 4, batch_size=3, drop_remainder=True))] == [3, 3]


def test_evaluation_pass_without_labels_gives_images_alone():
    images = np.random.default_rng(4).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    batches = _batches(array_dataset(images, None, 3, batch_size=2))
    assert all(isinstance(b, np.ndarray) for b in batches) and [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_allclose(np.concatenate(batches), np.asarray(preprocess(images)), atol=1e-6)


def test_training_without_labels_is_refused():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="^training needs labels$"):
        array_dataset(images, None, 3, batch_size=2, training=True)


def test_training_defaults_are_seed_0_from_epoch_0_at_strength_half():
    """Without seed, start_epoch or rand_strength a training stream is the one of seed 0 from
    epoch 0 at strength 0.5 (the values the run's config records as its defaults, so a resumed run
    that passes them explicitly sees the same stream)."""
    images = np.random.default_rng(5).integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)
    labels = np.arange(8) % 4

    def first(**kw):
        ds = array_dataset(images, labels, 4, batch_size=4, training=True, augment="basic", **kw)
        return [np.asarray(x) for x, _ in ds.take(4)]

    default = first()
    for a, b in zip(default, first(seed=0, start_epoch=0)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(default, first(seed=1)))
    assert any(not np.array_equal(a, b) for a, b in zip(default, first(start_epoch=1)))
    strong = first(rand_ops=2)
    for a, b in zip(strong, first(rand_ops=2, rand_strength=0.5)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(strong, first(rand_ops=2, rand_strength=1.0)))


def test_a_streamed_training_pass_is_fixed_by_its_seed_and_an_evaluation_pass_is_the_files_in_order(tmp_path):
    """The --stream path: the shuffle, the crops and the RandAugment draws all follow the run's seed
    (the same seed, the same batches; another seed, others), and evaluation neither shuffles nor augments."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 24, 24, 3)).astype(np.uint8)
    files = _png_files(tmp_path / "png", images)
    labels = [0, 1, 2, 0, 1, 2]

    def stream(seed, **kw):
        ds = file_dataset(files, labels, 3, (24, 24), batch_size=6, skipped=[], training=True,
                          augment="resized-crop", seed=seed, output_size=(16, 16), rand_ops=2, **kw)
        return _batches(ds)[0]

    (x1, y1), (x2, y2) = stream(4), stream(4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, y3 = stream(5)
    assert not np.allclose(x1, x3)
    assert not np.array_equal(y1.argmax(axis=1), y3.argmax(axis=1))  # another order of the six
    assert not np.allclose(x1, stream(4, rand_strength=1.0)[0])  # the strength reaches the operations

    evaluation = _batches(file_dataset(files, labels, 3, (24, 24), batch_size=4, skipped=[], augment="resized-crop",
                                       seed=4, rand_ops=2))
    x = np.concatenate([b[0] for b in evaluation])
    np.testing.assert_allclose(x, np.asarray(preprocess(images)), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in evaluation]).argmax(axis=1), labels)


def _order_of(x: np.ndarray, images: np.ndarray) -> list[int]:
    """The index of the image each unaugmented, preprocessed row of `x` is."""
    expected = np.asarray(preprocess(images))
    order = [int(np.argmin(np.abs(expected - row).reshape(len(images), -1).max(axis=1))) for row in x]
    np.testing.assert_allclose(x, expected[order], atol=1e-6)
    return order


def test_a_streamed_pass_by_default_is_the_evaluation_pass_and_training_defaults_to_no_augmentation(tmp_path):
    """Without options the stream is evaluation (every file once, in order, with its one-hot row as
    wide as num_classes, shapes known before it runs); training alone only shuffles, by seed 0, and
    RandAugment's strength defaults to 0.5."""
    images = np.random.default_rng(6).integers(0, 256, (6, 24, 24, 3)).astype(np.uint8)
    files = _png_files(tmp_path / "png", images)
    labels = [0, 1, 2, 0, 1, 2]
    ds = file_dataset(files, labels, 4, (24, 24), batch_size=6, skipped=[])  # class 3 never present
    assert ds.element_spec[0].shape.as_list() == [None, 24, 24, 3]
    (x, y), = _batches(ds)
    assert _order_of(x, images) == list(range(6))
    np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[labels])

    def training(**kw):
        (x, y), = _batches(file_dataset(files, labels, 4, (24, 24), batch_size=6, skipped=[], training=True, **kw))
        return x, y

    x, y = training()
    order = _order_of(x, images)  # unaugmented: each row one of the files
    assert sorted(order) == list(range(6)) and order != list(range(6))
    np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[np.asarray(labels)[order]])
    np.testing.assert_array_equal(x, training(seed=0, augment="none", rand_ops=0)[0])
    assert _order_of(training(seed=1)[0], images) != order
    strong = training(rand_ops=2)[0]
    np.testing.assert_array_equal(strong, training(rand_ops=2, rand_strength=0.5)[0])
    assert not np.allclose(strong, training(rand_ops=2, rand_strength=1.0)[0])


def test_each_streamed_training_pass_is_reshuffled_and_its_crops_drawn_anew(tmp_path):
    """A training stream read twice (two epochs of --stream) gives another order and other crops
    the second time, both still fixed by the seed."""
    images = np.random.default_rng(7).integers(0, 256, (6, 24, 24, 3)).astype(np.uint8)
    ds = file_dataset(_png_files(tmp_path / "distinct", images), [0, 1, 2, 0, 1, 2], 3, (24, 24), batch_size=6,
                      skipped=[], training=True, seed=3)
    first, second = (_order_of(_batches(ds)[0][0], images) for _ in range(2))
    assert sorted(first) == sorted(second) == list(range(6)) and first != second

    same = _png_files(tmp_path / "same", np.repeat(images[:1], 6, axis=0))  # order cannot show: only crops can
    ds = file_dataset(same, [0] * 6, 3, (24, 24), batch_size=6, skipped=[], training=True, seed=3,
                      augment="resized-crop", output_size=(16, 16))
    first, second = (_batches(ds)[0][0] for _ in range(2))
    assert not np.allclose(first, second)


def test_a_streamed_file_that_fails_to_decode_is_skipped_with_its_reason(tmp_path, monkeypatch):
    """An unreadable file is skipped with the loader's own message; a decoder's unexpected error
    with its type and message; the other files still arrive."""
    import vit_flowers.images as images_module
    from vit_flowers.images import UnreadableImage, decode_image

    images = np.random.default_rng(8).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    files = _png_files(tmp_path / "png", images)
    empty = tmp_path / "png" / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableImage) as unreadable:
        decode_image(str(empty), (16, 16))

    def failing_on_the_second(path, size):
        if path == files[1]:
            raise RuntimeError("decoder fault")
        return decode_image(path, size)

    monkeypatch.setattr(images_module, "decode_image", failing_on_the_second)
    skipped: list = []
    x, = _batches(file_dataset(files + [str(empty)], None, 3, (16, 16), batch_size=8, skipped=skipped))
    np.testing.assert_allclose(x, np.asarray(preprocess(images[[0, 2]])), atol=1e-6)
    assert sorted(skipped) == sorted([(files[1], "cannot decode (RuntimeError: decoder fault)"),
                                      (str(empty), str(unreadable.value))])


def test_mixup_and_cutmix_together_are_refused():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="^MixUp or CutMix, not both$"):
        array_dataset(images, np.arange(4) % 2, 2, batch_size=2, training=True, mixup_alpha=0.2, cutmix=0.5)


@pytest.mark.parametrize("pairing", [{"mixup_alpha": 0.4}, {"cutmix": 0.5}])
def test_a_resumed_mixup_or_cutmix_stream_continues_the_uninterrupted_one(pairing):
    """Epoch 1 of a stream started at epoch 1 is epoch 1 of the stream started at 0: the same
    partners, the same mixing draws, the same crops."""
    images = np.random.default_rng(9).integers(0, 256, (8, 20, 20, 3)).astype(np.uint8)

    def batches(start_epoch: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        ds = array_dataset(images, np.arange(8) % 4, 4, batch_size=4, training=True, augment="resized-crop", seed=2,
                           start_epoch=start_epoch, output_size=(12, 12), rand_ops=1, **pairing)
        return [(np.asarray(x), np.asarray(y)) for x, y in ds.take(n)]

    uninterrupted, resumed = batches(0, 4), batches(1, 2)  # two batches an epoch
    for (xa, ya), (xb, yb) in zip(uninterrupted[2:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(uninterrupted[0][0], resumed[0][0])


def test_the_mixup_partners_are_the_training_stream_of_another_seed(monkeypatch):
    """Partners are augmented as the examples are (the same policy, crop size and RandAugment),
    drawn in another order: only the seed differs between the two streams."""
    import vit_flowers.datasets as datasets_module

    calls = []
    real = datasets_module._training_examples

    def recording(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(datasets_module, "_training_examples", recording)
    images = np.zeros((4, 20, 20, 3), np.uint8)
    array_dataset(images, np.arange(4) % 2, 2, batch_size=2, training=True, augment="resized-crop", seed=5,
                  start_epoch=1, output_size=(12, 12), mixup_alpha=0.4, rand_ops=2, rand_strength=0.7)
    assert len(calls) == 2
    (_, _, per_epoch, augment, seed, start, size, ops, strength), partner = calls
    assert (per_epoch, augment, seed, start, size, ops, strength) == (4, "resized-crop", 5, 1, (12, 12), 2, 0.7)
    assert partner[:4] == calls[0][:4] and partner[5:] == calls[0][5:] and partner[4] != seed
