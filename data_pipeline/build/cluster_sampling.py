"""UR50/D sampling: pick a UniRef50 cluster uniformly, then one of its members uniformly.

The paper's UR50/D set samples UniRef100 sequences evenly across UniRef50 clusters (Rives et al., PNAS 2021). Drawing
``D`` clusters uniformly with replacement, with ``D`` Poisson-distributed of mean ``draws_per_cluster x clusters``, is
the same as giving each cluster an independent Poisson(``draws_per_cluster``) number of draws (Poisson splitting), and
that form needs no global list of clusters: each cluster's draws depend only on its id, its sorted members and the
seed, so a Beam worker holding one cluster decides exactly what the local builder decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from data_pipeline.counter_random import stable_hash64, uniform


def poisson_quantile(u: float, mean: float) -> int:
    """Smallest ``k`` with Poisson(mean) CDF(k) > u (inverse-CDF sampling)."""
    k, term = 0, math.exp(-mean)
    cumulative = term
    while u >= cumulative and term > 0.0:
        k += 1
        term *= mean / k
        cumulative += term
    return k


def cluster_draws(cluster_id: str, member_ids: Sequence[str], draws_per_cluster: float, seed: int) -> list[str]:
    """Members drawn for one cluster (with repetition), in draw order; ``member_ids`` must be sorted."""
    if not member_ids:
        return []
    stream = stable_hash64(f"ur50d\x00{cluster_id}")
    count = poisson_quantile(float(uniform(seed, stream, 0)), draws_per_cluster)
    picks = uniform(seed, stream, range(1, count + 1)) * len(member_ids)
    return [member_ids[min(int(p), len(member_ids) - 1)] for p in picks]
