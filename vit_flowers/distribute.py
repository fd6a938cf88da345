"""Choose the engine that spreads training over devices and hosts.

- default: one device (TensorFlow's default strategy).
- mirrored: `tf.distribute.MirroredStrategy` over the GPUs of one host.
- multihost: Keras' distribution API on the JAX backend
  (`jax.distributed.initialize` + `keras.distribution.DataParallel`), one
  process per host. TensorFlow's MultiWorkerMirroredStrategy is not used:
  with TF 2.21 / Keras 3.15 its `fit` fails (keras-team/keras#20585).

The JAX backend must be chosen before Keras is first imported, so
`setup_distribution` is called before any model code runs, and this module
imports Keras, TensorFlow (which imports Keras) and JAX (optional: the
multihost engine alone needs it) inside the functions that use them, after
that choice.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadInputError

STRATEGIES = ("auto", "default", "mirrored", "multihost")


@dataclass
class DistributionEnv:
    strategy: Any  # a tf.distribute.Strategy, or None (Keras' own distribution or one device)
    is_chief: bool
    name: str
    num_replicas: int = 1
    first_callbacks: list = field(default_factory=list)
    # every process's value of an int (None on one process): lets a resumed
    # run make all processes restart at the same epoch
    gather_ints: Callable[[int], list[int]] | None = None


def gather_process_ints(value: int) -> list[int]:
    """`value` from every JAX process, in process order (a collective: all call it)."""
    # local: JAX is optional (requirements-jax.txt); only the multihost engine calls this
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value))).ravel()]


def process_sync_callback():
    """A callback that makes every JAX process end each epoch alike.

    Keras computes metrics, and batch-norm moving statistics, on each
    process's own shard of the batch. Left alone, the processes would see
    different losses, take different decisions (early stopping, learning-
    rate cuts, best epoch) and hold different statistics. At each epoch end
    this averages the logs and the non-trainable variables over processes.
    It must run before every other callback.
    """
    # local: made once `init_multihost` has chosen the JAX backend (JAX itself is optional)
    import keras
    from jax.experimental import multihost_utils

    def mean_over_processes(values: np.ndarray) -> np.ndarray:
        gathered = np.asarray(multihost_utils.process_allgather(values))
        return gathered.reshape(-1, *values.shape).mean(axis=0)

    class ProcessSync(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for variable in self.model.non_trainable_variables:
                local = np.asarray(keras.ops.convert_to_numpy(variable.value))
                if np.issubdtype(local.dtype, np.floating):
                    variable.assign(mean_over_processes(local).astype(local.dtype))
            if logs:
                keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float, np.floating)))
                means = mean_over_processes(np.array([float(logs[k]) for k in keys], dtype=np.float64))
                logs.update(dict(zip(keys, means.tolist())))

    return ProcessSync()


def _cluster_configured(coordinator: str | None, num_processes: int | None) -> bool:
    return bool(coordinator) and (num_processes or 0) > 1


def _visible_gpus() -> int:
    # local: TensorFlow imports Keras, which must wait for the backend choice (module docstring)
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_strategy_name(name: str, coordinator: str | None, num_processes: int | None) -> str:
    """`auto` -> multihost when a cluster is configured, mirrored with
    several GPUs, else default."""
    if name not in STRATEGIES:
        raise BadInputError(f"--strategy {name!r}: choose one of {STRATEGIES}")
    if name != "auto":
        return name
    if _cluster_configured(coordinator, num_processes):
        return "multihost"
    return "mirrored" if _visible_gpus() > 1 else "default"


def set_mixed_precision(enabled: bool) -> str:
    """float16 on GPU, bfloat16 on CPU; returns the policy name."""
    # local: called after the backend choice (module docstring)
    import keras

    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    policy = "mixed_float16" if _visible_gpus() else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def init_multihost(coordinator: str | None, num_processes: int | None, process_id: int | None) -> DistributionEnv:
    """Join the JAX cluster and shard batches over every process's devices."""
    if not coordinator or not num_processes or process_id is None:
        raise BadInputError(
            "--strategy multihost needs --coordinator HOST:PORT, --num-processes N and --process-id I "
            "(or VIT_FLOWERS_COORDINATOR, VIT_FLOWERS_NUM_PROCESSES, VIT_FLOWERS_PROCESS_ID)"
        )
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != "jax":
        raise RuntimeError("multihost needs the JAX backend, but Keras was imported first with another backend")
    os.environ["KERAS_BACKEND"] = "jax"
    try:
        import jax  # optional: requirements-jax.txt
    except ImportError as err:
        raise BadInputError("--strategy multihost needs JAX: pip install -r requirements-jax.txt") from err
    # CPU processes exchange gradients over gloo; GPUs use NCCL regardless.
    # (Set before initialize: asking JAX for its backend would start it.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    import keras  # local: only now that KERAS_BACKEND is jax

    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return DistributionEnv(strategy=None, is_chief=process_id == 0, name="multihost", num_replicas=len(devices),
                           first_callbacks=[process_sync_callback()], gather_ints=gather_process_ints)


def setup_distribution(
    name: str = "auto",
    mixed_precision: bool = False,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> DistributionEnv:
    """Set the engine up and return what training needs to know."""
    resolved = resolve_strategy_name(name, coordinator, num_processes)
    if resolved == "multihost":
        env = init_multihost(coordinator, num_processes, process_id)
    elif resolved == "mirrored":
        import tensorflow as tf  # local: not before the backend choice (module docstring)

        strategy = tf.distribute.MirroredStrategy()
        env = DistributionEnv(strategy, True, "mirrored", strategy.num_replicas_in_sync)
    else:
        env = DistributionEnv(None, True, "default")
    set_mixed_precision(mixed_precision)
    return env
