"""Zero-shot scores of protein variants from a masked language model, as ESM-1v defined them.

Meier et al. 2021 ("Language models enable zero-shot prediction of the effects of mutations on protein
function", NeurIPS) score a variant with substitutions at the set of positions ``M`` of the wild type ``x``:

* ``wt-marginals``: one pass over the unmasked wild type;
  ``Σ_{i∈M} log p(x_i = mt_i | x) − log p(x_i = wt_i | x)``.
* ``masked-marginals``: the mutated positions masked together in the wild type;
  ``Σ_{i∈M} log p(x_i = mt_i | x_{−M}) − log p(x_i = wt_i | x_{−M})``. For single mutants this is
  exactly fair-esm's ``examples/variant-prediction/predict.py``; for multi-mutants all of ``M`` is masked
  in one pass, as the paper writes it (summing single-position masked scores would be a different score).
* ``pseudo-ppl``: the pseudo-log-likelihood (PLL) of the mutant minus that of the wild type, where
  ``PLL(s) = Σ_{i=1..L} log p(s_i | s_{−i})`` masks every position ``i`` in turn, one pass per position,
  and reads the probability of the letter that was masked (see :func:`sequence_log_likelihoods`).

Positions are scored in rows of at most ``window`` residues (the model's context, 1022 for ESM-1b/1v, whose
learned positions cover 1024 tokens with BOS and EOS; the same default is used for ESM-2, trained on 1022-residue
crops). Sliding-window rule for longer sequences: a variant is scored in the ``window``-residue slice centred on
the midpoint of its mutated positions, shifted inward where it would run past either end of the sequence
(``start = clamp(centre − window // 2, 0, L − window)``), and encoded as its own sequence with BOS and EOS; each
pseudo-log-likelihood term ``i`` uses the slice centred on ``i``. Sequences no longer than ``window`` are always
scored whole, so the rule never changes their scores. A multi-mutant spanning more than ``window`` residues cannot
be scored and is refused.

Rows are length-sorted into a few fixed batch shapes by :mod:`esm_jax.inference.batching` and run through one
jitted function per shape; only the rows' queried positions go through the last block's queries and feed-forward
(:meth:`esm_jax.model.esm.ESM.final_hidden_at`) and the language-model head. Padding rows and
positions never reach a score, so results equal scoring each variant alone, up to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from esm_jax.alphabet import Alphabet
from esm_jax.inference.batching import plan_batches
from esm_jax.inference.mutations import Mutant, MutantError
from esm_jax.model import ESM
from esm_jax.progress import progress_bar

STRATEGIES = ("wt-marginals", "masked-marginals", "pseudo-ppl")
_ALPHABET = Alphabet()
_ROWS_PER_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class _Query:
    """One model input row (residue token ids, masks included) and the residue indices whose log-probs are read."""

    residues: np.ndarray
    read: tuple[int, ...]


def default_tokens_per_batch() -> int:
    """Tokens per scoring batch when the caller does not say: 1024 on CPUs, 8192 on accelerators.

    On CPUs a small batch keeps each layer's activations in cache; scoring BLAT_ECOLX with the ESM-2 35M
    shape ran about 20% faster at 1024 tokens than at 8192 (``benchmarks/variant_scoring.py --toks-per-batch``).
    """
    return 1024 if jax.default_backend() == "cpu" else 8192


def default_window(model: ESM) -> int:
    """Residues per scored row: the model's token capacity less BOS and EOS (1022 for the released models)."""
    return model.config.max_positions - 2


def window_bounds(indices: Sequence[int], length: int, window: int) -> tuple[int, int]:
    """``(start, end)`` of the slice of at most ``window`` residues centred on ``indices`` (see module docstring)."""
    if length <= window:
        return 0, length
    low, high = min(indices), max(indices)
    if high - low + 1 > window:
        raise ValueError(f"positions {low + 1}..{high + 1} span more than the model window of {window} residues")
    start = min(max((low + high) // 2 - window // 2, 0), length - window)
    return start, start + window


@functools.partial(jax.jit, static_argnums=0)
def _log_probs_at(graphdef, state, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """Log-softmax over the vocabulary at ``positions`` (B, K) of ``tokens`` (B, T): (B, K, V)."""
    model = nnx.merge(graphdef, state)
    return jax.nn.log_softmax(model.logits_at(tokens, positions).astype(jnp.float32), axis=-1)


def _query_log_probs(
    model: ESM, queries: Iterable[_Query], total: int, *, toks_per_batch: int, show_progress: bool, desc: str
) -> Iterator[np.ndarray]:
    """``(len(query.read), V)`` log-probabilities for every query, in order."""
    graphdef, state = nnx.split(model)
    queries = iter(queries)
    with progress_bar(total=total, unit="row", desc=desc, disable=not show_progress) as bar:
        while chunk := list(islice(queries, _ROWS_PER_CHUNK)):
            results: list[np.ndarray | None] = [None] * len(chunk)
            rows = [query.residues for query in chunk]
            widest = max(len(residues) for residues in rows) + 2  # one scan's rows share this width: no ladder padding
            for batch in plan_batches(rows, toks_per_batch * model.batch_shards, max_width=widest):
                reads = max(len(chunk[index].read) for index in batch.indices)
                positions = np.zeros((batch.tokens.shape[0], 1 << (reads - 1).bit_length()), dtype=np.int32)
                for row, index in enumerate(batch.indices):
                    positions[row, : len(chunk[index].read)] = np.asarray(chunk[index].read) + 1  # after BOS
                tokens, positions = model.place_rows(batch.tokens, positions)
                with model.mesh_context():
                    out = np.asarray(_log_probs_at(graphdef, state, tokens, positions))
                for row, index in enumerate(batch.indices):
                    results[index] = out[row, : len(chunk[index].read)]
                bar.update(len(batch.indices))
            yield from results


def _encode(sequence: str, label: str) -> np.ndarray:
    return np.asarray(_ALPHABET.encode(sequence, label=label), dtype=np.int32)


def _check_mutants(wild_type: str, mutants: Sequence[Mutant]) -> None:
    for mutant in mutants:
        for index, sub in zip(mutant.indices, mutant.substitutions, strict=True):
            if not 0 <= index < len(wild_type) or wild_type[index] != sub.wild_type:
                raise MutantError(
                    f"mutant {mutant.text!r} was not parsed against this wild type (position {sub.position}, "
                    f"offset {mutant.offset}); parse it with esm_jax.inference.mutations.parse_mutants"
                )


def _marginal_queries(wild_type: np.ndarray, mutants: Sequence[Mutant], window: int, masked: bool):
    """Deduplicated queries and, per mutant, ``(query number, read slot)`` of each substitution."""
    keys: dict[tuple, int] = {}
    reads: dict[tuple, set[int]] = {}
    where: list[list[tuple[tuple, int]]] = []
    for mutant in mutants:
        start, end = window_bounds(mutant.indices, len(wild_type), window)
        local = tuple(sorted(index - start for index in mutant.indices))
        key = (start, end, local if masked else ())
        keys.setdefault(key, len(keys))
        reads.setdefault(key, set()).update(local)
        where.append([(key, index - start) for index in mutant.indices])
    queries = []
    for key in keys:
        start, end, masked_at = key
        residues = wild_type[start:end].copy()
        residues[list(masked_at)] = _ALPHABET.mask_idx
        queries.append(_Query(residues, tuple(sorted(reads[key]))))
    slots = [[(keys[key], queries[keys[key]].read.index(local)) for key, local in entry] for entry in where]
    return queries, slots


def _marginal_scores(
    model: ESM, wild_type: str, mutants: Sequence[Mutant], window: int, masked: bool, **engine
) -> np.ndarray:
    encoded = _encode(wild_type, "wild type")
    queries, slots = _marginal_queries(encoded, mutants, window, masked)
    log_probs = list(_query_log_probs(model, queries, len(queries), **engine))
    scores = np.zeros(len(mutants), dtype=np.float64)
    for number, (mutant, entry) in enumerate(zip(mutants, slots, strict=True)):
        for (query, slot), sub in zip(entry, mutant.substitutions, strict=True):
            values = log_probs[query][slot]
            scores[number] += float(values[_ALPHABET.get_idx(sub.mutant)]) - float(
                values[_ALPHABET.get_idx(sub.wild_type)]
            )
    return scores


def _pll_queries(sequences: Sequence[np.ndarray], window: int) -> Iterator[_Query]:
    for residues in sequences:
        for index in range(len(residues)):
            start, end = window_bounds([index], len(residues), window)
            row = residues[start:end].copy()
            row[index - start] = _ALPHABET.mask_idx
            yield _Query(row, (index - start,))


def _pseudo_log_likelihoods(model: ESM, encoded: Sequence[np.ndarray], window: int, **engine) -> np.ndarray:
    total = sum(len(residues) for residues in encoded)
    log_probs = _query_log_probs(model, _pll_queries(encoded, window), total, **engine)
    totals = np.zeros(len(encoded), dtype=np.float64)
    for number, residues in enumerate(encoded):
        for token in residues:
            totals[number] += float(next(log_probs)[0, token])
    return totals


def sequence_log_likelihoods(
    model: ESM,
    sequences: Sequence[str],
    *,
    window: int | None = None,
    toks_per_batch: int | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Pseudo-log-likelihood ``Σ_i log p(s_i | s_{−i})`` (natural log) of each whole sequence, e.g. designed ones.

    Every residue ``i`` (0-based, token ``i + 1`` after BOS) is masked in its own pass and the log-probability
    of its own letter is read at that same token. fair-esm's ``predict.py`` (``compute_pppl``) is off by one
    here: it masks tokens ``1..L−2`` and reads ``sequence[i]`` at token ``i``, i.e. the letter of the *next*
    residue, and never masks the last two residues; it is not copied. The pseudo-perplexity is
    ``exp(−PLL / L)``. Longer sequences than ``window`` use the sliding-window rule of the module docstring.
    """
    window = window or default_window(model)
    encoded = [_encode(sequence, f"sequence {number + 1}") for number, sequence in enumerate(sequences)]
    tokens = toks_per_batch or default_tokens_per_batch()
    engine = {"toks_per_batch": tokens, "show_progress": show_progress, "desc": "pseudo-likelihood"}
    return _pseudo_log_likelihoods(model, encoded, window, **engine)


def score_mutants(
    model: ESM,
    wild_type: str,
    mutants: Sequence[Mutant],
    strategy: str = "masked-marginals",
    *,
    window: int | None = None,
    toks_per_batch: int | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Zero-shot score (natural-log ratio, higher = fitter) of each mutant of ``wild_type`` by ``strategy``.

    ``mutants`` come from :func:`esm_jax.inference.mutations.parse_mutants` against the same ``wild_type``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scoring strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    _check_mutants(wild_type, mutants)
    window = window or default_window(model)
    engine = {"toks_per_batch": toks_per_batch or default_tokens_per_batch(), "show_progress": show_progress,
              "desc": strategy}  # fmt: skip
    if strategy != "pseudo-ppl":
        return _marginal_scores(model, wild_type, mutants, window, strategy == "masked-marginals", **engine)
    distinct = list(dict.fromkeys([wild_type] + [mutant.apply(wild_type) for mutant in mutants]))
    encoded = [_encode(sequence, "variant") for sequence in distinct]
    totals = dict(zip(distinct, _pseudo_log_likelihoods(model, encoded, window, **engine), strict=True))
    return np.array([totals[mutant.apply(wild_type)] - totals[wild_type] for mutant in mutants])
