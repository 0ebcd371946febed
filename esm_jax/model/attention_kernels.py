"""The ways attention can be computed, and which one runs on which platform.

Every kernel takes queries (already scaled by ``head_dim**-0.5``), keys and values of shape
(B, T, H, head_dim), returns the context (B, T, H, head_dim), and keeps softmax statistics in
float32 whatever the compute dtype. Which keys a query may see is given one of two ways:

* ``segment_ids`` (B, T) for packed rows: a query sees exactly the keys of its own segment
  (padding, id 0, sees only padding, so no softmax row is empty);
* otherwise ``key_padding_mask`` (B, T), True at padding: every query sees every non-padding key,
  as in fair-esm.

Kernels:

* ``dense``: all heads at once through XLA; writes the (B, H, T, T) scores to memory.
* ``per_head``: one (sequence, head) at a time so each T×T block stays in a CPU's cache; on CPUs the
  forward and backward are fused float32 C++ kernels (:mod:`esm_jax.model.cpu_attention`), which a
  bfloat16 model's queries, keys and values are widened for. It can also apply the rotary rotation to
  each head's queries and keys itself (``rotation``).
* ``splash``: the Pallas splash-attention (flash) kernel for TPUs; on any other platform it runs
  in Pallas interpret mode (slow, exact), which is how it is tested without a TPU.
* ``cudnn``: cuDNN's fused attention through ``jax.nn.dot_product_attention`` (GPUs, bfloat16
  or float16 compute). Segments reach it as a boolean mask.

On a mesh, ``per_head`` and ``splash`` run on each device's own rows under ``shard_map``
(:func:`on_each_device`); ``dense`` and ``cudnn`` are partitioned by XLA.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from esm_jax.model import cpu_attention
from esm_jax.model.config import ATTENTION_IMPLEMENTATIONS
from esm_jax.model.rotary import rotate, unrotate
from esm_jax.sharding import BATCH_AXES

# The kernel ``auto`` picks on each platform.
BEST_FOR_PLATFORM = {"cpu": "per_head", "tpu": "splash", "gpu": "cudnn", "cuda": "cudnn", "rocm": "dense"}
_SPLASH_BLOCK = 128  # splash's default block size: rows are padded to a multiple of it
# Bytes of float32 scores one step of the per-head loop may hold (2 MiB measured best on 2 Zen 4 cores,
# `benchmarks/attention_steps.py`: 20-30% faster than one head per step at T = 256-512).
PER_HEAD_STEP_BYTES = 2 << 20
_target_platform: list[str] = []


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
    """Trace attention for ``platform`` (``tpu``, ``gpu``, ``cpu``) instead of the default backend.

    ``esm-jax plan`` compiles TPU programs on a CPU-only machine; inside this context ``auto``
    picks the TPU kernel and splash compiles for real instead of in interpret mode.
    """
    _target_platform.append(platform)
    try:
        yield
    finally:
        _target_platform.pop()


def target_platform() -> str:
    """The platform attention is being traced for: the innermost :func:`compiling_for`, else JAX's backend."""
    return _target_platform[-1] if _target_platform else jax.default_backend()


def resolve(implementation: str, platform: str | None = None, dtype: jnp.dtype | str = jnp.float32) -> str:
    """The concrete kernel for ``implementation`` on ``platform`` at compute ``dtype``; refuses what cannot run.

    cuDNN's fused kernel takes only 16-bit inputs, so ``auto`` on a GPU runs float32 models through ``dense``.
    """
    platform = platform or target_platform()
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    takes_16_bit = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if implementation == "auto":
        best = BEST_FOR_PLATFORM.get(platform, "dense")
        return "dense" if best == "cudnn" and not takes_16_bit else best
    if implementation == "splash" and platform in ("gpu", "cuda", "rocm"):
        raise ValueError(
            "attention_impl='splash' is the TPU (Pallas Mosaic) kernel and cannot run on a GPU; "
            "use attention_impl='cudnn' or 'auto' there"
        )
    if implementation == "cudnn" and platform not in ("gpu", "cuda"):
        raise ValueError(
            f"attention_impl='cudnn' needs an NVIDIA GPU, but attention is compiled for {platform!r}; "
            "use 'splash' on TPUs, 'per_head' on CPUs, or 'auto'"
        )
    if implementation == "cudnn" and not takes_16_bit:
        raise ValueError(
            f"attention_impl='cudnn' takes bfloat16 or float16 compute, not {jnp.dtype(dtype).name}; "
            "use compute_dtype='bfloat16', or attention_impl='dense' (or 'auto') for float32"
        )
    return implementation


def allowed_pairs(segment_ids: jax.Array | None, key_padding_mask: jax.Array | None, shape) -> jax.Array:
    """Boolean (B, 1, T, T) mask of the (query, key) pairs that may attend to each other."""
    batch, length = shape
    if segment_ids is not None:
        return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    if key_padding_mask is None:
        return jnp.ones((batch, 1, 1, length), bool)
    return ~key_padding_mask[:, None, None, :]


def dense_attention(query, key, value, segment_ids, key_padding_mask, dtype) -> tuple[jax.Array, jax.Array]:
    """All heads at once; materialises and returns the (B, H, T, T) probabilities."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    allowed = allowed_pairs(segment_ids, key_padding_mask, query.shape[:2])
    probs = jax.nn.softmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), value)
    return context, probs


def per_head_attention(
    query, key, value, segment_ids, key_padding_mask, dtype, rotation: tuple | None = None
) -> jax.Array:
    """One (sequence, head) at a time, so each T×T score matrix stays in the CPU cache.

    On CPUs attention is bound by memory bandwidth when the (B, H, T, T) scores are written
    to RAM; looping keeps them in L2 and is several times faster. The softmax normalisation is
    applied to the (T, head_dim) context instead of the (T, T) weights: the same result up to
    rounding, one pass over the scores fewer. The backward pass recomputes each head's scores
    from its saved log-sum-exp (as flash attention does) instead of keeping them.

    ``rotation``, the (cos, sin) tables (T, head_dim) of :func:`esm_jax.model.rotary.rotation_tables`
    shared by every row, rotates each head's float32 queries and keys inside the loop: on CPUs a
    rotation fused with the move to one-head-at-a-time layout costs a tenth of an attention call.

    On CPUs every compute dtype runs through the fused float32 kernels: a bfloat16 model's attention is then
    rounded once, at its output, and its t12 4 × 512 forward runs 1.35–1.6× faster than through XLA's
    bfloat16 loop (README, "bfloat16 attention through the float32 kernels").
    """
    batch, length, heads, head_dim = query.shape

    def per_head(x):
        return jnp.swapaxes(x, 1, 2).reshape(batch * heads, length, head_dim)

    packed = segment_ids is not None
    if packed:
        row_keys = segment_ids.astype(jnp.int32)
    elif key_padding_mask is None:
        row_keys = jnp.zeros((batch, length), jnp.int32)
    else:
        row_keys = key_padding_mask.astype(jnp.int32)
    if target_platform() == "cpu" and cpu_attention.usable(head_dim):
        as_float32 = (x.astype(jnp.float32) for x in (query, key, value))
        return _fused_core(*as_float32, row_keys, packed, rotation).astype(dtype)
    row_keys = jnp.repeat(row_keys, heads, axis=0)
    context = _per_head_core(per_head(query), per_head(key), per_head(value), row_keys, packed, rotation)
    return jnp.swapaxes(context.reshape(batch, heads, length, head_dim), 1, 2)


def _head_scores(q, k, keys, packed: bool) -> jax.Array:
    """One head's float32 scores (T, T) with the pairs it may not attend to at ``-inf``."""
    scores = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32)
    allowed = keys[:, None] == keys[None, :] if packed else keys[None, :] == 0
    return jnp.where(allowed, scores, -jnp.inf)


def _rotated(q, k, rotation: tuple | None, dtype) -> tuple[jax.Array, jax.Array]:
    """One head's queries and keys after the rotation (if any), in the compute ``dtype``."""
    if rotation is not None:
        q, k = rotate(q, *rotation), rotate(k, *rotation)
    return q.astype(dtype), k.astype(dtype)


def _per_head_forward(query, key, value, row_keys, packed: bool, rotation) -> tuple[jax.Array, jax.Array]:
    """Context (N, T, head_dim) and each query's float32 log-sum-exp (N, T), one head at a time."""

    def one_head(args):
        q, k, v, keys = args
        q, k = _rotated(q, k, rotation, v.dtype)
        scores = _head_scores(q, k, keys, packed)
        peak = jnp.max(scores, axis=-1, keepdims=True)
        unnormalised = jnp.exp(scores - peak)
        total = jnp.sum(unnormalised, axis=-1, keepdims=True)
        context = jnp.einsum("qk,kd->qd", unnormalised.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return (context / total).astype(v.dtype), (peak + jnp.log(total))[:, 0]

    return jax.lax.map(one_head, (query, key, value, row_keys), batch_size=heads_per_step(query.shape[1]))


def heads_per_step(length: int) -> int:
    """How many (sequence, head) pairs one step of the per-head loop computes together.

    As many as keep their (T, T) scores within :data:`PER_HEAD_STEP_BYTES`: short rows then pay the loop's
    per-step cost once for several heads, long rows still keep one head's scores in cache.
    """
    return max(1, PER_HEAD_STEP_BYTES // (4 * length * length))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _per_head_core(query, key, value, row_keys, packed: bool, rotation) -> jax.Array:
    return _per_head_forward(query, key, value, row_keys, packed, rotation)[0]


def _per_head_core_forward(query, key, value, row_keys, packed: bool, rotation):
    context, log_sum_exp = _per_head_forward(query, key, value, row_keys, packed, rotation)
    return context, (query, key, value, row_keys, rotation, context, log_sum_exp)


def _per_head_core_backward(packed: bool, saved, d_context):
    """Gradients of one head at a time, its probabilities rebuilt from the saved log-sum-exp.

    With a rotation, the gradients of the rotated queries and keys are rotated back.
    """
    query, key, value, row_keys, rotation, context, log_sum_exp = saved

    def one_head(args):
        q_in, k_in, v, keys, out, lse, d_out = args
        q, k = _rotated(q_in, k_in, rotation, v.dtype)
        probs = jnp.exp(_head_scores(q, k, keys, packed) - lse[:, None])
        d_out = d_out.astype(jnp.float32)
        d_value = jnp.einsum("qk,qd->kd", probs, d_out)
        d_probs = jnp.einsum("qd,kd->qk", d_out, v.astype(jnp.float32))
        d_scores = probs * (d_probs - jnp.sum(d_out * out.astype(jnp.float32), axis=-1, keepdims=True))
        d_query = jnp.einsum("qk,kd->qd", d_scores, k.astype(jnp.float32))
        d_key = jnp.einsum("qk,qd->kd", d_scores, q.astype(jnp.float32))
        if rotation is not None:
            d_query, d_key = unrotate(d_query, *rotation), unrotate(d_key, *rotation)
        return d_query.astype(q_in.dtype), d_key.astype(k_in.dtype), d_value.astype(v.dtype)

    grads = jax.lax.map(
        one_head,
        (query, key, value, row_keys, context, log_sum_exp, d_context),
        batch_size=heads_per_step(query.shape[1]),
    )
    return (*grads, None, None)


_per_head_core.defvjp(_per_head_core_forward, _per_head_core_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused_core(query, key, value, row_keys, packed: bool, rotation) -> jax.Array:
    return cpu_attention.forward(query, key, value, row_keys, packed, rotation)[0]


def _fused_core_forward(query, key, value, row_keys, packed: bool, rotation):
    context, log_sum_exp = cpu_attention.forward(query, key, value, row_keys, packed, rotation)
    return context, (query, key, value, row_keys, rotation, context, log_sum_exp)


def _fused_core_backward(packed: bool, saved, d_context):
    """The fused C++ backward pass: each block's probabilities rebuilt from the saved log-sum-exp."""
    query, key, value, row_keys, rotation, context, log_sum_exp = saved
    grads = cpu_attention.backward(query, key, value, row_keys, packed, rotation, context, log_sum_exp, d_context)
    return (*grads, None, None)


_fused_core.defvjp(_fused_core_forward, _fused_core_backward)


def on_each_device(kernel):
    """``kernel`` run on each device's own rows under ``shard_map`` when a mesh with batch axes is set.

    Kernels that loop over rows and heads (``per_head``) or call a per-device Pallas kernel
    (``splash``) cannot be partitioned by GSPMD: it would gather every row onto every device. Rows
    split over the batch axes and heads over ``tensor`` (when it divides them); without such a mesh
    the kernel runs as is. Keyword arguments (``rotation`` tables) are shared by every row and copied
    to every device.
    """

    @functools.wraps(kernel)
    def run(query, key, value, segment_ids, key_padding_mask, dtype, **shared):
        mesh = jax.sharding.get_abstract_mesh()
        batch_axes = tuple(axis for axis in BATCH_AXES if not mesh.empty and axis in mesh.axis_names)
        if not batch_axes:
            return kernel(query, key, value, segment_ids, key_padding_mask, dtype, **shared)
        splits_heads = "tensor" in mesh.axis_names and query.shape[2] % mesh.shape["tensor"] == 0
        head_axis = "tensor" if splits_heads else None
        qkv_spec, row_spec = PartitionSpec(batch_axes, None, head_axis, None), PartitionSpec(batch_axes, None)
        masks = {"segment_ids": segment_ids, "key_padding_mask": key_padding_mask}
        masks = {name: mask for name, mask in masks.items() if mask is not None}

        def local(q, k, v, local_masks, local_shared):
            segments, padding = local_masks.get("segment_ids"), local_masks.get("key_padding_mask")
            return kernel(q, k, v, segments, padding, dtype, **local_shared)

        sharded = jax.shard_map(
            local,
            in_specs=(qkv_spec, qkv_spec, qkv_spec, dict.fromkeys(masks, row_spec), PartitionSpec()),
            out_specs=qkv_spec,
            check_vma=False,
        )
        return sharded(query, key, value, masks, shared)

    return run


def splash_attention(query, key, value, segment_ids, key_padding_mask, dtype) -> jax.Array:
    """The Pallas splash kernel on one device's rows (see :func:`on_each_device`).

    Without packing, each row is one segment (padding its own), so non-padding queries see
    exactly the non-padding keys, as the other kernels do.
    """
    if segment_ids is None:
        if key_padding_mask is None:
            segment_ids = jnp.ones(query.shape[:2], jnp.int32)
        else:
            segment_ids = (~key_padding_mask).astype(jnp.int32)
    interpret = target_platform() != "tpu"
    return _splash_local(query, key, value, segment_ids, interpret=interpret, dtype=dtype)


def _splash_block_sizes(length: int) -> splash.BlockSizes:
    """Blocks as long as the (padded) row allows, up to 1024 queries or keys, computed 512 keys at a time.

    Each query block streams every key block from HBM (and each key block every query block in the
    backward pass), so the default 128-token blocks read K and V eight times per 1024-token row; whole-row
    blocks read everything once.
    """
    block = next(size for size in (1024, 512, 256, _SPLASH_BLOCK) if length % size == 0)
    compute = min(block, 512)
    return splash.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=compute,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=compute,
        block_q_dq=block, block_kv_dq=block,
    )  # fmt: skip


def _splash_local(query, key, value, segment_ids, *, interpret: bool, dtype) -> jax.Array:
    """Splash on one device's rows: (B, T, H, D) in, rows padded to a multiple of 128 tokens."""
    batch, length, heads, _ = query.shape
    padded = -(-length // _SPLASH_BLOCK) * _SPLASH_BLOCK
    extra = padded - length

    def heads_first(x):
        x = jnp.swapaxes(x.astype(dtype), 1, 2)
        return jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))

    segments = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, extra)), constant_values=-1)
    mask = splash.MultiHeadMask([splash.FullMask((padded, padded)) for _ in range(heads)])
    kernel = splash.make_splash_mha(
        mask, block_sizes=_splash_block_sizes(padded), head_shards=1, q_seq_shards=1, interpret=interpret
    )

    def one_row(q, k, v, s):
        return kernel(q, k, v, segment_ids=splash.SegmentIds(q=s, kv=s))

    context = jax.vmap(one_row)(heads_first(query), heads_first(key), heads_first(value), segments)
    return jnp.swapaxes(context[:, :, :length], 1, 2).astype(dtype)


def cudnn_attention(query, key, value, segment_ids, key_padding_mask, dtype, implementation: str = "cudnn"):
    """cuDNN fused attention; ``implementation="xla"`` runs the same call through XLA (how CPUs test it)."""
    allowed = allowed_pairs(segment_ids, key_padding_mask, query.shape[:2])
    allowed = jnp.broadcast_to(allowed, (query.shape[0], 1, query.shape[1], query.shape[1]))
    context = jax.nn.dot_product_attention(
        query.astype(dtype), key.astype(dtype), value.astype(dtype),
        mask=allowed, scale=1.0, implementation=implementation,
    )  # fmt: skip
    return context.astype(dtype)


KERNELS = {
    "per_head": on_each_device(per_head_attention),
    "splash": on_each_device(splash_attention),
    "cudnn": cudnn_attention,
}
