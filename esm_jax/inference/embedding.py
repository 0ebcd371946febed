"""Run a model over many sequences in shape-bucketed batches and hand back each sequence's outputs.

The engine behind ``esm-jax extract`` and every evaluation that reads frozen representations:
sequences are encoded and validated first, then length-sorted into a few fixed batch shapes
(one compilation each, see :mod:`esm_jax.inference.batching`); padding rows and positions are
dropped before anything is returned, so no sequence is ever lost or altered by batching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from tqdm import tqdm

from esm_jax.alphabet import Alphabet
from esm_jax.inference.batching import plan_batches
from esm_jax.model import ESM


@dataclasses.dataclass(frozen=True)
class SequenceOutputs:
    """One sequence's outputs: ``residues[layer]`` (L, D) without BOS/EOS, ``bos[layer]`` (D,), ``contacts`` (L, L)."""

    index: int
    residues: dict[int, np.ndarray]
    bos: dict[int, np.ndarray]
    contacts: np.ndarray | None


def encode_records(
    records: Sequence[tuple[str, str]], truncation_seq_length: int | None = 1022, upper_case: bool = False
) -> list[list[int]]:
    """Token ids (no BOS/EOS) of every ``(label, sequence)``, truncated; bad characters raise with the label."""
    alphabet = Alphabet()
    encoded = [alphabet.encode(sequence, label=label, upper_case=upper_case) for label, sequence in records]
    if truncation_seq_length:
        encoded = [ids[:truncation_seq_length] for ids in encoded]
    return encoded


def iter_outputs(
    model: ESM,
    encoded: Sequence[Sequence[int]],
    repr_layers: Sequence[int] = (-1,),
    *,
    return_contacts: bool = False,
    toks_per_batch: int = 4096,
    progress: tqdm | None = None,
) -> Iterator[SequenceOutputs]:
    """Outputs of every sequence of ``encoded`` (in length order, each exactly once)."""
    layers = model.normalize_layers(repr_layers)
    for batch in plan_batches(encoded, toks_per_batch, max_width=model.config.max_batch_width):
        out = jax.device_get(model.embed(batch.tokens, repr_layers=layers, return_contacts=return_contacts))
        for row, index in enumerate(batch.indices):
            length = len(encoded[index])
            residues = {layer: values[row, 1 : length + 1] for layer, values in out["representations"].items()}
            bos = {layer: values[row, 0] for layer, values in out["representations"].items()}
            contacts = out["contacts"][row, :length, :length] if return_contacts else None
            yield SequenceOutputs(index, residues, bos, contacts)
            if progress is not None:
                progress.update(length)


def embed_sequences(
    model: ESM,
    sequences: Sequence[str],
    layer: int = -1,
    *,
    per_residue: bool = False,
    toks_per_batch: int = 4096,
    truncation_seq_length: int | None = 1022,
    show_progress: bool = False,
) -> list[np.ndarray]:
    """Mean (D,) or per-residue (L, D) representations of one layer, in the order of ``sequences``."""
    encoded = encode_records([(f"sequence {i + 1}", s) for i, s in enumerate(sequences)], truncation_seq_length)
    (layer,) = model.normalize_layers([layer])
    results: list[np.ndarray | None] = [None] * len(sequences)
    total = sum(len(ids) for ids in encoded)
    with tqdm(total=total, unit="res", unit_scale=True, desc="embed", disable=not show_progress) as bar:
        for outputs in iter_outputs(model, encoded, [layer], toks_per_batch=toks_per_batch, progress=bar):
            values = outputs.residues[layer]
            results[outputs.index] = values if per_residue else values.mean(axis=0)
    return results
