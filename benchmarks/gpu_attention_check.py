"""On a GPU: which attention kernel ``auto`` picks per compute dtype, how close they are, and a 650M forward rate.

A check to run once on a lent GPU (it needs no weights): ESM-2 t12 with random weights in float32
(``auto`` gives ``dense``) and bfloat16 (``auto`` gives cuDNN's fused kernel), the largest logit difference
between them over the largest logit, the same for a packed row against its sequences alone, and the
bfloat16 ESM-2 650M forward rate at 8 × 1024. No PyTorch reference runs beside it, so it prints no ratio.
On a CPU it runs too (``auto`` is ``per_head`` for both dtypes), without the 650M timing unless asked.

    python benchmarks/gpu_attention_check.py
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from esm_jax import pretrained
from esm_jax.model import attention_kernels

PADDING, CLS, EOS = 1, 0, 2


def relative_difference(value: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference over the largest absolute reference value."""
    return float(np.abs(value - reference).max() / np.abs(reference).max())


def logits(model, tokens: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    ids = None if segment_ids is None else jnp.asarray(segment_ids)
    return np.asarray(model(jnp.asarray(tokens), segment_ids=ids)["logits"], np.float32)


def random_rows(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    tokens = rng.integers(4, 24, size=(batch, length)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = CLS, EOS
    return tokens


def check_kernels(rng: np.random.Generator) -> None:
    tokens = random_rows(rng, 4, 256)
    tokens[2, 149], tokens[2, 150:] = EOS, PADDING
    models = {
        dtype: pretrained.random_model_and_alphabet("esm2_t12_35M_UR50D", seed=0, compute_dtype=dtype)[0]
        for dtype in ("float32", "bfloat16")
    }
    for dtype in models:
        print(f"auto attention at {dtype}: {attention_kernels.resolve('auto', dtype=dtype)}")
    kept = tokens != PADDING
    full, half = (logits(models[dtype], tokens)[kept] for dtype in ("float32", "bfloat16"))
    print(f"t12 4 x 256, bfloat16 against float32 logits: {relative_difference(half, full):.2e}")
    first, second = tokens[0, :100].copy(), tokens[1, :120].copy()
    first[-1] = second[-1] = EOS
    packed = np.concatenate([first, second, np.full(36, PADDING, np.int32)])[None]
    segments = np.concatenate([np.full(100, 1), np.full(120, 2), np.zeros(36)]).astype(np.int32)[None]
    for dtype, model in models.items():
        alone = np.concatenate([logits(model, sequence[None])[0] for sequence in (first, second)])
        together = logits(model, packed, segments)[0, :220]
        print(f"{dtype}: packed row against each sequence alone: {relative_difference(together, alone):.2e}")


def time_forward(rng: np.random.Generator, repeats: int) -> None:
    model, _ = pretrained.random_model_and_alphabet("esm2_t33_650M_UR50D", seed=0, compute_dtype="bfloat16")
    tokens = jnp.asarray(random_rows(rng, 8, 1024))
    jax.block_until_ready(model(tokens, repr_layers=[33])["logits"])
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(model(tokens, repr_layers=[33])["logits"])
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    print(
        f"ESM-2 650M bfloat16, 8 x 1024: best {best * 1e3:.1f} ms, median {np.median(seconds) * 1e3:.1f} ms over "
        f"{repeats}; {8 * 1024 / best:,.0f} tokens/s; {2 * 650e6 * 8 * 1024 / best / 1e12:.0f} TFLOP/s "
        "counting 2 FLOPs per parameter per token (attention not counted)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-on-cpu", action="store_true", help="also time the 650M forward on a CPU")
    args = parser.parse_args()
    print(f"JAX {jax.__version__}, devices: {jax.devices()}")
    rng = np.random.default_rng(0)
    check_kernels(rng)
    if jax.default_backend() != "cpu" or args.time_on_cpu:
        time_forward(rng, args.repeats)


if __name__ == "__main__":
    main()
