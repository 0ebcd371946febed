"""Packed rows: several ``<cls> … <eos>`` sequences back to back in one row, told apart by segment ids.

``segment_ids`` (B, T) holds 0 at padding and k >= 1 on every token of the row's k-th sequence.
Each sequence then gets what it would get alone: positions restarting at its ``<cls>``, its own
token-dropout scale, and attention confined to itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _segment_bounds(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the first and of the last token of each token's segment, both (B, T)."""
    batch, length = segment_ids.shape
    index = jnp.broadcast_to(jnp.arange(length), (batch, length))
    edge = segment_ids[:, 1:] != segment_ids[:, :-1]
    starts = jnp.concatenate([jnp.ones((batch, 1), bool), edge], axis=1)
    ends = jnp.concatenate([edge, jnp.ones((batch, 1), bool)], axis=1)
    first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    last = jax.lax.cummin(jnp.where(ends, index, length - 1), axis=1, reverse=True)
    return first, last


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """0-based position of every token within its segment (``<cls>`` is 0)."""
    first, _ = _segment_bounds(segment_ids)
    return jnp.arange(segment_ids.shape[1])[None, :] - first


def segment_sums(values: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """For every token, the sum of ``values`` (B, T) over its segment."""
    first, last = _segment_bounds(segment_ids)
    running = jnp.cumsum(values, axis=1)
    before = jnp.where(first > 0, jnp.take_along_axis(running, jnp.maximum(first - 1, 0), axis=1), 0)
    return jnp.take_along_axis(running, last, axis=1) - before


def check_segment_shape(token_shape: tuple[int, ...], segment_shape: tuple[int, ...]) -> None:
    """Segment ids must have the tokens' (B, T) shape; checkable while tracing."""
    if tuple(segment_shape) != tuple(token_shape):
        raise ValueError(
            f"segment_ids of shape {tuple(segment_shape)} do not match tokens of shape {tuple(token_shape)}; "
            "give one id per token (0 = padding, k = the row's k-th sequence)"
        )


def check_packed_rows(
    tokens: np.ndarray,
    segment_ids: np.ndarray,
    *,
    cls_idx: int,
    eos_idx: int,
    padding_idx: int,
    max_tokens: int | None,
) -> None:
    """Refuse segment ids that do not describe whole ``<cls> … <eos>`` sequences; names row and position."""
    tokens, segment_ids = np.asarray(tokens), np.asarray(segment_ids)
    check_segment_shape(tokens.shape, segment_ids.shape)
    if not np.issubdtype(segment_ids.dtype, np.integer):
        raise ValueError(f"segment_ids must be integers, got dtype {segment_ids.dtype}")
    for row, (row_tokens, row_ids) in enumerate(zip(tokens, segment_ids, strict=True)):
        _check_row(row, row_tokens, row_ids, cls_idx, eos_idx, padding_idx, max_tokens)


def _check_row(row, tokens, ids, cls_idx, eos_idx, padding_idx, max_tokens) -> None:
    where = f"row {row} of the packed batch"
    if (ids < 0).any():
        raise ValueError(f"{where}: negative segment id at position {int(np.argmax(ids < 0))}")
    wrong_padding = (ids == 0) != (tokens == padding_idx)
    if wrong_padding.any():
        position = int(np.argmax(wrong_padding))
        raise ValueError(
            f"{where}, position {position}: segment id {int(ids[position])} on token {int(tokens[position])}; "
            "padding tokens, and only they, must have segment id 0"
        )
    starts = np.flatnonzero(np.diff(ids, prepend=-1) != 0)
    stops = np.append(starts[1:], ids.size)
    seen: set[int] = set()
    for start, stop in zip(starts, stops, strict=True):
        segment = int(ids[start])
        if segment == 0:
            continue
        if segment in seen:
            raise ValueError(f"{where}: segment {segment} is split in two (again at position {start}); "
                             "each sequence must be one contiguous run of its id")  # fmt: skip
        seen.add(segment)
        if tokens[start] != cls_idx or tokens[stop - 1] != eos_idx:
            raise ValueError(
                f"{where}: segment {segment} at positions {start}..{stop - 1} does not run from <cls> to <eos>; "
                "lay each packed sequence out as <cls> residues <eos>"
            )
        if max_tokens is not None and stop - start > max_tokens:
            raise ValueError(
                f"{where}: segment {segment} has {stop - start} tokens, more than this model's {max_tokens} "
                f"positions (<cls> and <eos> included); crop it to {max_tokens - 2} residues"
            )
