"""The `vit-flowers` command: prepare, train, predict, plot, demo.

Every subcommand exits 0 when done, 1 on a failure and 2 on bad input
(the message names the file, row or value).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from .errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK, BadInputError



def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


# ---------------------------------------------------------------- prepare
def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="synthetic",
                   help="'synthetic' (procedural flowers), 'inspection' (shapes: normal, errorA, errorB), "
                        "'download' (the flower_photos archive) or a folder of class subfolders")
    p.add_argument("--out", required=True, type=Path, help="data dir for training_files.csv and testing_files.csv")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of each class kept for testing")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of generated images")
    p.add_argument("--per-class", type=int, default=120, help="images per class for generated sources")
    p.add_argument("--image-size", type=int, default=64, help="side in pixels of generated images")


def run_prepare(args: argparse.Namespace) -> int:
    from .data_sources import source_rows
    from .filelists import class_names_of, write_file_lists

    rows = source_rows(args.source, args.out, args.per_class, args.image_size, args.seed)
    train, test = write_file_lists(rows, args.out, args.test_fraction, args.seed)
    print(f"{len(rows)} images in classes {class_names_of(rows)}")
    print(f"wrote {train} and {test}")
    return EXIT_OK


# ---------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser) -> None:
    from .datasets import AUGMENTATIONS
    from .model import ARCHITECTURES, STEMS
    from .train import LR_SCHEDULES, OPTIMIZERS

    g = p.add_argument_group("data")
    g.add_argument("--train-list", type=Path, help="training list CSV (base_path,type_dir,file_name)")
    g.add_argument("--val-list", type=Path, help="validation list CSV; early stopping and the best epoch use it")
    g.add_argument("--class-names", default="auto",
                   help="comma-separated class names in label order, or 'auto' for the sorted type_dir "
                        "values of the training list")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny", choices=sorted(ARCHITECTURES),
                   help="ViT architecture: b16/b32/l16/l32 as vit_keras, tiny/small from scratch for a CPU")
    g.add_argument("--image-size", type=int, nargs="+", metavar="PX",
                   help="input side (or HEIGHT WIDTH); default: the architecture's own")
    g.add_argument("--weights", default="none",
                   help="backbone weights: imagenet21k+imagenet2012, imagenet21k, none, or a path to a .npz")
    for name, kind in (("patch-size", int), ("hidden-size", int), ("num-layers", int), ("num-heads", int),
                       ("mlp-dim", int), ("dropout", float)):
        g.add_argument(f"--{name}", type=kind, help=f"override the architecture's {name.replace('-', ' ')}")
    g.add_argument("--stem", choices=STEMS, default="patch",
                   help="patch: vit_keras' patch embedding; conv: 3x3 stride-2 convolutions to the same token "
                        "grid (patch size a power of two; helps from-scratch training on small data sets)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=10, help="maximum number of epochs")
    g.add_argument("--batch-size", type=int, default=32, help="images per batch on each replica")
    g.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate (the seed's Adam 1e-4)")
    g.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="optimizer")
    g.add_argument("--weight-decay", type=float, default=0.0, help="decoupled weight decay for adamw")
    g.add_argument("--lr-schedule", default="plateau", choices=LR_SCHEDULES,
                   help="plateau: ReduceLROnPlateau; cosine: warm-up then cosine decay; constant")
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up length for the cosine schedule")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    g.add_argument("--augment", default="seed", choices=AUGMENTATIONS,
                   help="seed: flips, small rotations and zooms as the seed; strong: also translation, contrast; "
                        "crop: zoom, shifts and colour jitter with Keras layers; resized-crop: random resized "
                        "crops (from images decoded at --load-size), flips, colour jitter, for real photos")
    g.add_argument("--load-size", type=int, default=0, metavar="PX",
                   help="decode training images this high (0: the model's input) so that --augment "
                        "resized-crop cuts detailed crops from them; for example 96 for a 64 px model")
    g.add_argument("--mixup", type=float, default=0.0, help="MixUp Beta alpha (0 disables)")
    g.add_argument("--patience", type=int, default=5, help="epochs without improvement before early stopping")
    g.add_argument("--seed", type=int, default=123, help="random seed (the seed post's 123)")
    g.add_argument("--no-deterministic", action="store_true",
                   help="allow non-deterministic TensorFlow ops (faster on GPU)")
    g = p.add_argument_group("run dir")
    g.add_argument("--out", type=Path, required=True, help="run dir to write (config.json, weights, history)")
    g.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last epoch")
    g.add_argument("--overwrite", action="store_true", help="start again in a run dir that holds a run")
    g.add_argument("--strict", action="store_true",
                   help="exit 2 naming the first unreadable image instead of skipping it")
    g.add_argument("--stream", action="store_true",
                   help="decode the lists batch by batch instead of loading them into memory first "
                        "(for lists larger than memory; no --mixup, no --strict)")
    g = p.add_argument_group("devices")
    g.add_argument("--strategy", default="auto", choices=("auto", "default", "mirrored", "multihost"),
                   help="auto: mirrored with several GPUs, multihost when a cluster is configured, else default")
    g.add_argument("--mixed-precision", action="store_true",
                   help="float16 on GPU, bfloat16 on CPU; the last Dense and softmax stay float32")
    g.add_argument("--scale-lr", action="store_true", help="multiply the learning rate by the number of replicas")
    g.add_argument("--coordinator", default=os.environ.get("VIT_FLOWERS_COORDINATOR"),
                   help="multihost: coordinator address HOST:PORT (env VIT_FLOWERS_COORDINATOR)")
    g.add_argument("--num-processes", type=int, default=_env_int("VIT_FLOWERS_NUM_PROCESSES"),
                   help="multihost: number of processes (env VIT_FLOWERS_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=_env_int("VIT_FLOWERS_PROCESS_ID"),
                   help="multihost: this process's index, 0 is the chief (env VIT_FLOWERS_PROCESS_ID)")
    g.add_argument("--worker-dir", type=Path, default=None,
                   help="multihost: where a non-chief process keeps its backup and weights "
                        "(default: OUT.workerI beside the run dir); only the chief writes --out")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _class_names(arg: str, train_list: Path | None) -> list[str]:
    if arg != "auto":
        return [c.strip() for c in arg.split(",") if c.strip()]
    if train_list is None:
        raise BadInputError("--class-names auto needs --train-list")
    import pandas as pd

    from .filelists import read_file_list

    frame = read_file_list(train_list, [], require_labels=False)
    names = sorted(pd.unique(frame["type_dir"].map(lambda t: Path(t).name)))
    if len(names) < 2:
        raise BadInputError(f"{train_list}: only {len(names)} class(es) in type_dir {names}; training needs two or more")
    return names


def build_run_config(args: argparse.Namespace):
    """Turn train options into a RunConfig."""
    from .config import RunConfig, TrainConfig
    from .model import model_config

    if args.train_list is None:
        raise BadInputError("--train-list is required (or --resume)")
    overrides = {k: getattr(args, k) for k in ("patch_size", "hidden_size", "num_layers", "num_heads",
                                                "mlp_dim", "dropout", "stem") if getattr(args, k) is not None}
    size = None
    if args.image_size:
        size = args.image_size[0] if len(args.image_size) == 1 else args.image_size[:2]
    mcfg = model_config(args.model, _class_names(args.class_names, args.train_list), size, args.weights, **overrides)
    tcfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        optimizer=args.optimizer, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, augment=args.augment,
        load_size=args.load_size, mixup_alpha=args.mixup, patience=args.patience, seed=args.seed, strategy=args.strategy,
        mixed_precision=args.mixed_precision, scale_lr=args.scale_lr,
        train_list=str(args.train_list.resolve()), val_list=str(args.val_list.resolve()) if args.val_list else "",
    )
    return RunConfig(model=mcfg, train=tcfg)


def worker_dir(args: argparse.Namespace) -> Path:
    """Where a non-chief process keeps its own state: never the run dir."""
    if args.worker_dir is not None:
        return args.worker_dir
    return args.out.with_name(f"{args.out.name}.worker{args.process_id}")


def run_train(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .distribute import setup_distribution
    from .model import CONFIG_FILE
    from .train import train_run

    env = setup_distribution(args.strategy, args.mixed_precision, args.coordinator, args.num_processes,
                             args.process_id)
    out = args.out if env.is_chief else worker_dir(args)
    if args.resume and args.train_list is None:
        run_config = RunConfig.load(out / CONFIG_FILE)
    else:
        run_config = build_run_config(args)
    run_config.train.epochs = args.epochs
    run_config.train.strategy = env.name
    run_config.train.mixed_precision = args.mixed_precision
    result = train_run(run_config, out, resume=args.resume, overwrite=args.overwrite, strict=args.strict, stream=args.stream,
                       deterministic=not args.no_deterministic, strategy=env.strategy,
                       num_replicas=env.num_replicas, first_callbacks=env.first_callbacks, gather_ints=env.gather_ints,
                       verbose=2 if not sys.stdout.isatty() else "auto")
    print(f"{'run' if env.is_chief else 'worker'} dir: {out} (best epoch {result.best_epoch + 1}, "
          f"{len(result.history)} epochs logged)")
    return EXIT_OK


# ---------------------------------------------------------------- predict
def add_predict_args(p: argparse.ArgumentParser) -> None:
    from .model import DEFAULT_MODEL_DIR

    p.add_argument("--run", type=Path, default=None,
                   help=f"run dir with config.json and model.weights.h5 (default: {DEFAULT_MODEL_DIR})")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", type=Path, help="file list CSV; true labels from type_dir")
    src.add_argument("--images", nargs="+", type=Path,
                     help="image files or folders; a folder's class subfolders give true labels")
    p.add_argument("--out", type=Path, required=True, help="output dir for predictions.csv, metrics.json, figures")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call")
    p.add_argument("--strict", action="store_true", help="exit 2 at the first unreadable image instead of skipping it")
    p.add_argument("--mirror-tta", action="store_true",
                   help="average each image's probabilities with its left-right mirror image's "
                        "(test-time augmentation; twice the model time)")


def read_inputs(args: argparse.Namespace, class_names: Sequence[str]):
    from .predict import collect_images, collect_list

    return collect_list(args.list, class_names) if args.list else collect_images(args.images, class_names)


def run_predict(args: argparse.Namespace) -> int:
    from .model import load_run, resolve_run
    from .predict import metrics_summary, predict_inputs, write_outputs

    model, run_config = load_run(resolve_run(args.run))
    inputs = read_inputs(args, run_config.model.class_names)
    result = predict_inputs(model, run_config, inputs, args.batch_size, strict=args.strict, mirror=args.mirror_tta)
    write_outputs(result, run_config.model.class_names, args.out)
    print(f"{len(result.table)} predicted, {len(result.skipped)} skipped -> {args.out}")
    if len(result.skipped):
        print(f"skipped files and reasons: {args.out / 'skipped_files.csv'}")
    print(metrics_summary(result.metrics))
    return EXIT_OK


# ---------------------------------------------------------------- demo
def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where data, run dir and figures go")
    p.add_argument("--per-class", type=int, default=120, help="synthetic images per class")
    p.add_argument("--image-size", type=int, default=48, help="image side in pixels (multiple of 8)")
    p.add_argument("--epochs", type=int, default=25, help="maximum training epochs")
    p.add_argument("--seed", type=int, default=123, help="random seed")


def run_demo(args: argparse.Namespace) -> int:
    """Synthetic flowers -> tiny ViT -> predictions and figures, all offline."""
    from .config import RunConfig, TrainConfig
    from .data_sources import source_rows
    from .filelists import write_file_lists
    from .model import load_run, model_config
    from .predict import collect_list, metrics_summary, predict_inputs, write_outputs
    from .train import train_run

    out = args.out
    # OUT is the run dir itself (`predict --run OUT` works), with the data and outputs inside
    run_dir, data_dir, pred_dir = out, out / "data", out / "predictions"
    rows = source_rows("synthetic", data_dir, args.per_class, 64, seed=0)
    train_list, test_list = write_file_lists(rows, data_dir, 0.2, seed=0)
    class_names = sorted(rows["type_dir"].unique())
    run_config = RunConfig(
        model=model_config("tiny", class_names, args.image_size),
        train=TrainConfig(epochs=args.epochs, batch_size=32, learning_rate=1e-3, optimizer="adamw",
                          weight_decay=1e-4, lr_schedule="cosine", warmup_epochs=1, patience=args.epochs,
                          seed=args.seed, augment="seed", train_list=str(train_list.resolve()),
                          val_list=str(test_list.resolve())),
    )
    train_run(run_config, run_dir, overwrite=True, verbose=2)
    model, run_config = load_run(run_dir)
    result = predict_inputs(model, run_config, collect_list(test_list, class_names))
    write_outputs(result, class_names, pred_dir)
    _demo_attention(run_dir, test_list, out / "attention")
    print(f"figures: {pred_dir / 'prediction_grid.png'}, {pred_dir / 'confusion_matrix.png'}, "
          f"{run_dir / 'training_curves.png'}")
    print(metrics_summary(result.metrics))
    return EXIT_OK


def _demo_attention(run_dir: Path, test_list: Path, out: Path) -> None:
    """The attention comparison figures of the demo's run."""
    from .comparison import plot_comparison

    plot_comparison([run_dir], out, list_csv=test_list, limit=16)


# ---------------------------------------------------------------- plot
def add_plot_args(p: argparse.ArgumentParser) -> None:
    from .comparison import add_plot_args as add

    add(p)


def run_plot(args: argparse.Namespace) -> int:
    from .comparison import run_plot as run

    return run(args)


# ---------------------------------------------------------------- main
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "prepare": ("make training_files.csv and testing_files.csv from a source", add_prepare_args, run_prepare),
    "train": ("train a ViT with the seed's head into a run dir", add_train_args, run_train),
    "predict": ("predict images with a run dir; tables, metrics, figures", add_predict_args, run_predict),
    "plot": ("attention comparison figures for one or two run dirs", add_plot_args, run_plot),
    "demo": ("offline demo: synthetic flowers, tiny ViT, predictions, figures", add_demo_args, run_demo),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (with `only`) the parser of one subcommand for a script."""
    if only is not None:
        text, add, _ = COMMANDS[only]
        parser = argparse.ArgumentParser(description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter)
        add(parser)
        return parser
    parser = argparse.ArgumentParser(prog="vit-flowers", description=f"Fine-tune and explain ViTs. {EXIT_CODES_HELP}.",
                                     formatter_class=_formatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=text, description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter))
    return parser


def run_command(command: str, args: argparse.Namespace) -> int:
    """Run one subcommand, mapping errors to exit codes."""
    try:
        return COMMANDS[command][2](args)
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:  # a failure of the program or the machine
        traceback.print_exc()
        return EXIT_FAILURE


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info and warning lines (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    return run_command(args.command, args)


def script_main(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry for scripts/train.py and friends: one subcommand's options."""
    quiet_tensorflow()
    args = build_parser(command).parse_args(argv)
    return run_command(command, args)


if __name__ == "__main__":
    sys.exit(main())
