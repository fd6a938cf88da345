"""`vit-flowers demo`: drawn flowers, a tiny ViT, predictions, figures and pages, all offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..command_options import DemoOptions
from ..config import RunConfig, TrainConfig, model_config
from ..errors import EXIT_OK
from ..options import add_settings, values_from
from ..outputs import claim_output_dir
from .common import add_shared
from .prepare import generators


def add_demo_args(p: argparse.ArgumentParser) -> None:
    """Options of `vit-flowers demo`: --out, `DemoOptions` and --seed."""
    add_shared(p, "--out", "demo", required=False, default=Path("runs/demo"))
    groups = add_settings(p, DemoOptions)
    add_shared(groups["demo"], "--seed", "demo", default=123)


def run_demo(args: argparse.Namespace) -> int:
    """Synthetic flowers -> tiny ViT -> predictions and figures, all offline."""
    options = DemoOptions(**values_from(DemoOptions, args))
    with claim_output_dir(args.out, "demo") as claim:
        return _demo(options, args.seed, claim.folder)


def _demo(options: DemoOptions, seed: int, out: Path) -> int:
    """The demo's steps, in a folder it holds."""
    # local: the data step's modules (pandas, PIL) load once the options are parsed, and the engine
    # (TensorFlow) once the data is drawn and listed
    from ..data_sources import source_rows
    from ..filelists import collect_list, write_file_lists

    # OUT is the run dir itself (`predict --run OUT` works), with the data and outputs inside
    run_dir, data_dir, pred_dir = out, out / "data", out / "predictions"
    rows = source_rows(["synthetic"], data_dir, options.per_class, 64, 0, generators())
    lists = write_file_lists(rows, data_dir, 0.2, seed=0, val_fraction=0.1)
    class_names = sorted(rows["type_dir"].unique())
    run_config = RunConfig(
        model=model_config("tiny", class_names, options.image_size),
        train=TrainConfig(epochs=options.epochs, batch_size=32, learning_rate=1e-3, optimizer="adamw",
                          weight_decay=1e-4, lr_schedule="cosine", warmup_epochs=1, patience=options.epochs,
                          seed=seed, augment="basic", train_list=str(lists["train"].resolve()),
                          val_list=str(lists["val"].resolve())),
    )

    from ..comparison import plot_comparison  # TensorFlow starts here
    from ..model import load_run
    from ..pages import prediction_page, training_page
    from ..predict import metrics_summary, predict_inputs, write_outputs
    from ..train import TrainOptions, train_run

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
