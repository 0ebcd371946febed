"""Fig. 6 of Rives et al. (PNAS 2021) at CPU scale: the tiny model, scored at eight evenly spaced steps.

    esm-jax train --config configs/structure_emergence.py --workdir runs/emergence
    esm-jax eval structure-vs-lm --run runs/emergence --out runs/emergence/structure-vs-lm

Every ``EVERY`` steps the trainer logs its held-out ECE and the ``structure-vs-lm`` evaluator logs final-layer
SS8 and contact-probe scores of the live model, so the report can fit probe quality against ECE over
``total_steps / EVERY`` points that span the run (the paper's figure needs a line, which two or three points
do not pin down). Checkpoints are kept at the same steps, so any point can be re-scored with other options.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain

EVERY = 50
POINTS = 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = pretrain.get_config(arg or "tiny")
    config.train.total_steps = EVERY * POINTS
    config.train.checkpoint_every = EVERY
    config.train.keep_checkpoints = POINTS
    config.evals = ml_collections.ConfigDict({"heldout": {"every": EVERY}, "structure_vs_lm": {"every": EVERY}})
    return config
