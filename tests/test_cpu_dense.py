"""The OpenBLAS products behind the dense layers on CPUs: exact float32 products, gradients, and when they are used."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esm_jax.model import cpu_dense, layers

needs_kernel = pytest.mark.skipif(
    not cpu_dense.registered(), reason="the OpenBLAS product kernel could not be built (no compiler or package?)"
)

# (m, k, n): fewer rows than one run, rows off the 16-row runs, several runs, an empty contraction.
SHAPES = [(5, 3, 7), (130, 33, 17), (301, 64, 129), (1024, 48, 80), (40, 0, 9)]


def _dense(x, w):
    return layers.dense_product(x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_products_equal_float64_references_in_every_orientation(shape, transpose_a, transpose_b):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if transpose_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n), dtype=np.float32)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b).astype(np.float64)
    product = jax.jit(cpu_dense.product, static_argnums=(2, 3))(a, b, transpose_a, transpose_b)
    assert product.shape == (m, n)
    np.testing.assert_allclose(np.asarray(product), expected, rtol=1e-5, atol=1e-5 * np.sqrt(max(k, 1)))


@needs_kernel
def test_a_product_whose_output_does_not_fit_its_operands_is_refused():
    call = jax.ffi.ffi_call(cpu_dense.TARGET, jax.ShapeDtypeStruct((4, 5), jnp.float32))
    with pytest.raises(Exception, match="operand shapes do not fit"):
        call(jnp.ones((4, 3)), jnp.ones((2, 5)), transpose_a=False, transpose_b=False).block_until_ready()


@needs_kernel
def test_dense_layers_values_and_gradients_equal_xla_s(monkeypatch):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 50, 40), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((40, 70), dtype=np.float32))

    def value_and_grads():
        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(_dense(x, w))), argnums=(0, 1)))(x, w)

    assert cpu_dense.TARGET in jax.jit(jax.grad(lambda x, w: jnp.sum(_dense(x, w)))).lower(x, w).as_text()
    value, (d_x, d_w) = value_and_grads()
    monkeypatch.setenv("ESM_JAX_CPU_GEMM", "0")
    jax.clear_caches()  # the setting is read when a function is traced, and JAX reuses traces
    assert cpu_dense.TARGET not in jax.jit(_dense).lower(x, w).as_text()
    xla_value, (xla_d_x, xla_d_w) = value_and_grads()
    np.testing.assert_allclose(value, xla_value, rtol=1e-5)
    np.testing.assert_allclose(d_x, xla_d_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_w, xla_d_w, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_other_dtypes_and_device_meshes_stay_on_xla():
    x, w = jnp.ones((8, 16), jnp.bfloat16), jnp.ones((16, 4), jnp.bfloat16)
    assert cpu_dense.TARGET not in jax.jit(_dense).lower(x, w).as_text()
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    with jax.set_mesh(mesh):
        lowered = jax.jit(_dense).lower(x.astype(jnp.float32), w.astype(jnp.float32)).as_text()
    assert cpu_dense.TARGET not in lowered


def test_without_openblas_dense_layers_stay_on_xla_with_a_warning(monkeypatch):
    monkeypatch.setattr(cpu_dense, "openblas_flags", lambda: None)
    with pytest.warns(UserWarning, match="scipy-openblas32 is not installed.*through XLA"):
        assert cpu_dense.load(cpu_dense.cpu_attention.compiler()) is None
