"""Faithfulness of attention maps: RISE curves, their AUC, baselines, boxes, pointing and the tables."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import CLASS_NAMES
from vit_flowers import faithfulness as fa
from vit_flowers.boxes import read_boxes
from vit_flowers.errors import BadInputError

PATCH = 8
GRID = (3, 4)  # non-square: 24 x 32 pixel photos, 12 patches
KEY = (1, 2)  # the one patch the oracle model looks at


# ------------------------------------------------------------ helpers
def photos(seed: int, n: int) -> np.ndarray:
    """Random uint8 photos with a black/white checkerboard in the KEY patch."""
    out = (np.random.default_rng(seed).random((n, GRID[0] * PATCH, GRID[1] * PATCH, 3)) * 255).astype(np.uint8)
    r, c = KEY
    out[:, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = 255 * checker()[None, ..., None]
    return out


def checker() -> np.ndarray:
    """(PATCH, PATCH) 0/1 checkerboard."""
    return (np.add.outer(np.arange(PATCH), np.arange(PATCH)) % 2).astype(np.uint8)


class OracleModel:
    """Class 0's probability depends on the KEY patch's checkerboard contrast only (which deleting
    or blurring the patch removes); counts its calls and the inputs it sees."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
        self.calls += 1
        self.seen += len(x)
        r, c = KEY
        sign = 2.0 * checker() - 1.0
        contrast = (x[:, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH].mean(axis=-1) * sign).mean(axis=(1, 2))
        p = 1.0 / (1.0 + np.exp(-30.0 * (contrast - 0.5)))
        return np.stack([p, 1.0 - p], axis=1)


def oracle_maps(n: int) -> np.ndarray:
    """The KEY patch highest, the rest lower, all distinct."""
    maps = np.tile(np.linspace(0.0, 0.5, GRID[0] * GRID[1]).reshape(GRID), (n, 1, 1))
    maps[:, KEY[0], KEY[1]] = 1.0
    return maps


def linear_softmax(seed: int, classes: int = 3):
    """A model that every pixel moves: softmax of a random linear map."""
    weights = np.random.default_rng(seed).normal(size=(GRID[0] * PATCH * GRID[1] * PATCH * 3, classes)) * 0.05

    def predict(x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1).astype(np.float64) @ weights
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return predict


def reference_curves(predict, image: np.ndarray, values: np.ndarray, steps: int, cls: int) -> dict[str, list]:
    """The slow loop: one photo, one map, every step perturbed patch by patch and predicted alone."""
    x = image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    blurred = fa.blur(image[None])[0].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    grey = np.zeros_like(x)
    flat = values.ravel()
    count = flat.size
    most = sorted(range(count), key=lambda i: (-flat[i], i))
    least = sorted(range(count), key=lambda i: (flat[i], i))
    plans = {"deletion": (most, x, grey), "negative": (least, x, grey), "insertion": (most, blurred, x)}
    out: dict[str, list] = {kind: [] for kind in plans}
    for k in range(steps + 1):
        changed = math.ceil(k * count / steps)
        for kind, (order, start, source) in plans.items():
            img = start.copy()
            for i in order[:changed]:
                r, c = divmod(i, values.shape[1])
                rows, cols = slice(r * PATCH, (r + 1) * PATCH), slice(c * PATCH, (c + 1) * PATCH)
                img[rows, cols] = source[rows, cols]
            out[kind].append(predict(img[None])[0, cls])
    return out


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------ curve pieces
def test_rise_auc_on_hand_made_curves():
    curves = np.array([[0.3] * 5, [1, 0, 0, 0, 0], [1, 0.75, 0.5, 0.25, 0]])
    np.testing.assert_allclose(fa.rise_auc(curves), [0.3, 0.125, 0.5])
    np.testing.assert_allclose(fa.rise_auc(np.array([0.0, 1.0])), 0.5)


def test_patch_order_breaks_ties_by_patch_index():
    maps = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    assert fa.patch_order(maps).tolist() == [[0, 2, 1, 3]]
    assert fa.patch_order(maps, descending=False).tolist() == [[1, 3, 0, 2]]


def test_step_counts_round_up_and_end_at_every_patch():
    assert fa.step_counts(12, 8).tolist() == [0, 2, 3, 5, 6, 8, 9, 11, 12]
    assert fa.step_counts(3, 4).tolist() == [0, 1, 2, 3, 3]
    assert fa.step_counts(196, 16)[-1] == 196


def test_blur_uses_rises_kernel_scaled_to_the_height():
    image = (np.random.default_rng(0).random((1, 224, 224, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(fa.blur(image)[0], cv2.GaussianBlur(image[0], (11, 11), 5))
    small = photos(0, 2)
    out = fa.blur(small)
    assert out.dtype == np.uint8 and out.shape == small.shape
    np.testing.assert_array_equal(out[0], cv2.GaussianBlur(small[0], (3, 3), 1))


# ------------------------------------------------------------ perturbation
def test_oracle_map_is_faithful_random_in_between_and_predict_is_called_in_batches():
    n, steps = 4, 8
    model = OracleModel()
    oracle = oracle_maps(n)
    maps = {"oracle": oracle, "reversed": -oracle, "random": fa.random_maps(n, GRID, seed=3)}
    curves, classes = fa.perturbation_curves(model, photos(1, n), maps, PATCH, steps=steps)
    assert classes.tolist() == [0] * n
    auc = {m: {k: fa.rise_auc(v).mean() for k, v in kinds.items()} for m, kinds in curves.items()}
    assert all(v.shape == (n, steps + 1) for kinds in curves.values() for v in kinds.values())
    assert auc["oracle"]["deletion"] < 1 / steps + 0.01
    assert auc["oracle"]["insertion"] > 1 - 1 / steps - 0.01
    assert auc["oracle"]["negative"] > 1 - 1 / steps - 0.01
    assert auc["reversed"]["deletion"] > 1 - 1 / steps - 0.01
    assert auc["reversed"]["insertion"] < 1 / steps + 0.01
    for kind in ("deletion", "insertion"):
        low, high = sorted([auc["oracle"][kind], auc["reversed"][kind]])
        assert low + 0.1 < auc["random"][kind] < high - 0.1
    # endpoints once per photo (originals, blurred) plus one all-grey input; interiors in full batches
    interior = n * len(maps) * 3 * (steps - 1)
    assert model.seen == 2 * n + 1 + interior
    assert model.calls == 3 + math.ceil(interior / 256)


def test_curves_equal_a_slow_reference_loop():
    predict = linear_softmax(0)
    images = photos(2, 3)
    rng = np.random.default_rng(5)
    maps = {"a": rng.random((3, *GRID)), "b": np.round(rng.random((3, *GRID)) * 3)}  # "b" has ties
    steps = 5
    curves, classes = fa.perturbation_curves(predict, images, maps, PATCH, steps=steps, batch_size=7)
    reference = reference_curves(predict, images[1], maps["b"][1], steps, int(classes[1]))
    for kind, values in reference.items():
        np.testing.assert_allclose(curves["b"][kind][1], values, rtol=1e-10, err_msg=kind)
    # the batch size changes nothing; given classes are followed
    again, _ = fa.perturbation_curves(predict, images, maps, PATCH, steps=steps, batch_size=256)
    for kind in fa.KINDS:
        np.testing.assert_allclose(again["a"][kind], curves["a"][kind], rtol=1e-10)
    forced, used = fa.perturbation_curves(predict, images, maps, PATCH, steps=steps, classes=np.array([2, 2, 2]))
    assert used.tolist() == [2, 2, 2]
    reference = reference_curves(predict, images[0], maps["a"][0], steps, 2)
    np.testing.assert_allclose(forced["a"]["insertion"][0], reference["insertion"], rtol=1e-10)


def test_one_step_gives_the_endpoints_only():
    model = OracleModel()
    curves, _ = fa.perturbation_curves(model, photos(3, 2), {"oracle": oracle_maps(2)}, PATCH, steps=1)
    assert curves["oracle"]["deletion"].shape == (2, 2)
    assert model.seen == 2 * 2 + 1


def test_maps_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="'bad'"):
        fa.perturbation_curves(OracleModel(), photos(0, 2), {"bad": np.zeros((2, 4, 4))}, PATCH)


# ------------------------------------------------------------ baselines and method maps
def test_random_maps_follow_the_seed():
    np.testing.assert_array_equal(fa.random_maps(3, GRID, 1), fa.random_maps(3, GRID, 1))
    assert not np.array_equal(fa.random_maps(3, GRID, 1), fa.random_maps(3, GRID, 2))
    assert fa.random_maps(3, GRID, 1).shape == (3, *GRID)


def test_gaussian_maps_peak_at_the_centre():
    maps = fa.gaussian_maps(2, (5, 9))
    assert maps.shape == (2, 5, 9)
    assert np.unravel_index(maps[0].argmax(), (5, 9)) == (2, 4)
    np.testing.assert_allclose(maps[0, 2, 4 + 2], np.exp(-0.5 * (2 / 2.25) ** 2))  # sigma 9 / 4 across
    np.testing.assert_allclose(maps[1, 2 + 1, 4], np.exp(-0.5 * (1 / 1.25) ** 2))  # sigma 5 / 4 down


@pytest.fixture(scope="module")
def tiny_explainer():
    import keras

    from vit_flowers.attention import explainer_for
    from vit_flowers.model import build_classifier, model_config

    keras.utils.set_random_seed(11)
    cfg = model_config("tiny", ["a", "b", "c"], 32, num_layers=2, hidden_size=32, mlp_dim=64)
    return explainer_for(build_classifier(cfg, load_pretrained=False))


def test_method_maps_on_a_tiny_model(tiny_explainer):
    images = (np.random.default_rng(4).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    maps = fa.method_maps(tiny_explainer, images, seed=2)
    heads = tiny_explainer.num_heads
    expected = {f"rollout-{f}{d}" for f in ("mean", "max", "min") for d in ("", "-discard0.9")}
    expected |= {"class-rollout", "last-layer", "random", "gaussian"} | {f"last-layer-head{h}" for h in range(heads)}
    assert set(maps) == expected
    assert all(v.shape == (3, 4, 4) and v.dtype == np.float64 for v in maps.values())
    np.testing.assert_allclose(np.mean([maps[f"last-layer-head{h}"] for h in range(heads)], axis=0),
                               maps["last-layer"], rtol=1e-12)
    np.testing.assert_allclose(maps["rollout-max"], tiny_explainer.rollout(images, "max").grid, rtol=1e-6)
    np.testing.assert_array_equal(maps["random"], fa.random_maps(3, (4, 4), 2))
    assert not np.allclose(maps["rollout-mean"], maps["rollout-mean-discard0.9"])


# ------------------------------------------------------------ a ViT trained to look at one patch
STRIPED = (0, 3)  # the patch whose stripes decide the class (top right of a 4 x 4 grid, far from the centre)


def striped_photos(seed: int, n: int, absent: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """32 x 32 noise photos whose STRIPED patch has horizontal (class 0) or vertical
    (class 1) stripes; in a share `absent` of them that patch is noise like the rest
    and the target is 50/50. Returns (photos, one-hot or 50/50 targets)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(40, 216, (n, 32, 32, 3)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    stripes = (np.arange(PATCH) % 2 * 200 + 28).astype(np.uint8)
    rows = slice(STRIPED[0] * PATCH, (STRIPED[0] + 1) * PATCH)
    cols = slice(STRIPED[1] * PATCH, (STRIPED[1] + 1) * PATCH)
    x[y == 0, rows, cols] = stripes[:, None, None]
    x[y == 1, rows, cols] = stripes[None, :, None]
    targets = np.eye(2)[y]
    gone = rng.random(n) < absent
    x[gone, rows, cols] = rng.integers(40, 216, (int(gone.sum()), PATCH, PATCH, 3))
    targets[gone] = 0.5
    return x, targets


@pytest.fixture(scope="module")
def one_patch_scores():
    """A tiny ViT of the package trained until its answer is the STRIPED patch's
    stripes and nothing else (without them it says 50/50); every map of
    `method_maps` on 20 new photos, with its RISE curves."""
    import keras

    from vit_flowers.attention import explainer_for
    from vit_flowers.faithfulness_job import predictor
    from vit_flowers.model import build_classifier, model_config

    keras.utils.set_random_seed(4)
    model = build_classifier(model_config("tiny", ["horizontal", "vertical"], 32, num_layers=2, hidden_size=32,
                                          mlp_dim=64), load_pretrained=False)
    x, targets = striped_photos(0, 768, absent=1 / 3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    model.fit(fa._preprocess(x), targets, epochs=10, batch_size=32, verbose=0)
    photos_, targets = striped_photos(1, 20)
    probs = predictor(model)(fa._preprocess(photos_))
    assert (probs.argmax(axis=1) == targets.argmax(axis=1)).all() and probs.max(axis=1).min() > 0.9
    maps = fa.method_maps(explainer_for(model), photos_, seed=0)
    curves, _ = fa.perturbation_curves(predictor(model), photos_, maps, PATCH, steps=16)
    return maps, curves


def test_a_vit_that_looks_at_one_patch_gets_maps_that_rank_it_first(one_patch_scores):
    maps, curves = one_patch_scores
    striped = STRIPED[0] * 4 + STRIPED[1]
    first = {m: float(np.mean(v.reshape(len(v), -1).argmax(axis=1) == striped)) for m, v in maps.items()}
    deletion = {m: float(fa.rise_auc(c["deletion"]).mean()) for m, c in curves.items()}
    insertion = {m: float(fa.rise_auc(c["insertion"]).mean()) for m, c in curves.items()}
    floor = float(curves["random"]["deletion"][:, -1].mean())  # every patch grey: the 50/50 the model learnt
    assert abs(floor - 0.5) < 0.01
    # the package's default map, the rollouts by mean and max and the class map find the patch in every photo,
    # and deleting along them drops the answer to 50/50 at the first step
    for method in ("rollout-mean", "rollout-max", "class-rollout", "last-layer"):
        assert first[method] == 1.0, (method, first[method])
        assert deletion[method] < floor + 0.03, (method, deletion[method])
        assert insertion[method] > 0.95, (method, insertion[method])
    # the baselines do not, and score far from the floor
    assert first["random"] <= 0.1 and first["gaussian"] == 0.0
    assert deletion["random"] > floor + 0.15 and deletion["gaussian"] > floor + 0.15
    # the metric and the truth agree: a map scored near the floor is one that ranks the patch first
    near_floor = {m for m, d in deletion.items() if d < floor + 0.05}
    assert near_floor == {m for m, f in first.items() if f >= 0.9}, (first, deletion)


# ------------------------------------------------------------ localisation
def test_pointing_hits_use_inclusive_exclusive_boxes():
    maps = np.zeros((3, 4, 4))
    maps[:, 2, 3] = 1.0  # the peak at pixel x=3, y=2 (no upsampling at 4 x 4)
    boxes = np.array([[3, 2, 4, 3], [0, 0, 3, 4], [3, 0, 4, 2]])
    assert fa.pointing_hits(maps, boxes, (4, 4)).tolist() == [True, False, False]


def test_pointing_on_an_upsampled_map():
    maps = np.array([[[0.0, 1.0], [0.0, 0.0]]] * 2)
    boxes = np.array([[4, 0, 8, 4], [0, 0, 4, 4]])
    assert fa.pointing_hits(maps, boxes, (8, 8)).tolist() == [True, False]


def test_mass_ratio_on_hand_made_maps():
    # top row of a 2 x 2 map on, upsampled bilinearly to 8 rows: 1, 1, .875, .625 | .375, .125, 0, 0
    maps = np.array([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])
    boxes = np.array([[0, 0, 8, 4], [2, 2, 5, 7], [0, 4, 8, 8]])
    np.testing.assert_allclose(fa.mass_ratio(maps, boxes, (8, 8)), [1.75, 1.0, 0.25])


def test_scale_boxes_to_the_model_size():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 100, 100]])
    scaled = fa.scale_boxes(boxes, np.array([[100, 200], [100, 100]]), (50, 50))
    np.testing.assert_allclose(scaled, [[2.5, 10, 7.5, 20], [0, 0, 50, 50]])


# ------------------------------------------------------------ boxes CSV
def test_read_boxes_matches_exact_paths_and_unique_file_names(tmp_path):
    path = write_csv(tmp_path / "boxes.csv", "file,x0,y0,x1,y1\nroses/a.jpg,1,2,3,4\nb.jpg,0,0,10.5,20\n")
    boxes = read_boxes(path, ["/data/tulips/b.jpg", "roses/a.jpg"])
    np.testing.assert_allclose(boxes, [[0, 0, 10.5, 20], [1, 2, 3, 4]])


@pytest.mark.parametrize("rows, message", [
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\nc.jpg,x,0,5,5\n", "row 3.*x0 is not a number"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\nc.jpg,0,,5,5\n", "row 3.*y0 is not a number"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\nc.jpg,0,-1,5,5\n", "row 3.*y0 is negative"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\nc.jpg,5,0,5,5\n", "row 3.*empty box"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\nc.jpg,0,6,5,5\n", "row 3.*empty box"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\na.jpg,0,0,5,5\n", "row 3.*listed again.*row 1"),
    ("a.jpg,1,2,3,4\nb.jpg,0,0,5,5\n", "no box for photo 'c.jpg'"),
])
def test_read_boxes_names_the_csv_and_the_bad_row(tmp_path, rows, message):
    path = write_csv(tmp_path / "boxes.csv", "file,x0,y0,x1,y1\n" + rows)
    with pytest.raises(BadInputError, match=message) as error:
        read_boxes(path, ["a.jpg", "b.jpg", "c.jpg"])
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_read_boxes_refuses_missing_columns_and_ambiguous_names(tmp_path):
    path = write_csv(tmp_path / "cols.csv", "file,x0,y0,x1\na.jpg,1,2,3\n")
    with pytest.raises(BadInputError, match=r"cols\.csv.*missing column.*y1"):
        read_boxes(path, ["a.jpg"])
    path = write_csv(tmp_path / "twice.csv", "file,x0,y0,x1,y1\nroses/a.jpg,1,2,3,4\ntulips/a.jpg,1,2,3,4\n")
    with pytest.raises(BadInputError, match=r"twice\.csv.*'x/a\.jpg'.*not unique.*rows 1, 2"):
        read_boxes(path, ["x/a.jpg"])


# ------------------------------------------------------------ tables
def test_scores_table_is_photos_major():
    curves = {"m1": {k: np.array([[1, 0, 0], [1, 1, 1]]) for k in fa.KINDS},
              "m2": {k: np.array([[0, 0, 0], [1, 1, 0]]) for k in fa.KINDS}}
    table = fa.scores_table(["p.jpg", "q.jpg"], curves, np.array([1, 0]), ["x", "y"])
    assert table["file"].tolist() == ["p.jpg", "p.jpg", "q.jpg", "q.jpg"]
    assert table["method"].tolist() == ["m1", "m2", "m1", "m2"]
    assert table["predicted"].tolist() == ["y", "y", "x", "x"]
    np.testing.assert_allclose(table["deletion_auc"], [0.25, 0.0, 1.0, 0.75])


def test_summary_table_resamples_the_same_photos_for_every_method():
    rng = np.random.default_rng(0)
    n = 30
    deletion, insertion = rng.random(n), rng.random(n)
    rows = []
    for i in range(n):
        for method, shift in (("a", 0.0), ("b", 0.1)):
            rows.append({"file": f"{i}.jpg", "method": method, "deletion_auc": deletion[i],
                         "insertion_auc": insertion[i] + shift, "negative_auc": 0.5, "pointing": i % 2 == 0,
                         "mass_ratio": 1.0 + shift})
    scores = pd.DataFrame(rows)
    table = fa.summary_table(scores, seed=1, n_boot=200).set_index("method")
    assert table.loc["b", "rank"] == 1 and table.loc["a", "rank"] == 2
    # "b" is "a" plus 0.1 photo by photo: with the same resampled photos its interval is shifted exactly
    for end in ("score_low", "score_high", "insertion_auc_low"):
        assert table.loc["b", end] == pytest.approx(table.loc["a", end] + 0.1)
    assert table.loc["a", "score_low"] < table.loc["a", "score"] < table.loc["a", "score_high"]
    assert table.loc["a", "score"] == pytest.approx((insertion - deletion).mean())
    assert table.loc["a", "pointing"] == pytest.approx(0.5)
    assert table.loc["b", "mass_ratio"] == pytest.approx(1.1)
    # the percentile interval of the means over photo indices drawn by default_rng(seed)
    picks = np.random.default_rng(1).integers(0, n, size=(200, n))
    boot = (insertion - deletion)[picks].mean(axis=1)
    assert table.loc["a", "score_low"] == pytest.approx(np.percentile(boot, 2.5))
    assert table.loc["a", "score_high"] == pytest.approx(np.percentile(boot, 97.5))
    assert fa.summary_table(scores, seed=1, n_boot=200).equals(fa.summary_table(scores, seed=1, n_boot=200))
    assert not fa.summary_table(scores, seed=2, n_boot=200).equals(fa.summary_table(scores, seed=1, n_boot=200))


# ------------------------------------------------------------ the command: plot --faithfulness
def test_read_boxes_skips_rows_without_a_box_but_a_scored_photo_needs_one(tmp_path):
    csv = tmp_path / "defects.csv"
    csv.write_text("file,label,x0,y0,x1,y1\na.jpg,normal,,,,\nb.jpg,errorA,1,2,5,6\n")
    np.testing.assert_array_equal(read_boxes(csv, ["b.jpg"]), [[1, 2, 5, 6]])
    with pytest.raises(BadInputError, match="no box for photo 'a.jpg'"):
        read_boxes(csv, ["a.jpg", "b.jpg"])


@pytest.fixture(scope="module")
def scored(tiny_run, synthetic_data, tmp_path_factory):
    """`plot --faithfulness --boxes` on six synthetic photos: (out dir, the boxes CSV)."""
    from vit_flowers import cli
    from vit_flowers.filelists import read_file_list

    out = tmp_path_factory.mktemp("faithful") / "plot"
    test_list = synthetic_data / "testing_files.csv"
    files = read_file_list(test_list, CLASS_NAMES)["path"].tolist()
    boxes = out.parent / "boxes.csv"
    boxes.write_text("file,x0,y0,x1,y1\n" + "".join(f"{f},4,4,20,20\n" for f in files))
    argv = ["plot", "--run", str(tiny_run), "--list", str(test_list), "--limit", "6", "--faithfulness",
            "--faithfulness-steps", "4", "--boxes", str(boxes), "--out", str(out)]
    assert cli.main(argv) == 0
    return out, boxes


def test_plot_faithfulness_writes_scores_summary_maps_curves_and_a_report_section(scored):
    out, _ = scored
    selection = pd.read_csv(out / "attention_selection.csv")
    scores = pd.read_csv(out / "faithfulness.csv")
    summary = pd.read_csv(out / "faithfulness_summary.csv")
    maps = np.load(out / "faithfulness_maps.npz")
    methods = list(summary["method"])
    assert {"rollout-mean", "class-rollout", "last-layer", "random", "gaussian"} <= set(methods)
    assert len(scores) == len(selection) * len(methods) == 6 * len(methods)
    assert scores["file"].drop_duplicates().tolist() == selection["file"].tolist()  # the CSV's photo order
    assert sorted(maps.files) == sorted(methods) and maps["random"].shape[0] == len(selection)
    assert scores[["deletion_auc", "insertion_auc", "negative_auc"]].stack().between(0, 1).all()
    assert set(scores["pointing"]) <= {0, 1} and scores["mass_ratio"].notna().all()
    assert sorted(summary["rank"]) == sorted(summary["score"].rank(ascending=False, method="min").astype(int))
    image = cv2.imread(str(out / "faithfulness_curves.png"))
    assert image is not None and image.shape[1] > 1000
    page = (out / "report.html").read_text()
    assert 'id="faithfulness"' in page and "class-rollout" in page


def test_the_stored_maps_rescore_to_the_csv(scored, tiny_run):
    """faithfulness_maps.npz is enough to re-score: its maps through the curves give the CSV's AUCs."""
    from vit_flowers.attention import explainer_for
    from vit_flowers.faithfulness_job import predictor
    from vit_flowers.images import load_images
    from vit_flowers.model import load_run

    out, _ = scored
    model, config = load_run(tiny_run)
    files = pd.read_csv(out / "attention_selection.csv")["file"].tolist()
    images = load_images(files, tuple(config.model.image_size), progress=False).images
    maps = dict(np.load(out / "faithfulness_maps.npz"))
    curves, classes = fa.perturbation_curves(predictor(model), images, {"class-rollout": maps["class-rollout"]},
                                             explainer_for(model).patch_size, 4)
    scores = pd.read_csv(out / "faithfulness.csv").query("method == 'class-rollout'")
    np.testing.assert_allclose(fa.rise_auc(curves["class-rollout"]["deletion"]), scores["deletion_auc"], atol=1e-4)


@pytest.mark.parametrize("row, message", [
    ("{f},4,4,x,20", "row 2 .*x1 is not a number"),
    ("{f},4,4,2,20", "row 2 .*empty box"),
])
def test_a_bad_boxes_row_exits_2_with_one_line_naming_it(scored, tiny_run, synthetic_data, tmp_path, capsys,
                                                         row, message):
    from vit_flowers import cli

    _, good = scored
    lines = good.read_text().splitlines()
    bad = tmp_path / "boxes.csv"
    first = lines[2].split(",")[0]
    bad.write_text("\n".join([lines[0], lines[1], row.format(f=first), *lines[3:]]) + "\n")
    argv = ["plot", "--run", str(tiny_run), "--list", str(synthetic_data / "testing_files.csv"), "--faithfulness",
            "--boxes", str(bad), "--out", str(tmp_path / "plot")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0], err
    assert re.search(message, err[0]), err
    assert not (tmp_path / "plot").exists()


def test_boxes_without_faithfulness_is_refused(tiny_run, synthetic_data, tmp_path, capsys):
    from vit_flowers import cli

    boxes = tmp_path / "b.csv"
    boxes.write_text("file,x0,y0,x1,y1\n")
    argv = ["plot", "--run", str(tiny_run), "--list", str(synthetic_data / "testing_files.csv"),
            "--boxes", str(boxes), "--out", str(tmp_path / "plot")]
    assert cli.main(argv) == 2
    assert "--faithfulness" in capsys.readouterr().err


def test_more_steps_than_patches_is_refused_from_the_config_before_the_model_loads(tiny_run, synthetic_data,
                                                                                    tmp_path, capsys, monkeypatch):
    from vit_flowers import cli, comparison

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(comparison, "plot_comparison", never)
    patches = 16  # the tiny run: 32 px in 8 px patches
    argv = ["plot", "--run", str(tiny_run), "--list", str(synthetic_data / "testing_files.csv"), "--faithfulness",
            "--faithfulness-steps", str(patches + 1), "--out", str(tmp_path / "plot")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --faithfulness-steps {patches + 1}: between 1 and the model's {patches} patches"], err
    assert not (tmp_path / "plot").exists()
