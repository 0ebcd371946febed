"""Which SCOP domain pairs count as homologs, non-homologs or neither, at fold and superfamily level.

Definitions (Rives et al., PNAS 2021, "Remote homology", Table 2; the pair rules follow the SCOP
benchmark of HHblits, Remmert et al., Nat. Methods 2012, which the paper takes its HHblits baseline and its
excluded folds from):

* **fold level**: positive = same fold, different superfamily; negative = different fold; pairs in the
  same superfamily (the query itself included) are ignored (neither ranked nor counted).
* **superfamily level**: positive = same superfamily, different family; negative = any other superfamily,
  the same fold's other superfamilies included (the paper: "any domain with a different superfamily is a
  negative"); pairs in the same family (the query itself included) are ignored.

Rossmann-like folds (c.2-c.5, c.27, c.28, c.30, c.31) and 4- to 8-bladed beta-propellers (b.66-b.70) are
removed before any of this (:data:`data_pipeline.readers.scope.EXCLUDED_FOLDS`): their SCOP folds are known
to be related across fold boundaries.

The category functions only compare integer ids, so they run unchanged on numpy and inside ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np

LEVELS = ("fold", "superfamily")
_SCCS = re.compile(r"^[a-l]\.\d+\.\d+\.\d+$")


@dataclasses.dataclass(frozen=True)
class ScopLabels:
    """Integer ids (N,) of each domain's fold, superfamily and family; equal id = same group."""

    fold: np.ndarray
    superfamily: np.ndarray
    family: np.ndarray

    def __len__(self) -> int:
        return int(self.fold.shape[0])

    def subset(self, indices: np.ndarray) -> ScopLabels:
        return ScopLabels(self.fold[indices], self.superfamily[indices], self.family[indices])

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.fold, self.superfamily, self.family


def parse_sccs(sccs: Sequence[str], names: Sequence[str] | None = None) -> ScopLabels:
    """Ids from SCOP ``class.fold.superfamily.family`` strings; anything else raises, naming the domain."""
    for index, label in enumerate(sccs):
        if not isinstance(label, str) or not _SCCS.match(label):
            who = names[index] if names is not None else f"domain {index}"
            raise ValueError(
                f"{who}: SCOP label {label!r} is not a 'class.fold.superfamily.family' sccs such as 'a.1.1.1'; "
                "remote homology needs the full four-level label of every domain"
            )

    def ids(depth: int) -> np.ndarray:
        prefixes = [".".join(label.split(".")[:depth]) for label in sccs]
        _, inverse = np.unique(np.array(prefixes, dtype=object), return_inverse=True)
        return inverse.astype(np.int32)

    return ScopLabels(ids(2), ids(3), ids(4))


def pair_categories(level: str, query: tuple, database: tuple) -> tuple:
    """``(positive, ignored)`` boolean arrays for every query/database pair (broadcast of the id arrays).

    ``query`` and ``database`` are ``(fold, superfamily, family)`` id arrays shaped to broadcast, e.g.
    ``(Q, 1)`` against ``(1, N)``. Pairs neither positive nor ignored are negatives.
    """
    q_fold, q_sf, q_fam = query
    d_fold, d_sf, d_fam = database
    same_fold = q_fold == d_fold
    same_sf = q_sf == d_sf
    if level == "fold":
        return same_fold & ~same_sf, same_sf
    if level == "superfamily":
        same_fam = q_fam == d_fam
        return same_sf & ~same_fam, same_fam
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def positives_per_query(level: str, labels: ScopLabels) -> np.ndarray:
    """How many positives each domain has among all the others at ``level`` (counted per group, not per pair)."""
    fold, sf, fam = labels.as_tuple()
    fold_size = np.bincount(fold)[fold]
    sf_size = np.bincount(sf)[sf]
    if level == "fold":
        return fold_size - sf_size
    if level == "superfamily":
        return sf_size - np.bincount(fam)[fam]
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def category_rule(level: str):
    """``(query, candidate) -> (positive, ignored)`` at ``level`` (for ``nearest_neighbors.per_query_auc``)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return functools.partial(pair_categories, level)


def ignore_rule(level: str):
    """``(query, candidate) -> ignored`` at ``level``, for :func:`eval.homology.nearest_neighbors.top_k_neighbors`."""
    categories = category_rule(level)
    return lambda query, candidate: categories(query, candidate)[1]
