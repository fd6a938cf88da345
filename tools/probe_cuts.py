"""How much each cut of the shipped EfficientNet-Lite0 knows about the flowers:
a linear probe, before any hybrid is trained.

    .venv/bin/python tools/probe_cuts.py --image-size 160

For each cut a hybrid stem may take (stage5: stride 16, stage6 and stage7:
stride 32), the frozen CNN with the shipped ImageNet weights turns every
photo of a split's training and validation lists into its globally pooled
feature vector; a logistic regression (scikit-learn, a development
dependency) is fitted on the training photos and scored on the validation
photos, its regularisation C the best of 0.01, 0.1 and 1 there. No
augmentation, no fine-tuning, and the test list is never read, so a probe
can choose a stem without spending the test photos. Prints one line per cut:
validation accuracy and the lowest class recall.

models/README.md ("Why stride 32") gives what it printed for the committed
split: 0.735 at stage5 and 0.888 at stage7 at 160 px.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLIT = REPO / "models" / "flowers-vit-small" / "split"
CUTS = {"stage5": 10, "stage6": 14, "stage7": 15}  # cut -> its last block, whose output the probe pools
CS = (0.01, 0.1, 1.0)


def read_list(path: Path) -> tuple[list[str], list[str]]:
    """(files, class names) of a list `prepare` wrote, paths resolved against the list's folder."""
    import pandas as pd

    rows = pd.read_csv(path)
    files = [str((path.parent / base / kind / name).resolve())
             for base, kind, name in zip(rows.base_path, rows.type_dir, rows.file_name)]
    return files, list(rows.type_dir)


def pooled_features(files: list[str], size: int) -> dict:
    """{cut: (N, channels) globally averaged features} of the frozen ImageNet CNN."""
    import keras
    import numpy as np

    from vit_flowers import efficientnet_lite as lite
    from vit_flowers.images import load_images

    cnn = lite.efficientnet_lite0((size, size, 3), include_top=False, cut=lite.WEIGHTS_CUT)
    lite.load_imagenet_weights(cnn)
    outputs = {}
    for cut, block in CUTS.items():
        layer = cnn.get_layer(f"blocks.{block}._add" if cut != "stage7" else f"blocks.{block}._bn2")
        outputs[cut] = keras.layers.GlobalAveragePooling2D()(layer.output)
    probe = keras.Model(cnn.input, outputs)
    images = load_images(files, (size, size), progress=False)
    if len(images.skipped):
        raise SystemExit(f"{len(images.skipped)} photos could not be read, first: {images.skipped.iloc[0].tolist()}")
    features = probe.predict(lite.preprocess(images.images), batch_size=64, verbose=0)
    return {cut: np.asarray(value) for cut, value in features.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=160, help="square input size in pixels (default: 160)")
    parser.add_argument("--split", type=Path, default=SPLIT,
                        help="folder with training_files.csv and validation_files.csv (default: the committed split)")
    args = parser.parse_args(argv)
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_files, train_names = read_list(args.split / "training_files.csv")
    val_files, val_names = read_list(args.split / "validation_files.csv")
    classes = sorted(set(train_names))
    y_train = np.array([classes.index(n) for n in train_names])
    y_val = np.array([classes.index(n) for n in val_names])
    train, val = pooled_features(train_files, args.image_size), pooled_features(val_files, args.image_size)
    for cut in CUTS:
        scaler = StandardScaler().fit(train[cut])
        best = None
        for c in CS:
            guess = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(train[cut]), y_train) \
                .predict(scaler.transform(val[cut]))
            accuracy = float(np.mean(guess == y_val))
            recall = min(float(np.mean(guess[y_val == k] == k)) for k in range(len(classes)))
            if best is None or accuracy > best[0]:
                best = (accuracy, recall, c)
        accuracy, recall, c = best
        print(f"{args.image_size} px {cut}: validation accuracy {accuracy:.3f}, lowest recall {recall:.2f} (C={c})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
