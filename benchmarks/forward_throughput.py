"""Forward throughput of esm-jax against fair-esm: same shapes, same weights, same batch, one process.

Both run the call a fair-esm user writes, ``model(tokens, repr_layers=[last])``, on the CPU; fair-esm
in float32, esm-jax in float32 and, with ``--dtypes float32 bfloat16``, also with bfloat16 matrix
multiplications (float32 parameters, softmax, LayerNorm and accumulation). Compilation and the first
call are excluded. Each round times fair-esm once and every esm-jax variant once, alternating, so a
ratio compares calls made under the same conditions; the table gives the median over rounds and the
min–max of the per-round ratios, the achieved model GFLOP/s (read it against
``benchmarks/gemm_peak.py``), and each variant's largest logit difference to fair-esm, also relative
to the largest logit.

    python benchmarks/forward_throughput.py                                   # three shapes, float32
    python benchmarks/forward_throughput.py --dtypes float32 bfloat16 --rounds 5
    python benchmarks/forward_throughput.py --quick                           # ESM-2 t12 only
    python benchmarks/forward_throughput.py --quick --rows 8                  # ESM-2 t12 at 8 × 512
"""

from __future__ import annotations

import argparse
import os
import statistics

import esm
import jax
import numpy as np
import torch
from esm.model.esm1 import ProteinBertModel
from esm.model.esm2 import ESM2
from settled import settled_run

from esm_jax.checkpoints import fair_esm
from esm_jax.checkpoints.tensor_map import build_from_tensors
from esm_jax.host_allocator import allocator_setting
from esm_jax.model import named_config

CASES = {
    "esm2_t12_35M_UR50D": ("esm2_t12_35M_UR50D", 4, 512),
    "esm2_t33_650M_UR50D": ("esm2_t33_650M_UR50D", 2, 512),
    "esm1b_t33_650M_UR50S": ("esm1b_t33_650M_UR50S", 2, 512),
}


def reference_model(name: str) -> torch.nn.Module:
    """fair-esm's model of the released shape ``name``, with fair-esm's own initialisation under seed 0."""
    config = named_config(name)
    torch.manual_seed(0)
    if config.architecture == "esm2":
        model = ESM2(config.num_layers, config.embed_dim, config.attention_heads)
    else:
        # The arguments fair-esm's loader makes of the header esm-jax writes: 'encoder_' prefixes dropped.
        header = vars(fair_esm.checkpoint_header(config)["args"])
        fields = {key.removeprefix("encoder_"): value for key, value in header.items()}
        args = argparse.Namespace(**fields, emb_layer_norm_before=config.emb_layer_norm_before)
        model = ProteinBertModel(args, esm.Alphabet.from_architecture("ESM-1b"))
    return model.eval()


def same_weights(reference: torch.nn.Module, name: str, compute_dtype: str = "float32"):
    """The esm-jax model holding exactly the reference's weights (via the checkpoint mapping)."""
    config = named_config(name).replace(compute_dtype=compute_dtype)
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    slots = fair_esm.model_slots(config) + fair_esm.CONTACT_SLOTS
    return build_from_tensors(config, slots, state, "in-memory fair-esm model")


def run_case(name: str, batch: int, length: int, rounds: int, dtypes: list[str]) -> list[dict]:
    reference = reference_model(name)
    ours = {dtype: same_weights(reference, name, dtype) for dtype in dtypes}
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 24, size=(batch, length), dtype=np.int64)
    tokens[:, 0], tokens[:, -1] = 0, 2
    last = named_config(name).num_layers
    torch_tokens = torch.from_numpy(tokens)
    jax_tokens = tokens.astype(np.int32)

    def run_reference():
        with torch.no_grad():
            return reference(torch_tokens, repr_layers=[last])

    def runner(model):
        return lambda: jax.block_until_ready(model(jax_tokens, repr_layers=[last]))

    expected = run_reference()["logits"].numpy()
    differences = {}
    for dtype, model in ours.items():
        difference = np.abs(np.asarray(runner(model)()["logits"]) - expected).max()
        differences[dtype] = (float(difference), float(difference / np.abs(expected).max()))
    reference_times, our_times = [], {dtype: [] for dtype in dtypes}
    for _ in range(rounds):
        reference_times.append(settled_run(run_reference)[0])
        for dtype, model in ours.items():
            our_times[dtype].append(settled_run(runner(model))[0])
    tokens_total = batch * length
    flops = named_config(name).forward_flops_per_token(length) * tokens_total
    rows = []
    for dtype in dtypes:
        ratios = [theirs / mine for theirs, mine in zip(reference_times, our_times[dtype], strict=True)]
        rows.append({
            "model": name, "batch": f"{batch}x{length}", "dtype": dtype,
            "fair_esm_tok_s": tokens_total / statistics.median(reference_times),
            "esm_jax_tok_s": tokens_total / statistics.median(our_times[dtype]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "esm_jax_gflops": flops / statistics.median(our_times[dtype]) / 1e9,
            "max_abs_logit_diff": differences[dtype][0], "relative_logit_diff": differences[dtype][1],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the ESM-2 t12 shape")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (default: 3)")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), help="shapes to run (default: all three)")
    parser.add_argument("--rows", type=int, help="sequences per batch instead of each shape's default")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load {os.getloadavg()[0]:.2f}; malloc: {allocator_setting()}"
    )
    names = ["esm2_t12_35M_UR50D"] if args.quick else args.models or list(CASES)
    print(
        "| model | batch | esm-jax dtype | fair-esm fp32 tok/s | esm-jax tok/s | ratio (min–max) | esm-jax GF/s "
        "| max abs Δlogit (relative) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        _, batch, length = CASES[name]
        batch = args.rows or batch
        for row in run_case(name, batch, length, args.rounds, args.dtypes):
            print(
                f"| {row['model']} | {row['batch']} | {row['dtype']} | {row['fair_esm_tok_s']:,.0f} | "
                f"{row['esm_jax_tok_s']:,.0f} | {row['ratio']:.2f}× ({row['ratio_min']:.2f}–{row['ratio_max']:.2f}) | "
                f"{row['esm_jax_gflops']:.0f} | {row['max_abs_logit_diff']:.1e} ({row['relative_logit_diff']:.1e}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
