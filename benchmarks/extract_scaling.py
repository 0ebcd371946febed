"""``esm-jax extract`` in one process against several processes sharing one FASTA file, on this machine.

Each run is the command a user types, timed from launch to the last process's exit (Python start,
model build and the compilations, served from the persistent compilation cache after the warm-up,
included): one process with every core; ``--processes`` processes with ``--num-processes N
--process-id i``, each free to use every core; and the same with each process pinned to its own
cores (``taskset``). fair-esm's extract.py logic runs in one process beside them as the reference.
Each round runs every variant once, alternating, after one warm-up round; reported are the median
residues/s and the median (min–max) of the per-round ratios to the single esm-jax process.

    python benchmarks/extract_scaling.py                            # 256 proteins, 2 processes, 3 rounds
    python benchmarks/extract_scaling.py --proteins 16 --rounds 1   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from extract_throughput import rounds_summary

from esm_jax.fasta import bundled_proteome, read_fasta

REPO = Path(__file__).resolve().parents[1]
FAIR_ESM = """
import sys, tempfile
from pathlib import Path
from extract_throughput import fair_esm_extract
from forward_throughput import reference_model
from esm_jax.fasta import read_fasta
records = read_fasta(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    fair_esm_extract(reference_model(sys.argv[2]), records, 4096, Path(folder))
"""


def _commands(model: str, fasta: Path, out: Path, processes: int, pin: bool) -> list[list[str]]:
    base = [sys.executable, "-m", "esm_jax.cli.main", "extract", model, str(fasta), str(out), "--random-weights"]
    base += ["--include", "mean", "per_tok"]
    if processes == 1:
        return [base]
    cores = os.cpu_count() or processes
    commands = []
    for process in range(processes):
        command = [*base, "--num-processes", str(processes), "--process-id", str(process)]
        if pin:
            mine = range(process * cores // processes, (process + 1) * cores // processes)
            command = ["taskset", "-c", ",".join(map(str, mine)), *command]
        commands.append(command)
    return commands


def _timed(commands: list[list[str]], environment: dict[str, str]) -> float:
    start = time.perf_counter()
    workers = [subprocess.Popen(command, env=environment, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for command in commands]  # fmt: skip
    for worker in workers:
        if worker.wait() != 0:
            raise SystemExit(worker.stderr.read().decode()[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="released model shape (random weights)")
    parser.add_argument("--proteins", type=int, default=256, help="the first N proteins of the bundled proteome")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds after the warm-up")
    args = parser.parse_args()
    records = read_fasta(bundled_proteome(), strip_stop=True, limit=args.proteins)
    residues = sum(min(len(sequence), 1022) for _, sequence in records)
    environment = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'benchmarks'}", "JAX_PLATFORMS": "cpu"}
    work = Path(tempfile.mkdtemp())
    fasta = work / "proteins.fasta"
    fasta.write_text("".join(f">{label}\n{sequence}\n" for label, sequence in records))
    variants = {
        "fair-esm extract.py, 1 process": [[sys.executable, "-c", FAIR_ESM, str(fasta), args.model]],
        "esm-jax, 1 process": _commands(args.model, fasta, work / "out", 1, False),
        f"esm-jax, {args.processes} processes": _commands(args.model, fasta, work / "out", args.processes, False),
    }
    if shutil.which("taskset"):
        pinned = _commands(args.model, fasta, work / "out", args.processes, True)
        variants[f"esm-jax, {args.processes} processes pinned to their own cores"] = pinned
    print(f"{len(records)} proteins, {residues:,} residues, {args.model}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(1 + args.rounds):
        for name, commands in variants.items():
            shutil.rmtree(work / "out", ignore_errors=True)
            seconds[name].append(_timed(commands, environment))
    print("| run | median s | median residues/s | ratio to 1 esm-jax process (min–max) |")
    print("|---|---|---|---|")
    for name, times in seconds.items():
        summary = rounds_summary(times, seconds["esm-jax, 1 process"], residues)
        print(f"| {name} | {statistics.median(times[1:]):.1f} | {summary} |", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
