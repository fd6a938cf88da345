"""Each private Keras use of `vit_flowers.compat` still works with the Keras
installed, or fails naming that Keras version."""

from __future__ import annotations

import sys

import keras
import pytest

from vit_flowers import compat


def test_the_tf2onnx_patch_is_where_this_keras_keeps_it():
    pytest.importorskip("tf2onnx")
    compat.patch_tf2onnx()  # raises CompatError naming the Keras version when it moved


def test_a_moved_private_api_is_one_error_naming_the_keras_version(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras.src.export.tf2onnx_lib", None)  # as if Keras had moved it
    with pytest.raises(compat.CompatError, match=rf"^keras {keras.__version__} has no keras.src.export"):
        compat.patch_tf2onnx()


def test_no_other_module_imports_a_private_keras_api():
    from pathlib import Path

    package = Path(compat.__file__).parent
    private = [str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.name != "compat.py" and ("keras.src" in p.read_text() or "_inbound_nodes" in p.read_text()
                                             or "_keras_history" in p.read_text())]
    assert private == []
