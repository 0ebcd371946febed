"""Data-pipeline throughput on this machine: TFRecord build rate and MLM input-pipeline tokens/s, by core count.

Run: ``python benchmarks/data_pipeline_throughput.py`` from the repository (finds the UniRef sample under
:func:`data_pipeline.layout.locate`: ``$ESM_JAX_DATA``, the cache, or an offline mirror (``$ESM_JAX_SHARED_DATA``).
It builds UR50/S and UR100 from the sample locally and UR100 with Beam's DirectRunner (residues written per second),
then reads UR100 batches (crop, tokenise, mask, bucket or pack, batch) for a fixed time in fresh processes pinned
to 1 core, to 2 cores, and as 2 single-core processes (two simulated hosts), plus packed batches on 1 core, and
prints tokens/s with ratios. "real" tokens are BOS + residues + EOS; "padded" counts
every array element.

It also counts, exactly, the share of real tokens in the batch arrays of UR50/S (UniRef50) training batches with
rows of at most T = 1024 tokens, bucketed (``shapes="fixed"``) and packed (``shapes="packed"``), over the first
262,144 records of the stream (whole blocks), at the pretraining config's batch of 2**20 tokens per process and
its blocks: 16,384 records bucketed, 131,072 packed (``--fraction-budget``, ``--fraction-records``). These are
counts, not timings. ``--quick`` skips the Beam
build and reads for 1 s per setup (no throughput worth quoting), keeping the exact real-token counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_pipeline.layout import SAMPLE_FOLDER, locate, sample_corpus

REPO = Path(__file__).resolve().parents[1]
TARGET_TOKENS_PER_S = 300_000
POLICIES = ("fixed", "packed")
# Records planned together per block, as the pretraining configs set them (configs/pretrain.py `_data`).
BLOCK_RECORDS = {"fixed": 16384, "packed": 131072}

READER = """
import json, os, sys, time
cores, index, count, seconds, data_dir, budget, shapes = json.loads(sys.argv[1])
os.sched_setaffinity(0, cores)
from data_pipeline.tf_runtime import tensorflow_without_accelerators
tf = tensorflow_without_accelerators()
tf.config.threading.set_intra_op_parallelism_threads(len(cores))
tf.config.threading.set_inter_op_parallelism_threads(len(cores))
from data_pipeline.input.host_agreement import single_host
from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig, real_tokens
config = PipelineConfig(token_budget=budget, shapes=shapes)
with MlmBatchIterator(data_dir, config, process_index=index, process_count=count, combine_lengths=single_host) as it:
    next(it)
    real = padded = batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        real += real_tokens(batch)
        padded += batch["tokens"].size
        batches += 1
    elapsed = time.perf_counter() - start
print(json.dumps({"real": real / elapsed, "padded": padded / elapsed, "batches": batches / elapsed}))
"""


def build_rates(out: Path, beam_build: bool) -> tuple[list[dict], dict[str, Path]]:
    """Build the sample (UR100 also with Beam when ``beam_build``); rates plus the local dataset folders by config."""
    from data_pipeline.build.dataset import build_dataset
    from data_pipeline.input.shard_reader import read_split

    files = sample_corpus()
    build_dataset("ur50_s", files, out / "warm-up")  # TensorFlow start-up is not part of a build's rate
    builds = [("UR50/S local", "ur50_s", None), ("UR100 local", "ur100", None)]
    if beam_build:
        import apache_beam as beam

        builds.append(("UR100 Beam DirectRunner", "ur100", beam.runners.DirectRunner()))
    rows, local = [], {}
    for label, config, runner in builds:
        target = out / label.replace(" ", "_").replace("/", "")
        started = time.perf_counter()
        result = build_dataset(config, files, target, num_shards=4, beam_runner=runner)
        seconds = time.perf_counter() - started
        records = sum(result.examples.values())
        residues = sum(len(e["sequence"]) for split in result.examples for e in read_split(result.data_dir, split))
        rows.append(
            {
                "build": label,
                "seconds": seconds,
                "records_per_s": records / seconds,
                "residues_per_s": residues / seconds,
            }
        )
        local.setdefault(config, result.data_dir)
    return rows, local


def read_rates(data_dir: Path, seconds: float, budget: int, quick: bool) -> list[dict]:
    """Input-pipeline tokens/s for 1 core, 2 cores, 2 single-core processes together, and packed on 1 core."""
    cpus = sorted(os.sched_getaffinity(0))
    setups = [("1 process, 1 core", [[cpus[0]]], "fixed")]
    if not quick:
        setups.append(("1 process, 2 cores", [cpus[:2]], "fixed"))
        if len(cpus) >= 2:
            setups.append(("2 processes, 1 core each", [[cpus[0]], [cpus[1]]], "fixed"))
    setups.append(("1 process, 1 core, packed", [[cpus[0]]], "packed"))
    rows = []
    for label, core_sets, shapes in setups:
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    READER,
                    json.dumps([cores, i, len(core_sets), seconds, str(data_dir), budget, shapes]),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=REPO,
            )
            for i, cores in enumerate(core_sets)
        ]
        results = [json.loads(child.communicate()[0].decode().strip().splitlines()[-1]) for child in children]
        rows.append({"setup": label, **{k: sum(r[k] for r in results) for k in ("real", "padded", "batches")}})
    return rows


def real_token_fractions(data_dir: Path, budget: int, block_records: dict[str, int], records: int) -> list[dict]:
    """Exact share of real tokens in the batch arrays of the first ``records`` records (whole blocks), per policy."""
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig, real_tokens

    rows = []
    for shapes in POLICIES:
        blocks = max(1, records // block_records[shapes])
        config = PipelineConfig(token_budget=budget, block_records=block_records[shapes], shapes=shapes)
        real = elements = batches = 0
        with MlmBatchIterator(data_dir, config, process_index=0, process_count=1) as iterator:
            while iterator.get_state()["block"] < blocks:
                batch = next(iterator)
                real, elements, batches = real + real_tokens(batch), elements + batch["tokens"].size, batches + 1
        rows.append({"shapes": shapes, "block_records": block_records[shapes], "blocks": blocks,
                     "real_fraction": real / elements, "batches": batches})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="reading time per setup (default 15)")
    parser.add_argument("--token-budget", type=int, default=32768, help="tokens per batch per process (default 32768)")
    parser.add_argument("--fraction-budget", type=int, default=2**20, help="tokens per batch for the real-token share")
    parser.add_argument("--fraction-records", type=int, default=262144, help="records counted (whole blocks)")
    parser.add_argument("--quick", action="store_true", help="no Beam build, 1 s reads: checks the script")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    if not locate(SAMPLE_FOLDER).is_dir():
        sys.exit(f"UniRef sample not found; run `esm-jax data fetch {SAMPLE_FOLDER}` or set ESM_JAX_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        builds, local = build_rates(Path(tmp), beam_build=not args.quick)
        shares = real_token_fractions(local["ur50_s"], args.fraction_budget, BLOCK_RECORDS, args.fraction_records)
        reads = read_rates(local["ur100"], args.seconds, args.token_budget, args.quick)
    print(f"\nmachine: {os.cpu_count()} CPUs visible, affinity {sorted(os.sched_getaffinity(0))}")
    print("\nTFRecord build (UniRef50/UniRef90 sample, 4 shards per split):")
    for row in builds:
        print(
            f"  {row['build']:<26} {row['seconds']:6.1f} s  {row['residues_per_s']:>12,.0f} residues/s  "
            f"{row['records_per_s']:>9,.0f} records/s"
        )
    print(
        f"\nReal tokens in the batch arrays (UR50/S train, rows of at most T = 1024 tokens, {args.fraction_budget:,} "
        f"tokens/batch, first {args.fraction_records:,} records):"
    )
    for row in shares:
        print(f"  {row['shapes']:<8} {row['real_fraction']:7.2%}  ({row['batches']} batches, "
              f"{row['blocks']} blocks of {row['block_records']:,} records)")  # fmt: skip
    setup = f"UR100 train, {args.token_budget} tokens/batch, {args.seconds:.0f} s each, bucketed unless packed"
    print(f"\nInput pipeline ({setup}):")
    base = reads[0]["real"]
    for row in reads:
        verdict = "meets" if row["real"] >= TARGET_TOKENS_PER_S else "below"
        print(
            f"  {row['setup']:<26} {row['real']:>12,.0f} real tokens/s ({row['real'] / base:4.2f}x)  "
            f"{row['padded']:>12,.0f} padded tokens/s  {row['batches']:7.1f} batches/s  "
            f"[{verdict} {TARGET_TOKENS_PER_S:,}]"
        )
    if args.json:
        args.json.write_text(json.dumps({"build": builds, "real_fraction": shares, "read": reads}, indent=1))


if __name__ == "__main__":
    main()
