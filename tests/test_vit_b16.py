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
