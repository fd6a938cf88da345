"""Export: SavedModel, TFLite and ONNX files that run without this package and
agree with it (`vit_flowers.export`)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASS_NAMES, REPO
from vit_flowers import export as ex
from vit_flowers.errors import BadInputError

SIZE = (32, 32)  # the tiny run's input


def random_images(count: int, size=SIZE, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def package_probabilities(model, images: np.ndarray) -> np.ndarray:
    from vit_flowers.datasets import preprocess
    from vit_flowers.predict import predict_arrays

    return predict_arrays(model, preprocess(images))


@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    from vit_flowers.model import load_run

    return load_run(tiny_run)[0]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported in every format (checked against the package on the way)."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    lines: list[str] = []
    result = ex.export_run(tiny_run, out, "savedmodel,tflite,onnx", log=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(str(exported[0].out_dir / ex.SAVED_MODEL_DIR))


# ------------------------------------------------------------ what is written
def test_every_format_is_written_with_labels_and_a_readme(exported):
    result, lines = exported
    out = result.out_dir
    assert sorted(p.name for p in result.written) == sorted(
        ["saved_model", "model.tflite", "model_int8.tflite", "model.onnx", "labels.txt", "README.md"])
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "labels.txt").read_text().splitlines() == CLASS_NAMES
    readme = (out / "README.md").read_text()
    for word in ("serving_default", "predict_images", "attention", "image_bytes", "model_int8.tflite", "model.onnx",
                 '{"instances": [{"b64"', "x / 127.5 - 1"):
        assert word in readme
    # dynamic-range quantisation stores the weights as int8: the file is smaller
    assert (out / "model_int8.tflite").stat().st_size < 0.8 * (out / "model.tflite").stat().st_size
    # the export checked itself against the package
    assert set(result.max_abs_diff) == {"savedmodel", "tflite", "tflite_int8", "onnx"}
    assert all(result.max_abs_diff[k] <= 1e-4 for k in ("savedmodel", "tflite", "onnx"))
    assert any("model.onnx" in line for line in lines) and any("difference" in line for line in lines)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_parse_formats():
    assert ex.parse_formats("onnx, SavedModel") == ["savedmodel", "onnx"]
    assert ex.parse_formats(["tflite"]) == ["tflite"]
    with pytest.raises(BadInputError, match="tflight"):
        ex.parse_formats("savedmodel,tflight")
    with pytest.raises(BadInputError):
        ex.parse_formats("")


# ------------------------------------------------------------ SavedModel
def test_signatures_take_and_give_what_the_readme_says(loaded):
    import tensorflow as tf

    sigs = loaded.signatures
    assert set(sigs) == {"serving_default", "predict_images", "attention"}
    serving = sigs["serving_default"]
    assert serving.structured_input_signature[1] == {"image_bytes": tf.TensorSpec((None,), tf.string, "image_bytes")}
    assert {k: (v.dtype, v.shape.as_list()) for k, v in serving.structured_outputs.items()} == {
        "probabilities": (tf.float32, [None, 5]), "label": (tf.string, [None])}
    for name in ("predict_images", "attention"):
        assert sigs[name].structured_input_signature[1] == {"images": tf.TensorSpec((None, *SIZE, 3), tf.uint8,
                                                                                    "images")}
    assert sigs["attention"].structured_outputs["attention"].shape.as_list() == [None, *SIZE]


def test_predict_images_and_attention_equal_the_package(loaded, tiny_model):
    import tensorflow as tf

    from vit_flowers.attention import explainer_for

    images = random_images(6)
    probs = loaded.signatures["predict_images"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probs, package_probabilities(tiny_model, images), rtol=0, atol=1e-5)
    masks = loaded.signatures["attention"](images=tf.constant(images))["attention"].numpy()
    expected = explainer_for(tiny_model).rollout(images).mask
    assert masks.shape == expected.shape == (6, *SIZE)
    assert expected.std() > 0.01  # a mask with structure, not a constant
    np.testing.assert_allclose(masks, expected, rtol=0, atol=1e-5)


def test_serving_default_decodes_encoded_images_like_the_package(loaded, tiny_model, tmp_path):
    """Lossless images at the model's size decode to the same arrays, so the
    probabilities are the package's; the label is the most probable class."""
    import tensorflow as tf

    images = random_images(4, seed=11)
    data = [encode(images[0], "PNG"), encode(images[1], "BMP"), encode(images[2], "PNG"), encode(images[3], "PNG")]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    expected = package_probabilities(tiny_model, images)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=0, atol=1e-5)
    assert [s.decode() for s in out["label"].numpy()] == [CLASS_NAMES[k] for k in expected.argmax(axis=1)]


def test_the_graph_decoder_matches_the_package_decoder(tmp_path):
    """JPEG (shrunk by area averaging and by bilinear), RGBA and grayscale PNG,
    an animated GIF (first frame) and BMP decode to the pixels that
    `vit_flowers.images.decode_image` gives, within 1 level."""
    import tensorflow as tf

    from vit_flowers.images import decode_image

    rng = np.random.default_rng(3)
    smooth = np.clip(np.cumsum(rng.normal(0, 12, (120, 90, 3)), axis=0) + 128, 0, 255).astype(np.uint8)
    rgba = np.dstack([smooth[:40, :40], rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)])
    red, blue = np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    files = {
        "big.jpg": encode(smooth, "JPEG", quality=90),  # 120x90 -> 32x32: area averaging
        "mid.jpg": encode(smooth[:50, :45], "JPEG", quality=90),  # under 2x: bilinear
        "rgba.png": encode(rgba, "PNG"),
        "gray.png": encode(smooth[:, :, 0], "PNG"),
        "small.bmp": encode(smooth[:20, :20], "BMP"),  # upscaled
    }
    gif = io.BytesIO()
    Image.fromarray(red).save(gif, format="GIF", save_all=True, append_images=[Image.fromarray(blue)])
    files["two_frames.gif"] = gif.getvalue()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    decoded = tf.function(lambda b: ex.decode_images(b, SIZE))(tf.constant(list(files.values()))).numpy()
    for k, name in enumerate(files):
        expected = decode_image(tmp_path / name, SIZE)
        diff = np.abs(decoded[k].astype(int) - expected.astype(int))
        assert diff.max() <= 1, f"{name}: {diff.max()}"
    assert decoded[list(files).index("two_frames.gif")][..., 0].min() > 150  # the red first frame


def _error_of(loaded, data: list[bytes]) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    return caught.value.message


def test_bad_bytes_fail_the_request_with_a_reason_and_the_model_keeps_serving(loaded):
    import tensorflow as tf

    good = encode(random_images(1)[0])
    assert "image_bytes[1]: empty string" in _error_of(loaded, [good, b""])
    assert "image_bytes[0]: not a JPEG, PNG, GIF or BMP image" in _error_of(loaded, [b"hello, not an image", good])
    # a PNG whose header claims 100000 x 100000 pixels is refused before decoding
    bomb = bytearray(good)
    bomb[16:24] = (100000).to_bytes(4, "big") * 2
    assert "100000 x 100000 pixels is empty or over the limit" in _error_of(loaded, [bytes(bomb)])
    assert "JPEG" in _error_of(loaded, [encode(random_images(1)[0], "JPEG")[:60]])  # truncated
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([good]))
    assert out["probabilities"].shape == (1, 5)


def test_the_saved_model_loads_where_only_tensorflow_is_installed(exported, tiny_model):
    """A fresh interpreter in which `import vit_keras` and `import vit_flowers` fail."""
    images = random_images(2, seed=5)
    data = [encode(im).hex() for im in images]
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["vit_keras"] = None
        sys.modules["vit_flowers"] = None
        for name in ("vit_keras", "vit_flowers"):
            try:
                __import__(name)
                raise SystemExit(name + " is importable")
            except ImportError:
                pass
        import tensorflow as tf
        model = tf.saved_model.load({str(exported[0].out_dir / "saved_model")!r})
        data = [bytes.fromhex(h) for h in {data!r}]
        out = model.signatures["serving_default"](image_bytes=tf.constant(data))
        print(json.dumps({{"probs": out["probabilities"].numpy().tolist(),
                          "labels": [s.decode() for s in out["label"].numpy()]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO.parent),
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = package_probabilities(tiny_model, images)
    np.testing.assert_allclose(np.array(got["probs"]), expected, rtol=0, atol=1e-5)
    assert got["labels"] == [CLASS_NAMES[k] for k in expected.argmax(axis=1)]


# ------------------------------------------------------------ TFLite and ONNX
def test_tflite_files_agree_with_the_package(exported, tiny_model):
    out = exported[0].out_dir
    images = random_images(8, seed=13)
    expected = package_probabilities(tiny_model, images)
    interpreter = ex.tflite_interpreter(out / "model.tflite")
    np.testing.assert_allclose(ex.tflite_predict(interpreter, images), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ex.tflite_predict(interpreter, images[:1]), expected[:1], rtol=0, atol=1e-4)
    quantised = ex.tflite_predict(ex.tflite_interpreter(out / "model_int8.tflite"), images)
    assert np.abs(quantised - expected).max() < 0.05  # int8 weights: close, not equal
    assert np.abs(quantised - expected).max() > 0  # and really quantised


def test_onnx_file_agrees_with_the_package(exported, tiny_model):
    session = ex.onnx_session(exported[0].out_dir / "model.onnx")
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    images = random_images(5, seed=17)
    np.testing.assert_allclose(ex.onnx_predict(session, images), package_probabilities(tiny_model, images),
                               rtol=0, atol=1e-4)


def test_a_failing_converter_is_one_clear_error_and_leaves_the_folder_alone(tiny_run, tmp_path, monkeypatch):
    import tf2onnx

    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise ValueError("Unsupported ops: Counter({'Erfc': 3})\nmore lines")

    monkeypatch.setattr(tf2onnx.convert, "from_function", broken)
    with pytest.raises(ex.ExportUnavailableError, match=r"tf2onnx [\d.]+ with TensorFlow [\d.]+: ValueError: Unsupported ops"):
        ex.export_run(tiny_run, out, "onnx")
    assert (out / "model.onnx").read_bytes() == b"previous export" and (out / "saved_model").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "saved_model"]


def test_an_export_removes_files_an_earlier_export_left_in_other_formats(tiny_run, tmp_path):
    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    (out / "model.tflite").write_bytes(b"another model")
    (out / "notes.txt").write_text("mine")
    result = ex.export_run(tiny_run, out, "onnx")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "labels.txt", "model.onnx", "notes.txt"]
    assert result.max_abs_diff["onnx"] <= 1e-4


def test_the_export_command(tiny_run, tmp_path, monkeypatch, capsys):
    from vit_flowers import cli

    if "export" not in cli.COMMANDS:
        pytest.skip("the export command is not in vit_flowers.cli yet")
    out = tmp_path / "cli"
    assert cli.main(["export", "--run", str(tiny_run), "--out", str(out), "--format", "onnx"]) == 0
    assert (out / "model.onnx").is_file()
    capsys.readouterr()
    assert cli.main(["export", "--run", str(tiny_run), "--out", str(out), "--format", "pdf"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --format: unknown export format(s) ['pdf']; choose from savedmodel,tflite,onnx"]
    import tf2onnx

    monkeypatch.setattr(tf2onnx.convert, "from_function", lambda *a, **k: (_ for _ in ()).throw(ValueError("no")))
    assert cli.main(["export", "--run", str(tiny_run), "--out", str(out), "--format", "onnx"]) == 2


# ------------------------------------------------------------ the shipped model on real photos
@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
    from vit_flowers.model import resolve_run

    out = tmp_path_factory.mktemp("shipped")
    ex.export_run(resolve_run(None), out, "savedmodel,tflite", check=False)
    return out


@pytest.fixture(scope="module")
def held_out(flower_photos):
    """The 294 test photos of the shipped model's split (the committed
    models/flowers-vit-small/split/testing_files.csv, drawn from flower_photos
    and flower_photos_extra), and the package's probabilities and decoded
    arrays for them."""
    from vit_flowers.filelists import read_file_list
    from vit_flowers.images import load_images
    from vit_flowers.model import load_run, resolve_run
    from vit_flowers.predict import predict_files

    extra = flower_photos.parent / "flower_photos_extra"
    if not (extra / "daisy").is_dir():
        pytest.skip(f"needs the extra real flower photos (class folders daisy ... tulips) at {extra}, "
                    f"which is absent on this machine")
    model, config = load_run(resolve_run(None))
    frame = read_file_list(REPO / "models" / "flowers-vit-small" / "split" / "testing_files.csv",
                           config.model.class_names)
    files = frame["path"].tolist()
    size = tuple(config.model.image_size)
    probs, kept, skipped = predict_files(model, files, size, progress=False)
    assert len(files) == 294 and skipped.empty
    return files, frame["label"].to_numpy(), probs, load_images(files, size, progress=False).images


def test_serving_default_agrees_with_the_package_on_the_held_out_photos(shipped_export, held_out):
    import tensorflow as tf

    files, labels, expected, _ = held_out
    serving = tf.saved_model.load(str(shipped_export / "saved_model")).signatures["serving_default"]
    probs = np.concatenate([
        serving(image_bytes=tf.constant([Path(f).read_bytes() for f in files[i:i + 50]]))["probabilities"].numpy()
        for i in range(0, len(files), 50)])
    same_class = (probs.argmax(axis=1) == expected.argmax(axis=1)).mean()
    mean_diff = np.abs(probs - expected).mean()
    print(f"serving_default vs package on {len(files)} photos: same class {same_class:.3f}, "
          f"mean |probability difference| {mean_diff:.2e}, max {np.abs(probs - expected).max():.2e}")
    assert same_class >= 0.99
    assert mean_diff <= 0.01


def test_int8_tflite_accuracy_is_within_one_point_of_float32_on_the_photos(shipped_export, held_out):
    _, labels, expected, images = held_out
    accuracy = {}
    for name in ("model.tflite", "model_int8.tflite"):
        probs = ex.tflite_predict(ex.tflite_interpreter(shipped_export / name), images)
        accuracy[name] = float((probs.argmax(axis=1) == labels).mean())
    print(f"accuracy on the held-out photos: {accuracy}")
    assert accuracy["model.tflite"] == pytest.approx(float((expected.argmax(axis=1) == labels).mean()))
    assert abs(accuracy["model_int8.tflite"] - accuracy["model.tflite"]) <= 0.01


# ------------------------------------------------------------ ViT-B/16
@pytest.mark.slow
def test_vit_b16_exports_in_every_format(tmp_path):
    """ViT-B/16 at 224 px with random weights: every format checked against
    the package by the export itself, then the attention and serving paths."""
    import tensorflow as tf

    from vit_flowers.attention import explainer_for
    from vit_flowers.config import RunConfig, TrainConfig
    from vit_flowers.model import build_classifier, load_run, model_config, save_run

    config = RunConfig(model=model_config("b16", CLASS_NAMES, weights="none"), train=TrainConfig())
    save_run(build_classifier(config.model, load_pretrained=False), config, tmp_path / "run")
    result = ex.export_run(tmp_path / "run", tmp_path / "export")
    assert all(result.max_abs_diff[k] <= 1e-4 for k in ("savedmodel", "tflite", "onnx"))
    assert (tmp_path / "export" / "model_int8.tflite").stat().st_size < 0.35 * (
        tmp_path / "export" / "model.tflite").stat().st_size
    model = load_run(tmp_path / "run")[0]
    loaded = tf.saved_model.load(str(tmp_path / "export" / "saved_model"))
    images = random_images(2, (224, 224), seed=19)
    masks = loaded.signatures["attention"](images=tf.constant(images))["attention"].numpy()
    np.testing.assert_allclose(masks, explainer_for(model).rollout(images).mask, rtol=0, atol=1e-5)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(images[0])]))
    np.testing.assert_allclose(out["probabilities"].numpy(), package_probabilities(model, images[:1]), rtol=0,
                               atol=1e-5)
