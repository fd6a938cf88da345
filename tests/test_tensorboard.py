"""`train` writes TensorBoard logs under RUN/logs/ (Keras' own callback): loss,
accuracy, validation metrics and the learning rate per epoch; a resumed run
continues the same log; `--no-tensorboard` writes none."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from vit_flowers import cli


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {epoch: value} of every event file under `folder`."""
    import tensorflow as tf

    found: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # not the model's config, written once
                    found[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return dict(found)


def train(synthetic_data: Path, run: Path, *extra: str) -> int:
    return cli.main(["train", "--train-list", str(synthetic_data / "training_files.csv"), "--val-list",
                     str(synthetic_data / "testing_files.csv"), "--model", "tiny", "--image-size", "32",
                     "--num-layers", "1", "--hidden-size", "16", "--mlp-dim", "16", "--num-heads", "2",
                     "--batch-size", "16", "--learning-rate", "1e-3", "--lr-schedule", "cosine", "--no-report",
                     "--out", str(run), *extra])


def test_train_logs_every_epoch_for_tensorboard_and_resume_continues_the_log(synthetic_data, tmp_path):
    import pandas as pd

    run = tmp_path / "run"
    assert train(synthetic_data, run, "--epochs", "1") == 0
    first = scalars(run / "logs" / "train")
    assert set(first) >= {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert all(sorted(first[tag]) == [0] for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"))
    validation = scalars(run / "logs" / "validation")
    assert sorted(validation["epoch_loss"]) == [0] and sorted(validation["epoch_accuracy"]) == [0]

    assert train(synthetic_data, run, "--epochs", "2", "--resume") == 0
    both = scalars(run / "logs" / "train")
    assert sorted(both["epoch_loss"]) == [0, 1]  # the same log, continued at the second epoch
    assert both["epoch_loss"][0] == first["epoch_loss"][0]  # the first as it was
    history = pd.read_csv(run / "history.csv")
    assert [both["epoch_loss"][k] for k in range(2)] == pytest.approx(history["loss"].tolist(), rel=1e-6)
    assert [both["epoch_learning_rate"][k] for k in range(2)] == pytest.approx(history["learning_rate"].tolist())
    assert sorted(scalars(run / "logs" / "validation")["epoch_accuracy"]) == [0, 1]
    # turning the log off on --resume contradicts the run: refused naming the option
    assert train(synthetic_data, run, "--epochs", "3", "--resume", "--no-tensorboard") == 2


def test_no_tensorboard_writes_no_logs(synthetic_data, tmp_path):
    run = tmp_path / "run"
    assert train(synthetic_data, run, "--epochs", "1", "--no-tensorboard") == 0
    assert (run / "history.csv").exists() and not (run / "logs").exists()
    assert '"tensorboard": false' in (run / "config.json").read_text()  # a resumed run keeps the choice
