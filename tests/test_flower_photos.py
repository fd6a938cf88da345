"""The real photos beside the project (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vit_flowers import cli
from vit_flowers.filelists import read_file_list, scan_class_folders, write_file_lists
from vit_flowers.images import load_images

from conftest import CLASS_NAMES


def test_real_photos_split_load_and_predict(flower_photos, tiny_run, tmp_path):
    rows = scan_class_folders(flower_photos)
    assert sorted(rows["type_dir"].unique()) == CLASS_NAMES
    lists = write_file_lists(rows, tmp_path, 0.2, seed=0)
    train_csv, test_csv = lists["train"], lists["test"]
    test = read_file_list(test_csv, CLASS_NAMES)
    assert len(test) == round(len(rows) * 0.2)
    sample = test.groupby("label").head(4)
    loaded = load_images(sample["path"].tolist(), (224, 224), progress=False)
    assert loaded.images.shape == (20, 224, 224, 3) and loaded.skipped.empty
    assert loaded.images.std() > 20  # real photos, not blank arrays

    photos = tmp_path / "photos"
    for name in CLASS_NAMES:
        (photos / name).mkdir(parents=True)
        for f in sorted((flower_photos / name).iterdir())[:2]:
            (photos / name / f.name).symlink_to(f)
    out = tmp_path / "pred"
    assert cli.main(["predict", "--run", str(tiny_run), "--images", str(photos), "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 10
    probs = table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


def test_the_shipped_model_scores_at_least_0_70_on_the_photos_it_never_saw(flower_photos, tmp_path):
    """The default model (no --run) on the 250 photos its training kept out
    (the stratified split with seed 0, as models/flowers-vit-small/COMMAND.md)."""
    import json

    test_csv = write_file_lists(scan_class_folders(flower_photos), tmp_path, 0.2, seed=0)["test"]
    out = tmp_path / "pred"
    assert cli.main(["predict", "--list", str(test_csv), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 250
    assert metrics["accuracy"] >= 0.70
    assert min(c["recall"] for c in metrics["per_class"].values()) >= 0.5  # no class given up on
