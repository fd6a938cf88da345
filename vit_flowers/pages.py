"""The report pages of the commands: what `predict` and `train` put on
their `report.html` (the page of `plot` is written by `comparison`).

This module gathers the data (attention for a bounded set of predictions,
the validation predictions of a training run) and hands it to `report`,
which only draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .filelists import collect_list
from .predict import predict_inputs
from .report import display_name, write_prediction_report, write_train_report
from .report_attention import AUTO, report_attention


def prediction_page(model, result, class_names: Sequence[str], out_dir: str | Path, run_dir: str | Path,
                    attention: int | str = AUTO, class_maps: bool = False, batch_size: int = 32,
                    progress: bool = True) -> Path:
    """`report.html` for a `predict.PredictionResult`: every prediction as a
    card, attention for the set `attention` names (report_attention)."""
    maps = report_attention(model, result.table, class_names, attention, class_maps=class_maps,
                            batch_size=batch_size, progress=progress)
    return write_prediction_report(out_dir, result.table, result.metrics, result.skipped, class_names,
                                   attention=maps, subtitle=f"model: {display_name(Path(run_dir))}")


def training_page(run_dir: str | Path, model, run_config, history, best_epoch: int | None, skipped=None,
                  batch_size: int = 32) -> Path:
    """`report.html` for a run dir: curves, history, config, the best epoch
    and, when the run has a validation list, its predictions by the
    trained model (the weights the run dir holds)."""
    validation = None
    if run_config.train.val_list:
        inputs = collect_list(run_config.train.val_list, run_config.model.class_names)
        validation = predict_inputs(model, run_config, inputs, batch_size, progress=False)
    return write_train_report(run_dir, history, run_config, best_epoch, validation=validation, skipped=skipped)

