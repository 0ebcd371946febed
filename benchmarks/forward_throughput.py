"""Forward throughput of esm-jax against fair-esm: same shapes, same weights, same batch, one process.

Both run the call a fair-esm user writes, ``model(tokens, repr_layers=[last])``, in float32 on
the CPU. Compilation (esm-jax) and the first call (both) are excluded; each side is timed over
several calls and the median is reported, with the achieved model GFLOP/s next to this
machine's measured matmul peak.

    python benchmarks/forward_throughput.py            # all three shapes
    python benchmarks/forward_throughput.py --quick    # ESM-2 t12 only
"""

from __future__ import annotations

import argparse
import statistics
import time

import esm
import jax
import numpy as np
import torch
from esm.model.esm1 import ProteinBertModel
from esm.model.esm2 import ESM2

from esm_jax.checkpoints import fair_esm
from esm_jax.checkpoints.tensor_map import build_from_tensors
from esm_jax.model import named_config

CASES = {
    "esm2_t12_35M_UR50D": ("esm2_t12_35M_UR50D", 4, 512),
    "esm2_t33_650M_UR50D": ("esm2_t33_650M_UR50D", 2, 512),
    "esm1b_t33_650M_UR50S": ("esm1b_t33_650M_UR50S", 2, 512),
}


def model_flops_per_token(config, length: int) -> float:
    """Forward FLOPs per token: dense layers (2·weights) plus attention scores and values (4·T·D)."""
    d, f, v = config.embed_dim, config.ffn_embed_dim, config.vocab_size
    per_layer = 2 * (4 * d * d + 2 * d * f) + 4 * length * d
    return config.num_layers * per_layer + 2 * (d * d + d * v)


def matmul_peak_gflops() -> dict[str, float]:
    """Best float32 GEMM rate of each library on a large square-ish product."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    flops = 2 * 2048**3
    jitted = jax.jit(lambda x, y: x @ y)
    ja = jax.numpy.asarray(a)
    ta = torch.from_numpy(a)
    rates = {}
    for name, run in (("jax", lambda: jitted(ja, ja).block_until_ready()), ("torch", lambda: ta @ ta)):
        run()
        rates[name] = flops / min(_seconds(run) for _ in range(5)) / 1e9
    return rates


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def reference_model(name: str) -> torch.nn.Module:
    config = named_config(name)
    torch.manual_seed(0)
    if config.architecture == "esm2":
        model = ESM2(config.num_layers, config.embed_dim, config.attention_heads)
    else:
        args = argparse.Namespace(
            arch="roberta_large",
            layers=config.num_layers,
            embed_dim=config.embed_dim,
            ffn_embed_dim=config.ffn_embed_dim,
            attention_heads=config.attention_heads,
            max_positions=config.max_positions,
            token_dropout=True,
            emb_layer_norm_before=True,
        )
        model = ProteinBertModel(args, esm.Alphabet.from_architecture("ESM-1b"))
    return model.eval()


def same_weights(reference: torch.nn.Module, name: str):
    """The esm-jax model holding exactly the reference's weights (via the checkpoint mapping)."""
    config = named_config(name)
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    slots = fair_esm.model_slots(config) + fair_esm.CONTACT_SLOTS
    return build_from_tensors(config, slots, state, "in-memory fair-esm model")


def run_case(name: str, batch: int, length: int, repeats: int) -> dict:
    reference = reference_model(name)
    ours = same_weights(reference, name)
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 24, size=(batch, length), dtype=np.int64)
    tokens[:, 0], tokens[:, -1] = 0, 2
    last = ours.num_layers
    torch_tokens = torch.from_numpy(tokens)
    jax_tokens = tokens.astype(np.int32)

    def run_reference():
        with torch.no_grad():
            return reference(torch_tokens, repr_layers=[last])

    def run_ours():
        return jax.block_until_ready(ours(jax_tokens, repr_layers=[last]))

    check = np.abs(np.asarray(run_ours()["logits"]) - run_reference()["logits"].numpy()).max()
    ours_seconds = statistics.median(_seconds(run_ours) for _ in range(repeats))
    reference_seconds = statistics.median(_seconds(run_reference) for _ in range(repeats))
    tokens_total = batch * length
    flops = model_flops_per_token(ours.config, length) * tokens_total
    return {
        "model": name,
        "batch": f"{batch}x{length}",
        "fair_esm_tok_s": tokens_total / reference_seconds,
        "esm_jax_tok_s": tokens_total / ours_seconds,
        "ratio": reference_seconds / ours_seconds,
        "fair_esm_gflops": flops / reference_seconds / 1e9,
        "esm_jax_gflops": flops / ours_seconds / 1e9,
        "max_abs_logit_diff": float(check),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the ESM-2 t12 shape")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    peaks = matmul_peak_gflops()
    print(f"float32 matmul peak (2048^3 GEMM): jax {peaks['jax']:.0f} GFLOP/s, torch {peaks['torch']:.0f} GFLOP/s")
    names = ["esm2_t12_35M_UR50D"] if args.quick else list(CASES)
    header = (
        f"{'model':24} {'batch':>8} {'fair-esm tok/s':>15} {'esm-jax tok/s':>14} {'ratio':>6} "
        f"{'fair-esm GF/s':>14} {'esm-jax GF/s':>13} {'|Δlogit|':>9}"
    )
    print(header)
    for name in names:
        _, batch, length = CASES[name]
        row = run_case(name, batch, length, args.repeats)
        print(
            f"{row['model']:24} {row['batch']:>8} {row['fair_esm_tok_s']:15.0f} {row['esm_jax_tok_s']:14.0f} "
            f"{row['ratio']:5.2f}x {row['fair_esm_gflops']:14.0f} {row['esm_jax_gflops']:13.0f} "
            f"{row['max_abs_logit_diff']:9.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
