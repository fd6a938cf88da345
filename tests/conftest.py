"""Shared fixtures: small synthetic data, a tiny trained run dir, the real photos."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FLOWER_PHOTOS = REPO.parent / "shared" / "flower_photos"
CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


@pytest.fixture(scope="session")
def flower_photos() -> Path:
    """The real photos beside the project; tests using them skip when absent."""
    if not (FLOWER_PHOTOS / "daisy").is_dir():
        pytest.skip(f"needs the real flower photos (class folders daisy ... tulips) at {FLOWER_PHOTOS}, "
                    f"which is absent on this machine")
    return FLOWER_PHOTOS


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A data dir with 12 synthetic flowers per class and its two lists."""
    from vit_flowers.filelists import write_file_lists
    from vit_flowers.synthetic import write_synthetic_flowers

    out = tmp_path_factory.mktemp("synthetic")
    rows = write_synthetic_flowers(out / "images", n_per_class=12, size=32, seed=1)
    write_file_lists(rows, out, test_fraction=0.25, seed=0)
    return out


def tiny_run_config(train_list: Path, val_list: Path | None, epochs: int = 2, image_size: int = 32, batch_size: int = 16,
                    **train):
    from vit_flowers.config import RunConfig, TrainConfig
    from vit_flowers.model import model_config

    return RunConfig(
        model=model_config("tiny", CLASS_NAMES, image_size, num_layers=2, hidden_size=32, mlp_dim=64),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=1e-3, train_list=str(train_list),
                          val_list=str(val_list) if val_list else "", **train),
    )


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test session, however many pytest-xdist
    workers share it (xdist's own recipe: the first worker builds it under a
    file lock, the others wait, then read it). Tests only read it; a test
    that changes a run dir copies it first."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / "built" / name, root / "built" / f"{name}.done"
    folder.parent.mkdir(exist_ok=True)
    with FileLock(str(root / "built" / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(synthetic_data, tmp_path_factory) -> Path:
    """A run dir trained for two epochs on the synthetic lists, trained once
    for every test worker. With VIT_FLOWERS_TEST_TINY_RUN set (mutation
    testing of modules other than training), a copy of that run dir instead,
    so that each mutant's tests do not train it again."""
    from vit_flowers.train import TrainOptions, train_run

    if os.environ.get("VIT_FLOWERS_TEST_TINY_RUN"):
        run_dir = tmp_path_factory.mktemp("run") / "tiny"
        shutil.copytree(os.environ["VIT_FLOWERS_TEST_TINY_RUN"], run_dir)
        return run_dir
    # the lists of this worker's synthetic_data: the same drawn images in every worker (seeded)
    cfg = tiny_run_config(synthetic_data / "training_files.csv", synthetic_data / "testing_files.csv")
    return built_once(tmp_path_factory, "tiny", lambda run_dir: train_run(cfg, run_dir, TrainOptions(verbose=0)))


def list_with_a_broken_file(synthetic_data: Path, source: str, folder: Path, classes=None) -> Path:
    """A copy of a synthetic list (of `classes` only) with an unreadable roses file at its end."""
    import pandas as pd

    rows = pd.read_csv(synthetic_data / source)
    rows["base_path"] = [str(synthetic_data / base) for base in rows["base_path"]]
    if classes:
        rows = rows[rows["type_dir"].isin(classes)]
    (folder / "roses").mkdir(parents=True, exist_ok=True)
    (folder / "roses" / f"broken_{source}.jpg").write_bytes(b"not an image")
    rows = pd.concat([rows, pd.DataFrame([{"base_path": str(folder), "type_dir": "roses",
                                           "file_name": f"broken_{source}.jpg"}])], ignore_index=True)
    listed = folder / source
    rows.to_csv(listed, index=False)
    return listed


def write_flax_npz(backbone, path: Path) -> Path:
    """Export a vit_keras backbone's weights in the Flax key layout of the
    released ViT .npz files (the layout `vit_keras.utils.load_weights_numpy` reads)."""
    params: dict[str, np.ndarray] = {}

    def put(prefix: str, names: list[str], layer, shapes=None):
        for k, (name, value) in enumerate(zip(names, layer.get_weights())):
            params[f"{prefix}/{name}"] = value if shapes is None else value.reshape(shapes[k])

    put("embedding", ["kernel", "bias"], backbone.get_layer("embedding"))
    params["cls"] = backbone.get_layer("class_token").get_weights()[0]
    params["Transformer/posembed_input/pos_embedding"] = backbone.get_layer("Transformer_posembed_input").get_weights()[0]
    put("Transformer/encoder_norm", ["scale", "bias"], backbone.get_layer("Transformer_encoder_norm"))
    blocks = [layer for layer in backbone.layers if layer.name.startswith("Transformer_encoderblock_")]
    for i, block in enumerate(blocks):
        prefix = f"Transformer/encoderblock_{i}"
        put(f"{prefix}/LayerNorm_0", ["scale", "bias"], block.layernorm1)
        put(f"{prefix}/LayerNorm_2", ["scale", "bias"], block.layernorm2)
        for d in (0, 1):
            dense = block.mlpblock.get_layer(f"{prefix.replace('/', '_')}_Dense_{d}")
            put(f"{prefix}/MlpBlock_3/Dense_{d}", ["kernel", "bias"], dense)
        heads = block.att.num_heads
        hidden = block.att.hidden_size
        head_dim = hidden // heads
        for name, layer in (("query", block.att.query_dense), ("key", block.att.key_dense),
                            ("value", block.att.value_dense)):
            put(f"{prefix}/MultiHeadDotProductAttention_1/{name}", ["kernel", "bias"], layer,
                [(hidden, heads, head_dim), (heads, head_dim)])
        put(f"{prefix}/MultiHeadDotProductAttention_1/out", ["kernel", "bias"], block.att.combine_heads,
            [(heads, head_dim, hidden), (hidden,)])
    np.savez(path, **params)
    return path
