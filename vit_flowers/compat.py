"""The one place that reaches into Keras' private modules: each use says why
no public API does it, and fails with the Keras version when Keras moves it
(tests/test_compat.py runs each one).
"""

from __future__ import annotations

import keras


class CompatError(RuntimeError):
    """A private Keras API this package relies on is gone or changed."""


def patch_tf2onnx() -> None:
    """Keras' own fixes of tf2onnx for NumPy 2 (`np.object`, `np.cast` ...).

    Keras applies them inside `model.export(format="onnx")`; the package
    exports a traced `tf.function` (bytes in, probabilities out), not a Keras
    model, and for that Keras has no public door to the patch.
    """
    try:
        # local: a private module Keras may move or drop; importing it is the check
        from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch
    except ImportError as err:
        raise CompatError(f"keras {keras.__version__} has no keras.src.export.tf2onnx_lib.patch_tf2onnx ({err}); "
                          f"vit_flowers/compat.py needs the new place of Keras' tf2onnx patch") from err
    patch()
