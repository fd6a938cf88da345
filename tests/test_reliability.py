"""Killed training resumes; crashes keep good files; same seed, same model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from vit_flowers.model import load_run, save_weights

from conftest import REPO, tiny_run_config


@pytest.fixture(scope="module")
def slow_epoch_data(tmp_path_factory):
    """Enough images that an epoch at batch 4 lasts a second or two."""
    from vit_flowers.filelists import write_file_lists
    from vit_flowers.synthetic import write_synthetic_flowers

    out = tmp_path_factory.mktemp("resume_data")
    rows = write_synthetic_flowers(out / "images", n_per_class=40, size=32, seed=2)
    write_file_lists(rows, out, 0.2, seed=0)
    return out


def train_cmd(data, run, epochs):
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--train-list", str(data / "training_files.csv"),
            "--model", "tiny", "--image-size", "32", "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32",
            "--epochs", str(epochs), "--batch-size", "4", "--optimizer", "adamw", "--lr-schedule", "cosine",
            "--warmup-epochs", "1", "--learning-rate", "0.001", "--out", str(run)]


def history_rows(run) -> int:
    try:
        return len(pd.read_csv(run / "history.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def test_sigkill_mid_epoch_then_resume_continues_without_gap(slow_epoch_data, tmp_path):
    run, epochs = tmp_path / "run", 5
    proc = subprocess.Popen(train_cmd(slow_epoch_data, run, epochs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while history_rows(run) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # into the third epoch
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = history_rows(run)
    assert 2 <= killed_at < epochs
    assert (run / "backup" / "training_metadata.json").is_file()
    assert not (run / "model.weights.h5").exists()

    done = subprocess.run(train_cmd(slow_epoch_data, run, epochs) + ["--resume"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(epochs))  # no gap, no repeat

    # the optimizer's step count came back: the logged rates follow the warm-up + cosine schedule
    import keras

    steps = len(pd.read_csv(slow_epoch_data / "training_files.csv")) // 4  # last partial batch dropped
    schedule = keras.optimizers.schedules.CosineDecay(0.0, epochs * steps - steps, warmup_target=1e-3,
                                                      warmup_steps=steps)
    expected = [float(schedule((e + 1) * steps)) for e in range(epochs)]
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-4, atol=1e-9)

    model, cfg = load_run(run)
    assert model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0).shape == (1, 5)
    assert not (run / "backup").exists()


def test_crash_while_writing_weights_keeps_previous_good_weights(tiny_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model, cfg = load_run(run)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.layers[-1].set_weights([w * 0 for w in model.layers[-1].get_weights()])

    def crash(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half written")
        raise OSError("killed while writing")

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(OSError):
        save_weights(model, run / "model.weights.h5")
    reloaded, _ = load_run(run)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".tmp")) == []


def kill_the_next_weight_write(model, monkeypatch) -> None:
    """Change the model's weights, then make its next `save_weights` leave a
    half-written file and die, as a SIGKILL in the middle of the write would."""

    def killed(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half written")
        raise KeyboardInterrupt(f"killed while writing {path}")

    model.layers[-1].set_weights([w * 0 for w in model.layers[-1].get_weights()])
    monkeypatch.setattr(model, "save_weights", killed)


def test_kill_while_writing_the_backup_keeps_the_previous_epochs_backup(tiny_run, tmp_path, monkeypatch):
    """The backup of the weights is large; a kill while it is written must
    leave the last epoch's backup loadable (Keras writes it in place)."""
    import json

    from vit_flowers.train import atomic_backup_callback

    model, _ = load_run(tiny_run)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    backup = atomic_backup_callback(tmp_path / "backup")
    backup.set_model(model)
    backup.on_epoch_end(0)  # a good backup after the first epoch
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)

    kill_the_next_weight_write(model, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(1)
    monkeypatch.undo()

    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    fresh, _ = load_run(tiny_run)
    fresh.compile(optimizer="adam", loss="categorical_crossentropy")
    restore = atomic_backup_callback(tmp_path / "backup")
    restore.set_model(fresh)
    restore.on_train_begin()
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), before)
    assert fresh._initial_epoch == 1


def test_kill_while_writing_the_best_checkpoint_keeps_the_previous_best(tiny_run, tmp_path, monkeypatch):
    from vit_flowers.train import atomic_checkpoint_callback

    model, _ = load_run(tiny_run)
    best = tmp_path / "checkpoints" / "best.weights.h5"
    checkpoint = atomic_checkpoint_callback(best, "loss", None)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})  # the first best
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)

    kill_the_next_weight_write(model, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(1, {"loss": 0.5})  # a better epoch, killed mid-write
    monkeypatch.undo()
    checkpoint.on_epoch_end(2, {"loss": 2.0})  # a worse one writes nothing

    fresh, _ = load_run(tiny_run)
    fresh.load_weights(str(best))
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), before)
    assert sorted(p.name for p in best.parent.iterdir() if not p.name.startswith(".tmp")) == [best.name]


def test_same_seed_gives_the_same_predictions(synthetic_data, tiny_run, tmp_path):
    from vit_flowers.train import train_run

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv")
    train_run(cfg, tmp_path / "again", verbose=0)
    first, _ = load_run(tiny_run)
    second, _ = load_run(tmp_path / "again")
    x = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(first.predict(x, verbose=0), second.predict(x, verbose=0))
    np.testing.assert_array_equal(pd.read_csv(tiny_run / "history.csv")["loss"],
                                  pd.read_csv(tmp_path / "again" / "history.csv")["loss"])


def test_processes_killed_on_either_side_of_a_backup_resume_at_one_epoch(tiny_run, tmp_path):
    """Several processes: one kept epoch 2's backup, another was killed before
    writing it. All go back to epoch 1, the one holding 2 through the previous
    backup it kept."""
    import json

    from vit_flowers.errors import ConfigError
    from vit_flowers.train import BACKUP_DIR, align_backup, atomic_backup_callback, restored_epoch

    model, _ = load_run(tiny_run)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    run = tmp_path / "ahead"
    backup = atomic_backup_callback(run / BACKUP_DIR, keep_previous=True)
    backup.set_model(model)
    backup.on_epoch_end(0)
    after_first = model.predict(x, verbose=0)
    model.layers[-1].set_weights([w * 0 for w in model.layers[-1].get_weights()])
    backup.on_epoch_end(1)
    assert restored_epoch(run) == 2
    assert json.loads((run / BACKUP_DIR / "previous_training_metadata.json").read_text())["epoch"] == 1

    assert align_backup(run, lambda mine: [mine, 1]) == 1
    assert restored_epoch(run) == 1
    fresh, _ = load_run(tiny_run)
    fresh.compile(optimizer="adam", loss="categorical_crossentropy")
    restore = atomic_backup_callback(run / BACKUP_DIR)
    restore.set_model(fresh)
    restore.on_train_begin()
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), after_first)

    assert align_backup(run, lambda mine: [mine, mine]) == 1  # agreeing processes keep their backup
    backup.on_epoch_end(1)
    backup.on_epoch_end(2)  # now epoch 3, the previous one 2
    with pytest.raises(ConfigError, match="at epoch 3, another process's at 1"):
        align_backup(run, lambda mine: [mine, 1])  # two epochs apart: nothing to go back to
    assert restored_epoch(run) == 3
    assert align_backup(run, lambda mine: [mine, 0]) == 0  # one process never finished an epoch
    assert not (run / BACKUP_DIR).exists()
