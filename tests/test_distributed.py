"""Training over several processes (JAX engine) and several replicas
(MirroredStrategy on logical CPU devices)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multihost_cmd(data, run, workers, index, port, epochs, *extra):
    return [sys.executable, str(REPO / "scripts" / "train.py"),
            "--train-list", str(data / "training_files.csv"),
            "--model", "tiny", "--image-size", "32", "--num-layers", "1", "--hidden-size", "32",
            "--mlp-dim", "32", "--epochs", str(epochs), "--batch-size", "8", "--strategy", "multihost",
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(index),
            "--worker-dir", str(workers / f"worker{index}"), "--out", str(run), *extra]


def run_processes(cmds, timeout=420):
    """Start every command, wait for all, kill what is left; (return codes, outputs)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = []
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs


def max_weight_difference(run_a, run_b) -> float:
    script = textwrap.dedent(f"""
        import numpy as np
        from vit_flowers.model import load_run
        a, _ = load_run({str(run_a)!r}); b, _ = load_run({str(run_b)!r})
        print(max(float(np.abs(x - y).max()) for x, y in zip(a.get_weights(), b.get_weights())))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    diff = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert diff.returncode == 0, diff.stderr[-2000:]
    return float(diff.stdout.strip().splitlines()[-1])


MULTIHOST_EPOCHS = 6


@pytest.fixture(scope="module")
def multihost_run(synthetic_data, tmp_path_factory):
    """Two processes on 127.0.0.1 trained without interruption: (run dir, worker 1's dir)."""
    pytest.importorskip("jax", reason="the multihost engine needs JAX: pip install -r requirements-jax.txt")
    root = tmp_path_factory.mktemp("multihost")
    port, run = free_port(), root / "run"
    codes, outputs = run_processes([multihost_cmd(synthetic_data, run, root, i, port, MULTIHOST_EPOCHS,
                                                  "--patience", "100") for i in range(2)])
    for code, out in zip(codes, outputs):
        assert code == 0, out[-3000:]
    return run, root / "worker1"


@pytest.mark.slow  # about a minute: two processes through jax.distributed (one replica's logic: test_train_run)
def test_two_processes_train_to_equal_weights(multihost_run):
    run, worker = multihost_run
    assert not (run.parent / "worker0").exists()  # the chief writes the run dir itself
    assert json.loads((run / "config.json").read_text())["train"]["strategy"] == "multihost"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(MULTIHOST_EPOCHS))
    assert not any(p.name.startswith("worker") for p in run.iterdir())
    assert (worker / "model.weights.h5").is_file()
    assert max_weight_difference(run, worker) == 0.0
    chief_log = pd.read_csv(run / "history.csv")["loss"].to_numpy()
    worker_log = pd.read_csv(worker / "history.csv")["loss"].to_numpy()
    np.testing.assert_allclose(chief_log, worker_log, rtol=1e-6)


@pytest.mark.slow  # about a minute: two processes trained, killed and resumed (in-process: test_train_run's hosts test)
def test_two_processes_killed_mid_run_resume_to_the_uninterrupted_run(synthetic_data, multihost_run, tmp_path):
    """SIGKILL both processes mid-run; `--resume` on both ends where the run
    that was never killed ended: the same history and bitwise the same
    weights, on both processes."""
    import signal
    import time

    reference, _ = multihost_run
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    port = free_port()
    procs = [subprocess.Popen(multihost_cmd(synthetic_data, run, tmp_path, i, port, MULTIHOST_EPOCHS,
                                            "--patience", "100"),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for i in range(2)]
    try:
        deadline = time.time() + 300
        while time.time() < deadline and all(p.poll() is None for p in procs):
            try:
                if len(pd.read_csv(run / "history.csv")) >= 2:
                    break
            except (FileNotFoundError, pd.errors.EmptyDataError):
                pass
            time.sleep(0.02)
        assert all(p.poll() is None for p in procs), "training ended before it could be killed"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
    killed_at = len(pd.read_csv(run / "history.csv"))
    assert 2 <= killed_at < MULTIHOST_EPOCHS and (run / "backup").is_dir()

    port = free_port()
    codes, outputs = run_processes([multihost_cmd(synthetic_data, run, tmp_path, i, port, MULTIHOST_EPOCHS,
                                                  "--patience", "100", "--resume")
                                    for i in range(2)])
    for code, out in zip(codes, outputs):
        assert code == 0, out[-3000:]
        assert "resuming after epoch" in out  # it went on from its backup, not from the start
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv"),
                                  check_exact=True)
    assert max_weight_difference(run, reference) == 0.0
    assert max_weight_difference(run, tmp_path / "worker1") == 0.0


MIRRORED = """
import os, sys, json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
from conftest import tiny_run_config
from vit_flowers.distribute import DistributionEnv
from vit_flowers.train import TrainOptions, train_run
data, out, mode = {data!r}, {out!r}, sys.argv[1]
if mode == "mirrored":
    strategy, per_replica = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 8
else:
    strategy, per_replica = None, 16
cfg = tiny_run_config(data + "/training_files.csv", None, epochs=3, batch_size=per_replica, augment="none")
cfg.train.batch_size = per_replica
env = DistributionEnv(strategy, True, mode, strategy.num_replicas_in_sync if strategy else 1)
train_run(cfg, out + "/" + mode, TrainOptions(verbose=0), env)
"""


@pytest.mark.slow  # half a minute: two trainings (the replicas' batch, rate and synchronised batch norm: test_train_run)
def test_mirrored_on_two_cpus_follows_the_single_device_loss_curve(synthetic_data, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED.format(tests=str(REPO / "tests"), data=str(synthetic_data), out=str(tmp_path)))
    for mode in ("mirrored", "default"):
        done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    mirrored = pd.read_csv(tmp_path / "mirrored" / "history.csv")
    single = pd.read_csv(tmp_path / "default" / "history.csv")
    # Same global batch (2 x 8 = 16), synchronised batch norm, gradients summed
    # over replicas: only float summation order differs, so the curves agree
    # to float32 round-off amplified over a few dozen steps.
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=2e-3)
    assert mirrored["loss"].iloc[-1] < mirrored["loss"].iloc[0]


MIXED = """
import numpy as np
from vit_flowers.distribute import set_mixed_precision
from vit_flowers.model import build_classifier, model_config
assert set_mixed_precision(True) == "mixed_bfloat16"  # no GPU here
model = build_classifier(model_config("tiny", list("abcde"), 32, num_layers=1, hidden_size=32, mlp_dim=32))
backbone = model.layers[0]
assert backbone.get_layer("embedding").compute_dtype == "bfloat16"
assert model.layers[3].compute_dtype == "bfloat16"
assert model.layers[-1].dtype_policy.name == "float32"  # last Dense and its softmax
out = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
assert out.dtype == np.float32 and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
print("ok")
"""


def test_mixed_precision_keeps_the_last_dense_and_softmax_in_float32(synthetic_data, tmp_path):
    done = subprocess.run([sys.executable, "-c", MIXED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    run = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--train-list", str(synthetic_data / "training_files.csv"),
           "--model", "tiny", "--image-size", "32", "--num-layers", "1", "--hidden-size", "32", "--mlp-dim", "32",
           "--epochs", "1", "--batch-size", "16", "--mixed-precision", "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["train"]["mixed_precision"] is True
    assert np.isfinite(pd.read_csv(run / "history.csv")["loss"]).all()
