"""Killed training resumes to the run it would have been; crashes keep good
files; same seed, same model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, tiny_run_config
from vit_flowers.model import load_run, save_weights

EPOCHS = 4


@pytest.fixture(scope="module")
def slow_epoch_data(tmp_path_factory):
    """Enough images that an epoch at batch 4 lasts a second or two."""
    from vit_flowers.filelists import write_file_lists
    from vit_flowers.synthetic import write_synthetic_flowers

    out = tmp_path_factory.mktemp("resume_data")
    rows = write_synthetic_flowers(out / "images", n_per_class=40, size=32, seed=2)
    write_file_lists(rows, out, 0.2, seed=0, val_fraction=0.1)
    return out


def train_cmd(data, run, epochs=EPOCHS):
    """A run whose every source of randomness must come back on --resume: a
    shuffled order per epoch, stateless random resized crops from larger
    images, dropout, a warm-up + cosine rate, early stopping and a best epoch
    chosen on the validation list."""
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--train-list", str(data / "training_files.csv"),
            "--val-list", str(data / "validation_files.csv"),
            "--model", "tiny", "--image-size", "32", "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32",
            "--dropout", "0.1", "--augment", "resized-crop", "--load-size", "40",
            "--epochs", str(epochs), "--batch-size", "4", "--optimizer", "adamw", "--lr-schedule", "cosine",
            "--warmup-epochs", "1", "--learning-rate", "0.001", "--patience", "100", "--out", str(run)]


def history_rows(run) -> int:
    try:
        return len(pd.read_csv(run / "history.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def weights_of(run) -> list[np.ndarray]:
    model, _ = load_run(run)
    return model.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(slow_epoch_data, tmp_path_factory):
    """The run as it goes when nothing stops it."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = subprocess.run(train_cmd(slow_epoch_data, run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def kill_when(cmd, ready, timeout=240) -> subprocess.Popen:
    """Start `cmd`, SIGKILL its process group as soon as `ready()` holds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return proc


def assert_same_run(run, reference) -> None:
    """Bitwise: the same history, the same best weights, the same last state."""
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv"),
                                  check_exact=True)
    for mine, theirs in zip(weights_of(run), weights_of(reference), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    state, reference_state = (json.loads((r / "backup" / "state.json").read_text()) for r in (run, reference))
    assert state == reference_state


@pytest.mark.parametrize("when", ["first epoch", "third epoch"])
def test_sigkill_then_resume_ends_as_the_uninterrupted_run(when, slow_epoch_data, uninterrupted, tmp_path):
    """SIGKILL at a moment of the run, `--resume`: the history, the weights and
    the training state are bitwise those of the run that was never killed
    (ops are deterministic on the CPU, the data order and every crop are
    seeded by their place in the stream, and the backup holds the optimizer,
    the dropout generators' states and the callbacks' counters)."""
    run = tmp_path / "run"
    cmd = train_cmd(slow_epoch_data, run)
    if when == "first epoch":
        # config.json is written when the data are loaded, just before the first epoch starts
        started = []

        def ready():
            if (run / "config.json").is_file() and not started:
                started.append(time.time())
            return bool(started) and time.time() - started[0] > 1.0

        kill_when(cmd, ready)
        assert history_rows(run) == 0 and not (run / "backup" / "state.json").exists()
    else:
        kill_when(cmd, lambda: history_rows(run) >= 2)
        assert 2 <= history_rows(run) < EPOCHS
    assert not (run / "model.weights.h5").exists()
    committed = json.loads((run / "backup" / "state.json").read_text())["latest"]["epoch"] if history_rows(run) else 0

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(run, uninterrupted)
    # it trained only what was left (a run that started over would end the same, deterministically)
    trained = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", done.stdout, re.MULTILINE)]
    assert trained == list(range(committed + 1, EPOCHS + 1)), done.stdout[-2000:]
    if committed:
        assert f"resuming after epoch {committed} of {EPOCHS}" in done.stdout

    # the optimizer's step count came back: the logged rates follow the warm-up + cosine schedule
    import keras

    steps = len(pd.read_csv(slow_epoch_data / "training_files.csv")) // 4  # last partial batch dropped
    schedule = keras.optimizers.schedules.CosineDecay(0.0, EPOCHS * steps - steps, warmup_target=1e-3,
                                                      warmup_steps=steps)
    expected = [float(schedule((e + 1) * steps)) for e in range(EPOCHS)]
    np.testing.assert_allclose(pd.read_csv(run / "history.csv")["learning_rate"], expected, rtol=1e-4, atol=1e-9)


def test_resume_of_a_finished_run_says_so_and_a_larger_epochs_trains_on(slow_epoch_data, uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = (run / "model.weights.h5").read_bytes()
    again = subprocess.run(train_cmd(slow_epoch_data, run) + ["--resume"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"is finished (all {EPOCHS} epochs done" in again.stdout and "larger --epochs" in again.stdout
    assert (run / "model.weights.h5").read_bytes() == before
    assert history_rows(run) == EPOCHS

    more = subprocess.run(train_cmd(slow_epoch_data, run, EPOCHS + 1) + ["--resume"], capture_output=True,
                          text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-3000:]
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(EPOCHS + 1))
    assert (run / "model.weights.h5").read_bytes() != before


def test_resume_refuses_an_option_that_contradicts_the_run(slow_epoch_data, uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    cmd = train_cmd(slow_epoch_data, run) + ["--resume", "--image-size", "64"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "--image-size [64, 64] contradicts the run being resumed" in refused.stderr
    assert "model.image_size = [32, 32]" in refused.stderr and "Traceback" not in refused.stderr


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


def compiled_backup(tiny_run, run_dir, keep_previous=False):
    """A reloaded model with an optimizer, early stopping and the run's backup callback."""
    import keras

    from vit_flowers.callbacks import make_backup

    model, _ = load_run(tiny_run)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    early_stopping = keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=True)
    backup = make_backup(run_dir, early_stopping, None, keep_previous)
    for callback in (early_stopping, backup):
        callback.set_model(model)
    early_stopping.on_train_begin()
    return model, early_stopping, backup


def end_epoch(early_stopping, backup, epoch, loss):
    early_stopping.on_epoch_end(epoch, {"loss": loss})
    backup.on_epoch_end(epoch, {"loss": loss})


def backup_predictions(run_dir, state, tiny_run, x):
    model, _ = load_run(tiny_run)
    model.load_weights(str(run_dir / "backup" / state.latest.weights))
    return model.predict(x, verbose=0)


def test_kill_while_writing_the_backup_keeps_the_previous_epochs_state(tiny_run, tmp_path, monkeypatch):
    """The backup of the weights is large; a kill while it is written, or
    after it is written and before the state naming it is committed, must
    leave the last epoch's state and files whole."""
    from vit_flowers import atomic
    from vit_flowers.rundir import read_state

    run = tmp_path / "run"
    model, early_stopping, backup = compiled_backup(tiny_run, run)
    end_epoch(early_stopping, backup, 0, 1.0)  # a good backup after the first epoch
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)

    kill_the_next_weight_write(model, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        end_epoch(early_stopping, backup, 1, 0.5)
    monkeypatch.undo()
    state = read_state(run)
    assert state.latest.epoch == 1 and state.latest.best_epoch == 0
    np.testing.assert_array_equal(backup_predictions(run, state, tiny_run, x), before)
    assert sorted(p.name for p in (run / "backup").iterdir()) == ["epoch-00001.weights.h5", "state.json"]

    # killed between the weights file's rename and the commit of state.json
    original = atomic.write_json

    def killed_commit(path, data):
        raise KeyboardInterrupt(f"killed before writing {path}")

    monkeypatch.setattr(atomic, "write_json", killed_commit)
    with pytest.raises(KeyboardInterrupt):
        end_epoch(early_stopping, backup, 1, 0.5)
    monkeypatch.setattr(atomic, "write_json", original)
    state = read_state(run)
    assert state.latest.epoch == 1  # the orphan epoch-00002 file is not named by the state
    np.testing.assert_array_equal(backup_predictions(run, state, tiny_run, x), before)
    end_epoch(early_stopping, backup, 1, 0.5)  # the next commit drops what no state names
    assert read_state(run).latest.epoch == 2 and read_state(run).latest.best_epoch == 1
    assert sorted(p.name for p in (run / "backup").iterdir()) == ["epoch-00002.weights.h5", "state.json"]


def test_the_backup_keeps_the_best_epochs_weights_beside_the_last(tiny_run, tmp_path):
    from vit_flowers.rundir import read_state

    run = tmp_path / "run"
    model, early_stopping, backup = compiled_backup(tiny_run, run)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    end_epoch(early_stopping, backup, 0, 0.5)
    best = model.predict(x, verbose=0)
    model.layers[-1].set_weights([w * 0 for w in model.layers[-1].get_weights()])
    end_epoch(early_stopping, backup, 1, 0.9)  # worse: epoch 0 stays the best
    state = read_state(run)
    assert (state.latest.epoch, state.latest.best_epoch, state.latest.early_stopping["wait"]) == (2, 0, 1)
    assert sorted(p.name for p in (run / "backup").iterdir()) == [
        "epoch-00001.weights.h5", "epoch-00002.weights.h5", "state.json"]
    fresh, _ = load_run(tiny_run)
    fresh.load_weights(str(run / "backup" / state.latest.best_weights))
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), best)


def test_processes_killed_on_either_side_of_a_backup_resume_at_one_epoch(tiny_run, tmp_path):
    """Several processes: one kept epoch 2's backup, another was killed before
    writing it. All go back to epoch 1, the one holding 2 through the previous
    state it kept."""
    from vit_flowers.errors import ConfigError
    from vit_flowers.rundir import align_state, read_state

    run = tmp_path / "ahead"
    model, early_stopping, backup = compiled_backup(tiny_run, run, keep_previous=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    end_epoch(early_stopping, backup, 0, 1.0)
    after_first = model.predict(x, verbose=0)
    model.layers[-1].set_weights([w * 0 for w in model.layers[-1].get_weights()])
    end_epoch(early_stopping, backup, 1, 2.0)
    state = read_state(run)
    assert (state.latest.epoch, state.previous.epoch) == (2, 1)

    stepped = align_state(run, state, lambda mine: [mine, 1])
    assert stepped.latest.epoch == 1 and read_state(run).latest.epoch == 1
    np.testing.assert_array_equal(backup_predictions(run, stepped, tiny_run, x), after_first)

    assert align_state(run, stepped, lambda mine: [mine, mine]) is stepped  # agreeing processes keep theirs
    backup.state = stepped
    end_epoch(early_stopping, backup, 1, 2.0)
    end_epoch(early_stopping, backup, 2, 2.0)  # now epoch 3, the previous one 2
    with pytest.raises(ConfigError, match="at epoch 3, another process's at 1"):
        align_state(run, read_state(run), lambda mine: [mine, 1])  # two epochs apart: nothing to go back to
    assert read_state(run).latest.epoch == 3
    assert align_state(run, read_state(run), lambda mine: [mine, 0]) is None  # one never finished an epoch
    assert not (run / "backup").exists()


def test_same_seed_gives_the_same_predictions(synthetic_data, tiny_run, tmp_path):
    from vit_flowers.train import TrainOptions, train_run

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv")
    train_run(cfg, tmp_path / "again", TrainOptions(verbose=0))
    first, _ = load_run(tiny_run)
    second, _ = load_run(tmp_path / "again")
    x = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(first.predict(x, verbose=0), second.predict(x, verbose=0))
    np.testing.assert_array_equal(pd.read_csv(tiny_run / "history.csv")["loss"],
                                  pd.read_csv(tmp_path / "again" / "history.csv")["loss"])


def test_ctrl_c_says_how_to_resume_and_that_command_finishes_the_run(slow_epoch_data, uninterrupted, tmp_path):
    import shlex

    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(slow_epoch_data, run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    deadline = time.time() + 240
    while history_rows(run) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    hint = stderr.strip().splitlines()[-1]
    assert hint.startswith(f"interrupted; continue with: {sys.executable} ") and hint.endswith(" --resume"), hint
    done = subprocess.run(shlex.split(hint.split("continue with: ", 1)[1]), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(run, uninterrupted)
