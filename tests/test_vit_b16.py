"""The seed's real backbone: ViT-B/16 at 224 with the head, one forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CLASS_NAMES
from vit_flowers.model import build_classifier, model_config


@pytest.mark.slow
def test_vit_b16_builds_and_predicts_two_images():
    model = build_classifier(model_config("b16", CLASS_NAMES, 224, weights="none"))
    backbone = model.layers[0]
    assert backbone.count_params() == pytest.approx(85.8e6, rel=0.01)
    assert backbone.output_shape == (None, 768)
    out = model.predict(np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32), verbose=0)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_vit_b16_faithfulness_scores_every_map_of_its_twelve_heads():
    from vit_flowers.faithfulness_job import score_faithfulness

    model = build_classifier(model_config("b16", CLASS_NAMES, 224, weights="none"))
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    result = score_faithfulness(model, images, ["a.jpg", "b.jpg"], CLASS_NAMES, steps=4, batch_size=16)
    methods = 6 + 1 + 1 + 12 + 2  # rollouts (3 fusions x 2 discard ratios), class map, last layer and its heads, baselines
    assert len(result.maps) == methods and all(m.shape == (2, 14, 14) for m in result.maps.values())
    assert len(result.scores) == 2 * methods
    aucs = result.scores[["deletion_auc", "insertion_auc", "negative_auc"]].to_numpy()
    assert np.isfinite(aucs).all() and (aucs >= 0).all() and (aucs <= 1).all()
    assert all(c.shape == (2, 5) for kinds in result.curves.values() for c in kinds.values())
