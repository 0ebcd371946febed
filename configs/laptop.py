"""A pretraining run sized to about two hours on 2 CPU cores: an ESM-2 8M-shaped model on UR50/S.

    ESM_JAX_SHARED_DATA=../shared/data esm-jax train --config configs/laptop.py --workdir runs/laptop
    esm-jax eval all --resume --checkpoint runs/laptop --out eval/results/laptop/trained
    esm-jax eval all --resume --checkpoint runs/laptop --random-weights --out eval/results/laptop/untrained
    esm-jax eval summary --first eval/results/laptop/trained --second eval/results/laptop/untrained \
        --out eval/results/laptop/summary

The second and third commands score the run and its untrained twin on every task, keeping the committed results of
the same weights (``weights_sha256``); the fourth sets their headline figures side by side with paired differences
(README's "what a laptop-scale run shows"). Three committed results were run on their own with other options, which
``--resume`` keeps: ``feature-combination --seeds 1`` in both folders, and ``secondary-structure-deep`` and
``contacts-deep`` with ``--features last`` in the untrained one (their one-hot and profile inputs do not depend on
the model).

The model is ESM-2 t6 8M's shape (6 layers, width 320, 20 heads; Lin et al. 2023 via fair-esm) in float32 on
the UniRef50 sample's training clusters, with the tiny run's data settings (length buckets, 8,192-token batches).
Held-out ECE and the ``structure-vs-lm`` probes are logged at ``POINTS`` evenly spaced steps, so the run also
gives Fig. 6's fit.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain

TOTAL_STEPS = 640
POINTS = 8
EVERY = TOTAL_STEPS // POINTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = pretrain.get_config("tiny")
    config.model = ml_collections.ConfigDict(dict(pretrain.MODELS["esm2_t6_8M"], compute_dtype="float32"))
    config.train.total_steps = TOTAL_STEPS
    config.train.checkpoint_every = EVERY
    config.train.keep_checkpoints = POINTS
    config.optimizer.warmup_steps = TOTAL_STEPS // 20
    config.evals = ml_collections.ConfigDict({"heldout": {"every": EVERY}, "structure_vs_lm": {"every": EVERY}})
    return config
