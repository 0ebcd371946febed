"""Seeded, cross-validated runs of the dilated-ResNet contact head on one feature set, summarised as mean ± SD."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flax import nnx

from eval.common.deep_heads import DilatedResNet, resnet_forward
from eval.common.seeds import formatted, mean_sd
from eval.structure.contacts.metrics import mean_precisions
from eval.structure.contacts.plans import Plan
from eval.structure.contacts.tables import PRECISION_COLUMNS
from eval.structure.contacts.training import cross_validated_precisions


def resnet_runs(
    plan: Plan,
    features: Sequence[np.ndarray],
    args,
    pair_features: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """``{precision: {mean, sd, runs}}`` over ``args.seeds`` seeds of the head trained fold by fold."""
    pair_count = 0 if pair_features is None else pair_features[0].shape[-1]
    dim = features[0].shape[1]

    def make(seed: int) -> DilatedResNet:
        return DilatedResNet(
            dim, pair_features=pair_count, channels=args.channels, blocks=args.blocks, rngs=nnx.Rngs(seed)
        )

    runs = []
    for seed in range(args.seeds):
        per_protein = cross_validated_precisions(
            plan.proteins,
            features,
            plan.folds,
            make,
            resnet_forward,
            steps=args.steps,
            learning_rate=args.learning_rate,
            seed=seed,
            pair_features=pair_features,
            tokens_per_batch=args.toks_per_batch,
        )
        runs.append(mean_precisions(per_protein))
    return mean_sd(runs)


def summary_row(task: str, plan: Plan, features: str, summary: dict[str, dict[str, float]]) -> dict[str, object]:
    """The report row (long-range precisions, mean ± SD) of one feature set; also printed as a progress line."""
    print(f"{task} {plan.name} {features}: long P@L {formatted(summary, 'long P@L')}", flush=True)
    return {"set": plan.name, "features": features, "proteins": plan.tested} | {
        column: formatted(summary, column) for column in PRECISION_COLUMNS[:3]
    }


def add_resnet_arguments(parser) -> None:
    """Options of the dilated ResNet head and its training (small defaults for CPUs)."""
    parser.add_argument("--seeds", type=int, default=5, help="training seeds (default: 5, as the paper)")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps per fold and seed (default: 20)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--channels", type=int, default=16, help="ResNet channels (default: 16)")
    parser.add_argument("--blocks", type=int, default=2, help="residual blocks (default: 2)")
    parser.add_argument("--toks-per-batch", type=int, default=1024, help="residues per head batch (default: 1024)")
