"""The fused C++ attention kernels for CPUs: the context, log-sum-exp and gradients of dense attention, built once."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esm_jax.model import attention_kernels, cpu_attention
from esm_jax.model.rotary import default_inverse_frequencies, rotate, rotation_tables

needs_kernel = pytest.mark.skipif(
    not cpu_attention.registered(), reason="the fused CPU attention kernel could not be built (no C++ compiler?)"
)

# (batch, length, heads, head size): lengths off the kernels' query blocks and key tiles, head sizes from
# ESM-2 t6 (16), t12 (24), 650M (64) and 15B (128), and sizes that fill no whole vector (8, 40).
SHAPES = [(3, 17, 4, 8), (2, 45, 3, 24), (2, 70, 2, 40), (1, 33, 2, 16), (2, 96, 2, 64), (1, 50, 2, 128)]


def _masks(kind: str, batch: int, length: int, rng) -> tuple:
    if kind == "packed":
        cuts = np.sort(rng.integers(1, length, size=(batch, 2)), axis=1)
        positions = np.arange(length)[None, :]
        segments = 1 + (positions >= cuts[:, :1]) + (positions >= cuts[:, 1:])
        segments[:, -2:] = 0  # trailing padding, which attends only to padding
        return jnp.asarray(segments, jnp.int32), None
    padding = np.zeros((batch, length), bool)
    padding[0, length - length // 3 :] = True
    return None, jnp.asarray(padding)


def _reference(query, key, value, segment_ids, padding, rotation):
    """Dense attention (queries and keys rotated first) and each query's log-sum-exp, (B, H, T)."""
    if rotation is not None:
        cos, sin = (table[None, :, None, :] for table in rotation)
        query, key = rotate(query, cos, sin), rotate(key, cos, sin)
    context, _ = attention_kernels.dense_attention(query, key, value, segment_ids, padding, jnp.float32)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    allowed = attention_kernels.allowed_pairs(segment_ids, padding, query.shape[:2])
    return context, jax.nn.logsumexp(jnp.where(allowed, scores, -jnp.inf), axis=-1)


def _case(shape, kind, rotates) -> tuple:
    """Queries, keys, values, segment ids, padding, row keys and rotation (or None) of one test case."""
    rng = np.random.default_rng(sum(shape))
    query, key, value = (jnp.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(3))
    query = query * 2.0  # peaked softmax rows, as trained models have
    segment_ids, padding = _masks(kind, shape[0], shape[1], rng)
    rotation = None
    if rotates:
        cos, sin = rotation_tables(default_inverse_frequencies(shape[3]), None, shape[1])
        rotation = (cos[0], sin[0])
    row_keys = segment_ids if kind == "packed" else padding.astype(jnp.int32)
    return query, key, value, segment_ids, padding, row_keys, rotation


def _assert_fused_forward_equals_dense_attention(shape, kind, rotates):
    query, key, value, segment_ids, padding, row_keys, rotation = _case(shape, kind, rotates)

    def forward(*args):  # a new function per call: jit's cache must not hand back a kernel of another TARGET
        return cpu_attention.forward(*args)

    lowered = jax.jit(forward, static_argnums=4).lower(query, key, value, row_keys, kind == "packed", rotation)
    assert cpu_attention.TARGET + "_forward" in lowered.as_text()
    context, log_sum_exp = lowered.compile()(query, key, value, row_keys, rotation)
    expected_context, expected_lse = _reference(query, key, value, segment_ids, padding, rotation)
    np.testing.assert_allclose(np.asarray(context), np.asarray(expected_context), atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(log_sum_exp), np.asarray(expected_lse), atol=2e-5, rtol=1e-6)


def _float64_gradients(query, key, value, segment_ids, padding, rotation, d_context) -> list[np.ndarray]:
    """Gradients of dense attention in float64, the reference for the kernel's.

    Dense attention's own float32 gradients drift from the exact ones as the head size grows.
    """
    with jax.enable_x64():
        as64 = [jnp.asarray(np.asarray(x), jnp.float64) for x in (query, key, value, d_context)]
        tables = None if rotation is None else tuple(jnp.asarray(np.asarray(t), jnp.float64) for t in rotation)

        def dense(q, k, v):
            if tables is not None:
                cos, sin = (table[None, :, None, :] for table in tables)
                q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            return attention_kernels.dense_attention(q, k, v, segment_ids, padding, jnp.float64)[0]

        _, pullback = jax.vjp(dense, *as64[:3])
        return [np.asarray(gradient) for gradient in pullback(as64[3])]


def _assert_fused_gradients_equal_dense_attention(shape, kind, rotates):
    query, key, value, segment_ids, padding, row_keys, rotation = _case(shape, kind, rotates)
    d_context = jnp.asarray(np.random.default_rng(1).standard_normal(shape, dtype=np.float32))

    def gradients(*args):  # a new function per call, as in the forward's check
        context, log_sum_exp = cpu_attention.forward(*args)
        return cpu_attention.backward(*args, context, log_sum_exp, d_context)

    lowered = jax.jit(gradients, static_argnums=4).lower(query, key, value, row_keys, kind == "packed", rotation)
    assert cpu_attention.TARGET + "_backward" in lowered.as_text()
    ours = lowered.compile()(query, key, value, row_keys, rotation)
    exact = _float64_gradients(query, key, value, segment_ids, padding, rotation, d_context)
    for name, got, expected in zip(("query", "key", "value"), ours, exact, strict=True):
        tolerance = 4e-5 * np.max(np.abs(expected))
        np.testing.assert_allclose(np.asarray(got), expected, atol=tolerance, rtol=0, err_msg=name)


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("kind", ["padding", "packed"])
@pytest.mark.parametrize("rotates", [False, True], ids=["plain", "rotary"])
def test_fused_forward_and_backward_equal_dense_attention(shape, kind, rotates):
    _assert_fused_forward_equals_dense_attention(shape, kind, rotates)
    _assert_fused_gradients_equal_dense_attention(shape, kind, rotates)


def _assert_a_sequence_of_padding_only_gets_zeros():
    """Its queries have no key to attend to: 0, not NaN or a made-up average, so a batch's sums stay finite."""
    shape = (2, 40, 2, 24)
    query, key, value, segment_ids, padding, row_keys, rotation = _case(shape, "padding", rotates=True)
    row_keys, padding = row_keys.at[1].set(1), padding.at[1].set(True)
    d_context = jnp.asarray(np.random.default_rng(2).standard_normal(shape, dtype=np.float32))

    def run(*args):  # a new function per call, as in the checks above
        context, log_sum_exp = cpu_attention.forward(*args)
        return context, cpu_attention.backward(*args, context, log_sum_exp, d_context)

    context, gradients = jax.jit(run, static_argnums=4)(query, key, value, row_keys, False, rotation)
    assert np.all(np.asarray(context)[1] == 0)
    for gradient in gradients:
        assert np.all(np.asarray(gradient)[1] == 0)
        assert np.all(np.isfinite(np.asarray(gradient)))
    expected, _ = _reference(query, key, value, segment_ids, padding, rotation)
    np.testing.assert_allclose(np.asarray(context)[0], np.asarray(expected)[0], atol=2e-5, rtol=0)


@needs_kernel
def test_a_sequence_of_padding_only_gets_zero_context_and_zero_gradients():
    _assert_a_sequence_of_padding_only_gets_zeros()


def _has_avx2() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return platform.machine() == "x86_64" and {"avx2", "fma", "bmi2"} <= set(flags)


@pytest.fixture(scope="module")
def avx2_build(tmp_path_factory):
    """The kernel built for AVX2 CPUs without AVX-512 (x86-64-v3), registered under its own target name."""
    if shutil.which(cpu_attention.compiler()) is None or not _has_avx2():
        pytest.skip("needs a C++ compiler and an x86-64 CPU with AVX2")
    library = tmp_path_factory.mktemp("avx2") / "cpu_attention_avx2.so"
    subprocess.run(cpu_attention.build_command(cpu_attention.compiler(), library, arch="x86-64-v3"), check=True)
    target = cpu_attention.TARGET + "_avx2"
    cpu_attention.register(ctypes.cdll.LoadLibrary(str(library)), target)
    return target


@pytest.mark.parametrize("shape", [(2, 45, 3, 24), (2, 96, 2, 64)], ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("kind", ["padding", "packed"])
def test_the_avx2_build_equals_dense_attention_too(avx2_build, shape, kind, monkeypatch):
    monkeypatch.setattr(cpu_attention, "TARGET", avx2_build)
    _assert_fused_forward_equals_dense_attention(shape, kind, rotates=True)
    _assert_fused_gradients_equal_dense_attention(shape, kind, rotates=True)


def test_the_avx2_build_gives_a_sequence_of_padding_only_zeros_too(avx2_build, monkeypatch):
    monkeypatch.setattr(cpu_attention, "TARGET", avx2_build)
    _assert_a_sequence_of_padding_only_gets_zeros()


@needs_kernel
def test_per_head_attention_calls_the_fused_kernels_in_either_dtype_unless_turned_off(monkeypatch):
    query = jnp.ones((1, 8, 2, 4))

    def traced(dtype) -> str:
        def loss(q):
            return jnp.sum(attention_kernels.per_head_attention(q, q, q, None, None, dtype).astype(jnp.float32))

        return str(jax.make_jaxpr(jax.grad(loss))(query.astype(dtype)))

    for dtype in (jnp.float32, jnp.bfloat16):
        assert cpu_attention.TARGET + "_forward" in traced(dtype)
        assert cpu_attention.TARGET + "_backward" in traced(dtype)
    monkeypatch.setenv("ESM_JAX_CPU_ATTENTION", "0")
    assert cpu_attention.TARGET not in traced(jnp.float32)
    assert cpu_attention.TARGET not in traced(jnp.bfloat16)


@needs_kernel
def test_bfloat16_attention_is_the_float32_kernel_on_its_inputs_rounded_once_at_the_end():
    """A bfloat16 model's queries, keys and values are widened for the float32 kernel; the output is rounded once."""
    rng = np.random.default_rng(4)
    query, key, value = (jnp.asarray(rng.standard_normal((2, 40, 3, 16)), jnp.bfloat16) for _ in range(3))
    padding = jnp.asarray(np.arange(40)[None, :] >= np.array([[40], [27]]))
    half = attention_kernels.per_head_attention(query, key, value, None, padding, jnp.bfloat16)
    widened = (x.astype(jnp.float32) for x in (query, key, value))
    full = attention_kernels.per_head_attention(*widened, None, padding, jnp.float32)
    assert half.dtype == jnp.bfloat16
    expected = full.astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(half.astype(jnp.float32)), np.asarray(expected))


def test_a_missing_compiler_leaves_attention_on_xla_with_a_warning():
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler .*runs through XLA"):
        assert cpu_attention.load("no-such-c++-compiler") is None


def test_a_failing_build_names_its_command_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("ESM_JAX_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="could not be built.*-march=native"):
        assert cpu_attention.load("false") is None
    assert list((tmp_path / "kernels").iterdir()) == []


@needs_kernel
def test_the_library_is_built_once_per_source_compiler_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ESM_JAX_CACHE", str(tmp_path))
    built = cpu_attention.build(cpu_attention.compiler())
    first_build = built.stat().st_mtime_ns
    assert cpu_attention.build(cpu_attention.compiler()) == built and built.stat().st_mtime_ns == first_build
    assert [path.name for path in (tmp_path / "kernels").iterdir()] == [built.name]
