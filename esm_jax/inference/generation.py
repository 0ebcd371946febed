"""Sequence design by Gibbs sampling from the masked language model.

Wang & Cho 2019 ("BERT has a Mouth, and It Must Speak: BERT as a Markov Random Field Language Model")
sample from a masked language model by resampling one position at a time: mask position ``i``, run the
model, draw a new letter from ``softmax(logits_i / temperature)``, write it back, move on. Here the
positions that may change (the ``<mask>`` tokens of the template, or ``design_positions``) are visited
once per sweep, in a fresh random order per sweep and chain or left to right; positions never visited
keep their letters. Draws are restricted to the 20 standard amino acids. ``temperature=0`` takes the most
likely letter instead of sampling. Chains run side by side as rows of one batch, and the whole schedule
runs inside one jitted ``lax.scan``, so a run is one compilation; the same ``key`` gives the same
sequences.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from esm_jax.alphabet import STANDARD_AMINO_ACIDS, Alphabet
from esm_jax.model import ESM

ORDERS = ("random", "sequential")
_ALPHABET = Alphabet()


def _allowed_tokens() -> np.ndarray:
    allowed = np.zeros(len(_ALPHABET), dtype=bool)
    allowed[[_ALPHABET.get_idx(letter) for letter in STANDARD_AMINO_ACIDS]] = True
    return allowed


@functools.partial(jax.jit, static_argnums=(0, 5))
def _run_chains(graphdef, state, tokens, schedule, keys, greedy: bool, temperature):
    """Resample ``tokens[b, schedule[s, b]]`` for every step ``s`` in turn; returns the final tokens."""
    model = nnx.merge(graphdef, state)
    last = model.config.num_layers
    rows = jnp.arange(tokens.shape[0])
    allowed = jnp.asarray(_allowed_tokens())

    def step(tokens, inputs):
        positions, key = inputs
        masked = tokens.at[rows, positions].set(model.mask_idx)
        hidden = model.forward(masked, (last,), lean=True)["representations"][last]
        logits = model.lm_head(hidden[rows, positions][:, None, :], model.embed_tokens.embedding[...])[:, 0]
        logits = jnp.where(allowed, logits.astype(jnp.float32), -jnp.inf)
        sampled = jax.random.categorical(key, logits / temperature, axis=-1)
        choice = jnp.argmax(logits, axis=-1) if greedy else sampled
        return tokens.at[rows, positions].set(choice.astype(tokens.dtype)), None

    tokens, _ = jax.lax.scan(step, tokens, (schedule, keys))
    return tokens


def _schedule(key: jax.Array, design: np.ndarray, num_samples: int, num_sweeps: int, order: str) -> jax.Array:
    """(steps, num_samples) token positions to resample: one visit per design position per sweep."""
    positions = jnp.asarray(design + 1, dtype=jnp.int32)  # residue index -> token index after BOS
    if order == "sequential":
        return jnp.tile(positions[:, None], (num_sweeps, num_samples))
    keys = jax.random.split(key, num_sweeps * num_samples)
    orders = jax.vmap(lambda k: jax.random.permutation(k, positions))(keys)  # (sweeps*samples, n)
    return orders.reshape(num_sweeps, num_samples, -1).transpose(0, 2, 1).reshape(-1, num_samples)


def gibbs_sample(
    model: ESM,
    template: str,
    key: jax.Array,
    *,
    num_samples: int = 1,
    num_sweeps: int = 1,
    temperature: float = 1.0,
    design_positions: Sequence[int] | None = None,
    order: str = "random",
) -> list[str]:
    """``num_samples`` sequences drawn from ``model`` by Gibbs resampling of ``template``'s designable positions.

    ``template`` is a protein sequence in which ``<mask>`` marks positions to design; ``design_positions``
    (0-based residue indices) names them instead, and with neither every position is designable.
    ``key`` is a ``jax.random`` key: the same key, template and options give the same sequences.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if temperature < 0 or num_samples < 1 or num_sweeps < 1:
        raise ValueError("temperature must be >= 0 and num_samples, num_sweeps at least 1")
    residues = np.asarray(_ALPHABET.encode(template, label="template"), dtype=np.int32)
    if len(residues) > model.config.max_positions - 2:
        raise ValueError(
            f"template has {len(residues)} residues; this model samples at most {model.config.max_positions - 2}"
        )
    if design_positions is not None:
        design = np.unique(np.asarray(design_positions, dtype=np.int64))
        if design.size == 0 or design[0] < 0 or design[-1] >= len(residues):
            raise ValueError(f"design_positions must be residue indices in 0..{len(residues) - 1}")
        stray = np.setdiff1d(np.flatnonzero(residues == _ALPHABET.mask_idx), design)
        if stray.size:
            raise ValueError(f"template has <mask> at residue indices {stray.tolist()} outside design_positions")
    else:
        design = np.flatnonzero(residues == _ALPHABET.mask_idx)
        if design.size == 0:
            design = np.arange(len(residues))
    tokens = np.concatenate([[_ALPHABET.cls_idx], residues, [_ALPHABET.eos_idx]]).astype(np.int32)
    tokens = np.tile(tokens, (num_samples, 1))
    order_key, sample_key = jax.random.split(key)
    schedule = _schedule(order_key, design, num_samples, num_sweeps, order)
    step_keys = jax.random.split(sample_key, schedule.shape[0])
    graphdef, state = nnx.split(model)
    greedy = temperature == 0
    final = np.asarray(_run_chains(graphdef, state, tokens, schedule, step_keys, greedy, max(temperature, 1e-6)))
    return ["".join(_ALPHABET.get_tok(int(token)) for token in row[1:-1]) for row in final]
