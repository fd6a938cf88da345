"""`vit_flowers.train.train_run` in this process: what a run does with its
options and its run dir. A resume that has nothing left to train, one killed
after its last backup, one whose pretrained file is gone, and a run over
several replicas (the kill-and-resume tests in test_reliability.py train in a
subprocess; these show the same paths to mutation testing)."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import CLASS_NAMES, list_with_a_broken_file, tiny_run_config, write_flax_npz
from vit_flowers.config import RunConfig
from vit_flowers.datasets import array_dataset
from vit_flowers.distribute import DistributionEnv
from vit_flowers.errors import BadInputError, ConfigError
from vit_flowers.model import build_backbone, load_run, model_config
from vit_flowers.rundir import read_state
from vit_flowers.train import TrainOptions, compile_model, load_list, train_run


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, RunConfig.load(copy / "config.json")


def _weights(run) -> list[np.ndarray]:
    return load_run(run)[0].get_weights()


def _assert_same_arrays(mine: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def _batch_norms(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _kept_validation_loss(run, cfg: RunConfig, batch: int, full_batches_only: bool) -> float:
    """The loss of the run's kept weights on its validation list, in batches of
    `batch`: every file, or only the full batches. The list ends in a partial
    batch, so the two differ."""
    x_val, y_val, _ = load_list(cfg.train.val_list, CLASS_NAMES, (32, 32), progress=False)
    assert len(x_val) % batch
    count = len(x_val) // batch * batch if full_batches_only else len(x_val)
    kept, _ = load_run(run)
    compile_model(kept, cfg.train, 1)
    logs = kept.evaluate(array_dataset(x_val[:count], y_val[:count], len(CLASS_NAMES), batch), return_dict=True,
                         verbose=0)
    return logs["loss"]


def test_resuming_a_finished_run_returns_its_result_and_touches_nothing(tiny_run, tmp_path, capsys):
    run, cfg = _copy(tiny_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = train_run(cfg, run, TrainOptions(resume=True, verbose=1))
    assert result.already_finished and result.model is None and result.stopped_early is False
    assert result.run_dir == run
    history = pd.read_csv(run / "history.csv")
    pd.testing.assert_frame_equal(result.history, history)
    assert result.best_epoch == read_state(run).latest.best_epoch == int(history["val_loss"].idxmin())
    # chosen on the validation list the run has (the training loss has other values)
    assert read_state(run).latest.best_value == pytest.approx(history["val_loss"].min(), rel=1e-6)
    assert list(result.skipped.columns) == ["file", "reason"] and result.skipped.empty
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert capsys.readouterr().out == ""  # no epoch trained, no model built
    # one process validates on every file of its list, the last partial batch too
    assert _kept_validation_loss(run, cfg, cfg.train.batch_size, full_batches_only=False) == pytest.approx(
        history.loc[result.best_epoch, "val_loss"], rel=1e-4)


def test_a_run_killed_after_its_last_backup_writes_the_best_epochs_weights_without_training(tiny_run, tmp_path,
                                                                                            capsys):
    """The last epoch's backup was committed, the kept weights not yet written:
    --resume writes the best epoch's weights (not the last epoch's) and fits nothing."""
    run, cfg = _copy(tiny_run, tmp_path)
    state = read_state(run)
    (run / "model.weights.h5").unlink()
    result = train_run(cfg, run, TrainOptions(resume=True, verbose=1))
    out = capsys.readouterr().out
    assert f"resuming after epoch {cfg.train.epochs} of {cfg.train.epochs}" in out and "Epoch " not in out
    assert "Total params" not in out  # the summary only when asked for
    for listed in (cfg.train.train_list, cfg.train.val_list):  # verbose: Keras' bar for each list it loads
        count = len(pd.read_csv(listed))
        assert f"{count}/{count}" in out, out
    assert not result.already_finished and result.best_epoch == state.latest.best_epoch
    _assert_same_arrays(_weights(run), _weights(tiny_run))
    # the best epoch's weights are not the last epoch's, so the test tells them apart
    last = load_run(tiny_run)[0]
    last.load_weights(str(run / "backup" / state.latest.weights), skip_mismatch=True)
    assert any(not np.array_equal(a, b) for a, b in zip(last.get_weights(), _weights(run)))


@pytest.fixture(scope="module")
def npz_run(synthetic_data, tmp_path_factory):
    """One epoch of a tiny model started from a local .npz at a learning rate of
    zero (so the backbone stays the file's); the .npz is removed after it."""
    root = tmp_path_factory.mktemp("npz_run")
    model = model_config("tiny", CLASS_NAMES, 32, num_layers=1, hidden_size=32, mlp_dim=32)
    source = build_backbone(model)
    npz = write_flax_npz(source, root / "start.npz")
    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=2, lr_schedule="constant")
    cfg = replace(cfg, model=replace(model, weights=str(npz)), train=replace(cfg.train, learning_rate=0.0))
    first = train_run(replace(cfg, train=replace(cfg.train, epochs=1)), root / "run", TrainOptions(verbose=0))
    npz.unlink()
    return root / "run", cfg, first, source.get_weights()


def test_a_fresh_run_starts_from_its_pretrained_file(npz_run):
    _, _, first, source = npz_run
    _assert_same_arrays(first.model.layers[0].get_weights(), source)


def test_a_resumed_run_needs_no_pretrained_file_and_trains_only_what_is_left(npz_run, capsys):
    run, cfg, _, _ = npz_run
    result = train_run(cfg, run, TrainOptions(resume=True, verbose=1, summary=True))
    out = capsys.readouterr().out
    assert "resuming after epoch 1 of 2" in out and "Epoch 2/2" in out and "Epoch 1/2" not in out
    assert "Total params" in out  # asked for, on the one process there is
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]
    assert int(result.model.optimizer.iterations) == 2 * (len(pd.read_csv(cfg.train.train_list)) // 16)


class _TwoReplicas:
    """What train_run asks of a tf.distribute strategy, for two replicas on one
    device; counts the times its scope is entered."""

    num_replicas_in_sync = 2

    def __init__(self) -> None:
        self.entered = 0

    @contextlib.contextmanager
    def scope(self):
        self.entered += 1
        yield


def test_two_replicas_double_the_batch_scale_the_rate_and_synchronise_batch_norm(synthetic_data, tmp_path, capsys):
    seen = []
    run = tmp_path / "runs" / "first" / "run"  # folders made as needed

    class First(keras.callbacks.Callback):
        """Runs before the run's own callbacks: the epoch is not logged yet."""

        def on_epoch_end(self, epoch, logs=None):
            log = run / "history.csv"
            seen.append((epoch, log.read_text() if log.is_file() else ""))

    strategy = _TwoReplicas()
    env = DistributionEnv(strategy=strategy, is_chief=True, name="two", first_callbacks=[First()])
    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=1, batch_size=8,
                          lr_schedule="cosine", scale_lr=True)
    result = train_run(cfg, run, TrainOptions(verbose=0, summary=True), env)
    assert "Total params" in capsys.readouterr().out and result.run_dir == run
    assert strategy.entered == 1  # the model built and compiled in the strategy's scope
    count = len(pd.read_csv(cfg.train.train_list))
    steps = count // 16  # global batch 2 x 8
    assert steps >= 2 and int(result.model.optimizer.iterations) == steps
    # the rate scaled by the replicas, on a cosine over the run's steps
    result.model.optimizer.iterations.assign(0)
    assert float(result.model.optimizer.learning_rate) == pytest.approx(2e-3)
    result.model.optimizer.iterations.assign(steps // 2)
    assert float(result.model.optimizer.learning_rate) == pytest.approx(
        1e-3 * (1 + np.cos(np.pi * (steps // 2) / steps)), rel=1e-5)
    assert RunConfig.load(run / "config.json").train.learning_rate == pytest.approx(1e-3)
    norms = _batch_norms(result.model)
    assert len(norms) == 2 and all(layer.synchronized for layer in norms)
    assert seen == [(0, "")] and len(pd.read_csv(run / "history.csv")) == 1


class _OneReplica(_TwoReplicas):
    """A strategy over one device (mirrored on a machine with one GPU)."""

    num_replicas_in_sync = 1


def test_batch_norm_is_synchronised_only_across_a_strategys_replicas(synthetic_data, tmp_path, monkeypatch):
    """One replica has nothing to synchronise with, and processes on several
    hosts without a tf.distribute strategy use Keras' own distribution."""
    from vit_flowers import train as train_module

    class Built(Exception):
        pass

    asked = []

    def build_classifier(mcfg, load_pretrained, sync_batchnorm):
        asked.append(sync_batchnorm)
        raise Built

    monkeypatch.setattr(train_module, "build_classifier", build_classifier)
    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=1, batch_size=8)
    envs = [DistributionEnv(strategy=_OneReplica(), is_chief=True, name="one"),
            DistributionEnv(strategy=_TwoReplicas(), is_chief=True, name="two"),
            DistributionEnv(strategy=None, is_chief=True, name="hosts", num_replicas=2)]
    for number, env in enumerate(envs):
        with pytest.raises(Built):
            train_run(cfg, tmp_path / str(number), TrainOptions(verbose=0), env)
    assert asked == [False, True, False]


def test_hosts_resume_together_at_the_epoch_all_of_them_hold_and_end_as_the_run_never_stopped(synthetic_data,
                                                                                               tmp_path, capsys):
    """Processes on several hosts (Keras' own distribution: no tf.distribute
    strategy, so no synchronised batch norm, and the rate kept): each keeps its
    previous epoch's backup; one killed a step behind the others makes them all
    go back to its epoch, and the run then ends as the one never stopped."""

    def hosts(behind: int | None = None, chief: bool = True) -> DistributionEnv:
        return DistributionEnv(strategy=None, is_chief=chief, name="hosts", num_replicas=2,
                               gather_ints=lambda mine: [mine, mine if behind is None else behind])

    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv", epochs=2,
                          batch_size=4, lr_schedule="constant", patience=100)
    whole = train_run(cfg, tmp_path / "whole", TrainOptions(verbose=0, summary=True), hosts(chief=False))
    assert capsys.readouterr().out == ""  # silent, and the summary is the chief's
    count = len(pd.read_csv(cfg.train.train_list))
    assert int(whole.model.optimizer.iterations) == 2 * (count // 8)  # global batch 2 x 4
    assert float(whole.model.optimizer.learning_rate) == pytest.approx(1e-3)
    norms = _batch_norms(whole.model)
    assert norms and not any(layer.synchronized for layer in norms)
    state = read_state(tmp_path / "whole")
    assert (state.latest.epoch, state.previous.epoch) == (2, 1)
    # equal shards: validation sees only the full global batches of the list
    history = pd.read_csv(tmp_path / "whole" / "history.csv")
    assert _kept_validation_loss(tmp_path / "whole", cfg, 8, full_batches_only=True) == pytest.approx(
        history.loc[state.latest.best_epoch, "val_loss"], rel=1e-4)

    run, _ = _copy(tmp_path / "whole", tmp_path)
    capsys.readouterr()
    train_run(cfg, run, TrainOptions(resume=True, verbose=1), hosts(behind=1))
    out = capsys.readouterr().out
    assert "resuming after epoch 1 of 2" in out and "Epoch 2/2" in out and "Epoch 1/2" not in out
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(tmp_path / "whole" / "history.csv"),
                                  check_exact=True)
    _assert_same_arrays(_weights(run), _weights(tmp_path / "whole"))
    # the same backup: the early-stopping counters came back with the state
    assert (run / "backup" / "state.json").read_text() == (tmp_path / "whole" / "backup" / "state.json").read_text()


def test_a_run_dir_holding_a_run_is_refused_unless_overwritten(tiny_run, tmp_path, capsys):
    """Overwritten here by a streamed run of clean lists: its result is what
    the run dir holds, and it has no skipped file to report."""
    run, cfg = _copy(tiny_run, tmp_path)
    with pytest.raises(BadInputError, match="already holds a run"):
        train_run(cfg, run, TrainOptions(verbose=0))
    assert read_state(run).latest.epoch == cfg.train.epochs  # nothing of it touched
    once = replace(cfg, train=replace(cfg.train, epochs=1))
    result = train_run(once, run, TrainOptions(overwrite=True, stream=True, verbose=0))
    assert capsys.readouterr().out == ""  # not verbose: no bar, no epoch line
    history, state = pd.read_csv(run / "history.csv"), read_state(run)
    assert len(history) == 1 and state.latest.epoch == 1
    assert result.run_dir == run and result.model is not None
    assert not result.already_finished and result.stopped_early is False
    pd.testing.assert_frame_equal(result.history, history)
    assert result.best_epoch == state.latest.best_epoch == 0
    assert list(result.skipped.columns) == ["file", "reason"] and result.skipped.empty
    assert not (run / "skipped_files.csv").exists()


def test_a_model_too_big_for_this_machine_is_refused_before_anything_is_written(synthetic_data, tmp_path,
                                                                                monkeypatch):
    """About 16 bytes a parameter to train: one byte short of that is refused,
    exactly that goes on (here to the list being too short for one batch)."""
    from vit_flowers import config

    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=1, batch_size=4096)
    params = config.estimate_parameters(cfg.model)
    monkeypatch.setattr(config, "machine_memory_bytes", lambda: params * 16 - 1)
    with pytest.raises(ConfigError, match=rf"^model: a model of {params:,} parameters needs about [0-9.]+ GiB to "
                                          r"train; this machine has"):
        train_run(cfg, tmp_path / "run", TrainOptions(verbose=0))
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(config, "machine_memory_bytes", lambda: params * 16)
    with pytest.raises(BadInputError, match="fewer than one batch of 4096"):
        train_run(cfg, tmp_path / "run", TrainOptions(verbose=0))


def test_strict_stops_at_the_first_bad_file_and_cannot_stream(synthetic_data, tmp_path):
    listed = list_with_a_broken_file(synthetic_data, "training_files.csv", tmp_path)
    cfg = tiny_run_config(listed, None, epochs=1)
    with pytest.raises(BadInputError, match=r"^--strict needs the images loaded up front; it cannot be combined "
                                            r"with --stream$"):
        train_run(cfg, tmp_path / "streamed", TrainOptions(strict=True, stream=True, verbose=0))
    broken = tmp_path / "roses" / "broken_training_files.csv.jpg"
    with pytest.raises(BadInputError, match=rf"^{broken}: .+ \(--strict stops at the first bad file\)$"):
        train_run(cfg, tmp_path / "run", TrainOptions(strict=True, verbose=0))
    assert not (tmp_path / "run").exists() and not (tmp_path / "streamed").exists()


def test_the_run_seeds_with_its_seed_and_makes_ops_deterministic_unless_told_not_to(synthetic_data, tmp_path,
                                                                                     monkeypatch):
    import tensorflow as tf

    seeds, determinism = [], []
    monkeypatch.setattr(keras.utils, "set_random_seed", seeds.append)
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: determinism.append("on"))
    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=1, seed=7)
    for deterministic in (True, False):  # --strict with --stream is refused right after seeding
        with pytest.raises(BadInputError, match="^--strict needs"):
            train_run(cfg, tmp_path / "run", TrainOptions(strict=True, stream=True, deterministic=deterministic,
                                                          verbose=0))
    assert seeds == [7, 7] and determinism == ["on"]


def test_a_backup_that_cannot_be_loaded_is_refused_naming_it(tiny_run, tmp_path):
    run, cfg = _copy(tiny_run, tmp_path)
    state = read_state(run)
    (run / "backup" / state.latest.weights).write_bytes(b"\x89HDF half written")
    longer = replace(cfg, train=replace(cfg.train, epochs=cfg.train.epochs + 1))
    with pytest.raises(ConfigError, match=rf"^{run / 'backup'}: the backup cannot be loaded \(.+\); start again "
                                          r"with --overwrite$"):
        train_run(longer, run, TrainOptions(resume=True, verbose=0))
    assert len(pd.read_csv(run / "history.csv")) == cfg.train.epochs  # the history is kept


@pytest.mark.parametrize("has_val, val_loss, loss, best", [
    (True, [0.5, 0.9], [0.9, 0.5], 0),  # the validation loss decides, not the training loss
    (False, [0.5, 0.9], [0.9, 0.5], 1),  # without a validation list, the training loss
    (True, [float("nan")] * 2, [0.9, 0.5], -1),  # nothing to choose by: no best epoch, no curves
    (True, None, [0.9, 0.5], -1),  # no validation column at all: the same
])
def test_the_kept_run_names_its_best_epoch_by_the_monitored_loss_and_draws_its_curves(tiny_run, tmp_path, has_val,
                                                                                     val_loss, loss, best):
    from PIL import Image

    from vit_flowers.train import finalise

    run, cfg = _copy(tiny_run, tmp_path)
    (run / "training_curves.png").unlink()
    history = pd.read_csv(run / "history.csv").assign(loss=loss)
    history = history.drop(columns="val_loss") if val_loss is None else history.assign(val_loss=val_loss)
    history.to_csv(run / "history.csv", index=False)
    model = load_run(tiny_run)[0]
    written, best_epoch = finalise(model, cfg, run, has_val)
    assert best_epoch == best and type(best_epoch) is int
    pd.testing.assert_frame_equal(written, history)
    if best < 0:
        assert not (run / "training_curves.png").exists()
    else:
        with Image.open(run / "training_curves.png") as image:
            assert image.size[0] > 200 and len(set(image.convert("L").getdata())) > 20
    _assert_same_arrays(_weights(run), model.get_weights())


def test_a_run_stopped_early_says_so_and_its_resume_finds_it_finished(synthetic_data, tmp_path, capsys):
    """A callback that ends training after the first epoch (as early stopping
    does): the result and the backup say the run stopped early, and --resume
    has nothing left to train."""

    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    env = DistributionEnv(strategy=None, is_chief=True, name="default", first_callbacks=[StopAfterOne()])
    cfg = tiny_run_config(synthetic_data / "training_files.csv", None, epochs=3)
    result = train_run(cfg, tmp_path / "run", TrainOptions(verbose=1), env)
    out = capsys.readouterr().out
    assert "Epoch 1/3" in out and "resuming" not in out  # a fresh run resumes nothing
    assert result.stopped_early is True and len(result.history) == 1
    assert read_state(tmp_path / "run").latest.stopped_early is True
    again = train_run(cfg, tmp_path / "run", TrainOptions(resume=True, verbose=0))
    assert again.already_finished and again.stopped_early is True
