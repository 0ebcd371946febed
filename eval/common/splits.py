"""Cross-validation splits: leave-one-group-out where proteins carry labels (SCOP class, fold, ...), else k-fold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Fold = tuple[np.ndarray, np.ndarray]


def group_folds(groups: Sequence[str]) -> list[Fold]:
    """One fold per distinct group: test on that group's proteins, train on all others."""
    groups = np.asarray(groups)
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise ValueError(f"leave-one-group-out needs at least two groups, got {names}")
    return [(np.flatnonzero(groups != name), np.flatnonzero(groups == name)) for name in names]


def random_folds(count: int, folds: int, seed: int = 0) -> list[Fold]:
    """``folds`` disjoint test sets covering ``range(count)`` (seeded), each with the rest as training set."""
    if not 2 <= folds <= count:
        raise ValueError(f"need 2 <= folds <= number of items, got {folds} folds for {count} items")
    order = np.random.default_rng(seed).permutation(count)
    parts = np.array_split(order, folds)
    return [(np.sort(np.concatenate(parts[:k] + parts[k + 1 :])), np.sort(part)) for k, part in enumerate(parts)]


def folds_for(groups: Sequence[str], folds: int = 5, seed: int = 0) -> tuple[str, list[Fold]]:
    """Leave-one-group-out when every protein has a group label and there are several, else random k-fold."""
    if all(groups) and len(set(groups)) > 1:
        return "leave-one-group-out", group_folds(groups)
    return f"random {folds}-fold", random_folds(len(groups), min(folds, len(groups)), seed)


def validation_folds(folds: Sequence[Fold], fraction: float = 0.2, seed: int = 0) -> list[Fold]:
    """Each fold's training set split again into (training, validation), for choosing among models without ever
    looking at the fold's test set."""
    rng = np.random.default_rng(seed)
    split = []
    for train, _ in folds:
        if len(train) < 2:
            raise ValueError(f"a validation split needs at least 2 training items, got {len(train)}")
        shuffled = rng.permutation(train)
        size = max(1, round(fraction * len(train)))
        split.append((np.sort(shuffled[size:]), np.sort(shuffled[:size])))
    return split


def grouped_random_folds(groups: Sequence, folds: int, seed: int = 0) -> list[Fold]:
    """``folds`` folds over items such that all items of a group fall in the same test set (groups seeded at random).

    E.g. variants grouped by mutated position: no test position is ever seen in training.
    """
    keys = sorted(set(groups), key=str)
    if not 2 <= folds <= len(keys):
        raise ValueError(f"need 2 <= folds <= number of groups, got {folds} folds for {len(keys)} groups")
    parts = np.array_split(np.random.default_rng(seed).permutation(len(keys)), folds)
    part_of = {keys[i]: k for k, part in enumerate(parts) for i in part}
    assigned = np.array([part_of[g] for g in groups])
    return [(np.flatnonzero(assigned != k), np.flatnonzero(assigned == k)) for k in range(folds)]
