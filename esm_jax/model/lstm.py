"""Bidirectional LSTM language models: the "LSTM small" and "LSTM large" baselines of Rives et al. 2021, Table 1.

ELMo-style (Peters et al. 2018): a forward LSTM stack reads the tokens left to right, a separate backward
stack reads them right to left, and token ``i`` is predicted by one linear layer from
``concat(forward state at i-1, backward state at i+1)``. Every position therefore sees the whole sequence
except itself, so its cross-entropy is comparable to a masked LM scoring that single position.

Training uses the masked-LM pipeline unchanged (our choice, so train loss and held-out ECE come from the
same code and the same positions as for the Transformers): the input is the corrupted sequence (15% of
positions selected; 80% ``<mask>``, 10% random, 10% unchanged) and the loss is taken at the selected
positions only. The prediction at ``i`` never reads token ``i``, so its own corruption is irrelevant;
the other corrupted positions are context, as for the Transformer. The cost is that the LSTM learns
from 15% of the positions it could predict.

Sequences are right-padded. The backward stack reverses each sequence's real tokens only (``seq_lengths``)
and states at padding positions are zeroed before they are shifted, so padding never changes the
outputs at real positions.

As a feature extractor the model answers ``repr_layers`` as :class:`~esm_jax.model.ESM` does: layer 0 is the
token embeddings (``embed_dim`` wide), layer ``k`` is ``concat(forward state, backward state)`` of LSTM layer ``k``
(``2 · hidden_dim`` wide). Unlike the LM head, the features of token ``i`` are the states *after reading* ``i``
in each direction, so they include the token itself, as ELMo's features do; padding positions are zero.
There is no attention, so no attention maps or contacts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from esm_jax.alphabet import Alphabet
from esm_jax.errors import EsmJaxError
from esm_jax.model.config import COMPUTE_DTYPES, FrozenConfig
from esm_jax.model.esm import ESM
from esm_jax.model.layers import WEIGHT_INIT, dense, partitioned
from esm_jax.sharding import HIDDEN_AXES, constrain

_ALPHABET = Alphabet()
# Both gate matrices map into the 4 stacked gates (i, f, g, o): (in, 4·hidden) and (hidden, 4·hidden).
_GATE_AXES = ("embed", "mlp")


@dataclasses.dataclass(frozen=True)
class LSTMConfig(FrozenConfig):
    """Shape of a bidirectional LSTM LM; ``hidden_dim`` is per direction.

    ``kind`` marks the config in a run's ``config.json`` (Transformer configs carry no ``kind``).
    ``compute_dtype`` changes how the model runs, never what its parameters are.
    """

    num_layers: int
    embed_dim: int
    hidden_dim: int
    vocab_size: int = 33
    compute_dtype: str = "float32"
    kind: Literal["lstm"] = "lstm"

    # Fields that determine the parameters: a checkpoint only fits a config that agrees on them.
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = ("num_layers", "embed_dim", "hidden_dim", "vocab_size")
    max_batch_width: ClassVar[int | None] = None  # no position table: any width fits

    def __post_init__(self) -> None:
        if self.kind != "lstm":
            raise ValueError(f"kind must be 'lstm', got {self.kind!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype matrix multiplications run in."""
        return COMPUTE_DTYPES[self.compute_dtype]

    def layer_input_dims(self) -> list[int]:
        return [self.embed_dim] + [self.hidden_dim] * (self.num_layers - 1)

    def num_parameters(self) -> int:
        """Trainable parameters: embedding, two LSTM stacks (one gate bias each) and the output layer."""
        h, v = self.hidden_dim, self.vocab_size
        per_direction = sum(4 * h * (d + h + 1) for d in self.layer_input_dims())
        return v * self.embed_dim + 2 * per_direction + 2 * h * v + v

    attention_flops_per_pair = 0.0  # no attention: FLOPs per token do not depend on the length

    def forward_flops_per_token(self, length: int) -> float:
        """2 FLOPs per weight of every matrix multiplication, both directions and the output layer (any length)."""
        h = self.hidden_dim
        per_direction = sum(4 * h * (d + h) for d in self.layer_input_dims())
        return 2 * (2 * per_direction + 2 * h * self.vocab_size)


class LSTMFeatureError(EsmJaxError, ValueError):
    """Something only a Transformer gives (attention maps, contacts, packed rows) was asked of an LSTM baseline."""


class BiLSTMLM(nnx.Module):
    """Forward and backward LSTM stacks with a linear output layer; called, and read for features, as :class:`ESM`."""

    # The same contracts as the Transformer: layers 0..num_layers, token ids of the alphabet.
    normalize_layers = ESM.normalize_layers
    check_tokens = ESM.check_tokens

    def __init__(self, config: LSTMConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.padding_idx = _ALPHABET.padding_idx
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.embed_dim,
            embedding_init=partitioned(WEIGHT_INIT, ("vocab", "embed")),
            rngs=rngs,
        )
        self.forward_lstm = _lstm_stack(config, rngs)
        self.backward_lstm = _lstm_stack(config, rngs)
        self.output = dense(2 * config.hidden_dim, config.vocab_size, ("embed", "vocab"), config.dtype, rngs)

    @property
    def alphabet(self) -> Alphabet:
        return _ALPHABET

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def representation_width(self, layer: int) -> int:
        """Width of the hidden state ``layer`` returns: the embeddings at 0, both directions' states above."""
        return self.config.embed_dim if layer == 0 else 2 * self.config.hidden_dim

    @property
    def batch_shards(self) -> int:
        """Always 1: the LSTM runs its batches on one device (see ``esm_jax.mesh.on_inference_mesh``)."""
        return 1

    def __call__(
        self,
        tokens,
        repr_layers: Iterable[int] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
        segment_ids=None,
    ) -> dict:
        """``logits`` (B, T, V) and ``representations`` {layer: (B, T, D)} for ``tokens`` (B, T), as :class:`ESM`.

        Compiled once per input shape and set of layers; attention maps, contacts and packed rows are refused.
        """
        return self._compiled(tokens, repr_layers, need_head_weights, return_contacts, segment_ids, lean=False)

    def embed(
        self, tokens, repr_layers: Iterable[int] = (-1,), return_contacts: bool = False, segment_ids=None
    ) -> dict:
        """Only ``representations``: the extraction call of :meth:`ESM.embed`."""
        return self._compiled(tokens, repr_layers, False, return_contacts, segment_ids, lean=True)

    def _compiled(
        self, tokens, repr_layers, need_head_weights: bool, return_contacts: bool, segment_ids, lean: bool
    ) -> dict:
        self._refuse_transformer_outputs(need_head_weights, return_contacts, segment_ids)
        layers = self.normalize_layers(repr_layers)
        self.check_tokens(tokens)
        graphdef, state = nnx.split(self)
        return _compiled_forward(graphdef, state, jnp.asarray(tokens, jnp.int32), layers, lean)

    @staticmethod
    def _refuse_transformer_outputs(need_head_weights: bool, return_contacts: bool, segment_ids) -> None:
        """One line naming what an LSTM cannot give; these come from attention or packed attention masks."""
        asked = [
            name
            for name, wanted in (
                ("attention maps (need_head_weights)", need_head_weights),
                ("contacts (return_contacts)", return_contacts),
                ("packed rows (segment_ids)", segment_ids is not None),
            )
            if wanted
        ]
        if asked:
            raise LSTMFeatureError(
                f"the LSTM baseline has no attention, so it cannot give {', '.join(asked)}; "
                "use a Transformer checkpoint, or ask only for logits and representations with one sequence per row"
            )

    def forward(self, tokens: jax.Array, repr_layers: tuple[int, ...] = (), *, lean: bool = False) -> dict:
        """The uncompiled forward pass, for use inside a caller's ``jax.jit``; ``repr_layers`` already normalised.

        ``lean`` leaves out the logits (see :meth:`embed`).
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        real = tokens != self.padding_idx
        lengths = jnp.sum(real, axis=1)
        x = constrain(self.embed_tokens(tokens).astype(jnp.float32), HIDDEN_AXES)
        wanted = set(repr_layers)
        ahead, ahead_layers = self._run(self.forward_lstm, x, lengths, reverse=False, keep=wanted)
        behind, behind_layers = self._run(self.backward_lstm, x, lengths, reverse=True, keep=wanted)
        out = {}
        if repr_layers:
            states = {0: x, **{k: jnp.concatenate([ahead_layers[k], behind_layers[k]], axis=-1) for k in ahead_layers}}
            out["representations"] = {k: states[k] * real[..., None] for k in repr_layers}
        if not lean:
            # Position i sees the forward state after token i-1 and the backward state after token i+1.
            before = jnp.pad((ahead * real[..., None])[:, :-1], ((0, 0), (1, 0), (0, 0)))
            after = jnp.pad((behind * real[..., None])[:, 1:], ((0, 0), (0, 1), (0, 0)))
            out["logits"] = self.output(jnp.concatenate([before, after], axis=-1))
        return out

    def _run(
        self, stack: nnx.List, x: jax.Array, lengths: jax.Array, reverse: bool, keep: set[int]
    ) -> tuple[jax.Array, dict[int, jax.Array]]:
        """Every layer of one direction: the last layer's states and those of the layers (1-based) in ``keep``.

        ``reverse`` flips only the first ``lengths`` steps of each row.
        """
        zeros = jnp.zeros((x.shape[0], self.config.hidden_dim), jnp.float32)
        kept = {}
        for number, layer in enumerate(stack, start=1):
            x = layer(x, initial_carry=(zeros, zeros), seq_lengths=lengths, reverse=reverse, keep_order=True)
            x = constrain(x, HIDDEN_AXES)
            if number in keep:
                kept[number] = x.astype(jnp.float32)
        return x, kept


def _lstm_stack(config: LSTMConfig, rngs: nnx.Rngs) -> nnx.List:
    """One direction's layers; no stored RNG stream, the carry starts at zero."""
    return nnx.List([nnx.RNN(_lstm_cell(width, config, rngs), rngs=False) for width in config.layer_input_dims()])


def _lstm_cell(in_features: int, config: LSTMConfig, rngs: nnx.Rngs) -> nnx.OptimizedLSTMCell:
    """Flax's fused-gate LSTM cell (default initialisers) with logical axis names on every parameter."""
    return nnx.OptimizedLSTMCell(
        in_features,
        config.hidden_dim,
        kernel_init=partitioned(nnx.initializers.lecun_normal(), _GATE_AXES),
        recurrent_kernel_init=partitioned(nnx.initializers.orthogonal(), _GATE_AXES),
        bias_init=partitioned(nnx.initializers.zeros_init(), _GATE_AXES[1:]),
        dtype=config.dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _compiled_forward(
    graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, repr_layers: tuple[int, ...], lean: bool
) -> dict:
    return nnx.merge(graphdef, state).forward(tokens, repr_layers, lean=lean)
