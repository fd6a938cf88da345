"""`vit_flowers.predict` in the process: what it collects, how chunks line up
with files, and the table, metrics and summaries it writes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CLASS_NAMES
from vit_flowers import predict
from vit_flowers.errors import BadInputError


def _png(path, value: int = 128, size: int = 24, ramp: bool = False):
    """A flat grey image, or with `ramp` a left-to-right ramp (not its own mirror image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), value, np.uint8)
    if ramp:
        pixels[:] = np.linspace(0, 255, size, dtype=np.uint8)[None, :, None]
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from vit_flowers.model import load_run

    return load_run(tiny_run)


def test_folders_give_labels_only_when_named_after_a_class(tmp_path):
    root = tmp_path / "photos"
    _png(root / "roses" / "b.png")
    _png(root / "roses" / "a.png")
    (root / "roses" / "notes.txt").write_text("not an image")
    _png(root / "weeds" / "c.png")
    _png(root / "loose.png")
    (root / "README.md").write_text("not an image")
    _png(root / "tulips" / "deeper" / "d.png")  # two levels down: not listed
    table = predict.collect_images([root], CLASS_NAMES)
    assert table.to_dict("records") == [
        {"file": str(root / "loose.png"), "true": ""},
        {"file": str(root / "roses" / "a.png"), "true": "roses"},
        {"file": str(root / "roses" / "b.png"), "true": "roses"},
        {"file": str(root / "weeds" / "c.png"), "true": ""},
    ]


def test_files_named_directly_keep_their_order_and_have_no_label(tmp_path):
    second, first = _png(tmp_path / "roses" / "z.png"), _png(tmp_path / "a.png")
    broken = tmp_path / "gone.png"
    broken.symlink_to(tmp_path / "nowhere.png")  # a dangling link is kept, and skipped later with its reason
    table = predict.collect_images([second, first, broken], CLASS_NAMES)
    assert table["file"].tolist() == [str(second), str(first), str(broken)]
    assert table["true"].tolist() == ["", "", ""]
    assert list(table.columns) == ["file", "true"]


def test_missing_paths_and_empty_folders_are_bad_input_naming_them(tmp_path):
    with pytest.raises(BadInputError, match=r"^" + str(tmp_path / "nope.png") + ": no such file or folder$"):
        predict.collect_images([tmp_path / "nope.png"], CLASS_NAMES)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "notes.txt").write_text("x")
    with pytest.raises(BadInputError) as err:
        predict.collect_images([tmp_path / "one", tmp_path / "two"], CLASS_NAMES)
    assert str(err.value) == f"no image files found in {tmp_path / 'one'}, {tmp_path / 'two'}"


def test_a_list_gives_each_file_its_class_name(tmp_path):
    classes = ["tulips", "daisy", "roses"]
    files = [_png(tmp_path / name / f"{k}.png") for k, name in enumerate(classes)]
    pd.DataFrame({"base_path": str(tmp_path), "type_dir": classes,
                  "file_name": [f.name for f in files]}).to_csv(tmp_path / "list.csv", index=False)
    table = predict.collect_list(tmp_path / "list.csv", CLASS_NAMES)
    assert table["file"].tolist() == list(map(str, files))
    assert table["true"].tolist() == ["tulips", "daisy", "roses"]


def test_chunks_keep_each_probability_row_with_its_own_file(loaded, tmp_path):
    """Over several chunks with unreadable files among them, row i of the
    probabilities is file kept[i]'s, kept indices count from the first file
    of the whole list, and skipped files are named with their reasons."""
    from vit_flowers.datasets import preprocess
    from vit_flowers.images import decode_image

    model, run_config = loaded
    size = tuple(run_config.model.image_size)
    files = [_png(tmp_path / f"{k:02d}.png", value=20 * k) for k in range(7)]
    bad = {1: tmp_path / "empty.png", 5: tmp_path / "text.png"}
    bad[1].write_bytes(b"")
    bad[5].write_text("not a picture")
    for k, path in sorted(bad.items()):
        files.insert(k, path)
    names = list(map(str, files))
    probs, kept, skipped = predict.predict_files(model, names, size, batch_size=2, chunk_size=3, progress=False)
    assert kept.tolist() == [k for k in range(len(names)) if k not in bad]
    assert skipped["file"].tolist() == [str(bad[1]), str(bad[5])]  # in list order, from two chunks
    assert skipped.index.tolist() == [0, 1]  # one table, not two chunks' indices side by side
    assert skipped.set_index("file").loc[str(bad[1]), "reason"].startswith("empty file")
    expected = model.predict(preprocess(np.stack([decode_image(names[k], size) for k in kept])), verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert np.ptp(probs[:, 0]) > 0  # the images differ, so a row out of place would show


def test_nothing_readable_gives_empty_arrays_of_the_right_shapes(loaded, tmp_path):
    model, run_config = loaded
    (tmp_path / "a.png").write_bytes(b"")
    probs, kept, skipped = predict.predict_files(model, [str(tmp_path / "a.png")], (32, 32), progress=False)
    assert probs.shape == (0, len(CLASS_NAMES)) and probs.dtype == np.float32
    assert kept.shape == (0,) and kept.dtype == np.int64
    assert skipped["file"].tolist() == [str(tmp_path / "a.png")]
    probs, kept, skipped = predict.predict_files(model, [], (32, 32), progress=False)
    assert probs.shape == (0, len(CLASS_NAMES)) and kept.shape == (0,)
    assert list(skipped.columns) == ["file", "reason"] and skipped.empty


def test_strict_stops_at_the_first_bad_file_naming_it(loaded, tmp_path):
    model, _ = loaded
    good = _png(tmp_path / "good.png")
    (tmp_path / "bad1.png").write_bytes(b"")
    (tmp_path / "bad2.png").write_bytes(b"")
    names = [str(good), str(tmp_path / "bad1.png"), str(tmp_path / "bad2.png")]
    with pytest.raises(BadInputError) as err:
        predict.predict_files(model, names, (32, 32), progress=False, strict=True)
    assert str(err.value).startswith(f"{tmp_path / 'bad1.png'}: empty file")
    assert str(err.value).endswith(" (--strict stops at the first bad file)")


def test_the_progress_bar_counts_every_file(loaded, tmp_path, capsys):
    model, _ = loaded
    names = [str(_png(tmp_path / f"{k}.png")) for k in range(5)]
    capsys.readouterr()
    predict.predict_files(model, names, (32, 32), chunk_size=2, progress=True)
    shown = capsys.readouterr().out
    assert "5/5" in shown and re.search(r"\d(us|ms|s)/image\b", shown)  # Keras' bar, counting images
    assert "6/5" not in shown
    predict.predict_files(model, names, (32, 32), chunk_size=2, progress=False)
    assert capsys.readouterr().out == ""
    predict.predict_files(model, names, (32, 32))
    assert "5/5" in capsys.readouterr().out  # on by default


def test_mirror_averages_the_arrays_with_their_mirror_images(loaded):
    model, _ = loaded
    x = np.random.default_rng(8).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    plain = predict.predict_arrays(model, x, batch_size=2)
    flipped = predict.predict_arrays(model, x[:, :, ::-1].copy(), batch_size=2)
    np.testing.assert_allclose(predict.predict_arrays(model, x, 2, mirror=True), (plain + flipped) / 2, atol=1e-6)
    np.testing.assert_allclose(plain, model.predict(x, verbose=0), atol=1e-5)
    assert np.abs(plain - flipped).max() > 1e-4


def test_the_table_holds_each_files_prediction_and_probabilities():
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [0.9, 0.0, 0.05, 0.05, 0.0]], np.float32)
    table = predict.predictions_table(["a.jpg", "b.jpg"], ["tulips", ""], probs, CLASS_NAMES)
    assert list(table.columns) == ["file", "true", "pred"] + [f"prob_{c}" for c in CLASS_NAMES]
    assert table["pred"].tolist() == ["sunflowers", "daisy"]
    assert table["true"].tolist() == ["tulips", ""]
    np.testing.assert_array_equal(table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy(), probs)


def test_predict_inputs_keeps_the_true_labels_of_the_files_it_could_read(loaded, tmp_path):
    model, run_config = loaded
    inputs = pd.DataFrame({"file": [str(_png(tmp_path / "a.png", ramp=True)), str(tmp_path / "bad.png"),
                                    str(_png(tmp_path / "c.png", 200))],
                           "true": ["roses", "daisy", ""]})
    (tmp_path / "bad.png").write_bytes(b"")
    result = predict.predict_inputs(model, run_config, inputs, batch_size=2, progress=False)
    assert result.table["file"].tolist() == [inputs["file"][0], inputs["file"][2]]
    assert result.table["true"].tolist() == ["roses", ""]
    assert result.skipped["file"].tolist() == [inputs["file"][1]]
    assert result.metrics["count"] == 1
    assert result.metrics["accuracy"] == float(result.table["pred"][0] == "roses")
    mirrored = predict.predict_inputs(model, run_config, inputs, progress=False, mirror=True)
    columns = [f"prob_{c}" for c in CLASS_NAMES]
    assert np.abs(mirrored.table[columns].to_numpy() - result.table[columns].to_numpy()).max() > 1e-5
    with pytest.raises(BadInputError, match="--strict"):
        predict.predict_inputs(model, run_config, inputs, progress=False, strict=True)


def test_grid_images_are_decoded_again_at_the_display_size(tmp_path):
    files = [str(_png(tmp_path / "a.png", 30, size=40)), str(_png(tmp_path / "b.png", 90, size=12))]
    images = predict.grid_images(files)
    assert images.shape == (2, predict.DISPLAY_SIZE, predict.DISPLAY_SIZE, 3) and images.dtype == np.uint8
    assert int(np.median(images[0])) == 30 and int(np.median(images[1])) == 90
    assert predict.grid_images(files, size=20).shape == (2, 20, 20, 3)
    empty = predict.grid_images([])
    assert empty.shape == (0, predict.DISPLAY_SIZE, predict.DISPLAY_SIZE, 3) and empty.dtype == np.uint8


def test_the_terminal_summary_line():
    assert predict.metrics_summary(None) == "no true labels: accuracy not computed"
    assert predict.metrics_summary({"accuracy": 0.81234, "count": 17}) == "test accuracy: 0.812 (17 images)"


def test_outputs_of_a_run_without_labels_replace_an_earlier_runs_metrics(tmp_path):
    probs = np.eye(5, dtype=np.float32)[[0, 1, 1]]
    files = [str(_png(tmp_path / "img" / f"{k}.png", 40 * k)) for k in range(3)]
    labelled = predict.predictions_table(files, ["daisy", "dandelion", "roses"], probs, CLASS_NAMES)
    empty_skipped = pd.DataFrame(columns=["file", "reason"])
    out = tmp_path / "out"
    result = predict.PredictionResult(labelled, empty_skipped, predict.compute_metrics(labelled, CLASS_NAMES))
    written = predict.write_outputs(result, CLASS_NAMES, out)
    assert sorted(p.name for p in written) == sorted([predict.PREDICTIONS_FILE, predict.GRID_FILE,
                                                      predict.METRICS_FILE, predict.CONFUSION_FILE])
    assert pd.read_json(out / predict.METRICS_FILE, typ="series")["accuracy"] == pytest.approx(2 / 3)
    skipped = pd.DataFrame({"file": ["x.png"], "reason": ["empty file"]})
    unlabelled = predict.predictions_table(files, ["", "", ""], probs, CLASS_NAMES)
    written = predict.write_outputs(predict.PredictionResult(unlabelled, skipped, None), CLASS_NAMES, out)
    assert sorted(p.name for p in written) == sorted([predict.PREDICTIONS_FILE, "skipped_files.csv",
                                                      predict.GRID_FILE])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert pd.read_csv(out / predict.PREDICTIONS_FILE, keep_default_na=False)["true"].tolist() == ["", "", ""]
    nothing = predict.predictions_table([], [], np.zeros((0, 5), np.float32), CLASS_NAMES)
    written = predict.write_outputs(predict.PredictionResult(nothing, empty_skipped, None), CLASS_NAMES, out)
    assert [p.name for p in written] == [predict.PREDICTIONS_FILE]
    assert [p.name for p in out.iterdir()] == [predict.PREDICTIONS_FILE]


@pytest.fixture
def forward_calls(monkeypatch) -> list:
    """`predict.forward` replaced by a recorder of its (x, batch_size) calls
    (None: no batch size passed); every image gets 0.2 for each class."""
    calls = []

    def recording_forward(model, x, batch_size=None):
        calls.append((np.array(x), batch_size))
        return np.full((len(x), 5), 0.2, np.float32)

    monkeypatch.setattr(predict, "forward", recording_forward)
    return calls


def test_the_batch_size_reaches_every_forward_pass(forward_calls):
    """The batch size bounds the memory of a pass (ViT-B/16's attention at
    batch 32 is gigabytes): it must reach `forward`, the mirror pass too."""
    x = np.arange(3 * 1 * 4 * 3, dtype=np.float32).reshape(3, 1, 4, 3)
    predict.predict_arrays("model", x, batch_size=5, mirror=True)
    predict.predict_arrays("model", x)
    assert [(seen[0, 0, :, 0].tolist(), batch) for seen, batch in forward_calls] == [
        ([0.0, 3.0, 6.0, 9.0], 5), ([9.0, 6.0, 3.0, 0.0], 5), ([0.0, 3.0, 6.0, 9.0], 32)]


def test_predict_inputs_passes_its_batch_size_and_progress_bar_on(tmp_path, forward_calls, capsys):
    from types import SimpleNamespace

    model = SimpleNamespace(output_shape=(None, 5))
    run_config = SimpleNamespace(model=SimpleNamespace(class_names=CLASS_NAMES, image_size=[16, 16]))
    inputs = pd.DataFrame({"file": [str(_png(tmp_path / "a.png"))], "true": ["daisy"]})
    capsys.readouterr()
    predict.predict_inputs(model, run_config, inputs, progress=False)
    predict.predict_inputs(model, run_config, inputs, batch_size=3, progress=False)
    assert [batch for _, batch in forward_calls] == [32, 3]
    assert capsys.readouterr().out == ""
    predict.predict_inputs(model, run_config, inputs)
    assert "1/1" in capsys.readouterr().out  # the bar is on by default


def test_the_grid_shows_sixteen_evenly_spaced_rows_with_their_confidence(tmp_path, monkeypatch):
    from vit_flowers import plots

    drawn = {}

    def recording_grid(images, true, pred, path, confidence=None):
        drawn.update(images=images, true=true, pred=pred, confidence=confidence)
        return plots_grid(images, true, pred, path, confidence=confidence)

    plots_grid = plots.prediction_grid
    monkeypatch.setattr(plots, "prediction_grid", recording_grid)
    files = [str(_png(tmp_path / "img" / f"{k}.png", 5 * k, size=8)) for k in range(40)]
    probs = np.random.default_rng(0).dirichlet(np.ones(5), 40).astype(np.float32)
    table = predict.predictions_table(files, ["daisy"] * 40, probs, CLASS_NAMES)
    out = tmp_path / "new" / "nested" / "out"  # folders that do not exist yet
    predict.write_outputs(predict.PredictionResult(table, pd.DataFrame(columns=["file", "reason"]), None),
                          CLASS_NAMES, out)
    picks = plots.evenly_spaced(40, 16)
    assert len(picks) == 16 and len(drawn["true"]) == 16
    assert drawn["pred"] == table["pred"].iloc[picks].tolist()
    np.testing.assert_allclose(drawn["confidence"], probs[picks].max(axis=1))
    assert [int(np.median(image)) for image in drawn["images"]] == [5 * k for k in picks]
    assert (out / predict.GRID_FILE).is_file()


def test_files_are_decoded_256_at_a_time_and_predicted_32_at_a_time_by_default(monkeypatch, forward_calls,
                                                                                tmp_path):
    """The chunk bounds the decoded images held at once, the batch the
    memory of a forward pass: both defaults reach where they act."""
    from types import SimpleNamespace

    from vit_flowers import images

    chunks = []
    real_chunks = images.iter_image_chunks

    def recording_chunks(paths, size, chunk_size=256):
        chunks.append(chunk_size)
        return real_chunks(paths, size, chunk_size)

    monkeypatch.setattr(predict, "iter_image_chunks", recording_chunks)
    files = [str(_png(tmp_path / f"{k}.png")) for k in range(3)]
    probs, kept, _ = predict.predict_files(SimpleNamespace(output_shape=(None, 5)), files, (16, 16), progress=False)
    assert (chunks, [batch for _, batch in forward_calls]) == ([256], [32])
    assert probs.shape == (3, 5) and kept.tolist() == [0, 1, 2]


@pytest.mark.parametrize("fused_default, jit_default", [(True, True), (False, False), (False, True)])
def test_the_packages_defaults_decide_what_is_not_given(loaded, monkeypatch, fused_default, jit_default):
    model, _ = loaded
    monkeypatch.setattr(predict, "FUSED_ATTENTION", fused_default)
    monkeypatch.setattr(predict, "JIT_COMPILE", jit_default)
    assert predict.forward_options(model) == {"fused": fused_default, "jit_compile": jit_default}
    assert predict.forward_options(model, fused=not fused_default, jit_compile=not jit_default) == {
        "fused": not fused_default, "jit_compile": not jit_default}


def _plain_model():
    import keras

    return keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def test_one_graph_serves_every_batch_size_and_xla_is_asked_for_only_when_wanted():
    """The traced function takes any batch (its signature leaves the batch
    free), so the last, smaller batch of a list does not trace it again."""
    model = _plain_model()
    x = np.random.default_rng(9).normal(size=(7, 4)).astype(np.float32)
    for batch in (3, 2, 7):
        predict.forward(model, x, batch, jit_compile=False)
    (fn,) = predict._FORWARD[model].values()
    assert fn.experimental_get_tracing_count() == 1
    predict.forward(model, x, 4, jit_compile=False)
    assert predict._FORWARD[model][(False, False)] is fn  # kept for the model, not built again per call
    empty = predict.forward(model, x[:0])
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert not fn._jit_compile  # tf.function keeps what it was asked for here
    predict.forward(model, x, 3, jit_compile=True)
    assert predict._FORWARD[model][(False, True)]._jit_compile is True


def test_forward_goes_32_at_a_time_by_default(monkeypatch):
    sizes = []

    class Tensor:  # what a traced function returns: something with .numpy()
        def __init__(self, array):
            self.array = array

        def numpy(self):
            return self.array

    def recording_trace(model, fused, jit_compile):
        def run(t):
            sizes.append(len(t))
            return Tensor(np.zeros((len(t), 3), np.float32) + np.asarray(t)[:, :1])
        return run

    monkeypatch.setattr(predict, "_traced_forward", recording_trace)
    x = np.arange(70, dtype=np.float32)[:, None].repeat(4, axis=1)
    out = predict.forward(_plain_model(), x)
    assert sizes == [32, 32, 6]
    np.testing.assert_array_equal(out[:, 0], np.arange(70))  # the batches back in order


def test_other_backends_run_model_predict_with_the_batch_size(monkeypatch):
    import keras

    calls = []

    class Recorder:
        def predict(self, x, batch_size=None, verbose="auto"):
            calls.append((x, batch_size, verbose))
            return np.ones((len(x), 2), np.float32)

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    x = np.zeros((5, 4), np.float32)
    out = predict.forward(Recorder(), x, batch_size=4)
    assert out.shape == (5, 2) and len(calls) == 1
    assert calls[0][0] is x and calls[0][1:] == (4, 0)  # silent: the package draws its own progress bar
    predict.forward(Recorder(), x)
    assert calls[1][1] == 32
