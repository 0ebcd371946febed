"""Run a model over many sequences in batches of a few shapes and hand back each sequence's outputs.

The engine behind ``esm-jax extract`` and every evaluation that reads frozen representations:
sequences are encoded and validated first, then length-sorted into a few fixed batch shapes, or
packed several to a row (one compilation per shape, see :mod:`esm_jax.inference.batching`);
each sequence is cut out of its row and padding is dropped before anything is returned, so no
sequence is ever lost or altered by batching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from tqdm import tqdm

from esm_jax.alphabet import Alphabet
from esm_jax.inference.batching import Batch, PackedBatch, default_row_width, plan_batches, plan_packed_batches
from esm_jax.model import ESM, attention_kernels
from esm_jax.progress import progress_bar


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
    pack: bool = False,
    row_width: int | None = None,
    progress: tqdm | None = None,
) -> Iterator[SequenceOutputs]:
    """Outputs of every sequence of ``encoded`` (in batch order, each exactly once).

    ``toks_per_batch`` counts per device: a model on a mesh (:meth:`ESM.place_rows`) takes batches as
    many times larger as devices share them. ``pack`` lays several sequences per row of ``row_width`` tokens (default:
    :func:`~esm_jax.inference.batching.default_row_width`); packed rows cannot give contacts, so
    ``return_contacts`` runs one sequence per row whatever ``pack`` says.
    """
    layers = model.normalize_layers(repr_layers)
    budget = toks_per_batch * model.batch_shards
    for batch in _plan(model, encoded, budget, pack and not return_contacts, row_width):
        options = {"return_contacts": return_contacts, "segment_ids": batch.segment_ids}
        out = jax.device_get(model.embed(batch.tokens, repr_layers=layers, **options))
        representations = out["representations"].items()
        for index, row, start in batch.placements:
            length = len(encoded[index])
            residues = {layer: values[row, start + 1 : start + length + 1] for layer, values in representations}
            bos = {layer: values[row, start] for layer, values in representations}
            contacts = out["contacts"][row, :length, :length] if return_contacts else None
            yield SequenceOutputs(index, residues, bos, contacts)
            if progress is not None:
                progress.update(length)


def _plan(
    model: ESM, encoded: Sequence[Sequence[int]], toks_per_batch: int, pack: bool, row_width: int | None
) -> Iterator[Batch | PackedBatch]:
    """Packed or bucketed batches for ``model``, within its widest allowed sequence."""
    max_width = model.config.max_batch_width
    if not pack:
        return plan_batches(encoded, toks_per_batch, max_width=max_width)
    width = default_row_width(encoded, max_width) if row_width is None else row_width
    return plan_packed_batches(encoded, toks_per_batch, width, max_width=max_width)


def packs_by_default(model: ESM) -> bool:
    """Whether rows are packed when the caller does not say: on TPUs and GPUs, not on CPUs.

    A packed row attends over its whole width. On accelerators that costs less than the padding it
    saves; on CPUs, where attention runs one head at a time, it costs more
    (``benchmarks/extract_throughput.py``), and one protein per row is faster once compiled. A model without
    attention (the LSTM baselines) has no packed rows.
    """
    implementation = getattr(model.config, "attention_impl", None)
    return (
        implementation is not None
        and attention_kernels.resolve(implementation, dtype=model.config.compute_dtype) != "per_head"
    )


def embed_sequences(
    model: ESM,
    sequences: Sequence[str],
    layer: int = -1,
    *,
    per_residue: bool = False,
    toks_per_batch: int = 4096,
    truncation_seq_length: int | None = 1022,
    pack: bool | None = None,
    show_progress: bool = False,
) -> list[np.ndarray]:
    """Mean (D,) or per-residue (L, D) representations of one layer, in the order of ``sequences``.

    ``pack`` shares rows between sequences (:func:`iter_outputs`; default: :func:`packs_by_default`);
    the outputs are the same.
    """
    encoded = encode_records([(f"sequence {i + 1}", s) for i, s in enumerate(sequences)], truncation_seq_length)
    (layer,) = model.normalize_layers([layer])
    results: list[np.ndarray | None] = [None] * len(sequences)
    total = sum(len(ids) for ids in encoded)
    bar = progress_bar(total=total, unit="res", unit_scale=True, desc="embed", disable=not show_progress)
    with bar:
        pack = packs_by_default(model) if pack is None else pack
        for outputs in iter_outputs(model, encoded, [layer], toks_per_batch=toks_per_batch, pack=pack, progress=bar):
            values = outputs.residues[layer]
            results[outputs.index] = values if per_residue else values.mean(axis=0)
    return results
