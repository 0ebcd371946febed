"""Data-pipeline throughput on this machine: TFRecord build rate and MLM input-pipeline tokens/s, by core count.

Run: ``python benchmarks/data_pipeline_throughput.py`` (finds the UniRef sample via ``$ESM_JAX_SHARED_DATA`` or
``<repo>/../shared/data``). It builds UR50/S and UR100 from the sample locally and UR100 with Beam's DirectRunner
(residues written per second), then reads UR100 batches (crop, tokenise, mask, bucket, batch) for a fixed time in
fresh processes pinned to 1 core, to 2 cores, and as 2 single-core processes (two simulated hosts), and prints
tokens/s with ratios. "real" tokens are BOS + residues + EOS; "padded" counts every array element.
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

REPO = Path(__file__).resolve().parents[1]
TARGET_TOKENS_PER_S = 300_000

READER = """
import json, os, sys, time
cores, index, count, seconds, data_dir, budget = json.loads(sys.argv[1])
os.sched_setaffinity(0, cores)
from data_pipeline.tf_runtime import tensorflow_without_accelerators
tf = tensorflow_without_accelerators()
tf.config.threading.set_intra_op_parallelism_threads(len(cores))
tf.config.threading.set_inter_op_parallelism_threads(len(cores))
from data_pipeline.host_agreement import single_host
from data_pipeline.input_pipeline import MlmBatchIterator, PipelineConfig
config = PipelineConfig(token_budget=budget)
with MlmBatchIterator(data_dir, config, process_index=index, process_count=count, combine_lengths=single_host) as it:
    next(it)
    real = padded = batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        rows = batch["residues"] > 0
        real += int(batch["residues"].sum() + 2 * rows.sum())
        padded += batch["tokens"].size
        batches += 1
    elapsed = time.perf_counter() - start
print(json.dumps({"real": real / elapsed, "padded": padded / elapsed, "batches": batches / elapsed}))
"""


def shared_data() -> Path:
    return Path(os.environ.get("ESM_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_rates(out: Path) -> tuple[list[dict], Path]:
    """Build the sample three ways and return rates plus the UR100 dataset folder used for reading."""
    import apache_beam as beam

    from data_pipeline.build import build_dataset
    from data_pipeline.shard_reader import read_split
    from data_pipeline.uniref_builder import CorpusFiles

    folder = shared_data() / "uniref50_ur90_cluster_sample"
    files = CorpusFiles(
        (str(folder / "uniref50_train_filt.fasta"),),
        (str(folder / "ur90_ur50_sampler.fasta.gz"),),
        str(folder / "mapping.tsv"),
    )
    build_dataset("ur50_s", files, out / "warm-up")  # TensorFlow start-up is not part of a build's rate
    rows, ur100 = [], None
    for label, config, runner in (
        ("UR50/S local", "ur50_s", None),
        ("UR100 local", "ur100", None),
        ("UR100 Beam DirectRunner", "ur100", beam.runners.DirectRunner()),
    ):
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
        ur100 = ur100 or (result.data_dir if config == "ur100" else None)
    return rows, ur100


def read_rates(data_dir: Path, seconds: float, budget: int) -> list[dict]:
    """Input-pipeline tokens/s for 1 core, 2 cores, and 2 single-core processes together."""
    cpus = sorted(os.sched_getaffinity(0))
    setups = [("1 process, 1 core", [[cpus[0]]]), ("1 process, 2 cores", [cpus[:2]])]
    if len(cpus) >= 2:
        setups.append(("2 processes, 1 core each", [[cpus[0]], [cpus[1]]]))
    rows = []
    for label, core_sets in setups:
        children = [
            subprocess.Popen(
                [sys.executable, "-c", READER, json.dumps([cores, i, len(core_sets), seconds, str(data_dir), budget])],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=REPO,
            )
            for i, cores in enumerate(core_sets)
        ]
        results = [json.loads(child.communicate()[0].decode().strip().splitlines()[-1]) for child in children]
        rows.append({"setup": label, **{k: sum(r[k] for r in results) for k in ("real", "padded", "batches")}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="reading time per setup (default 15)")
    parser.add_argument("--token-budget", type=int, default=32768, help="tokens per batch per process (default 32768)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if not (shared_data() / "uniref50_ur90_cluster_sample").is_dir():
        sys.exit(f"UniRef sample not found under {shared_data()}; set ESM_JAX_SHARED_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        builds, ur100 = build_rates(Path(tmp))
        reads = read_rates(ur100, args.seconds, args.token_budget)
    print(f"\nmachine: {os.cpu_count()} CPUs visible, affinity {sorted(os.sched_getaffinity(0))}")
    print("\nTFRecord build (UniRef50/UniRef90 sample, 4 shards per split):")
    for row in builds:
        print(
            f"  {row['build']:<26} {row['seconds']:6.1f} s  {row['residues_per_s']:>12,.0f} residues/s  "
            f"{row['records_per_s']:>9,.0f} records/s"
        )
    setup = f"UR100 train, fixed bucket shapes, {args.token_budget} tokens/batch, {args.seconds:.0f} s each"
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
        args.json.write_text(json.dumps({"build": builds, "read": reads}, indent=1))


if __name__ == "__main__":
    main()
