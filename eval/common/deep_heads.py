"""Deep supervised heads over frozen features, one fixed architecture per task whatever the input features.

* :class:`NetSurfPHead` for secondary structure, after NetSurfP-2.0 (Klausen et al., Proteins 2019): two parallel
  1-D convolutions (kernel widths 129 and 257, 32 filters each) whose outputs are concatenated with the input,
  then a two-layer bidirectional LSTM and per-residue output layers for 8 and 3 states. NetSurfP-2.0 uses 1024
  LSTM units; ``hidden`` sets it (small by default on CPU).
* :class:`DilatedResNet` for contacts: per-residue features reduced by a linear map, paired as
  ``[x_i, x_j, x_i * x_j]`` (plus optional pair features; the product lets the first layer weigh residue pairs,
  as the bilinear probe does, which concatenation alone leaves to later layers), then residual blocks of two
  dilated 3×3 convolutions (dilations cycling 1, 2, 4, 8) with layer normalisation, and a 1×1 convolution to a
  symmetric contact logit.

Both zero padded positions before every convolution and give the LSTM each protein's length, so a protein's
outputs do not depend on what it is batched with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class NetSurfPHead(nnx.Module):
    """Convolutions + two-layer BiLSTM + Q8/Q3 outputs, per residue."""

    def __init__(
        self,
        features: int,
        *,
        hidden: int = 64,
        filters: int = 32,
        kernels: tuple[int, ...] = (129, 257),
        rngs: nnx.Rngs,
    ):
        self.convs = nnx.List([nnx.Conv(features, filters, (k,), padding="SAME", rngs=rngs) for k in kernels])
        width = features + filters * len(kernels)
        self.lstms = nnx.List(
            [
                nnx.Bidirectional(
                    nnx.RNN(nnx.OptimizedLSTMCell(size, hidden, rngs=rngs)),
                    nnx.RNN(nnx.OptimizedLSTMCell(size, hidden, rngs=rngs), reverse=True, keep_order=True),
                )
                for size in (width, 2 * hidden)
            ]
        )
        self.hidden = hidden
        self.ss8 = nnx.Linear(2 * hidden, 8, rngs=rngs)
        self.ss3 = nnx.Linear(2 * hidden, 3, rngs=rngs)

    def __call__(self, x: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x`` (B, W, D) and ``present`` (B, W) residues to 8- and 3-state logits (B, W, 8), (B, W, 3)."""
        keep = present[..., None].astype(x.dtype)
        x = x * keep
        hidden = jnp.concatenate([x] + [jax.nn.relu(conv(x)) * keep for conv in self.convs], axis=-1)
        lengths = present.sum(axis=-1).astype(jnp.int32)
        zeros = jnp.zeros((x.shape[0], self.hidden), x.dtype)
        for lstm in self.lstms:
            carry = ((zeros, zeros), (zeros, zeros))
            hidden = lstm(hidden, initial_carry=carry, seq_lengths=lengths) * keep
        return self.ss8(hidden), self.ss3(hidden)


class ResidualBlock(nnx.Module):
    """``x + conv(relu(norm(conv(relu(norm(x))))))`` with dilated 3×3 convolutions."""

    def __init__(self, channels: int, dilation: int, *, rngs: nnx.Rngs):
        self.norms = nnx.List([nnx.LayerNorm(channels, rngs=rngs) for _ in range(2)])
        self.convs = nnx.List(
            [
                nnx.Conv(channels, channels, (3, 3), kernel_dilation=dilation, padding="SAME", rngs=rngs)
                for _ in range(2)
            ]
        )

    def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
        hidden = x
        for norm, conv in zip(self.norms, self.convs, strict=True):
            hidden = conv(jax.nn.relu(norm(hidden)) * keep)
        return (x + hidden) * keep


class DilatedResNet(nnx.Module):
    """Pairwise contact logits from per-residue (and optional pair) features."""

    def __init__(
        self,
        features: int,
        *,
        pair_features: int = 0,
        channels: int = 32,
        blocks: int = 4,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        rngs: nnx.Rngs,
    ):
        self.reduce = nnx.Linear(features, channels // 2, rngs=rngs)
        self.pair_features = pair_features
        self.inputs = nnx.Conv(3 * (channels // 2) + pair_features, channels, (1, 1), rngs=rngs)
        self.blocks = nnx.List(
            [ResidualBlock(channels, dilations[b % len(dilations)], rngs=rngs) for b in range(blocks)]
        )
        self.output = nnx.Conv(channels, 1, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array, present: jax.Array, pair: jax.Array | None = None) -> jax.Array:
        """``x`` (B, W, D), ``present`` (B, W), ``pair`` (B, W, W, C) to symmetric logits (B, W, W)."""
        reduced = self.reduce(x)
        width = x.shape[1]
        rows = jnp.broadcast_to(reduced[:, :, None], (*reduced.shape[:2], width, reduced.shape[-1]))
        columns = jnp.swapaxes(rows, 1, 2)
        pairs = [rows, columns, rows * columns]
        if self.pair_features:
            if pair is None:
                raise ValueError(f"this head was built for {self.pair_features} pair features but none were given")
            pairs.append(pair)
        keep = (present[:, :, None] & present[:, None, :])[..., None].astype(x.dtype)
        hidden = self.inputs(jnp.concatenate(pairs, axis=-1) * keep) * keep
        for block in self.blocks:
            hidden = block(hidden, keep)
        logits = self.output(jax.nn.relu(hidden))[..., 0]
        return 0.5 * (logits + jnp.swapaxes(logits, 1, 2))


def resnet_forward(head: DilatedResNet, batch: dict) -> jax.Array:
    """Contact logits of a batch (residue features, present residues, optional pair features)."""
    return head(batch["x"], batch["present"], batch.get("pair"))
