"""The ESM protein language model (ESM-1b, ESM-1v and ESM-2) as one Flax NNX module.

``model(tokens, repr_layers=[...], need_head_weights=..., return_contacts=...)`` behaves as
fair-esm's ``ProteinBertModel`` / ``ESM2`` forward and compiles once per input shape and set
of options. :meth:`ESM.forward` is the same computation without the compilation cache, for
use inside a caller's own ``jax.jit`` (training and evaluation steps).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from esm_jax.alphabet import Alphabet
from esm_jax.errors import CheckpointError, EsmJaxError
from esm_jax.masking_rule import MaskingRule
from esm_jax.mesh import batch_shard_count, batch_sharding
from esm_jax.model.block import TransformerBlock
from esm_jax.model.config import ModelConfig
from esm_jax.model.heads import ContactHead, LMHead
from esm_jax.model.layers import WEIGHT_INIT, LayerNorm, partitioned
from esm_jax.model.packing import check_packed_rows, check_segment_shape, segment_positions, segment_sums
from esm_jax.sharding import HIDDEN_AXES, ROW_AXES, constrain

# Fraction of tokens replaced by <mask> during ESM training (15% selected × 80% masked);
# token dropout rescales embeddings by it at train and inference time (fair-esm esm2.py).
MASK_RATIO_TRAIN = MaskingRule().mask_ratio

_ALPHABET = Alphabet()


class InvalidTokenError(EsmJaxError, ValueError):
    """A token batch given to the model holds something other than the alphabet's integer ids."""


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_VIEWS = (jax.lax.dynamic_slice_p, jax.lax.squeeze_p, jax.lax.reshape_p)


def _save_all_but_views(primitive, *_, **__) -> bool:
    """A rematerialisation policy: keep every residual except slices and reshapes, which the backward takes again.

    A layer's weights are slices of the stacked weights, which are there anyway, and the attention's context
    reshaped for its output projection is the context the attention kernel keeps; kept, each would be another
    stacked copy (``python benchmarks/train_variants.py --variant views=taken_again views=kept``).
    """
    return primitive not in _VIEWS


class ESM(nnx.Module):
    """ESM-1b / ESM-1v / ESM-2 encoder with its tied LM head and contact head.

    Transformer blocks are stored stacked along a leading ``layers`` axis; ``config.scan_layers``
    runs them with ``jax.lax.scan`` (the default: fast compilation, and the faster forward on CPUs)
    instead of an unrolled loop. Both give the same outputs.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.padding_idx = _ALPHABET.padding_idx
        self.mask_idx = _ALPHABET.mask_idx
        self.cls_idx = _ALPHABET.cls_idx
        self.eos_idx = _ALPHABET.eos_idx
        self.prepend_bos = True
        self.append_eos = True
        self.has_contact_regression = True
        # The mesh whose batch axes split every batch (set by esm_jax.sharding.shard_model); None: one device.
        self.mesh: Mesh | None = None
        d = config.embed_dim
        self.embed_tokens = nnx.Embed(
            config.vocab_size, d, embedding_init=partitioned(WEIGHT_INIT, ("vocab", "embed")), rngs=rngs
        )
        zero_rows = [self.padding_idx] + ([self.mask_idx] if config.architecture == "esm1b" else [])
        table = self.embed_tokens.embedding
        table[...] = table[...].at[jnp.array(zero_rows)].set(0.0)
        esm1b = config.architecture == "esm1b"
        self.embed_positions = self._position_table(config, rngs) if esm1b else None
        use_before = esm1b and config.emb_layer_norm_before
        self.emb_layer_norm_before = LayerNorm(d, config.layer_norm_eps) if use_before else None
        self.layers = _stacked_blocks(config, rngs)
        self.emb_layer_norm_after = LayerNorm(d, config.layer_norm_eps)
        self.lm_head = LMHead(config, rngs=rngs)
        self.contact_head = ContactHead(config, self.eos_idx, self.padding_idx, rngs=rngs)

    def _position_table(self, config: ModelConfig, rngs: nnx.Rngs) -> nnx.Embed:
        """Learned positions for ``max_positions`` tokens after fairseq's ``padding_idx + 1`` offset."""
        table = nnx.Embed(
            config.max_positions + self.padding_idx + 1,
            config.embed_dim,
            embedding_init=partitioned(WEIGHT_INIT, ("positions", "embed")),
            rngs=rngs,
        )
        table.embedding[...] = table.embedding[...].at[self.padding_idx].set(0.0)
        return table

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def representation_width(self, layer: int) -> int:
        """Width of the hidden state ``layer`` returns: every layer of a Transformer has ``embed_dim``."""
        return self.config.embed_dim

    @property
    def alphabet(self) -> Alphabet:
        return _ALPHABET

    def __call__(
        self,
        tokens,
        repr_layers: Iterable[int] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
        segment_ids=None,
    ) -> dict:
        """Run the model on ``tokens`` (B, T); outputs as fair-esm, compiled per shape.

        Returns ``logits`` (B, T, V), ``representations`` {layer: (B, T, D)}, and with
        ``need_head_weights`` ``attentions`` (B, L, H, T, T), with ``return_contacts`` also
        ``contacts`` (B, T-2, T-2). Negative layer indices count from the end (-1 = last).
        ``segment_ids`` (B, T) packs several sequences per row (:mod:`esm_jax.model.packing`):
        every per-token output then equals that sequence's output when run alone.
        """
        options = (bool(need_head_weights), bool(return_contacts))
        return self._compiled(tokens, repr_layers, *options, lean=False, segment_ids=segment_ids)

    def embed(
        self, tokens, repr_layers: Iterable[int] = (-1,), return_contacts: bool = False, segment_ids=None
    ) -> dict:
        """Only ``representations`` (and ``contacts``): no logits, no attention maps kept.

        The lean call for extraction: contacts are accumulated layer by layer, so memory grows
        with one layer's attention instead of all of them.
        """
        return self._compiled(tokens, repr_layers, False, bool(return_contacts), lean=True, segment_ids=segment_ids)

    def _compiled(
        self, tokens, repr_layers, need_head_weights: bool, return_contacts: bool, lean: bool, segment_ids=None
    ) -> dict:
        layers = self.normalize_layers(repr_layers)
        if return_contacts and not self.has_contact_regression:
            raise CheckpointError(
                "contacts were asked for but this model was loaded without contact-regression "
                "weights; place the '<model>-contact-regression.pt' file next to the checkpoint "
                "and load it again"
            )
        self.check_tokens(tokens)
        if not isinstance(tokens, jax.Array):
            tokens = np.asarray(tokens, dtype=np.int32)
        if segment_ids is not None:
            self.check_segments(tokens, segment_ids, return_contacts)
            segment_ids = np.asarray(segment_ids, dtype=np.int32)
        graphdef, state = nnx.split(self)
        options = (need_head_weights, return_contacts, lean)
        rows = len(tokens)
        tokens, segment_ids = self.place_rows(tokens, segment_ids)
        with self.mesh_context():
            out = _compiled_forward(graphdef, state, tokens, segment_ids, layers, *options)
        return out if len(tokens) == rows else jax.tree.map(lambda values: values[:rows], out)

    def place_rows(self, tokens, *row_arrays) -> tuple:
        """A batch as the model's mesh runs it: split over the batch axes, rows padded to a multiple of them.

        ``tokens`` gains empty ``<cls><eos>`` rows, each of ``row_arrays`` (per-row inputs such as segment
        ids, or None) rows of zeros; outputs for those rows are to be dropped. Without a mesh the arrays
        are returned as they are.
        """
        if self.mesh is None:
            return (tokens, *row_arrays)
        tokens = np.asarray(tokens, dtype=np.int32)
        extra = -len(tokens) % self.batch_shards
        filler = np.full((extra, tokens.shape[1]), self.padding_idx, np.int32)
        filler[:, :2] = (self.cls_idx, self.eos_idx)
        sharding = batch_sharding(self.mesh)
        padded = [jax.device_put(np.concatenate([tokens, filler]), sharding)]
        for values in row_arrays:
            if values is None:
                padded.append(None)
                continue
            values = np.asarray(values)
            zeros = np.zeros((extra, *values.shape[1:]), values.dtype)
            padded.append(jax.device_put(np.concatenate([values, zeros]), sharding))
        return tuple(padded)

    @property
    def batch_shards(self) -> int:
        """How many devices share each batch's rows (1 without a mesh)."""
        return 1 if self.mesh is None else batch_shard_count(self.mesh)

    def mesh_context(self) -> contextlib.AbstractContextManager:
        """The context a jitted call over this model's state runs in: its mesh set, if it has one."""
        return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

    def check_tokens(self, tokens) -> None:
        """Refuse a concrete batch that is not (B, T) integer ids of the alphabet, naming the first bad entry.

        An id outside the embedding table would silently give NaN (too large) or another token's
        embedding (negative). Traced or multi-host inputs cannot be checked cheaply and pass unchecked.
        """
        if isinstance(tokens, jax.core.Tracer) or (isinstance(tokens, jax.Array) and not tokens.is_fully_addressable):
            return
        values = np.asarray(tokens)
        if values.ndim != 2 or values.dtype.kind not in "iu":
            raise InvalidTokenError(
                f"tokens must be a (batch, length) array of integer token ids, got shape {values.shape} and dtype "
                f"{values.dtype}; build them with alphabet.get_batch_converter()"
            )
        outside = (values < 0) | (values >= self.config.vocab_size)
        if outside.any():
            row, position = (int(i) for i in np.argwhere(outside)[0])
            raise InvalidTokenError(
                f"tokens[{row}, {position}] is {values[row, position]}, not a token id of the alphabet "
                f"(0 to {self.config.vocab_size - 1}); build tokens with alphabet.get_batch_converter()"
            )

    def check_segments(self, tokens, segment_ids, return_contacts: bool = False) -> None:
        """Refuse packed rows this model cannot run, with the row and position at fault."""
        if return_contacts:
            raise ValueError(
                "contacts are predicted per sequence over its whole attention map: run return_contacts "
                "without segment_ids (one sequence per row)"
            )
        check_segment_shape(jnp.shape(tokens), jnp.shape(segment_ids))
        if isinstance(segment_ids, jax.core.Tracer) or isinstance(tokens, jax.core.Tracer):
            return
        check_packed_rows(
            np.asarray(tokens), np.asarray(segment_ids), cls_idx=self.cls_idx, eos_idx=self.eos_idx,
            padding_idx=self.padding_idx, max_tokens=self.config.max_batch_width,
        )  # fmt: skip

    def normalize_layers(self, repr_layers: Iterable[int]) -> tuple[int, ...]:
        """Sorted, de-duplicated layer indices in ``0..num_layers`` (negative ones count back)."""
        count = self.config.num_layers
        normalized = set()
        for layer in repr_layers:
            if not -(count + 1) <= layer <= count:
                raise ValueError(f"representation layer {layer} does not exist: the model has layers 0..{count}")
            normalized.add(layer % (count + 1))
        return tuple(sorted(normalized))

    def forward(
        self,
        tokens: jax.Array,
        repr_layers: tuple[int, ...] = (),
        need_head_weights: bool = False,
        return_contacts: bool = False,
        *,
        lean: bool = False,
        segment_ids: jax.Array | None = None,
    ) -> dict:
        """The uncompiled forward pass; ``repr_layers`` must already be normalised.

        ``lean`` drops logits and attention maps and accumulates contacts per layer (see :meth:`embed`).
        ``segment_ids`` packs sequences per row; callers check them first (:meth:`check_segments`).
        """
        keep_attentions = (need_head_weights or return_contacts) and not lean
        tokens = jnp.asarray(tokens, dtype=jnp.int32)
        if segment_ids is not None:
            self.check_segments(tokens, segment_ids, return_contacts)
            segment_ids = constrain(jnp.asarray(segment_ids, dtype=jnp.int32), ROW_AXES)
        padding_mask = tokens == self.padding_idx
        x = constrain(self._embed(tokens, padding_mask, segment_ids), HIDDEN_AXES)
        representations = {0: x} if 0 in repr_layers else {}
        attend = (padding_mask, segment_ids)
        stack = self._run_layers(x, tokens, attend, repr_layers, keep_attentions, lean and return_contacts)
        x, hidden, attentions, contact_logits = stack
        representations.update(hidden)
        x = self.emb_layer_norm_after(x)
        if self.config.num_layers in repr_layers:
            representations[self.config.num_layers] = x
        result = {"representations": representations}
        if not lean:
            result["logits"] = self.lm_head(x, self.embed_tokens.embedding[...])
        if keep_attentions:
            not_padding = (~padding_mask).astype(attentions.dtype)
            attentions = attentions * (not_padding[:, None, :] * not_padding[:, :, None])[:, None, None]
            result["attentions"] = attentions
        if return_contacts:
            logits = self.contact_head.finish(contact_logits) if lean else self.contact_head(tokens, attentions)
            result["contacts"] = logits
        return result

    def final_hidden_at(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """The last representation (after the final LayerNorm) at ``positions`` (B, K) of ``tokens`` (B, T): (B, K, D).

        Equal to indexing ``forward``'s last representation, up to float32 rounding, but the last block runs
        its queries, attention output and feed-forward only at ``positions`` (keys and values everywhere):
        a reader of a few positions per row, as masked-marginal scoring and the MLM loss are, skips most of a
        layer. The first blocks follow ``remat_policy`` as :meth:`forward`'s do. With as many positions as tokens
        or more, the whole last layer costs no more, and the full forward is indexed instead.
        """
        tokens = jnp.asarray(tokens, dtype=jnp.int32)
        if positions.shape[1] >= tokens.shape[1]:
            last = self.config.num_layers
            hidden = self.forward(tokens, (last,), lean=True)["representations"][last]
            return jnp.take_along_axis(hidden, positions[:, :, None], axis=1)
        padding_mask = tokens == self.padding_idx
        graphdef, stacked = nnx.split(self.layers)
        stacked, last_layer = _stack_and_last_layer(stacked)

        def block(layer: jax.Array) -> TransformerBlock:
            # Indexed inside the loop: slicing the stack's first layers off beforehand would copy them.
            return nnx.merge(graphdef, jax.tree.map(lambda values: values[layer], stacked))

        def run_block(x, layer):
            return constrain(block(layer)(x, padding_mask, False)[0], HIDDEN_AXES), None

        # Without a rematerialisation policy, the backward pass still slices each layer's weights again rather
        # than keep them in a stack of their own (the slices would be saved for the products' gradients).
        policy = _REMAT.get(self.config.remat_policy, _save_all_but_views)
        run_block = jax.checkpoint(run_block, policy=policy)
        x = constrain(self._embed(tokens, padding_mask, None), HIDDEN_AXES)
        last = self.config.num_layers - 1
        x = jax.lax.scan(run_block, x, jnp.arange(last))[0]
        return self.emb_layer_norm_after(nnx.merge(graphdef, last_layer).at_positions(x, positions, padding_mask))

    def logits_at(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """Language-model logits (B, K, V) at ``positions`` (B, K) of ``tokens`` (B, T), via :meth:`final_hidden_at`."""
        return self.lm_head(self.final_hidden_at(tokens, positions), self.embed_tokens.embedding[...])

    def _embed(self, tokens: jax.Array, padding_mask: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        x = self.embed_tokens(tokens).astype(jnp.float32)
        if self.config.token_dropout:
            is_mask = tokens == self.mask_idx
            x = jnp.where(is_mask[..., None], 0.0, x)
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - self._observed_mask_ratio(is_mask, padding_mask, segment_ids))
        if self.embed_positions is not None:
            x = x + self.embed_positions(self._positions(tokens, padding_mask, segment_ids))
            if self.emb_layer_norm_before is not None:
                x = self.emb_layer_norm_before(x)
        return x * (1 - padding_mask[..., None].astype(x.dtype))

    @staticmethod
    def _observed_mask_ratio(is_mask: jax.Array, padding_mask: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        """Fraction of ``<mask>`` tokens in each sequence (padding excluded), broadcastable to (B, T, 1)."""
        if segment_ids is None:
            lengths = jnp.maximum(jnp.sum(~padding_mask, axis=-1), 1)
            return (jnp.sum(is_mask, axis=-1).astype(jnp.float32) / lengths)[:, None, None]
        lengths = jnp.maximum(segment_sums((~padding_mask).astype(jnp.int32), segment_ids), 1)
        observed = segment_sums(is_mask.astype(jnp.int32), segment_ids).astype(jnp.float32) / lengths
        return jnp.where(padding_mask, 0.0, observed)[..., None]

    def _positions(self, tokens: jax.Array, padding_mask: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        """fairseq positions: 1-based count of non-padding tokens offset by the padding index.

        In packed rows the count restarts at every sequence's ``<cls>``.
        """
        not_padding = (~padding_mask).astype(jnp.int32)
        if segment_ids is not None:
            return (segment_positions(segment_ids) + 1) * not_padding + self.padding_idx
        if tokens.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence of {tokens.shape[1]} tokens exceeds this model's maximum of "
                f"{self.config.max_positions} (BOS and EOS included); truncate it, e.g. with "
                f"truncation_seq_length={self.config.max_positions - 2}"
            )
        return jnp.cumsum(not_padding, axis=1) * not_padding + self.padding_idx

    def _run_layers(
        self,
        x: jax.Array,
        tokens: jax.Array,
        attend: tuple[jax.Array, jax.Array | None],
        repr_layers: tuple[int, ...],
        keep_attentions: bool,
        accumulate_contacts: bool,
    ) -> tuple[jax.Array, dict[int, jax.Array], jax.Array | None, jax.Array | None]:
        """Run every block; returns the final x, requested hidden states, attentions, contact logits.

        ``attend`` is (padding mask, segment ids or None): what each query may attend to.
        """
        padding_mask, segment_ids = attend
        positions = None if segment_ids is None or not self.config.uses_rotary else segment_positions(segment_ids)
        graphdef, stacked = nnx.split(self.layers)
        count = self.config.num_layers
        wanted = [layer for layer in repr_layers if 1 <= layer < count]
        need_weights = keep_attentions or accumulate_contacts

        def run_block(x, layer_state, layer):
            x, probs = nnx.merge(graphdef, layer_state)(x, padding_mask, need_weights, segment_ids, positions)
            x = constrain(x, HIDDEN_AXES)
            contacts = self.contact_head.layer_logits(tokens, probs, layer) if accumulate_contacts else None
            return x, (probs if keep_attentions else None), contacts

        if self.config.remat_policy != "none":
            run_block = jax.checkpoint(run_block, policy=_REMAT[self.config.remat_policy])

        if not self.config.scan_layers:
            hidden, maps, contact_logits = {}, [], None
            for i, layer_state in enumerate(_unstack(stacked, count)):
                x, probs, contacts = run_block(x, layer_state, i)
                if i + 1 in wanted:
                    hidden[i + 1] = x
                maps.append(probs)
                if accumulate_contacts:
                    contact_logits = contacts if contact_logits is None else contact_logits + contacts
            return x, hidden, (jnp.stack(maps, axis=1) if keep_attentions else None), contact_logits

        slots = jnp.array([wanted.index(i + 1) if i + 1 in wanted else len(wanted) for i in range(count)])
        # No buffer when no hidden state is kept (training): writing one costs every layer a pass over x.
        buffer = jnp.zeros((len(wanted) + 1, *x.shape), x.dtype) if wanted else None
        length = tokens.shape[1] - 2
        contact_logits = jnp.zeros((tokens.shape[0], length, length), jnp.float32) if accumulate_contacts else None

        def body(carry, inputs):
            x, buffer, contact_logits = carry
            layer_state, slot, layer = inputs
            x, probs, contacts = run_block(x, layer_state, layer)
            if accumulate_contacts:
                contact_logits = contact_logits + contacts
            if buffer is not None:
                buffer = jax.lax.dynamic_update_index_in_dim(buffer, x, slot, 0)
            return (x, buffer, contact_logits), probs

        carry = (x, buffer, contact_logits)
        (x, buffer, contact_logits), maps = jax.lax.scan(body, carry, (stacked, slots, jnp.arange(count)))
        hidden = {layer: buffer[k] for k, layer in enumerate(wanted)}
        return x, hidden, (jnp.moveaxis(maps, 0, 1) if keep_attentions else None), contact_logits


@jax.custom_vjp
def _stack_and_last_layer(stacked: nnx.State) -> tuple[nnx.State, nnx.State]:
    """The stacked layers' state as it is, and the last layer's alone.

    Differentiated, each use of the stack gives a gradient of the stack's size: the loop's over the first layers
    and the last layer's, zero-padded. Adding the two took a pass over every stacked weight; the last layer's
    gradient is added into the loop's in place instead.
    """
    return stacked, jax.tree.map(lambda values: values[-1], stacked)


def _stack_and_last_layer_forward(stacked):
    return _stack_and_last_layer(stacked), None


def _stack_and_last_layer_backward(_, cotangents):
    d_stacked, d_last = cotangents
    return (jax.tree.map(lambda stack, last: stack.at[-1].add(last), d_stacked, d_last),)


_stack_and_last_layer.defvjp(_stack_and_last_layer_forward, _stack_and_last_layer_backward)


def _unstack(stacked: nnx.State, count: int) -> list[nnx.State]:
    """Each layer's state, split off the stacked ``layers`` axis.

    A split's gradient is one concatenation; indexing each layer instead makes the gradient of every
    layer a full-size zero-padded stack, which costs a training step about a fifth of its time on CPUs.
    """
    parts = jax.tree.map(lambda a: [part[0] for part in jnp.split(a, count)], stacked)
    is_parts = lambda node: isinstance(node, list)  # noqa: E731
    return [jax.tree.map(lambda layers, i=i: layers[i], parts, is_leaf=is_parts) for i in range(count)]


def _stacked_blocks(config: ModelConfig, rngs: nnx.Rngs) -> TransformerBlock:
    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> TransformerBlock:
        return TransformerBlock(config, rngs=rngs)

    return make(rngs)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _compiled_forward(graphdef, state, tokens, segment_ids, repr_layers, need_head_weights, return_contacts, lean):
    model = nnx.merge(graphdef, state)
    return model.forward(tokens, repr_layers, need_head_weights, return_contacts, lean=lean, segment_ids=segment_ids)
