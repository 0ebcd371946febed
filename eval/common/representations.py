"""Frozen per-residue representations of several layers at once, through the shared embedding engine.

One backbone pass gives every requested layer; sequences longer than an ESM-1b model's window are cut to it and
the cut residues reported, so callers can leave them out of scoring rather than lose them silently. The LSTM
baselines (:class:`~esm_jax.model.BiLSTMLM`) give representations through the same calls, with no window; their
layer ``k >= 1`` is the forward and backward states concatenated.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from esm_jax.inference.embedding import encode_records, iter_outputs
from esm_jax.model import ESM, BiLSTMLM, ModelConfig

# Either backbone: both answer ``repr_layers`` with {layer: (B, T, D)}.
FeatureModel = ESM | BiLSTMLM


def residue_window(model: FeatureModel) -> int | None:
    """The most residues one sequence may have for ``model`` (None: no limit, as for ESM-2 and the LSTMs)."""
    config = model.config
    return config.max_positions - 2 if isinstance(config, ModelConfig) and config.architecture == "esm1b" else None


def parse_layers(text: str, model: FeatureModel) -> list[int]:
    """``all`` → 0..num_layers, ``last`` → [num_layers], else a comma list (negative counts back)."""
    if text == "all":
        return list(range(model.config.num_layers + 1))
    if text == "last":
        return [model.config.num_layers]
    try:
        return list(model.normalize_layers(int(part) for part in text.split(",")))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: {error}") from None


def feature_layer(model: FeatureModel, name: str) -> int:
    """The layer a feature name stands for: ``last`` or an index (negative indices count back from the end)."""
    return model.normalize_layers([model.config.num_layers if name == "last" else int(name)])[0]


def per_residue_layers(
    model: FeatureModel,
    records: Sequence[tuple[str, str]],
    layers: Sequence[int],
    *,
    toks_per_batch: int = 4096,
    desc: str = "embed",
) -> dict[int, list[np.ndarray]]:
    """``{layer: [(L_i, D) float32 per record]}`` in the order of ``records`` (``(name, sequence)`` pairs).

    ``L_i`` is the sequence length, or the model's window where the sequence is longer.
    """
    layers = model.normalize_layers(layers)
    encoded = encode_records(records, truncation_seq_length=residue_window(model))
    results: dict[int, list[np.ndarray | None]] = {layer: [None] * len(records) for layer in layers}
    total = sum(len(ids) for ids in encoded)
    with tqdm(total=total, unit="res", unit_scale=True, desc=desc, mininterval=5.0) as bar:
        for outputs in iter_outputs(model, encoded, layers, toks_per_batch=toks_per_batch, progress=bar):
            for layer in layers:
                results[layer][outputs.index] = np.asarray(outputs.residues[layer], dtype=np.float32)
    return results
