"""`compute_metrics` against scikit-learn on random label sets.

scikit-learn is the oracle (a test-only dependency): with `labels=` fixed to
the class names and `zero_division=0`, its precision, recall, F1, support,
confusion matrix and accuracy must equal ours for every draw, including
classes never predicted, classes absent from the truth and rows whose true
label is unknown (empty, left out of the metrics).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from conftest import CLASS_NAMES
from vit_flowers.predict import compute_metrics


def table_of(true: list[str], pred: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"file": [f"f{i}.jpg" for i in range(len(true))], "true": true, "pred": pred})


def assert_equals_sklearn(true: list[str], pred: list[str], class_names: list[str]) -> dict:
    """Our metrics for (true, pred) equal scikit-learn's over the labelled rows."""
    metrics = compute_metrics(table_of(true, pred), class_names)
    labelled = [(t, p) for t, p in zip(true, pred) if t != ""]
    if not labelled:
        assert metrics is None
        return {}
    y_true, y_pred = map(list, zip(*labelled))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=class_names, average=None, zero_division=0
    )
    ours = metrics["per_class"]
    assert list(ours) == class_names
    np.testing.assert_allclose([ours[c]["precision"] for c in class_names], precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose([ours[c]["recall"] for c in class_names], recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose([ours[c]["f1"] for c in class_names], f1, rtol=0, atol=1e-12)
    assert [ours[c]["support"] for c in class_names] == support.tolist()
    assert metrics["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=class_names).tolist()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert metrics["count"] == len(y_true)
    assert metrics["class_names"] == class_names
    return metrics


def random_labels(rng: np.random.Generator, n: int, class_names: list[str]) -> tuple[list[str], list[str]]:
    """Truth and predictions drawn from random subsets of the classes (so some
    classes are never predicted and some never true), about 70% right."""
    k = len(class_names)
    true_pool = rng.choice(class_names, size=rng.integers(1, k + 1), replace=False)
    pred_pool = rng.choice(class_names, size=rng.integers(1, k + 1), replace=False)
    true = rng.choice(true_pool, size=n).tolist()
    pred = [t if (t in pred_pool and rng.random() < 0.7) else str(rng.choice(pred_pool)) for t in true]
    unknown = rng.random(n) < 0.1  # rows without a true label are left out
    true = ["" if u else t for t, u in zip(true, unknown)]
    return true, pred


@pytest.mark.parametrize("seed", range(200))
def test_metrics_equal_sklearn_on_random_label_sets(seed):
    rng = np.random.default_rng(seed)
    class_names = CLASS_NAMES if seed % 2 == 0 else [f"c{k}" for k in range(int(rng.integers(2, 9)))]
    true, pred = random_labels(rng, int(rng.integers(1, 60)), class_names)
    assert_equals_sklearn(true, pred, class_names)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", *CLASS_NAMES]), st.sampled_from(CLASS_NAMES)), min_size=1, max_size=40))
def test_metrics_equal_sklearn_for_any_pairs(pairs):
    true, pred = map(list, zip(*pairs))
    assert_equals_sklearn(true, pred, CLASS_NAMES)


def test_a_class_never_predicted_and_one_never_true():
    """Hand-checked case: tulips never predicted (precision 0 by zero_division),
    dandelion never true (recall 0, support 0) but predicted once."""
    true = ["daisy", "daisy", "daisy", "roses", "tulips", "tulips"]
    pred = ["daisy", "daisy", "roses", "roses", "dandelion", "daisy"]
    metrics = assert_equals_sklearn(true, pred, CLASS_NAMES)
    per = metrics["per_class"]
    assert per["daisy"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert per["roses"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert per["tulips"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per["dandelion"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["confusion_matrix"][CLASS_NAMES.index("tulips")] == [1, 1, 0, 0, 0]
    assert metrics["accuracy"] == pytest.approx(3 / 6)


def test_asymmetric_errors_tell_precision_from_recall():
    """Every daisy is called daisy, and so are two roses: daisy's recall is 1
    and its precision 3/5; roses' precision is 1 and its recall 1/3."""
    true = ["daisy"] * 3 + ["roses"] * 3
    pred = ["daisy"] * 3 + ["daisy", "daisy", "roses"]
    per = assert_equals_sklearn(true, pred, CLASS_NAMES)["per_class"]
    assert per["daisy"]["recall"] == 1.0 and per["daisy"]["precision"] == pytest.approx(3 / 5)
    assert per["roses"]["precision"] == 1.0 and per["roses"]["recall"] == pytest.approx(1 / 3)


def test_no_known_labels_means_no_metrics():
    assert compute_metrics(table_of(["", ""], ["daisy", "roses"]), CLASS_NAMES) is None
