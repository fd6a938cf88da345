"""Property-based tests: whatever folder, list or config a user hands the
commands, they exit 0 or 2, print no traceback, account for every input
file once and write nothing outside --out.

Bounded for `make test` (about two minutes in all); set
VIT_FLOWERS_FUZZ_EXAMPLES to run more examples per property, for example
`VIT_FLOWERS_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import CLASS_NAMES
from vit_flowers import cli
from vit_flowers.filelists import IMAGE_SUFFIXES

EXAMPLES = int(os.environ.get("VIT_FLOWERS_FUZZ_EXAMPLES", "0"))
# each example runs a command (a second or so), so the bounded run does not shrink a failure: it reports
# the example as drawn; a long run (VIT_FLOWERS_FUZZ_EXAMPLES) shrinks it too
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES == 0,
                phases=list(Phase) if EXAMPLES else [Phase.explicit, Phase.reuse, Phase.generate])


def examples(default: int):
    return settings(FUZZ, max_examples=EXAMPLES or default)


def _encoded(fmt: str, **kwargs) -> bytes:
    rng = np.random.default_rng(len(fmt))
    image = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# whole image files of every format the package reads; prefixes of them are truncated files
IMAGES = {"JPEG": _encoded("JPEG", quality=90), "PNG": _encoded("PNG"), "GIF": _encoded("GIF"),
          "WEBP": _encoded("WEBP"), "BMP": _encoded("BMP"), "TIFF": _encoded("TIFF")}

name_bytes = st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_"))
suffixes = st.sampled_from(sorted(IMAGE_SUFFIXES) + [".JPG", ".Png", ".txt", ""])
contents = st.one_of(
    st.sampled_from(sorted(IMAGES)).map(lambda fmt: ("bytes", IMAGES[fmt])),
    st.tuples(st.sampled_from(sorted(IMAGES)), st.floats(0, 1)).map(
        lambda t: ("bytes", IMAGES[t[0]][: int(len(IMAGES[t[0]]) * t[1])])),
    st.binary(max_size=3000).map(lambda b: ("bytes", b)),
    st.sampled_from([("symlink", "target"), ("symlink", "nowhere"), ("symlink", "self"), ("folder", None),
                     ("fifo", None)]),
)
entries = st.lists(st.tuples(st.sampled_from(["", "roses", "tulips", "unknown"]), name_bytes, suffixes, contents),
                   min_size=0, max_size=8)


def _make(folder: Path, entries) -> list[str]:
    """Create the entries; return the paths (as the CLI shows them) of those
    named as images, which the command must account for."""
    expected, target = [], None
    for sub, name, suffix, (kind, payload) in entries:
        parent = folder / sub if sub else folder
        if os.path.lexists(parent) and not parent.is_dir():
            continue  # a file took the class folder's name
        parent.mkdir(exist_ok=True)
        raw = os.fsencode(parent) + b"/" + name + suffix.encode()
        path = Path(os.fsdecode(raw))
        if name in (b".", b"..") or os.path.lexists(raw):
            continue
        if kind == "bytes":
            with open(raw, "wb") as f:
                f.write(payload)
            target = target or path
        elif kind == "symlink":
            link = {"target": str(target or folder / "missing.jpg"), "nowhere": "no/such/file.jpg",
                    "self": path.name}[payload]
            os.symlink(link, raw)
        elif kind == "folder":
            os.mkdir(raw)
        else:
            os.mkfifo(raw)
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            expected.append(str(path))
    return expected


def _snapshot(root: Path) -> dict[str, int]:
    """Every entry under `root` with its size (folders 0), links not followed."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            seen[path] = info.st_size if stat.S_ISREG(info.st_mode) else 0
    return seen


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, encoding_errors="surrogateescape")


def _assert_clean_exit(code: int, stderr: str) -> None:
    assert code in (0, 2), stderr
    assert "Traceback" not in stderr and "error: unexpected" not in stderr, stderr
    if code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr


@pytest.fixture(scope="module")
def fuzz_run(tiny_run, tmp_path_factory) -> Path:
    return tiny_run


@examples(25)
@given(entries=entries)
def test_predict_on_any_folder_accounts_for_every_file(fuzz_run, entries):
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        images = root / "in"
        images.mkdir()
        expected = _make(images, entries)
        before = _snapshot(root)
        out = root / "out"
        code, stderr = _run(["predict", "--run", str(fuzz_run), "--images", str(images), "--out", str(out)])
        _assert_clean_exit(code, stderr)
        after = {p: s for p, s in _snapshot(root).items() if not p.startswith(str(out))}
        assert after == before  # nothing written, moved or removed outside --out
        if not expected:
            assert code == 2 and "no image files found" in stderr
            return
        predictions_file = out / "predictions.csv"
        predicted = _csv(predictions_file)["file"].tolist() if predictions_file.exists() else []
        skipped_file = out / "skipped_files.csv"
        skipped = _csv(skipped_file) if skipped_file.exists() else pd.DataFrame(columns=["file", "reason"])
        # some image predicted: a success; none (every file unreadable): bad input, the reasons
        # kept and no empty table written
        assert code == (0 if predicted else 2), stderr
        assert predicted or ("could be read" in stderr and not predictions_file.exists() and skipped_file.exists())
        assert (skipped["reason"].str.len() > 0).all()
        accounted = predicted + skipped["file"].tolist()
        assert sorted(accounted) == sorted(expected)  # each once: predicted or skipped with a reason
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ lists
cells = st.one_of(st.text(max_size=12), st.sampled_from(CLASS_NAMES + ["", "roses/x", "..", "daisy_and_tulips"]))


@examples(20)
@given(header=st.permutations(["base_path", "type_dir", "file_name"]).map(list) | st.lists(cells, max_size=4),
       rows=st.lists(st.tuples(cells, cells, cells), max_size=6), bom=st.booleans(), crlf=st.booleans(),
       use_real=st.booleans())
def test_predict_on_any_file_list_exits_0_or_2(fuzz_run, synthetic_data, header, rows, bom, crlf, use_real):
    root = Path(tempfile.mkdtemp(prefix="fuzz-list-"))
    try:
        real = pd.read_csv(synthetic_data / "testing_files.csv").head(2) if use_real else None
        lines = [",".join(header)] + [",".join(row) for row in rows]
        if real is not None and header == ["base_path", "type_dir", "file_name"]:
            lines += [f"{synthetic_data / b},{t},{f}" for b, t, f in real.itertuples(index=False)]
        text = ("\r\n" if crlf else "\n").join(lines) + "\n"
        listing = root / "list.csv"
        listing.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogateescape"))
        out = root / "out"
        code, stderr = _run(["predict", "--run", str(fuzz_run), "--list", str(listing), "--out", str(out)])
        _assert_clean_exit(code, stderr)
        if code == 0:
            table = _csv(out / "predictions.csv")
            skipped = _csv(out / "skipped_files.csv") if (out / "skipped_files.csv").exists() else []
            assert len(table) + len(skipped) == len(lines) - 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ configs
MODEL_KEYS = ["arch", "image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "dropout",
              "class_names", "representation_size", "head_units", "head_bn_momentum", "weights", "stem",
              "head_gelu", "no_such_key"]
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**63, 2**63), st.floats(allow_nan=True),
    st.sampled_from([1e9, 1e40, -1.0, 0.5, 5.0, math.inf]), st.text(max_size=8),
    st.lists(st.integers(-4, 64), max_size=3), st.lists(st.text(max_size=5), max_size=6),
)


@examples(20)
@given(changes=st.lists(st.tuples(st.sampled_from(["model", "train", "top"]), st.sampled_from(MODEL_KEYS + [
    "epochs", "batch_size", "learning_rate", "format_version"]), json_values | st.just("<delete>")), min_size=1,
    max_size=3))
def test_predict_with_any_edited_config_exits_0_or_2(fuzz_run, synthetic_data, changes):
    root = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
    try:
        run = root / "run"
        shutil.copytree(fuzz_run, run)
        config = json.loads((run / "config.json").read_text())
        for section, key, value in changes:
            target = config if section == "top" else config.setdefault(section, {})
            if not isinstance(target, dict):
                continue
            if value == "<delete>":
                target.pop(key, None)
            else:
                target[key] = value
        (run / "config.json").write_text(json.dumps(config))  # NaN and Infinity as Python writes them
        image = next((synthetic_data / "images").rglob("*.jpg"))
        code, stderr = _run(["predict", "--run", str(run), "--images", str(image), "--out", str(root / "out")])
        _assert_clean_exit(code, stderr)
        if code == 0:
            assert len(_csv(root / "out" / "predictions.csv")) == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
