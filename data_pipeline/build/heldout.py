"""Which UniRef50 clusters are held out for evaluation: a stable hash of the cluster id, the same on every machine.

Rule (version 1): ``h = first 8 bytes, big-endian, of SHA-256("esm-jax/heldout/v1" + NUL + cluster_id)``; the cluster is
held out when ``h < fraction * 2**64``. The rule needs no list of clusters, no random state and no coordination, so
the local builder, every Beam worker and every later rebuild agree, and the members of a held-out cluster are
removed from every training split because they share its cluster id.
"""

from data_pipeline.counter_random import stable_hash64
from data_pipeline.layout import HELDOUT_SALT, TRAIN, VALIDATION


def is_heldout(cluster_id: str, fraction: float, salt: str = HELDOUT_SALT) -> bool:
    """True when ``cluster_id`` belongs to the held-out evaluation split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    return stable_hash64(f"{salt}\x00{cluster_id}") < int(fraction * (1 << 64))


def split_of(cluster_id: str, fraction: float, salt: str = HELDOUT_SALT) -> str:
    """``"validation"`` for held-out clusters, ``"train"`` otherwise."""
    return VALIDATION if is_heldout(cluster_id, fraction, salt) else TRAIN
