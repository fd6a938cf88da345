"""The inspection shapes as a use of the whole package: prepare, train,
predict, and attention that lands on the defect."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vit_flowers import cli
from vit_flowers.attention import explainer_for
from vit_flowers.filelists import read_file_list
from vit_flowers.images import load_images
from vit_flowers.model import load_run


@pytest.mark.slow  # a minute of training to 90%; the inspection set itself: test_inspection.py
def test_tiny_vit_learns_inspection_and_looks_at_the_defect(tmp_path):
    data, run, pred = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    assert cli.main(["prepare", "--source", "inspection", "--out", str(data), "--per-class", "60",
                     "--image-size", "64", "--test-fraction", "0.25"]) == 0
    assert cli.main(["train", "--train-list", str(data / "training_files.csv"), "--model", "tiny",
                     "--image-size", "64", "--epochs", "30", "--optimizer", "adamw", "--lr-schedule", "cosine",
                     "--warmup-epochs", "1", "--learning-rate", "0.001", "--augment", "none",
                     "--batch-size", "16", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["class_names"] == ["errorA", "errorB", "normal"]
    assert cli.main(["predict", "--run", str(run), "--list", str(data / "testing_files.csv"), "--out", str(pred)]) == 0
    accuracy = json.loads((pred / "metrics.json").read_text())["accuracy"]
    assert accuracy >= 0.90, accuracy

    model, cfg = load_run(run)
    test = read_file_list(data / "testing_files.csv", cfg.model.class_names)
    defects = pd.read_csv(data / "images" / "defects.csv")
    defects["file_name"] = defects["file"].map(lambda f: f.split("/")[-1])
    errors = test.merge(defects.dropna(subset=["x0"]), on="file_name")
    assert len(errors) == 30
    images = load_images(errors["path"].tolist(), tuple(cfg.model.image_size), progress=False).images
    maps = explainer_for(model).class_rollout(images)  # for the predicted class
    ratios = []
    for mask, (_, row) in zip(maps.mask, errors.iterrows()):
        box = np.zeros(mask.shape, bool)
        box[int(row.y0):int(row.y1), int(row.x0):int(row.x1)] = True
        ratios.append((mask[box].sum() / mask.sum()) / box.mean())  # 1.0 is what a uniform map gives
    ratios = np.array(ratios)
    assert ratios.mean() > 1.2, ratios
    assert (ratios > 1).mean() >= 0.8, ratios
