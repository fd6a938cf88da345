"""A command's terminal shows the package's lines and Keras' progress, not
TensorFlow's C++ start-up log."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO
from vit_flowers.terminal import is_native_noise

NATIVE = ("cuda_platform", "cuInit", "Could not find cuda drivers", "oneDNN custom operations",
          "absl::InitializeLog", "cpu_feature_guard", "use_unbounded_threadpool", "I0000", "E0000", "W0000")


def _predict(tiny_run, synthetic_data, tmp_path, *extra):
    image = next((synthetic_data / "images").rglob("*.jpg"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--run", str(tiny_run),
                           "--images", str(image), "--out", str(tmp_path / "out"), *extra],
                          capture_output=True, text=True, env=env, timeout=180)


def test_a_predict_run_prints_no_tensorflow_log_lines(tiny_run, synthetic_data, tmp_path):
    done = _predict(tiny_run, synthetic_data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if any(word in line for word in NATIVE)], done.stderr
    assert "1 predicted, 0 skipped" in done.stdout


def test_verbose_shows_them_and_python_warnings_still_pass(tiny_run, synthetic_data, tmp_path):
    done = _predict(tiny_run, synthetic_data, tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr
    assert any(word in done.stderr for word in NATIVE), done.stderr


def test_the_filter_drops_absl_lines_only():
    assert is_native_noise(b"E0000 00:00:1796187611.918715   11199 cuda_platform.cc:52] failed call to cuInit")
    assert is_native_noise(b"I1202 04:10:34.123456  123 port.cc:153] oneDNN custom operations are on.")
    assert is_native_noise(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not is_native_noise(b"F0000 00:00:1796187611.918715   11199 check.cc:1] fatal: kept")
    assert not is_native_noise(b"error: list.csv: line 3: unknown class 'lily'")
    assert not is_native_noise(b"Traceback (most recent call last):")
    assert not is_native_noise(b"UserWarning: something the user should see")
