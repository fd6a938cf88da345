"""The `vit-flowers` command: prepare, train, predict, plot, demo.

Every subcommand exits 0 when done, 1 on a failure of the program or the
machine (one line, the traceback written to a file or shown with --debug)
and 2 on bad input (one line naming the file, row, option or value). Lists,
paths and configs are checked before TensorFlow is imported, so bad input is
refused in a second or two.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import (
    ARCHITECTURES,
    PRESET_ALIASES,
    PRESETS,
    PRETRAINED_BY_DEFAULT,
    PRETRAINED_WEIGHTS,
    ModelConfig,
    TrainConfig,
)
from .errors import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK, BadInputError
from .options import add_settings, flags_by_dest, run_options, values_from
from .outputs import REPORT_FILE, SKIPPED_FILE, claim_output_dir


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad option refused in one line (exit 2) naming the
    option and what it allows, and a pointer to --help, instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {one_line(message)}; see {self.prog} --help\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    p.add_argument("--verbose", action="store_true",
                   help="also show TensorFlow's own start-up and C++ log lines (hidden by default)")
    p.add_argument("--debug", action="store_true",
                   help="print the full traceback of an unexpected error instead of writing it to a file")


def add_input_args(p: argparse.ArgumentParser, several_runs: bool = False) -> None:
    """--run, and the images: --list or --images (predict, plot, export)."""
    from .model import DEFAULT_MODEL_DIR

    if several_runs:
        p.add_argument("--run", type=Path, action="append", metavar="RUN_DIR",
                       help=f"run dir (config.json + model.weights.h5); give it twice to compare two runs on the "
                            f"same images; none given: the shipped model {DEFAULT_MODEL_DIR}")
    else:
        p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                       help=f"run dir with config.json and model.weights.h5 (default: the shipped model "
                            f"{DEFAULT_MODEL_DIR})")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", type=Path, metavar="CSV", help="file list CSV; true labels from type_dir")
    src.add_argument("--images", nargs="+", type=Path, metavar="PATH",
                     help="image files or folders; a folder's class subfolders give true labels")


def read_inputs(args: argparse.Namespace, class_names: Sequence[str]):
    """Rows (file, true) of --list or --images; folders of outputs (this
    run's --out among them) and folders reached twice are left out, once said."""
    from .outputs import InputFolders
    from .predict import collect_images, collect_list

    if args.list:
        return collect_list(args.list, class_names)
    folders = InputFolders(out=args.out)
    rows = collect_images(args.images, class_names, folders)
    if folders.left_out_line():
        print(f"note: {folders.left_out_line()}")
    return rows


# ---------------------------------------------------------------- prepare
def generators() -> dict[str, Callable]:
    """The data sets this package can generate, by --source name."""

    def synthetic(folder: Path, per_class: int, size: int, seed: int):
        from .synthetic import write_synthetic_flowers

        return write_synthetic_flowers(folder, per_class, size, seed)

    def inspection(folder: Path, per_class: int, size: int, seed: int):
        from .filelists import scan_class_folders
        from .primer.inspection import write_inspection_classes

        write_inspection_classes(folder, n_per_class=per_class, image_size=size, seed=seed)
        return scan_class_folders(folder)

    return {"synthetic": synthetic, "inspection": inspection}


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", nargs="+", default=["synthetic"], metavar="SOURCE",
                   help="'synthetic' (procedural flowers), 'inspection' (shapes: normal, errorA, errorB), "
                        "'download' (the flower_photos archive) or folders of class subfolders (several folders "
                        "are split as one set, for example flower_photos and flower_photos_extra)")
    p.add_argument("--out", required=True, type=Path,
                   help="data dir for training_files.csv, validation_files.csv and testing_files.csv")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of each class kept for testing")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class kept for validation (early stopping, choices); 0: no validation list")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of generated images")
    p.add_argument("--per-class", type=positive_int, default=120, help="images per class for generated sources")
    p.add_argument("--image-size", type=positive_int, default=64, help="side in pixels of generated images")


def run_prepare(args: argparse.Namespace) -> int:
    from .data_sources import source_rows
    from .filelists import check_fractions, class_names_of, write_file_lists
    from .outputs import InputFolders

    check_fractions(args.test_fraction, args.val_fraction)
    with claim_output_dir(args.out, "prepare", mark=False):  # its lists are not photos: a photo folder may hold them
        folders = InputFolders(out=args.out)
        rows = source_rows(args.source, args.out, args.per_class, args.image_size, args.seed, generators(), folders)
        if folders.left_out_line():
            print(f"note: {folders.left_out_line()}")
        lists = write_file_lists(rows, args.out, args.test_fraction, args.seed, args.val_fraction)
    print(f"{len(rows)} images in classes {class_names_of(rows)}")
    print("wrote " + ", ".join(str(path) for path in lists.values()))
    return EXIT_OK


# ---------------------------------------------------------------- train
# train options that define the run (option dest -> config section, field), derived from the
# settings the config dataclasses declare: on --resume each one given must agree with config.json
RUN_OPTIONS: dict[str, tuple[str, str]] = run_options(model=ModelConfig, train=TrainConfig)
OPTION_FLAGS: dict[str, str] = flags_by_dest(ModelConfig, TrainConfig)
OPTION_DESTS: dict[str, str] = {name: dest for dest, (_, name) in RUN_OPTIONS.items()}


def add_train_args(p: argparse.ArgumentParser) -> None:
    """`train`'s options: one per setting of the run's config (declared in
    `vit_flowers.config`), then those of the process (where, how, which devices)."""
    groups = {name: p.add_argument_group(name) for name in ("data", "model", "training", "run dir", "devices")}
    add_settings(p, ModelConfig, TrainConfig, groups=groups)
    groups["model"].add_argument(
        "--preset", choices=sorted(PRESETS) + sorted(PRESET_ALIASES), default=None,
        help="post: the source post's run exactly (b16 at 224 with imagenet21k+imagenet2012 weights, its head with "
             "BatchNormalization momentum 0.99 and tanh gelu, Adam 1e-4, categorical cross-entropy, "
             "ReduceLROnPlateau, flips/rotations/zooms, seed 123, the model summary); any option given as well "
             "overrides it ('seed' is an old name)")
    groups["training"].add_argument("--no-deterministic", action="store_true",
                                    help="allow non-deterministic TensorFlow ops (faster on GPU)")
    g = groups["run dir"]
    g.add_argument("--out", type=Path, required=True, help="run dir to write (config.json, weights, history)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch (with a larger --epochs, train "
                        "a finished run on); options that define the run must match its config.json")
    g.add_argument("--overwrite", action="store_true", help="start again in a run dir that holds a run")
    g.add_argument("--no-report", action="store_true",
                   help="do not write the run dir's report.html (curves, config, best epoch, validation predictions)")
    g.add_argument("--summary", action="store_true", help="print the model's summary (model.summary()) before training")
    g.add_argument("--strict", action="store_true",
                   help="exit 2 naming the first unreadable image instead of skipping it")
    g.add_argument("--stream", action="store_true",
                   help="decode the lists batch by batch instead of loading them into memory first "
                        "(for lists larger than memory; no --mixup, no --strict)")
    g = groups["devices"]
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
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInputError(f"${name} is {value!r}; it must be an integer") from None


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


def default_weights(arch: str) -> str:
    """The post's pretrained weights for vit_keras' ViTs, none for the from-scratch configs."""
    return PRETRAINED_BY_DEFAULT if ARCHITECTURES[arch].pretrained else "none"


def resolve_weights(value: str | None, arch: str) -> str:
    """--weights as the config keeps it: a pretrained name, none, or an absolute .npz path."""
    if value is None:
        return default_weights(arch)
    if value == "none" or value in PRETRAINED_WEIGHTS:
        return value
    path = Path(value)
    if not path.is_file():
        raise BadInputError(f"--weights {value}: no such file (give a pretrained name, none, or a .npz path)")
    return str(path.resolve())


def option_value(dest: str, args: argparse.Namespace) -> Any:
    """The config value a train option stands for."""
    value = getattr(args, dest)
    if dest == "image_size":
        return [value[0], value[0]] if len(value) == 1 else list(value[:2])
    if dest in ("train_list", "val_list"):
        return str(value.resolve()) if value else ""
    if dest == "augment":
        from .config import AUGMENTATION_ALIASES

        return AUGMENTATION_ALIASES.get(value, value)
    if dest == "class_names":
        return None if value == "auto" else _class_names(value, None)
    if dest == "weights":
        return resolve_weights(value, args.model)
    return value


def build_run_config(args: argparse.Namespace):
    """Turn train options into a RunConfig (reads the training list for the class names)."""
    from .config import RunConfig, check_train_config
    from .model import model_config

    if args.train_list is None:
        raise BadInputError("--train-list is required (or --resume in a run dir that holds a run)")
    # the model options given override the architecture's values; these four are resolved here
    overrides = values_from(ModelConfig, args)
    for name in ("arch", "image_size", "class_names", "weights"):
        overrides.pop(name, None)
    size = option_value("image_size", args) if args.image_size else None
    weights = resolve_weights(args.weights, args.model)
    mcfg = model_config(args.model, _class_names(args.class_names, args.train_list), size, weights, **overrides)
    train = values_from(TrainConfig, args, convert={name: lambda value, dest=OPTION_DESTS[name]: option_value(dest, args)
                                                    for name in ("augment", "train_list", "val_list")})
    return RunConfig(model=mcfg, train=check_train_config(TrainConfig(**train), "train options"))


def check_resume_options(saved, args: argparse.Namespace, given: set[str], config_path: Path) -> None:
    """Refuse an option given with --resume that contradicts the saved run."""
    for dest in sorted(given & set(RUN_OPTIONS)):
        section, name = RUN_OPTIONS[dest]
        value = option_value(dest, args)
        if value is None:
            continue
        saved_value = getattr(getattr(saved, section), name)
        if value != saved_value:
            option = OPTION_FLAGS[dest]
            raise BadInputError(
                f"{option} {value} contradicts the run being resumed ({config_path} has {section}.{name} = "
                f"{saved_value!r}); leave {option} out to resume, or start a new run with --overwrite"
            )


def apply_preset(args: argparse.Namespace) -> None:
    """Fill the options a --preset sets and the user did not give; they then
    count as given (on --resume they must agree with the saved run)."""
    if args.preset is None:
        return
    for dest, value in PRESETS[PRESET_ALIASES.get(args.preset, args.preset)].items():
        if dest not in args.given:
            setattr(args, dest, value)
            args.given.add(dest)


def worker_dir(args: argparse.Namespace) -> Path:
    """Where a non-chief process keeps its own state: never the run dir."""
    if args.worker_dir is not None:
        return args.worker_dir
    return args.out.with_name(f"{args.out.name}.worker{args.process_id}")


def check_lists(run_config) -> None:
    """Read the run's lists now, so a broken one is refused before TensorFlow starts."""
    from .filelists import read_file_list

    for path in filter(None, (run_config.train.train_list, run_config.train.val_list)):
        read_file_list(path, run_config.model.class_names)


def train_config_for(args: argparse.Namespace, out: Path):
    """The RunConfig to train: the saved one on --resume (checked against the
    options given), else the options'."""
    from .config import RunConfig
    from .model import CONFIG_FILE

    config_path = out / CONFIG_FILE
    if not args.resume:
        return build_run_config(args)
    if not config_path.is_file():
        if args.train_list is None:
            raise BadInputError(f"{out}: nothing to resume (no {CONFIG_FILE}); start the run without --resume")
        print(f"{out}: nothing to resume yet (no {CONFIG_FILE}): starting the run from its first epoch")
        return build_run_config(args)
    saved = RunConfig.load(config_path)
    check_resume_options(saved, args, args.given, config_path)
    if "epochs" in args.given:
        saved.train.epochs = args.epochs
    return saved


def run_train(args: argparse.Namespace) -> int:
    apply_preset(args)
    chief = not args.process_id
    out = args.out if chief else worker_dir(args)
    run_config = train_config_for(args, out)
    check_lists(run_config)
    if run_config.model.weights == "none" and default_weights(run_config.model.arch) != "none" and not args.resume:
        print(f"note: training {run_config.model.arch} from random weights (--weights none); on a few thousand "
              f"photos it learns little: the post fine-tunes {PRETRAINED_BY_DEFAULT}")

    with claim_output_dir(out, "train", option="--out" if chief else "--worker-dir"):
        return _train(args, run_config, out)


def _train(args: argparse.Namespace, run_config, out: Path) -> int:
    """Train in a run dir this process holds; the page; the closing lines."""
    from .distribute import setup_distribution  # TensorFlow (or JAX) starts here
    from .train import TrainOptions, train_run

    env = setup_distribution(args.strategy, run_config.train.mixed_precision, args.coordinator, args.num_processes,
                             args.process_id)
    run_config.train.strategy = env.name
    options = TrainOptions(resume=args.resume, overwrite=args.overwrite, strict=args.strict, stream=args.stream,
                           deterministic=not args.no_deterministic, summary=args.summary,
                           verbose=2 if not sys.stdout.isatty() else "auto")
    result = train_run(run_config, out, options, env)
    where = "run" if env.is_chief else "worker"
    if result.already_finished:
        why = "stopped early" if result.stopped_early else f"all {run_config.train.epochs} epochs done"
        hint = "" if result.stopped_early else "; pass a larger --epochs with --resume to train on"
        print(f"{where} dir {out} is finished ({why}, best epoch {result.best_epoch + 1}){hint}")
        return EXIT_OK
    stop = ", stopped early" if result.stopped_early else ""
    print(f"{where} dir: {out} (best epoch {result.best_epoch + 1}, {len(result.history)} epochs logged{stop})")
    if env.is_chief and not args.no_report:
        from .pages import training_page

        page = training_page(out, result.model, run_config, result.history, result.best_epoch, result.skipped,
                             run_config.train.batch_size)
        print(f"report: {page}")
    return EXIT_OK


# ---------------------------------------------------------------- predict
def add_predict_args(p: argparse.ArgumentParser) -> None:
    add_input_args(p)
    p.add_argument("--out", type=Path, required=True, help="output dir for predictions.csv, metrics.json, figures")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per model call")
    p.add_argument("--strict", action="store_true", help="exit 2 at the first unreadable image instead of skipping it")
    p.add_argument("--mirror-tta", action="store_true",
                   help="average each image's probabilities with its left-right mirror image's "
                        "(test-time augmentation; twice the model time)")
    add_report_args(p)


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The options of predict's report.html."""
    from .choices import AUTO, OPTION_HELP, parse_attention_option

    g = p.add_argument_group("report page")
    g.add_argument("--no-report", action="store_true",
                   help="do not write report.html (one self-contained page: every prediction, filters, attention)")
    g.add_argument("--report-attention", type=parse_attention_option, default=AUTO, metavar="auto|all|none|N",
                   help=OPTION_HELP.replace("%", "%%"))  # argparse reads % as a format
    g.add_argument("--report-class-maps", action="store_true",
                   help="also a class-specific (gradient-weighted) map for the predictions with attention "
                        "(about 4 times the cost of the rollout)")


def run_predict(args: argparse.Namespace) -> int:
    from .model import check_run_files, resolve_run

    run_dir = resolve_run(args.run)
    run_config = check_run_files(run_dir)
    inputs = read_inputs(args, run_config.model.class_names)
    with claim_output_dir(args.out, "predict", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        out, stage = claim.folder, claim.staging()

        from .model import load_run  # TensorFlow starts here
        from .predict import OWNED_OUTPUTS, metrics_summary, predict_inputs, write_outputs

        model, run_config = load_run(run_dir)
        result = predict_inputs(model, run_config, inputs, args.batch_size, strict=args.strict,
                                mirror=args.mirror_tta)
        if len(result.table) == 0 and len(result.skipped):
            # every input was unreadable: not a success; the reasons are written, an earlier run's outputs kept
            from .images import none_readable_message, write_skipped

            write_skipped(result.skipped, stage / SKIPPED_FILE)
            raise BadInputError(none_readable_message(result.skipped, out / SKIPPED_FILE))
        write_outputs(result, run_config.model.class_names, stage)
        if not args.no_report:
            from .pages import prediction_page

            prediction_page(model, result, run_config.model.class_names, stage, run_dir, args.report_attention,
                            args.report_class_maps, args.batch_size)
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(result.table)} predicted, {len(result.skipped)} skipped -> {out}")
    if len(result.skipped):
        print(f"skipped files and reasons: {out / SKIPPED_FILE}")
    if not args.no_report:
        print(f"report: {out / REPORT_FILE} (open it in a browser)")
    print(metrics_summary(result.metrics))
    return EXIT_OK


# ---------------------------------------------------------------- plot
def add_plot_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers plot`."""
    from .choices import HEAD_FUSIONS, NORMALIZATIONS, ONLY, PREDICTED

    add_input_args(p, several_runs=True)
    p.add_argument("--out", type=Path, required=True, help="output dir for the figures")
    p.add_argument("--only", choices=ONLY, default="all",
                   help="show all images, or only those the first run predicts correctly / wrongly")
    p.add_argument("--limit", type=positive_int, default=16, help="most images to show, spread over the list")
    p.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean",
                   help="how heads are fused in each layer before the rollout (vit_keras: mean)")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="share of the lowest patch-to-patch attentions zeroed in every layer (0 = none, "
                        "as vit_keras); the class token's attention is never discarded")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="matrix",
                   help="matrix: divide A+I by its total (vit_keras); row: by each row (the rollout paper)")
    p.add_argument("--start-layer", type=int, default=0, help="first layer of the rollout (Python index)")
    p.add_argument("--stop-layer", type=int, default=None,
                   help="layer after the last one rolled out (None: through the last layer)")
    p.add_argument("--head-layer", type=int, default=-1, help="layer shown in per_head.png (-1: the last)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help=f"add a class-specific (gradient-weighted) map of the first run for class NAME, or "
                        f"'{PREDICTED}' for each image's predicted class")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per model call")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (each image across the runs side by side, in a browser)")


def run_plot(args: argparse.Namespace) -> int:
    from .comparison import OWNED_OUTPUTS, check_options, plot_comparison
    from .model import check_run_files, resolve_run

    runs = list(args.run) if args.run else [resolve_run(None)]
    check_options(runs, args.limit, args.only, args.discard_ratio, args.batch_size)
    configs = [check_run_files(run) for run in runs]
    inputs = read_inputs(args, configs[0].model.class_names)
    with claim_output_dir(args.out, "plot", keep_on_bad_input=[SKIPPED_FILE]) as claim:
        written = plot_comparison(
            runs, claim.staging(), inputs=inputs, limit=args.limit, only=args.only, head_fusion=args.head_fusion,
            discard_ratio=args.discard_ratio, class_name=args.class_name, batch_size=args.batch_size,
            normalize=args.normalize, start_layer=args.start_layer, stop_layer=args.stop_layer,
            head_layer=args.head_layer, report=not args.no_report, final_dir=claim.folder,
        )
        claim.commit(OWNED_OUTPUTS)
    print(f"{len(written)} files -> {claim.folder}")
    return EXIT_OK


# ---------------------------------------------------------------- import-weights
def add_import_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers import-weights`."""
    from .config import DEFAULT_CLASS_NAMES
    from .model import ARCHITECTURES

    p.add_argument("weights", type=Path, metavar="POST.h5",
                   help="legacy Keras HDF5 weights of the post's Sequential model (model.save_weights('x.h5') "
                        "with vit-keras 0.1 on tf.keras)")
    p.add_argument("--out", type=Path, required=True, help="run dir to write (config.json + model.weights.h5)")
    p.add_argument("--class-names", default=",".join(DEFAULT_CLASS_NAMES),
                   help="comma-separated class names in the order of the model's outputs")
    p.add_argument("--model", default="b16", choices=sorted(ARCHITECTURES),
                   help="the architecture the file was trained with (the post: b16)")
    p.add_argument("--image-size", type=positive_int, nargs="+", metavar="PX",
                   help="the input size it was trained at (default: the architecture's, 224 for b16)")
    for name in ("patch-size", "hidden-size", "num-layers", "num-heads", "mlp-dim"):
        p.add_argument(f"--{name}", type=positive_int, help=f"override the architecture's {name.replace('-', ' ')}")
    p.add_argument("--overwrite", action="store_true", help="replace a run dir that holds a model")


def run_import(args: argparse.Namespace) -> int:
    from .config import RunConfig, TrainConfig
    from .legacy_weights import legacy_class_count
    from .model import CONFIG_FILE, model_config

    if not args.weights.is_file():
        raise BadInputError(f"{args.weights}: no such file")
    names = [c.strip() for c in args.class_names.split(",") if c.strip()]
    classes = legacy_class_count(args.weights)
    if classes != len(names):
        raise BadInputError(f"{args.weights} predicts {classes} classes, --class-names names {len(names)} "
                            f"({', '.join(names)}); give its class names in output order")
    size = None if not args.image_size else (args.image_size * 2)[:2]
    overrides = {k: getattr(args, k) for k in ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
                 if getattr(args, k) is not None}
    # the post's head: Keras' default BatchNormalization momentum and tensorflow-addons' (tanh) gelu
    mcfg = model_config(args.model, names, size, "none", head_bn_momentum=0.99, head_gelu="tanh", **overrides)
    if (args.out / CONFIG_FILE).exists() and not args.overwrite:
        raise BadInputError(f"{args.out} already holds a model ({CONFIG_FILE}); pass --overwrite to replace it")
    with claim_output_dir(args.out, "import-weights") as claim:
        out = claim.folder

        from .legacy_weights import import_weights  # TensorFlow starts here
        from .model import build_classifier, save_run

        model = build_classifier(mcfg, load_pretrained=False)
        import_weights(model, args.weights, args.model)
        save_run(model, RunConfig(model=mcfg, train=TrainConfig(optimizer="adam", learning_rate=1e-4, seed=123)),
                 out)
    print(f"run dir: {out} ({args.weights} as model {args.model!r}, {mcfg.image_size[0]}x{mcfg.image_size[1]}, "
          f"classes {', '.join(names)})")
    print(f"predict with: vit-flowers predict --run {out} --images PHOTOS --out OUT")
    return EXIT_OK


# ---------------------------------------------------------------- export
def add_export_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers export`."""
    from .choices import EXPORT_FORMATS as FORMATS
    from .model import DEFAULT_MODEL_DIR

    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help=f"run dir to export (default: the shipped model {DEFAULT_MODEL_DIR})")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for saved_model/, model.tflite, model_int8.tflite, model.onnx, labels.txt, README.md")
    p.add_argument("--format", default=",".join(FORMATS),
                   help="comma-separated formats: savedmodel (TensorFlow Serving: image bytes in, probabilities "
                        "and label out), tflite (float32 and int8 weights), onnx (ONNX Runtime)")
    p.add_argument("--no-check", action="store_true",
                   help="skip checking every export against the package on random images")


def run_export(args: argparse.Namespace) -> int:
    from .export import parse_formats
    from .model import check_run_files, resolve_run

    run_dir = resolve_run(args.run)
    check_run_files(run_dir)
    formats = parse_formats(args.format)
    with claim_output_dir(args.out, "export") as claim:
        out = claim.folder

        from .export import export_run  # TensorFlow starts here

        export_run(run_dir, out, formats, check=not args.no_check, log=print)
    print(f"exported {run_dir} as {', '.join(formats)} -> {out} (what each file takes and gives: {out / 'README.md'})")
    return EXIT_OK


# ---------------------------------------------------------------- demo
def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where data, run dir and figures go")
    p.add_argument("--per-class", type=positive_int, default=120, help="synthetic images per class")
    p.add_argument("--image-size", type=positive_int, default=48, help="image side in pixels (multiple of 8)")
    p.add_argument("--epochs", type=positive_int, default=25, help="maximum training epochs")
    p.add_argument("--seed", type=int, default=123, help="random seed")


def run_demo(args: argparse.Namespace) -> int:
    """Synthetic flowers -> tiny ViT -> predictions and figures, all offline."""
    with claim_output_dir(args.out, "demo") as claim:
        return _demo(args, claim.folder)


def _demo(args: argparse.Namespace, out: Path) -> int:
    """The demo's steps, in a folder it holds."""
    from .config import RunConfig, TrainConfig
    from .data_sources import source_rows
    from .filelists import write_file_lists
    from .model import model_config

    # OUT is the run dir itself (`predict --run OUT` works), with the data and outputs inside
    run_dir, data_dir, pred_dir = out, out / "data", out / "predictions"
    rows = source_rows(["synthetic"], data_dir, args.per_class, 64, 0, generators())
    lists = write_file_lists(rows, data_dir, 0.2, seed=0, val_fraction=0.1)
    class_names = sorted(rows["type_dir"].unique())
    run_config = RunConfig(
        model=model_config("tiny", class_names, args.image_size),
        train=TrainConfig(epochs=args.epochs, batch_size=32, learning_rate=1e-3, optimizer="adamw",
                          weight_decay=1e-4, lr_schedule="cosine", warmup_epochs=1, patience=args.epochs,
                          seed=args.seed, augment="basic", train_list=str(lists["train"].resolve()),
                          val_list=str(lists["val"].resolve())),
    )

    from .comparison import plot_comparison  # TensorFlow starts here
    from .model import load_run
    from .pages import prediction_page, training_page
    from .predict import collect_list, metrics_summary, predict_inputs, write_outputs
    from .train import TrainOptions, train_run

    trained = train_run(run_config, run_dir, TrainOptions(overwrite=True, verbose=2))
    model, run_config = load_run(run_dir)
    training_page(run_dir, model, run_config, trained.history, trained.best_epoch, trained.skipped)
    result = predict_inputs(model, run_config, collect_list(lists["test"], class_names))
    write_outputs(result, class_names, pred_dir)
    page = prediction_page(model, result, class_names, pred_dir, run_dir, attention="all")
    plot_comparison([run_dir], out / "attention", inputs=collect_list(lists["test"], class_names), limit=16)
    print(f"figures: {pred_dir / 'prediction_grid.png'}, {pred_dir / 'confusion_matrix.png'}, "
          f"{run_dir / 'training_curves.png'}")
    print(f"report pages: {page}, {run_dir / 'report.html'} (open them in a browser)")
    print(metrics_summary(result.metrics))
    return EXIT_OK


# ---------------------------------------------------------------- main
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "prepare": ("make training, validation and testing file lists from a source", add_prepare_args, run_prepare),
    "train": ("train a ViT with the post's head into a run dir", add_train_args, run_train),
    "predict": ("predict images with a run dir; tables, metrics, figures", add_predict_args, run_predict),
    "plot": ("attention comparison figures for one or two run dirs", add_plot_args, run_plot),
    "import-weights": ("turn the post's saved Keras 2 weights (test_model.h5) into a run dir", add_import_args,
                       run_import),
    "export": ("export a run dir's model to run without this package: SavedModel, TFLite, ONNX", add_export_args,
               run_export),
    "demo": ("offline demo: synthetic flowers, tiny ViT, predictions, figures", add_demo_args, run_demo),
}


class VersionAction(argparse.Action):
    """--version: the versions on one line (argparse's own action wraps it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()


def versions() -> str:
    """The package's version and those of the stack it runs on, read from the
    installed metadata (nothing is imported)."""
    from importlib import metadata

    from . import __version__

    parts = [f"vit-flowers {__version__}"]
    for dist in ("tensorflow", "keras", "vit-keras"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts) + f" (Python {sys.version.split()[0]})"


def command_parser(command: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one subcommand (scripts/train.py and friends use it alone)."""
    text, add, _ = COMMANDS[command]
    parser = OneLineParser(prog=prog, description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter)
    add(parser)
    add_common_args(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `vit-flowers` parser with every subcommand."""
    parser = OneLineParser(prog="vit-flowers", description=f"Fine-tune and explain ViTs. {EXIT_CODES_HELP}.",
                           formatter_class=_formatter)
    parser.add_argument("--version", action=VersionAction,
                        help="print the versions of vit-flowers, TensorFlow, Keras and vit-keras and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=f"{text}. {EXIT_CODES_HELP}.", formatter_class=_formatter)
        add(p)
        add_common_args(p)
    return parser


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str], dests: Sequence[str]) -> set[str]:
    """The options the user typed (not left at their defaults): parse again
    into a namespace pre-filled with a marker that argparse then leaves alone."""
    marker = object()
    namespace = argparse.Namespace(**{dest: marker for dest in dests})
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not marker}


def resume_hint() -> str:
    """The command that continues an interrupted training run."""
    import shutil

    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        # `python` when that is this interpreter on PATH, else its full path (a venv not activated)
        found = shutil.which("python")
        same = found is not None and Path(found).resolve() == Path(sys.executable).resolve()
        argv.insert(0, "python" if same else sys.executable)
    elif argv:
        argv[0] = Path(argv[0]).name
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(argv)


def crash_report(command: str) -> Path:
    """Write the current exception's traceback to a file; return its path."""
    path = Path(tempfile.gettempdir()) / f"vit-flowers-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"vit-flowers {command}: {shlex.join(sys.argv)}\n\n{traceback.format_exc()}", encoding="utf-8",
                    errors="backslashreplace")
    return path


def one_line(message: str) -> str:
    """A message on one line (a library's own message may hold line breaks)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def run_command(command: str, args: argparse.Namespace) -> int:
    """Run one subcommand, mapping errors to exit codes and one line each."""
    try:
        return COMMANDS[command][2](args)
    except BadInputError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        hint = f"; continue with: {resume_hint()}" if command == "train" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size or a smaller model", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        if err.errno != errno.ENOSPC:
            return _unexpected(command, args, err)
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: no space left on the device{where}; what this run had not finished was discarded, "
              f"earlier outputs are as they were: free some space and run again", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # a failure of the program or the machine
        return _unexpected(command, args, err)


def _unexpected(command: str, args: argparse.Namespace, err: Exception) -> int:
    """A failure of the program or the machine: one line and where the traceback is."""
    if getattr(args, "debug", False):
        traceback.print_exc()
        return EXIT_FAILURE
    try:
        where = f"the traceback is in {crash_report(command)}"
    except OSError:
        where = "run again with --debug for the traceback"
    print(f"error: unexpected {type(err).__name__}: {one_line(str(err))}; {where}", file=sys.stderr)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """`vit-flowers COMMAND ...` (argv None: the process's own arguments, and
    the terminal is the user's: see `_run`)."""
    own = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command_argv = argv[argv.index(args.command) + 1:]
    return _run(args.command, args, command_parser(args.command), command_argv, own)


def script_main(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry for scripts/train.py and friends: one subcommand's options."""
    own = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = command_parser(command)
    return _run(command, parser.parse_args(argv), parser, argv, own)


def _run(command: str, args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
         own_terminal: bool) -> int:
    """Run a parsed command. In a process of its own, any file name prints
    (undecodable bytes as \\xNN) and TensorFlow's C++ log lines are hidden
    unless --verbose; called from Python (tests, notebooks) the streams are
    left as they are."""
    args.given = given_options(parser, argv, list(vars(args))) if command == "train" else set()
    if not own_terminal:
        return run_command(command, args)
    from .terminal import quiet_native_logs, restore_native_logs

    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_native_logs(enabled=not args.verbose)
    try:
        return run_command(command, args)
    finally:
        restore_native_logs()


if __name__ == "__main__":
    sys.exit(main())
