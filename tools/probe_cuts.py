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
CS = (0.01, 0.1, 1.0)


def probed_cuts() -> list[str]:
    """The cuts from the shallowest hybrid stem's to the deepest the shipped weights hold."""
    from vit_flowers.config import HYBRID_STEMS
    from vit_flowers.efficientnet_lite import CUTS, WEIGHTS_CUT

    first = min(CUTS.index(cut) for cut in HYBRID_STEMS.values())
    return list(CUTS[first:CUTS.index(WEIGHTS_CUT) + 1])


def feature_model(size: int):
    """The frozen ImageNet CNN with one globally averaged output per probed cut."""
    import keras

    from vit_flowers import efficientnet_lite as lite

    cnn = lite.efficientnet_lite0((size, size, 3), include_top=False, cut=lite.WEIGHTS_CUT)
    lite.load_imagenet_weights(cnn)
    outputs = {}
    for cut in probed_cuts():
        # the layer that ends the model cut there (same names in both), found without restating block numbers
        last = lite.efficientnet_lite0((size, size, 3), include_top=False, cut=cut).layers[-1].name
        outputs[cut] = keras.layers.GlobalAveragePooling2D()(cnn.get_layer(last).output)
    return keras.Model(cnn.input, outputs)


def pooled_features(probe, files: list[str], size: int) -> dict:
    """{cut: (N, channels)} of `probe` (`feature_model`) on the photos `files`."""
    import numpy as np

    from vit_flowers.efficientnet_lite import preprocess
    from vit_flowers.errors import BadInputError
    from vit_flowers.images import load_images

    images = load_images(files, (size, size), progress=False)
    if len(images.skipped):
        first = images.skipped.iloc[0]
        raise BadInputError(f"{first['file']}: {first['reason']} ({len(images.skipped)} photos could not be read)")
    features = probe.predict(preprocess(images.images), batch_size=64, verbose=0)
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

    from vit_flowers.errors import BadInputError
    from vit_flowers.filelists import read_file_list

    try:
        classes = sorted(read_file_list(args.split / "training_files.csv", [], require_labels=False)["type_dir"]
                         .unique())
        lists = {name: read_file_list(args.split / f"{name}_files.csv", classes) for name in ("training", "validation")}
        probe = feature_model(args.image_size)
        train, val = (pooled_features(probe, lists[name]["path"].tolist(), args.image_size)
                      for name in ("training", "validation"))
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    y_train, y_val = (lists[name]["label"].to_numpy() for name in ("training", "validation"))
    for cut in train:
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
