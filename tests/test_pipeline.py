"""End to end: prepare -> train -> predict through the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from awkward import BAD, GOOD, make_awkward_folder
from conftest import CLASS_NAMES, REPO
from vit_flowers import cli
from vit_flowers.errors import EXIT_BAD_INPUT, EXIT_OK


def test_every_option_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"
        assert "exit codes: 0 done, 1 failure, 2 bad input" in subparser.description


def test_prepare_synthetic_writes_stratified_lists(tmp_path):
    out = tmp_path / "data"
    assert cli.main(["prepare", "--source", "synthetic", "--out", str(out), "--per-class", "10",
                     "--image-size", "32", "--test-fraction", "0.3"]) == EXIT_OK
    train = pd.read_csv(out / "training_files.csv")
    val = pd.read_csv(out / "validation_files.csv")
    test = pd.read_csv(out / "testing_files.csv")
    assert list(train.columns) == ["base_path", "type_dir", "file_name"]
    assert test.groupby("type_dir").size().to_dict() == {c: 3 for c in CLASS_NAMES}
    assert val.groupby("type_dir").size().to_dict() == {c: 1 for c in CLASS_NAMES}  # --val-fraction 0.1
    assert len(train) == 30
    assert len(set(train.file_name) | set(val.file_name) | set(test.file_name)) == 50
    with Image.open(out / train.base_path[0] / train.type_dir[0] / train.file_name[0]) as im:
        assert im.size == (32, 32)


def test_prepare_download_offline_says_what_to_do(tmp_path, monkeypatch, capsys):
    import keras

    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    assert cli.main(["prepare", "--source", "download", "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "flower_photos.tgz" in err and "--source /path/to/flower_photos" in err


def test_train_script_writes_a_complete_run_dir(synthetic_data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--train-list", str(synthetic_data / "training_files.csv"),
           "--val-list", str(synthetic_data / "testing_files.csv"), "--model", "tiny", "--image-size", "32",
           "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32", "--epochs", "2", "--batch-size", "16",
           "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["class_names"] == CLASS_NAMES and config["model"]["image_size"] == [32, 32]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history.columns)
    assert (run / "model.weights.h5").stat().st_size > 10_000
    # the last epoch's training state stays (to train on with a larger --epochs), and only the files it names
    state = json.loads((run / "backup" / "state.json").read_text())
    assert state["latest"]["epoch"] == 2 and state["previous"] is None
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert state["latest"]["best_epoch"] == best
    assert sorted(p.name for p in (run / "backup").iterdir()) == sorted(
        {"state.json", "epoch-00002.weights.h5", f"epoch-{best + 1:05d}.weights.h5"})
    with Image.open(run / "training_curves.png") as im:
        assert im.size[0] >= 800 and len(set(im.convert("L").getdata())) > 10
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == EXIT_BAD_INPUT and "--overwrite" in again.stderr


def test_predict_list_writes_tables_metrics_and_figures(tiny_run, synthetic_data, tmp_path):
    out = tmp_path / "pred"
    test_list = synthetic_data / "testing_files.csv"
    assert cli.main(["predict", "--run", str(tiny_run), "--list", str(test_list), "--out", str(out)]) == EXIT_OK
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["file", "true", "pred"] + [f"prob_{c}" for c in CLASS_NAMES]
    assert len(table) == len(pd.read_csv(test_list))
    probs = table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    assert (np.array(CLASS_NAMES)[probs.argmax(1)] == table["pred"]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx((table["true"] == table["pred"]).mean())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == len(table) and matrix.sum(axis=1).tolist() == [3] * 5
    recall = metrics["per_class"]["daisy"]["recall"]
    assert recall == pytest.approx(matrix[0, 0] / 3)
    with Image.open(out / "prediction_grid.png") as im:
        assert im.size == (1200, 1280)
    with Image.open(out / "confusion_matrix.png") as im:
        assert im.size[0] > 300
    assert not (out / "skipped_files.csv").exists()


def test_forward_equals_model_predict_for_any_batch_split(tiny_run):
    from vit_flowers.model import load_run
    from vit_flowers.predict import forward

    model, _ = load_run(tiny_run)
    x = np.random.default_rng(3).uniform(-1, 1, (7, 32, 32, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for batch in (1, 3, 32):
        np.testing.assert_allclose(forward(model, x, batch), expected, atol=1e-5)
    assert forward(model, x[:0]).shape == (0, 5)


@pytest.mark.parametrize("fused, jit_compile", [(False, False), (True, False), (False, True), (True, True)])
def test_forward_options_give_the_model_s_probabilities(tiny_run, fused, jit_compile):
    """Fused attention and XLA change how the graph runs, not what it computes."""
    from vit_flowers.model import load_run
    from vit_flowers.predict import _FORWARD, forward

    model, _ = load_run(tiny_run)
    x = np.random.default_rng(4).uniform(-1, 1, (7, 32, 32, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for batch in (1, 3, 32):
        np.testing.assert_allclose(forward(model, x, batch, fused=fused, jit_compile=jit_compile), expected,
                                   atol=1e-5)
    assert set(_FORWARD[model]) == {(fused, jit_compile)}  # one graph per option set, reused across batches


def test_forward_defaults_and_models_without_vit_blocks(tiny_run):
    import keras

    from vit_flowers import predict
    from vit_flowers.model import load_run

    model, _ = load_run(tiny_run)
    assert predict.forward_options(model) == {"fused": predict.FUSED_ATTENTION, "jit_compile": predict.JIT_COMPILE}
    assert predict.forward_options(model, fused=False, jit_compile=True) == {"fused": False, "jit_compile": True}
    plain = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    assert predict.forward_options(plain, fused=True)["fused"] is False  # nothing to fuse: the model itself runs
    x = np.random.default_rng(5).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(predict.forward(plain, x, 2, fused=True), plain.predict(x, verbose=0), atol=1e-6)


def test_a_model_used_by_predict_is_freed_when_its_user_drops_it(tiny_run):
    """The traced forward function is cached per model but must not keep
    the model alive: a process predicting with many run dirs would grow."""
    import gc
    import weakref

    from vit_flowers.model import load_run
    from vit_flowers.predict import _FORWARD, forward

    x = np.zeros((2, 32, 32, 3), np.float32)
    refs = []
    for _ in range(3):
        model, _ = load_run(tiny_run)
        forward(model, x)
        forward(model, x, fused=False)
        assert model in _FORWARD
        refs.append(weakref.ref(model))
        del model
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert len(_FORWARD) == 0


def test_mirror_tta_averages_each_image_with_its_mirror_image(tiny_run, synthetic_data, tmp_path):
    from PIL import ImageOps

    files = sorted((synthetic_data / "images" / "roses").iterdir())[:4]
    mirrored = tmp_path / "mirrored"
    mirrored.mkdir()
    for f in files:
        with Image.open(f) as im:
            ImageOps.mirror(im).save(mirrored / (f.stem + ".png"))
    columns = [f"prob_{c}" for c in CLASS_NAMES]

    def probs(paths, out, *extra):
        assert cli.main(["predict", "--run", str(tiny_run), "--images", *map(str, paths), "--out", str(out),
                         *extra]) == EXIT_OK
        return pd.read_csv(out / "predictions.csv")[columns].to_numpy()

    plain = probs(files, tmp_path / "plain")
    flipped = probs(sorted(mirrored.iterdir()), tmp_path / "flipped")
    both = probs(files, tmp_path / "tta", "--mirror-tta")
    np.testing.assert_allclose(both, (plain + flipped) / 2, atol=1e-5)
    assert np.abs(plain - flipped).max() > 1e-4  # the mirror image really is a different input


def test_predict_images_skips_bad_files_and_reads_labels_from_folders(tiny_run, synthetic_data, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_data / "images" / "roses", photos / "roses")
    make_awkward_folder(photos / "tulips")
    out = tmp_path / "pred"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]) == EXIT_OK
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(table) == 12 + len(GOOD)
    assert set(table["true"]) == {"roses", "tulips"}
    skipped = pd.read_csv(out / "skipped_files.csv")
    assert sorted(Path(f).name for f in skipped["file"]) == sorted(BAD)
    assert "skipped" in capsys.readouterr().out

    strict_out = tmp_path / "strict"
    code = cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(strict_out), "--strict"])
    assert code == EXIT_BAD_INPUT
    assert "--strict" in capsys.readouterr().err
    assert not (strict_out / "predictions.csv").exists()


def test_predict_single_files_have_no_true_label(tiny_run, synthetic_data, tmp_path):
    files = sorted((synthetic_data / "images" / "daisy").iterdir())[:3]
    out = tmp_path / "pred"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", *map(str, files), "--out", str(out)]) == EXIT_OK
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["true"].tolist() == ["", "", ""]
    assert not (out / "metrics.json").exists()


def test_bad_inputs_exit_2_with_the_name(tiny_run, tmp_path, capsys):
    assert cli.main(["predict", "--run", str(tmp_path / "nope"), "--images", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "nope: run dir not found" in capsys.readouterr().err
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(tmp_path / "missing.jpg"),
                     "--out", str(tmp_path)]) == 2
    assert "missing.jpg: no such file or folder" in capsys.readouterr().err


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    from vit_flowers import atomic

    target = tmp_path / "predictions.csv"
    atomic.write_csv(target, pd.DataFrame({"a": [1, 2]}))

    def half_write(self, path, **kwargs):
        Path(path).write_text("a\n1\n")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError):
        atomic.write_csv(target, pd.DataFrame({"a": [3, 4, 5]}))
    monkeypatch.undo()
    assert pd.read_csv(target)["a"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_training_skips_bad_images_and_strict_refuses_them(synthetic_data, tmp_path, capsys):
    from vit_flowers.filelists import scan_class_folders, write_file_lists

    data = tmp_path / "data"
    for name in CLASS_NAMES:
        shutil.copytree(synthetic_data / "images" / name, data / "images" / name)
    make_awkward_folder(data / "images" / "roses")
    write_file_lists(scan_class_folders(data / "images"), data, 0.2, seed=0)
    train_list = pd.read_csv(data / "training_files.csv")
    bad_in_train = sorted(set(train_list["file_name"]) & set(BAD))
    assert bad_in_train
    args = ["train", "--train-list", str(data / "training_files.csv"), "--model", "tiny", "--image-size", "32",
            "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32", "--epochs", "1", "--batch-size", "16"]
    assert cli.main(args + ["--out", str(tmp_path / "strict"), "--strict"]) == EXIT_BAD_INPUT
    assert "--strict" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "model.weights.h5").exists()
    assert cli.main(args + ["--out", str(tmp_path / "run")]) == EXIT_OK
    skipped = pd.read_csv(tmp_path / "run" / "skipped_files.csv")
    assert sorted(Path(f).name for f in skipped["file"]) == bad_in_train
    # the streamed path decodes batch by batch and reports the bad files it met
    assert cli.main(args + ["--out", str(tmp_path / "streamed"), "--stream"]) == EXIT_OK
    streamed = pd.read_csv(tmp_path / "streamed" / "skipped_files.csv")
    assert 0 < len(streamed) and set(Path(f).name for f in streamed["file"]) <= set(bad_in_train)
    assert len(pd.read_csv(tmp_path / "streamed" / "history.csv")) == 1
    assert cli.main(args + ["--out", str(tmp_path / "both"), "--stream", "--strict"]) == EXIT_BAD_INPUT


def test_demo_writes_a_run_dir_that_predict_takes_as_is(synthetic_data, tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--per-class", "10", "--epochs", "2", "--image-size", "32"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith("test accuracy: ")
    assert json.loads((out / "config.json").read_text())["model"]["class_names"] == CLASS_NAMES
    table = pd.read_csv(out / "predictions" / "predictions.csv")
    assert len(table) == 10  # 20% of 10 per class
    with Image.open(out / "attention" / "attention_grid.png") as im:
        assert len(set(im.convert("L").getdata())) > 50
    # as a new user would: the demo's dir is a run dir
    mine = tmp_path / "mine"
    assert cli.main(["predict", "--run", str(out), "--images", str(synthetic_data / "images" / "tulips"),
                     "--out", str(mine)]) == EXIT_OK
    assert len(pd.read_csv(mine / "predictions.csv")) == 12


def test_resized_crop_trains_from_larger_images_and_load_size_needs_it(synthetic_data, tmp_path, capsys):
    args = ["train", "--train-list", str(synthetic_data / "training_files.csv"), "--model", "tiny",
            "--image-size", "16", "--patch-size", "4", "--num-layers", "1", "--hidden-size", "32",
            "--mlp-dim", "32", "--epochs", "1", "--batch-size", "16", "--load-size", "32"]
    assert cli.main(args + ["--augment", "seed", "--out", str(tmp_path / "bad")]) == EXIT_BAD_INPUT
    assert "--load-size 32 needs --augment resized-crop" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "config.json").exists()
    assert cli.main(args + ["--augment", "resized-crop", "--out", str(tmp_path / "run")]) == EXIT_OK
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["load_size"] == 32 and config["model"]["image_size"] == [16, 16]
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1


def test_an_output_folder_holds_one_runs_files(tiny_run, synthetic_data, tmp_path):
    """A labelled run, then an unlabelled one into the same --out: the old
    metrics and confusion matrix go; a second plot with fewer images leaves
    no figure of the first."""
    out = tmp_path / "pred"
    test_list = synthetic_data / "testing_files.csv"
    assert cli.main(["predict", "--run", str(tiny_run), "--list", str(test_list), "--out", str(out)]) == EXIT_OK
    assert (out / "metrics.json").is_file() and (out / "confusion_matrix.png").is_file()
    (out / "notes.txt").write_text("mine")
    image = next((synthetic_data / "images").rglob("*.jpg"))
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(image), "--out", str(out)]) == EXIT_OK
    assert len(pd.read_csv(out / "predictions.csv")) == 1
    assert not (out / "metrics.json").exists() and not (out / "confusion_matrix.png").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not the command's: kept

    figures = tmp_path / "figures"
    for limit in (4, 2):
        assert cli.main(["plot", "--run", str(tiny_run), "--list", str(test_list), "--out", str(figures),
                         "--limit", str(limit)]) == EXIT_OK
        per_image = sorted(p.name for p in figures.glob("attention_[0-9][0-9]_*.png"))
        assert len(per_image) == limit, per_image
        assert len(pd.read_csv(figures / "attention_selection.csv")) == limit


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(kind, tiny_run, synthetic_data, tmp_path,
                                                                    capsys, monkeypatch):
    from vit_flowers import predict

    out = tmp_path / "out"
    if kind == "file":
        out.write_text("a file")
    else:
        out.mkdir()
        out.chmod(0o500)
        if os.access(out, os.W_OK):  # root writes anyway: make the write check fail as it would for a user
            import tempfile as tf_module

            def refused(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tf_module, "NamedTemporaryFile", refused)
    monkeypatch.setattr(predict, "predict_inputs", lambda *a, **k: pytest.fail("predicted before checking --out"))
    code = cli.main(["predict", "--run", str(tiny_run), "--list", str(synthetic_data / "testing_files.csv"),
                     "--out", str(out)])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--out {out}" in err and ("is a file" if kind == "file" else "cannot write there") in err


@pytest.mark.parametrize("command", ["predict", "train", "plot", "config"])
def test_bad_lists_and_configs_are_refused_before_tensorflow_is_imported(command, tiny_run, tmp_path):
    """Fail fast: what the user gave is read and checked first, so a broken
    list or config is refused in well under 2 s, without starting TensorFlow."""
    import textwrap

    bad = tmp_path / "bad.csv"
    bad.write_text("base_path,type_dir\nx,roses\n")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["num_heads"] = 7  # does not divide the hidden size
    (run / "config.json").write_text(json.dumps(config))
    argv = {"predict": ["predict", "--run", str(tiny_run), "--list", str(bad), "--out", str(tmp_path / "o")],
            "train": ["train", "--train-list", str(bad), "--out", str(tmp_path / "r")],
            "plot": ["plot", "--run", str(tiny_run), "--list", str(bad), "--out", str(tmp_path / "p")],
            "config": ["predict", "--run", str(run), "--images", str(bad), "--out", str(tmp_path / "o")]}[command]
    script = textwrap.dedent(f"""
        import sys
        from vit_flowers import cli
        code = cli.main({argv!r})
        print(code, sorted(m for m in ("tensorflow", "keras", "vit_keras") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.split("\n")[-2] == "2 []", done.stdout + done.stderr
    assert ("bad.csv" if command != "config" else "num_heads is 7") in done.stderr
