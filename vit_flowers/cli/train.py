"""`vit-flowers train`: its options come from the settings the config dataclasses
declare (vit_flowers.options), then those of the process; --resume checks the
run's config.json."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..config import (
    ARCHITECTURES,
    AUGMENTATION_ALIASES,
    PRESET_ALIASES,
    PRESETS,
    PRETRAINED_BY_DEFAULT,
    PRETRAINED_WEIGHTS,
    ModelConfig,
    RunConfig,
    TrainConfig,
    check_train_config,
    check_transfer,
    model_config,
)
from ..errors import EXIT_OK, BadInputError
from ..options import add_settings, flags_by_dest, run_options, values_from
from ..outputs import claim_output_dir
from .common import add_shared

RUN_OPTIONS: dict[str, tuple[str, str]] = run_options(model=ModelConfig, train=TrainConfig)


OPTION_FLAGS: dict[str, str] = flags_by_dest(ModelConfig, TrainConfig)




def add_train_args(p: argparse.ArgumentParser) -> None:
    """`train`'s options: one per setting of the run's config (declared in
    `vit_flowers.config`), then those of the process (where, how, which devices)."""
    groups = {name: p.add_argument_group(name) for name in ("data", "model", "training", "transfer", "run dir", "devices")}
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
    add_shared(g, "--out", "train")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch (with a larger --epochs, train "
                        "a finished run on); options that define the run must match its config.json")
    g.add_argument("--overwrite", action="store_true", help="start again in a run dir that holds a run")
    add_shared(g, "--no-report", "train")
    g.add_argument("--summary", action="store_true", help="print the model's summary (model.summary()) before training")
    add_shared(g, "--strict", "train")
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
    # local: pandas loads once the options are parsed (the parser imports the standard library alone)
    import pandas as pd

    from ..filelists import read_file_list

    frame = read_file_list(train_list, [], require_labels=False)
    names = sorted(pd.unique(frame["type_dir"].map(lambda t: Path(t).name)))
    if len(names) < 2:
        raise BadInputError(f"{train_list}: only {len(names)} class(es) in type_dir {names}; training needs two or more")
    return names


def default_weights(arch: str) -> str:
    """The post's pretrained weights for vit_keras' ViTs, none for the from-scratch configs."""
    return PRETRAINED_BY_DEFAULT if ARCHITECTURES[arch].pretrained else "none"


def resolve_weights(value: str | None, arch: str, stem: str | None = None) -> str:
    """--weights as the config keeps it: a pretrained name, none, or an absolute .npz path. Left out,
    the post's weights for vit_keras' ViTs with their patch stem, none with any other stem (the
    pretrained ViT weights fit the patch embedding only; the hybrid's CNN brings its own)."""
    if value is None:
        return default_weights(arch) if stem in (None, "patch") else "none"
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
        return AUGMENTATION_ALIASES.get(value, value)
    if dest == "class_names":
        return None if value == "auto" else _class_names(value, None)
    if dest == "weights":
        return resolve_weights(value, args.model, args.stem)
    return value


def build_run_config(args: argparse.Namespace):
    """Turn train options into a RunConfig (reads the training list for the class names)."""
    if args.train_list is None:
        raise BadInputError("--train-list is required (or --resume in a run dir that holds a run)")
    # the model options given override the architecture's values; these four are resolved here
    overrides = values_from(ModelConfig, args)
    for name in ("arch", "image_size", "class_names", "weights"):
        overrides.pop(name, None)
    size = option_value("image_size", args) if args.image_size else None
    weights = resolve_weights(args.weights, args.model, args.stem)
    mcfg = model_config(args.model, _class_names(args.class_names, args.train_list), size, weights, **overrides)
    train = values_from(TrainConfig, args, read=lambda dest: option_value(dest, args))
    run_config = RunConfig(model=mcfg, train=check_train_config(TrainConfig(**train), "train options"))
    check_transfer(run_config.model, run_config.train, "train options")
    return run_config


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
    from ..filelists import read_file_list  # local: pandas loads once the options are parsed

    for path in filter(None, (run_config.train.train_list, run_config.train.val_list)):
        read_file_list(path, run_config.model.class_names)


def train_config_for(args: argparse.Namespace, out: Path):
    """The RunConfig to train: the saved one on --resume (checked against the
    options given), else the options'."""
    from ..rundir import CONFIG_FILE  # local: the run dir's module brings pandas, loaded once the options are parsed

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
    # local: the engine starts once every option and file is checked, so bad input is refused before TensorFlow
    # starts; and the backend first: Keras must not load before `setup_distribution` has chosen it (JAX for
    # multihost), so the training modules, which import Keras, come after it
    from ..distribute import setup_distribution

    env = setup_distribution(args.strategy, run_config.train.mixed_precision, args.coordinator, args.num_processes,
                             args.process_id)  # TensorFlow (or JAX) starts here

    from ..train import TrainOptions, train_run

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
        from ..pages import training_page

        page = training_page(out, result.model, run_config, result.history, result.best_epoch, result.skipped,
                             run_config.train.batch_size)
        print(f"report: {page}")
    return EXIT_OK
