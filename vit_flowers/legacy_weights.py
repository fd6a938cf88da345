"""Bring in weights the source post saved: a legacy Keras 2 HDF5 file of its
Sequential model (`model.save_weights('./files/test_model.h5')` with
vit-keras 0.1.x on `tf.keras`).

Such a file holds one group per layer of the Sequential (the ViT backbone,
then the head's Flatten, BatchNormalization, Dense, BatchNormalization,
Dense), each listing its arrays by Keras 2 name, for example
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel:0`.
Keras 3 and vit-keras 0.2.0 name the same arrays with `_` where a layer name
held `/`, and nest each encoder block's two Dense layers under `MlpBlock_3`.
The import matches every array by name (never by position: two arrays of one
shape, such as a LayerNorm's gamma and beta, would silently swap) and
refuses a file in which any array has no place, or a place no array, naming
the first that differs.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from .errors import ConfigError

# the kinds of the head's layers with weights after the backbone, in order
HEAD = ("BatchNormalization", "Dense(21, gelu)", "BatchNormalization", "Dense(classes, softmax)")


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_legacy_file(path: str | Path) -> tuple[dict[str, np.ndarray], list[list[tuple[str, np.ndarray]]]]:
    """(backbone arrays by name, the head's layers as [(array name, values)]) of
    a legacy Keras HDF5 weights file of the post's Sequential."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ConfigError(f"{path}: not a readable HDF5 weights file ({err})") from err
    with f:
        group = f["model_weights"] if "model_weights" in f else f  # a whole-model .h5 keeps them there
        if "layer_names" not in group.attrs:
            raise ConfigError(f"{path}: not a legacy Keras weights file (no layer_names); a Keras 3 "
                              f"'.weights.h5' belongs in a run dir as model.weights.h5")
        layers = []
        for name in map(_decode, group.attrs["layer_names"]):
            names = [_decode(n) for n in group[name].attrs.get("weight_names", [])]
            layers.append((name, [(n, np.asarray(group[name][n])) for n in names]))
    weighted = [(name, arrays) for name, arrays in layers if arrays]
    if len(weighted) != 1 + len(HEAD):
        found = ", ".join(name for name, _ in weighted)
        raise ConfigError(f"{path}: {len(weighted)} layers with weights ({found}); the post's model has "
                          f"{1 + len(HEAD)}: the ViT backbone, then BatchNormalization, Dense, BatchNormalization, "
                          f"Dense")
    (_, backbone), head = weighted[0], [arrays for _, arrays in weighted[1:]]
    return {backbone_key(name): values for name, values in backbone}, head


def backbone_key(name: str) -> str:
    """One name for a backbone array in either Keras: the Keras 2 name
    ('Transformer/encoderblock_0/Dense_0/kernel:0') and the Keras 3 path
    ('Transformer_encoderblock_0/MlpBlock_3/Transformer_encoderblock_0_Dense_0/kernel') both give
    'Transformer_encoderblock_0/Dense_0/kernel'."""
    name = re.sub(r":\d+$", "", name)
    name = re.sub(r"^Transformer/", "Transformer_", name)
    return re.sub(r"/MlpBlock_3/Transformer_encoderblock_\d+_(Dense_\d+)/", r"/\1/", name)


def import_weights(model, path: str | Path, arch: str) -> None:
    """Set `model` (the package's classifier) to the weights of the legacy
    file at `path`; refuse, naming the first array that differs, a file of
    another architecture or head."""
    path = Path(path)
    arrays, head = read_legacy_file(path)
    backbone = model.layers[0]
    targets = {backbone_key(v.path): v for v in backbone.weights}
    # in the order a reader checks them: the arrays both have but in other shapes (in the file's order, the
    # patch embedding first), then the ones only one side has
    problems = [f"{k} has shape {arrays[k].shape} in the file, {tuple(targets[k].shape)} in model {arch!r}"
                for k in arrays if k in targets and arrays[k].shape != tuple(targets[k].shape)]
    problems += [f"{k} is in the file but not in model {arch!r}" for k in arrays if k not in targets]
    problems += [f"model {arch!r} has {k}, which the file lacks" for k in targets if k not in arrays]
    head_layers = [layer for layer in model.layers[1:] if layer.weights]
    for kind, layer, saved in zip(HEAD, head_layers, head):
        by_name = {re.sub(r":\d+$", "", n).rsplit("/", 1)[-1]: values for n, values in saved}
        for variable in layer.weights:
            short = variable.path.rsplit("/", 1)[-1]
            if short not in by_name:
                problems.append(f"the head's {kind} has {short}, which the file's {layer.name} lacks")
            elif by_name[short].shape != tuple(variable.shape):
                problems.append(f"the head's {kind} {short} has shape {by_name[short].shape} in the file, "
                                f"{tuple(variable.shape)} in the model")
    if problems:
        raise ConfigError(f"{path} does not fit model {arch!r}: {problems[0]}; {len(problems)} difference(s) in all "
                          f"(give the --model, --image-size and sizes the file was trained with)")
    for key, variable in targets.items():
        variable.assign(arrays[key])
    for layer, saved in zip(head_layers, head):
        by_name = {re.sub(r":\d+$", "", n).rsplit("/", 1)[-1]: values for n, values in saved}
        for variable in layer.weights:
            variable.assign(by_name[variable.path.rsplit("/", 1)[-1]])


def legacy_class_count(path: str | Path) -> int:
    """How many classes the file's last Dense predicts."""
    _, head = read_legacy_file(path)
    kernel = dict((re.sub(r":\d+$", "", n).rsplit("/", 1)[-1], v) for n, v in head[-1])["kernel"]
    return int(kernel.shape[-1])
