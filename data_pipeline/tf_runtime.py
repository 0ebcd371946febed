"""Import TensorFlow for data work only: it must never claim GPU or TPU memory that JAX needs.

Call :func:`tensorflow_without_accelerators` before any TensorFlow op; it hides every accelerator from TensorFlow
(and is a no-op when TensorFlow has already been set up that way). ``import esm_jax`` never reaches this module.
"""

from __future__ import annotations

import os
from types import ModuleType

_HIDDEN_DEVICE_TYPES = ("GPU", "TPU")


def tensorflow_without_accelerators() -> ModuleType:
    """Return the ``tensorflow`` module with only CPU devices visible to it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for device_type in _HIDDEN_DEVICE_TYPES:
        try:
            tf.config.set_visible_devices([], device_type)
        except (RuntimeError, ValueError):
            # RuntimeError: devices are already initialised, which only happens after an earlier call here.
            # ValueError: this TensorFlow build has no such device type.
            visible = tf.config.get_visible_devices(device_type) if device_type == "GPU" else []
            if visible:
                raise RuntimeError(
                    "TensorFlow was initialised with GPUs visible before data_pipeline hid them; import "
                    "data_pipeline (or call tensorflow_without_accelerators) before running TensorFlow ops"
                ) from None
    return tf
