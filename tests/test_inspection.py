"""Tests for vit_flowers.primer.inspection (seed note 001): shapes, sets, errors, mosaic CSV."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from vit_flowers.primer import inspection as ins

ROOT = Path(__file__).resolve().parents[1]


def notes_drawing() -> np.ndarray:
    """The note's drawing code, copied as an independent oracle."""
    im2 = Image.new("RGB", (500, 500), (13, 77, 13))
    draw = ImageDraw.Draw(im2)
    draw.ellipse((40, 40, 160, 160), fill=(255, 10, 50), outline=(0, 0, 0))
    draw.ellipse((340, 40, 460, 160), fill=(255, 50, 10), outline=(0, 0, 0))
    draw.ellipse((40, 340, 160, 460), fill=(255, 10, 50), outline=(0, 0, 0))
    draw.ellipse((340, 340, 460, 460), fill=(255, 50, 10), outline=(0, 0, 0))
    draw.line((50, 100, 150, 100), fill=(10, 130, 250), width=30)
    draw.line((100, 50, 100, 150), fill=(10, 130, 250), width=30)
    draw.line((350, 400, 450, 400), fill=(40, 80, 250), width=30)
    draw.line((400, 350, 400, 450), fill=(40, 80, 250), width=30)
    draw.rectangle((150, 150, 350, 350), fill=(50, 250, 10), outline=(0, 0, 0))
    draw.line((200, 200, 300, 300), fill=(50, 10, 250), width=60)
    draw.line((300, 200, 200, 300), fill=(50, 10, 250), width=60)
    draw.chord((30, 200, 130, 300), start=30, end=270, fill=(200, 55, 200), outline=(0, 0, 0))
    draw.chord((370, 200, 470, 300), start=120, end=360, fill=(200, 55, 200), outline=(0, 0, 0))
    draw.chord((200, 30, 300, 130), start=30, end=270, fill=(200, 55, 200), outline=(0, 0, 0))
    draw.chord((200, 370, 300, 470), start=120, end=360, fill=(200, 55, 200), outline=(0, 0, 0))
    return np.asarray(im2)


# (y, x) -> colour, read off the note's coordinates
KNOWN_PIXELS = {
    (250, 250): (50, 10, 250),  # centre X
    (0, 0): (13, 77, 13),  # background corners
    (499, 499): (13, 77, 13),
    (0, 499): (13, 77, 13),
    (70, 70): (255, 10, 50),  # top-left circle, off its cross
    (100, 400): (255, 50, 10),  # top-right circle centre
    (400, 100): (255, 10, 50),  # bottom-left circle centre
    (100, 100): (10, 130, 250),  # top-left cross
    (400, 400): (40, 80, 250),  # bottom-right cross
    (170, 250): (50, 250, 10),  # square, off the X
    (250, 50): (200, 55, 200),  # left chord
    (80, 250): (200, 55, 200),  # top chord
}


def test_standard_image_is_the_notes_drawing():
    std = np.asarray(ins.standard_image())
    assert std.shape == (500, 500, 3) and std.dtype == np.uint8
    np.testing.assert_array_equal(std, notes_drawing())
    for (y, x), colour in KNOWN_PIXELS.items():
        assert tuple(std[y, x]) == colour, (y, x)


def test_standard_jpeg_keeps_the_colours(tmp_path):
    ins.write_inspection_set(tmp_path, ins.InspectionCounts(1, 0, 0, 0, 0), csv=False)
    jpg = ins.read_rgb_uint8(tmp_path / "image_standard.jpg").astype(int)
    for (y, x), colour in KNOWN_PIXELS.items():
        assert np.abs(jpg[y, x] - colour).max() <= 12, (y, x)
    # quality 95: same quantisation tables as a fresh quality-95 save
    buf = io.BytesIO()
    ins.standard_image().save(buf, format="JPEG", quality=95)
    with Image.open(tmp_path / "image_standard.jpg") as a, Image.open(buf) as b:
        assert a.quantization == b.quantization


def test_default_counts_and_file_names(tmp_path):
    assert ins.InspectionCounts() == ins.InspectionCounts(1, 50, 10, 10, 10)
    df = ins.write_inspection_set(tmp_path, seed=0)
    expected = {"image_standard"}
    expected |= {f"learn/image_base_fluctuate_{i}" for i in range(50)}
    expected |= {f"normal/image_normal_{i}" for i in range(10)}
    expected |= {f"error/image_errorA_{i}" for i in range(10)}
    expected |= {f"error/image_errorB_{i}" for i in range(10)}
    jpgs = {p.relative_to(tmp_path).with_suffix("").as_posix() for p in tmp_path.rglob("*.jpg")}
    csvs = {p.relative_to(tmp_path).with_suffix("").as_posix() for p in tmp_path.rglob("image_*.csv")}
    assert jpgs == expected and csvs == expected
    assert len(df) == 81
    assert df["label"].value_counts().to_dict() == {"learn": 50, "normal": 10, "errorA": 10,
                                                    "errorB": 10, "standard": 1}
    table = pd.read_csv(tmp_path / "defects.csv")
    assert list(table["file"]) == list(df["file"])


def test_fluctuations_differ_from_standard_but_stay_close():
    std = np.asarray(ins.standard_image()).astype(int)
    images = [np.asarray(ins.normal_image(np.random.default_rng(i))).astype(int) for i in range(4)]
    for img in images:
        changed = np.abs(img - std).max(axis=-1) > 60
        assert 0.01 < changed.mean() < 0.2  # shapes moved a little
        assert np.abs(img.mean(axis=(0, 1)) - std.mean(axis=(0, 1))).max() < 6  # same colours overall
    assert np.abs(images[0] - images[1]).max() > 0  # seeds give different images
    again = np.asarray(ins.normal_image(np.random.default_rng(0))).astype(int)
    np.testing.assert_array_equal(again, images[0])  # and the same seed the same one


@pytest.mark.parametrize("kind,parts", [("errorA", ins.ERROR_A_PARTS), ("errorB", ins.ERROR_B_PARTS)])
@pytest.mark.parametrize("size", [500, 64])
def test_error_differs_from_normal_inside_the_defect_box(kind, parts, size):
    std = np.asarray(ins.standard_image(size)).astype(int)
    for i, part in enumerate(parts):
        normal = np.asarray(ins.normal_image(np.random.default_rng(i), size)).astype(int)
        img, defect = ins.error_image(kind, np.random.default_rng(i), size, part=part)
        err = np.asarray(img).astype(int)
        x0, y0, x1, y1 = defect.box
        assert defect.kind == kind and defect.part == part
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert (x1 - x0) * (y1 - y0) < 0.15 * size * size
        inside = np.zeros((size, size), bool)
        inside[y0:y1, x0:x1] = True
        diff = np.abs(err - normal).sum(axis=-1)  # same fluctuation, only the defect differs
        assert diff[inside].mean() > 60
        assert diff[inside].mean() > 20 * diff[~inside].mean()
        # against the standard (different fluctuation) the defect still stands out
        diff_std = np.abs(err - std).sum(axis=-1)
        assert diff_std[inside].mean() > 2 * diff_std[~inside].mean()


def test_random_error_choice_is_seeded():
    a = [ins.error_image("errorB", np.random.default_rng(i), 64)[1] for i in range(20)]
    b = [ins.error_image("errorB", np.random.default_rng(i), 64)[1] for i in range(20)]
    assert a == b
    assert len({d.part for d in a}) > 3


# --- mosaic ----------------------------------------------------------------------------------

def test_mosaic_csv_is_30x30_gray_levels(tmp_path):
    ins.write_inspection_set(tmp_path, ins.InspectionCounts(1, 1, 0, 1, 1))
    for csv in tmp_path.rglob("image_*.csv"):
        arr = np.loadtxt(csv, delimiter=",")
        assert arr.shape == (30, 30)
        assert arr.min() >= 0 and arr.max() <= 255 and np.all(arr == np.round(arr))
        assert len(np.unique(arr)) > 3
    std = np.loadtxt(tmp_path / "image_standard.csv", delimiter=",")
    assert std[0, 0] == round(0.299 * 13 + 0.587 * 77 + 0.114 * 13)  # background gray


def test_nearest_indices_are_cv2_formula():
    idx = ins.nearest_indices(500, 0.06)
    assert len(idx) == 30
    np.testing.assert_array_equal(idx, np.floor(np.arange(30) / 0.06).astype(int))


def test_mosaic_equals_cv2(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    # index mapping, several sizes and ratios, on images of unique values
    for n, ratio in [(500, 0.06), (64, 0.06), (333, 0.06), (500, 0.1), (224, 0.13)]:
        src = rng.integers(0, 256, size=(n, n + 7, 3), dtype=np.uint8)
        small = cv2.resize(src, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_NEAREST)
        rows, cols = ins.nearest_indices(n, ratio), ins.nearest_indices(n + 7, ratio)
        np.testing.assert_array_equal(src[rows][:, cols], small)
    # gray levels on random colours
    rgb = rng.integers(0, 256, size=(200_000, 1, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ins.gray_cv2(rgb), cv2.cvtColor(rgb[..., ::-1].copy(), cv2.COLOR_BGR2GRAY))
    # the note's whole pipeline on the written JPEGs
    df = ins.write_inspection_set(tmp_path, ins.InspectionCounts(1, 2, 1, 2, 2), seed=3)
    for f in df["file"]:
        src = cv2.imread(f)
        small = cv2.resize(src, None, fx=0.06, fy=0.06, interpolation=cv2.INTER_NEAREST)
        expected = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        ours = np.loadtxt(Path(f).with_suffix(".csv"), delimiter=",")
        assert ours.shape == expected.shape == (30, 30)
        np.testing.assert_array_equal(ours, expected)


# --- training classes -----------------------------------------------------------------------

def test_write_inspection_classes(tmp_path):
    df = ins.write_inspection_classes(tmp_path / "cls", n_per_class=5, image_size=64, seed=1)
    assert list(df.columns[:6]) == ["file", "label", "x0", "y0", "x1", "y1"]
    assert df["label"].value_counts().to_dict() == {"normal": 5, "errorA": 5, "errorB": 5}
    for label in ("normal", "errorA", "errorB"):
        files = sorted((tmp_path / "cls" / label).glob("*.jpg"))
        assert len(files) == 5
        with Image.open(files[0]) as img:
            assert img.size == (64, 64)
    assert set(map(Path, df["file"])) == set((tmp_path / "cls").rglob("*.jpg"))
    normal = df[df["label"] == "normal"]
    errors = df[df["label"] != "normal"]
    assert normal[["x0", "y0", "x1", "y1"]].isna().all().all()
    assert errors[["x0", "y0", "x1", "y1"]].notna().all().all()
    assert (errors["x0"] < errors["x1"]).all() and (errors["y1"] <= 64).all()
    saved = pd.read_csv(tmp_path / "cls" / "defects.csv")
    assert list(saved["file"]) == list(df["file"])
    assert saved.loc[normal.index, "x0"].isna().all()
    np.testing.assert_array_equal(saved.loc[errors.index, "x1"].to_numpy(), errors["x1"].to_numpy(int))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_inspection_script(tmp_path, capsys):
    script = load_script("make_inspection")
    assert script.main(["--out", str(tmp_path / "a"), "--counts", "1", "2", "1", "1", "1", "--seed", "4"]) == 0
    assert (tmp_path / "a" / "learn" / "image_base_fluctuate_1.csv").exists()
    assert (tmp_path / "a" / "error" / "image_errorB_0.jpg").exists()
    assert script.main(["--out", str(tmp_path / "b"), "--classes", "2", "--size", "64"]) == 0
    assert len(list((tmp_path / "b" / "errorA").glob("*.jpg"))) == 2
    assert script.main(["--out", str(tmp_path / "c"), "--size", "0"]) == 2
    assert "--size" in capsys.readouterr().err
