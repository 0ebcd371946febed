"""Building blocks shared by every ESM module: dense layers, LayerNorm and GELU.

Every parameter carries logical axis names (``out_sharding`` metadata) that
:mod:`esm_jax.sharding` maps onto a device mesh. Eager sharding is off so a model can be
built without a mesh; sharded initialisation happens under ``jax.jit`` with explicit
output shardings instead.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

# fairseq/RoBERTa initialisation (init_bert_params): N(0, 0.02) weights, zero biases.
WEIGHT_INIT = nnx.initializers.normal(stddev=0.02)


def partitioned(initializer, axes: tuple[str | None, ...]):
    """Wrap ``initializer`` so the created parameter carries the logical ``axes``."""
    return nnx.with_partitioning(initializer, axes, eager_sharding=False)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU in fair-esm's form, ``x / 2 * (1 + erf(x / sqrt(2)))``.

    ``jax.nn.gelu`` defaults to the tanh approximation, and its exact form goes through ``erfc``, which
    XLA:CPU evaluates with an exponential, two divisions and about seventy other operations per vector,
    where ``erf`` is one rational function (GELU's share of a forward: ``benchmarks/forward_profile.py``).
    Both lie within 3e-7 × max(|x|, 1) of float64 GELU (``tests/test_layers.py``).

    Its gradient keeps only the input and recomputes the rest: autodiff keeps two more activations of
    the feed-forward width per layer, whose writing and reading cost a CPU training step more than the
    recomputation (``python benchmarks/train_variants.py --variant gelu=custom gelu=autodiff``).
    """
    return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gelu(x), x


def _normal_cdf_and_density(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Φ(x) and φ(x), the standard normal distribution and density: GELU is x Φ(x), its derivative Φ(x) + x φ(x)."""
    cdf = 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))
    density = jnp.exp(-0.5 * jnp.square(x)) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf, density


def _gelu_backward(x: jax.Array, d_output: jax.Array) -> tuple[jax.Array]:
    """d gelu / dx = Φ(x) + x φ(x)."""
    cdf, density = _normal_cdf_and_density(x)
    return ((d_output * (cdf + x * density)).astype(x.dtype),)


gelu.defvjp(_gelu_forward, _gelu_backward)


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """A float32-parameter linear layer whose matmul runs in ``dtype`` and returns float32; kernel is (in, out).

    A float32 result is also what makes bfloat16 fast on CPUs: XLA sends bfloat16 × bfloat16 → float32
    products to its AVX-512 BF16 GEMM, but bfloat16 → bfloat16 products to a path slower than float32.
    """
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=partitioned(WEIGHT_INIT, axes),
        bias_init=partitioned(nnx.initializers.zeros_init(), (axes[1],)),
        dtype=dtype,
        param_dtype=jnp.float32,
        preferred_element_type=jnp.float32,
        dot_general=dense_product,
        rngs=rngs,
    )


def dense_product(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
    """``nnx.Linear``'s product ``lhs (..., in) @ rhs (in, out)``, with a hand-written gradient.

    Autodiff computes a weight gradient as (out, in) and transposes it; XLA:CPU then transposes each layer's
    output gradient to match and multiplies in a slower orientation. Contracting the token axes of the input
    and of the output gradient gives the (in, out) gradient in one product
    (``python benchmarks/train_variants.py --variant dense_gradient=custom dense_gradient=autodiff``).
    Other contractions, precisions or output shardings go to ``lax.dot_general`` as given.
    """
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or precision is not None or out_sharding is not None:
        return jax.lax.dot_general(
            lhs,
            rhs,
            dimension_numbers,
            precision,
            preferred_element_type=preferred_element_type,
            out_sharding=out_sharding,
        )
    return _dense_product(lhs, rhs, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_product(inputs: jax.Array, kernel: jax.Array, preferred_element_type) -> jax.Array:
    contraction = (((inputs.ndim - 1,), (0,)), ((), ()))
    return jax.lax.dot_general(inputs, kernel, contraction, preferred_element_type=preferred_element_type)


def _dense_product_forward(inputs, kernel, preferred_element_type):
    return _dense_product(inputs, kernel, preferred_element_type), (inputs, kernel)


def _dense_product_backward(preferred_element_type, saved, d_output):
    """The gradients autodiff gives, in the same dtypes, with the kernel's taken in (in, out) order."""
    inputs, kernel = saved
    last = d_output.ndim - 1
    d_inputs = jax.lax.dot_general(
        d_output, kernel, (((last,), (1,)), ((), ())), preferred_element_type=preferred_element_type
    )
    d_kernel = kernel_gradient(inputs, d_output, preferred_element_type)
    return d_inputs.astype(inputs.dtype), d_kernel.astype(kernel.dtype)


_dense_product.defvjp(_dense_product_forward, _dense_product_backward)


def kernel_gradient(inputs: jax.Array, d_output: jax.Array, preferred_element_type) -> jax.Array:
    """A dense kernel's gradient ``inputsᵀ · d_output`` (in, out), contracted over the token axes.

    XLA:CPU multiplies with the contraction on the left operand's last axis, so either form of this product
    transposes something in memory: ``inputsᵀ · d_output`` the inputs (tokens × in floats), ``(d_outputᵀ ·
    inputs)ᵀ`` the output gradient and the result (tokens × out + in × out). The first is taken unless the
    second moves fewer floats, which happens for a wide input over many tokens: the feed-forward's second
    product at the t12 4 × 256 shape, not at ESM-1b 1 × 512, whose step the first form makes 4–5% faster in
    median (``python benchmarks/train_variants.py --model esm1b_t33_650M_UR50S --rows 1 --length 512
    --without-fair-esm --variant kernel_gradient=by_size kernel_gradient=by_width``). In the second form an
    optimisation barrier keeps XLA from folding the transpose back into the product.
    """
    tokens = tuple(range(inputs.ndim - 1))
    contraction = ((tokens, tokens), ((), ()))
    if not transposes_result(inputs.shape, d_output.shape[-1]):
        return jax.lax.dot_general(inputs, d_output, contraction, preferred_element_type=preferred_element_type)
    product = jax.lax.dot_general(d_output, inputs, contraction, preferred_element_type=preferred_element_type)
    return jax.lax.optimization_barrier(product).T


def transposes_result(input_shape: tuple[int, ...], width_out: int) -> bool:
    """Whether :func:`kernel_gradient` takes the form ``(d_outputᵀ · inputs)ᵀ``: when it moves fewer floats."""
    count, width_in = math.prod(input_shape[:-1]), input_shape[-1]
    return count * width_in > (count + width_in) * width_out


def gelu_then_dense(linear: nnx.Linear, pre_activation: jax.Array) -> jax.Array:
    """``linear(gelu(pre_activation))`` for a layer made by :func:`dense`; its gradient keeps the pre-activation alone.

    Separately, GELU's gradient keeps its input and the product's keeps GELU's output: two activations of the
    feed-forward width per layer. The backward pass computes the normal distribution function of the input for
    GELU's derivative anyway, and GELU's output is the input times it, so this product keeps the input alone
    (``python benchmarks/train_variants.py --variant feed_forward=fused feed_forward=separate``). Same values as
    the separate calls, same gradients up to rounding.
    """
    dtype = linear.dtype
    product = _gelu_product(pre_activation, linear.kernel[...].astype(dtype), dtype)
    return product + linear.bias[...].astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gelu_product(pre_activation: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
    hidden = gelu(pre_activation).astype(dtype)
    return jax.lax.dot_general(
        hidden, kernel, (((hidden.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )


def _gelu_product_forward(pre_activation, kernel, dtype):
    return _gelu_product(pre_activation, kernel, dtype), (pre_activation, kernel)


def _gelu_product_backward(dtype, saved, d_output):
    """GELU's output rebuilt as x Φ(x), then the dense product's and GELU's gradients as :func:`dense_product` and
    :func:`gelu` give them."""
    pre_activation, kernel = saved
    cdf, density = _normal_cdf_and_density(pre_activation)
    hidden = (pre_activation * cdf).astype(dtype)
    last = d_output.ndim - 1
    d_hidden = jax.lax.dot_general(d_output, kernel, (((last,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    d_kernel = kernel_gradient(hidden, d_output, jnp.float32)
    d_hidden = d_hidden.astype(dtype).astype(pre_activation.dtype)
    return (d_hidden * (cdf + pre_activation * density)).astype(pre_activation.dtype), d_kernel.astype(kernel.dtype)


_gelu_product.defvjp(_gelu_product_forward, _gelu_product_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm of float32 ``x`` over its last axis with a two-pass variance (as torch), with a hand-written gradient.

    Autodiff keeps four activations of ``x``'s size per LayerNorm (the centred input, its double, the normalised
    input and the output); the gradient needs only the normalised input and the inverse standard deviation, so a
    training step writes and reads two fewer of them per LayerNorm
    (``python benchmarks/train_variants.py --variant layer_norm=custom layer_norm=autodiff``).
    """
    normalized, _ = _normalize(x, eps)
    return normalized * scale + bias


def _normalize(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
    inverse_std = jax.lax.rsqrt(variance + eps)
    return centered * inverse_std, inverse_std


def _layer_norm_forward(x, scale, bias, eps):
    normalized, inverse_std = _normalize(x, eps)
    return normalized * scale + bias, (normalized, inverse_std, scale)


def _layer_norm_backward(eps, saved, d_output):
    """With n the normalised input and g = d_output · scale: dx = (g − mean(g) − n · mean(g · n)) / std."""
    normalized, inverse_std, scale = saved
    leading = tuple(range(d_output.ndim - 1))
    d_normalized = d_output * scale
    d_x = inverse_std * (
        d_normalized
        - jnp.mean(d_normalized, axis=-1, keepdims=True)
        - normalized * jnp.mean(d_normalized * normalized, axis=-1, keepdims=True)
    )
    return d_x, jnp.sum(d_output * normalized, axis=leading), jnp.sum(d_output, axis=leading)


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


def layer_norm_then_dense(norm: LayerNorm, linears: tuple[nnx.Linear, ...], x: jax.Array) -> tuple[jax.Array, ...]:
    """``linear(norm(x))`` for each layer made by :func:`dense` (one dtype); its gradient keeps no LayerNorm output.

    Separately, LayerNorm's gradient keeps the normalised input and each product's keeps LayerNorm's output: two
    activations of the model width per LayerNorm. The output is the normalised input scaled and shifted, so the
    backward pass rebuilds it in one elementwise pass instead of keeping it. Same values as the separate calls,
    same gradients up to rounding. A CPU training step, whose time goes mostly to the products, moves by a few per
    cent at most: faster at the ESM-2 t12 shape, perhaps slower at 150M (README, "Parity and performance";
    ``python benchmarks/train_variants.py --variant norm_products=fused norm_products=separate``). Every backend
    keeps two activations fewer per block.
    """
    dtype = linears[0].dtype
    kernels = tuple(linear.kernel[...].astype(dtype) for linear in linears)
    products = _normalized_products(x.astype(jnp.float32), norm.scale[...], norm.bias[...], kernels, norm.eps, dtype)
    return tuple(product + linear.bias[...].astype(dtype) for product, linear in zip(products, linears, strict=True))


def _scaled_products(normalized, scale, bias, kernels, dtype) -> tuple[jax.Array, ...]:
    hidden = (normalized * scale + bias).astype(dtype)
    contraction = (((hidden.ndim - 1,), (0,)), ((), ()))
    return tuple(
        jax.lax.dot_general(hidden, kernel, contraction, preferred_element_type=jnp.float32) for kernel in kernels
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _normalized_products(x, scale, bias, kernels, eps, dtype) -> tuple[jax.Array, ...]:
    return _scaled_products(_normalize(x, eps)[0], scale, bias, kernels, dtype)


def _normalized_products_forward(x, scale, bias, kernels, eps, dtype):
    normalized, inverse_std = _normalize(x, eps)
    products = _scaled_products(normalized, scale, bias, kernels, dtype)
    return products, (normalized, inverse_std, scale, bias, kernels)


def _normalized_products_backward(eps, dtype, saved, d_products):
    """LayerNorm's output rebuilt from the normalised input, then the gradients of the products and of LayerNorm."""
    normalized, inverse_std, scale, bias, kernels = saved
    hidden = (normalized * scale + bias).astype(dtype)
    d_hidden, d_kernels = None, []
    for d_product, kernel in zip(d_products, kernels, strict=True):
        d_hidden_part, d_kernel = _dense_product_backward(jnp.float32, (hidden, kernel), d_product)
        d_hidden = d_hidden_part if d_hidden is None else d_hidden + d_hidden_part
        d_kernels.append(d_kernel)
    d_x, d_scale, d_bias = _layer_norm_backward(eps, (normalized, inverse_std, scale), d_hidden.astype(jnp.float32))
    return d_x, d_scale, d_bias, tuple(d_kernels)


_normalized_products.defvjp(_normalized_products_forward, _normalized_products_backward)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis, computed in float32 with a two-pass variance (as torch)."""

    def __init__(self, features: int, eps: float, axis_name: str = "embed"):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32), out_sharding=(axis_name,), eager_sharding=False)
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32), out_sharding=(axis_name,), eager_sharding=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x.astype(jnp.float32), self.scale[...], self.bias[...], self.eps)
