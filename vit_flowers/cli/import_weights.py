"""`vit-flowers import-weights`: the post's saved Keras 2 weights (test_model.h5) as a run dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ARCHITECTURES, DEFAULT_CLASS_NAMES, ModelConfig, RunConfig, TrainConfig, model_config
from ..errors import EXIT_OK, BadInputError
from ..options import add_settings, values_from
from ..outputs import claim_output_dir
from .common import add_shared

# the architecture's numbers a file may have been trained with, declared by ModelConfig as for train
ARCHITECTURE_OVERRIDES = ("image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")


def add_import_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers import-weights`."""
    p.add_argument("weights", type=Path, metavar="POST.h5",
                   help="legacy Keras HDF5 weights of the post's Sequential model (model.save_weights('x.h5') "
                        "with vit-keras 0.1 on tf.keras)")
    add_shared(p, "--out", "import-weights")
    p.add_argument("--class-names", default=",".join(DEFAULT_CLASS_NAMES),
                   help="comma-separated class names in the order of the model's outputs")
    p.add_argument("--model", default="b16", choices=sorted(ARCHITECTURES),
                   help="the architecture the file was trained with (the post: b16)")
    add_settings(p, ModelConfig, only=ARCHITECTURE_OVERRIDES)  # the input size and shape it was trained with
    p.add_argument("--overwrite", action="store_true", help="replace a run dir that holds a model")


def run_import(args: argparse.Namespace) -> int:
    # local: the checks' modules (h5py, pandas) load once the options are parsed, and the engine (TensorFlow)
    # once every option and file is checked, so bad input is refused before TensorFlow starts
    from ..legacy_weights import import_weights, legacy_class_count
    from ..rundir import CONFIG_FILE

    if not args.weights.is_file():
        raise BadInputError(f"{args.weights}: no such file")
    names = [c.strip() for c in args.class_names.split(",") if c.strip()]
    classes = legacy_class_count(args.weights)
    if classes != len(names):
        raise BadInputError(f"{args.weights} predicts {classes} classes, --class-names names {len(names)} "
                            f"({', '.join(names)}); give its class names in output order")
    overrides = values_from(ModelConfig, args, only=ARCHITECTURE_OVERRIDES)
    size = overrides.pop("image_size", None)
    size = None if size is None else (list(size) * 2)[:2]  # one side: a square
    # the post's head: Keras' default BatchNormalization momentum and tensorflow-addons' (tanh) gelu
    mcfg = model_config(args.model, names, size, "none", head_bn_momentum=0.99, head_gelu="tanh", **overrides)
    if (args.out / CONFIG_FILE).exists() and not args.overwrite:
        raise BadInputError(f"{args.out} already holds a model ({CONFIG_FILE}); pass --overwrite to replace it")
    with claim_output_dir(args.out, "import-weights") as claim:
        out = claim.folder

        from ..model import build_classifier, save_run  # TensorFlow starts here

        model = build_classifier(mcfg, load_pretrained=False)
        import_weights(model, args.weights, args.model)
        save_run(model, RunConfig(model=mcfg, train=TrainConfig(optimizer="adam", learning_rate=1e-4, seed=123)),
                 out)
    print(f"run dir: {out} ({args.weights} as model {args.model!r}, {mcfg.image_size[0]}x{mcfg.image_size[1]}, "
          f"classes {', '.join(names)})")
    print(f"predict with: vit-flowers predict --run {out} --images PHOTOS --out OUT")
    return EXIT_OK
