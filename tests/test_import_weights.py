"""`import-weights`: the source post's saved weights become a run dir that
predicts what the post's model predicts.

The file is written the way the post wrote it: its Sequential (vit-keras'
ViT without its top, Flatten, BatchNormalization, Dense(21,
tfa.activations.gelu), BatchNormalization, Dense(5, softmax)) built by
vit-keras 0.1.2 on Keras 2 (`tf_keras`, with TF_USE_LEGACY_KERAS=1) and
saved with `model.save_weights('test_model.h5')`. vit-keras 0.1.2 imports
tensorflow-addons (for gelu) and validators, which have no build for this
TensorFlow, and pkg_resources, which setuptools no longer ships: three
stubs stand in for the one function of each it calls. The
ViT is small (two layers, 32 px) so that the test runs in seconds; its
layers and array names are those of vit_b16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASS_NAMES
from vit_flowers import cli
from vit_flowers.model import load_run

SMALL = ["--model", "tiny", "--image-size", "32", "--num-layers", "2", "--hidden-size", "32", "--mlp-dim", "64",
         "--num-heads", "4"]

STUBS = {
    "tensorflow_addons/__init__.py": textwrap.dedent("""
        import types
        import tensorflow as tf
        def _gelu(x, approximate=True):  # tensorflow-addons' default is the tanh approximation
            return tf.nn.gelu(x, approximate=approximate)
        activations = types.SimpleNamespace(gelu=_gelu)
    """),
    "validators.py": "def url(value):\n    return str(value).startswith(('http://', 'https://'))\n",
    # vit-keras 0.1.2 finds its class list with pkg_resources, which setuptools no longer ships (and a
    # venv may have no setuptools at all)
    "pkg_resources.py": textwrap.dedent("""
        import importlib.resources
        def resource_filename(package, name):
            return str(importlib.resources.files(package) / name)
    """),
}

POST_MODEL = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_addons as tfa
    from vit_keras import vit
    assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
    vit_model = vit.build_model(image_size=32, patch_size=8, num_layers=2, hidden_size=32, num_heads=4, mlp_dim=64,
                                classes=5, dropout=0.1, activation="sigmoid", include_top=False,
                                representation_size=None, name="vit-b16")
    model = tf.keras.Sequential([
        vit_model,
        tf.keras.layers.Flatten(),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(21, activation=tfa.activations.gelu),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(5, "softmax"),
    ], name="vision_transformer")
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=1e-4), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    # a few steps, so the batch-norm statistics and every weight are no longer their initial values
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = tf.keras.utils.to_categorical(rng.integers(0, 5, 16), 5)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    model.save_weights(sys.argv[1])
    probe = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.savez(sys.argv[2], x=probe, p=model.predict(probe, verbose=0))
""")


@pytest.fixture(scope="module")
def post_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(test_model.h5, probe images, the post's model's probabilities on them)."""
    pytest.importorskip("tf_keras", reason="needs tf_keras (Keras 2) to write the post's file: requirements-dev.txt")
    root = tmp_path_factory.mktemp("post")
    old = root / "vit-keras-0.1.2"
    fetched = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(old),
                              "vit-keras==0.1.2"], capture_output=True, text=True, timeout=300)
    if fetched.returncode != 0:
        pytest.skip(f"vit-keras 0.1.2 could not be installed from the package registry: {fetched.stderr[-300:]}")
    stubs = root / "stubs"
    for name, text in STUBS.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(old), str(stubs)])}
    weights, probe = root / "test_model.h5", root / "probe.npz"
    made = subprocess.run([sys.executable, "-c", POST_MODEL, str(weights), str(probe)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=root)
    assert made.returncode == 0, made.stderr[-3000:]
    data = np.load(probe)
    return weights, data["x"], data["p"]


def test_the_posts_file_becomes_a_run_dir_that_predicts_as_the_post(post_file, tmp_path):
    weights, x, expected = post_file
    run = tmp_path / "run"
    assert cli.main(["import-weights", str(weights), "--out", str(run), *SMALL]) == 0
    model, config = load_run(run)
    assert config.model.class_names == CLASS_NAMES
    assert (config.model.head_bn_momentum, config.model.head_gelu) == (0.99, "tanh")
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["head_bn_momentum"], saved["head_gelu"]) == (0.99, "tanh")  # a reload keeps the post's head
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=1e-5)
    assert np.abs(expected - expected.mean(axis=0)).max() > 1e-3  # the probe tells the images apart


def test_predict_and_plot_take_the_imported_run(post_file, synthetic_data, tmp_path):
    weights, _, _ = post_file
    run = tmp_path / "run"
    assert cli.main(["import-weights", str(weights), "--out", str(run), *SMALL]) == 0
    test_list = str(synthetic_data / "testing_files.csv")
    assert cli.main(["predict", "--run", str(run), "--list", test_list, "--out", str(tmp_path / "pred"),
                     "--no-report"]) == 0
    assert cli.main(["plot", "--run", str(run), "--list", test_list, "--out", str(tmp_path / "plot"),
                     "--limit", "2", "--no-report"]) == 0


def test_a_file_of_another_architecture_is_refused_naming_the_first_layer(post_file, tmp_path, capsys):
    weights, _, _ = post_file
    assert cli.main(["import-weights", str(weights), "--out", str(tmp_path / "b16")]) == 2
    err = capsys.readouterr().err
    assert "does not fit model 'b16': embedding/kernel has shape (8, 8, 3, 32) in the file, (16, 16, 3, 768)" in err
    assert not (tmp_path / "b16" / "config.json").exists()
    assert cli.main(["import-weights", str(weights), "--out", str(tmp_path / "heads"), *SMALL[:-2],
                     "--num-layers", "3"]) == 2
    assert "model 'tiny' has Transformer_encoderblock_2/" in capsys.readouterr().err
    assert cli.main(["import-weights", str(weights), "--out", str(tmp_path / "four"), *SMALL,
                     "--class-names", "a,b,c,d"]) == 2
    assert "predicts 5 classes, --class-names names 4" in capsys.readouterr().err


def test_files_that_are_not_the_posts_weights_are_refused(tiny_run, tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    assert cli.main(["import-weights", str(text), "--out", str(tmp_path / "a")]) == 2
    assert "not a readable HDF5 weights file" in capsys.readouterr().err
    assert cli.main(["import-weights", str(tiny_run / "model.weights.h5"), "--out", str(tmp_path / "b")]) == 2
    assert "not a legacy Keras weights file" in capsys.readouterr().err
    assert cli.main(["import-weights", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "c")]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err
