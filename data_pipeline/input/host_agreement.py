"""Make every host plan the same batch shapes: combine the hosts' sorted length profiles by elementwise maximum.

With several JAX processes, ``jax.make_array_from_process_local_data`` needs every process to deliver a batch of
the same shape at every step. Each host sorts its block by length; the elementwise maximum of the sorted profiles
bounds every host's sequence at each rank, so a plan made from it fits everyone. One small all-gather per block
(``block_records`` integers) is all the communication needed. Call it from the training thread only, as every
JAX collective must be issued in the same order on all processes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LengthCombiner = Callable[[np.ndarray], np.ndarray]


def single_host(profile: np.ndarray) -> np.ndarray:
    """The combiner for one process (or for hosts that may deliver different shapes): the profile itself."""
    return profile


def jax_all_hosts(profile: np.ndarray) -> np.ndarray:
    """Elementwise maximum of every JAX process's profile (needs ``jax.distributed`` initialised)."""
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.asarray(profile, dtype=np.int32)))
    return gathered.reshape(-1, profile.shape[-1]).max(axis=0).astype(np.int64)
