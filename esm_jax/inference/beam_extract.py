"""``extract`` as an Apache Beam pipeline: FASTA shards in, memory-mapped output shards out.

Records are read from every file matching the input patterns (local paths or any filesystem Beam
reads, such as ``gs://``), keyed to one of ``num_shards`` groups by a stable hash of their label, and
each group is computed by a worker that loads the model once (``DoFn.setup``), batches the group by
token budget as ``extract`` does, and writes one shard (:mod:`esm_jax.inference.sharded_outputs`).
A last step writes ``index.tsv``. Shards already in the output folder are kept, so a failed pipeline
rerun computes only what is missing. The output folder must be one filesystem that every worker
writes to (local disk on the DirectRunner; NFS or a Cloud Storage FUSE mount on a cluster).

The same code runs on the local DirectRunner (tests) and on Dataflow, Flink or Spark runners.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from Bio import SeqIO

from esm_jax.errors import EsmJaxError
from esm_jax.files import write_text_atomically
from esm_jax.inference.embedding import encode_records
from esm_jax.inference.extract import Run, array_widths, remove_leftovers


def shard_of(label: str, num_shards: int) -> int:
    """The group a record belongs to: the same on every worker and every rerun."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big") % num_shards


def read_fasta_files(pattern: str, strip_stop: bool) -> Iterator[tuple[str, str]]:
    """``(label, sequence)`` of every record in the files matching ``pattern`` (compressed ones too)."""
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
            for number, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):
                sequence = str(record.seq)
                sequence = sequence[:-1] if strip_stop and sequence.endswith("*") else sequence
                if not sequence:
                    raise EsmJaxError(f"{match.path}: record {number} ({record.description!r}) has an empty sequence")
                yield record.description, sequence


class ExtractShard(beam.DoFn):
    """Computes and writes one group of records as a shard; loads the model once per worker."""

    def __init__(self, load_model, output_dir: str, settings: dict):
        self.load_model, self.output_dir, self.settings = load_model, output_dir, settings

    def setup(self) -> None:
        self.model = self.load_model()
        self.layers = self.model.normalize_layers(self.settings["repr_layers"])

    def process(self, element: tuple[int, Iterable[tuple[str, str]]]) -> Iterator[str]:
        shard, records = element
        records = sorted(records)
        name = f"beam-{shard:05d}"
        settings = self.settings
        encoded = encode_records(records, settings["truncation_seq_length"], settings["upper_case"])
        run = Run(self.model, encoded, records, Path(self.output_dir), self.layers, settings["include"],
                  settings["toks_per_batch"], settings["pack"], row_width=None, window=None)  # fmt: skip
        path = Path(self.output_dir) / "shards" / name
        if not path.is_dir():
            widths = array_widths(self.model, self.layers, settings["include"])
            run.write_shard(path, list(range(len(records))), widths)
        for row, (label, _) in enumerate(records):
            yield f"{name}\t{row}\t{label}"


def _write_index(lines: Sequence[str], output_dir: str) -> None:
    counts = Counter(line.split("\t", 2)[2] for line in lines)
    repeated = sorted(label for label, count in counts.items() if count > 1)
    if repeated:
        raise EsmJaxError(f"labels occur more than once in the input: {repeated[:3]}; make every FASTA label unique")
    ordered = "".join(f"{line}\n" for line in sorted(lines, key=lambda line: line.split("\t", 2)[2]))
    write_text_atomically(Path(output_dir) / "index.tsv", "shard\trow\tlabel\n" + ordered)
    remove_leftovers(Path(output_dir))


def extract_pipeline(
    pipeline: beam.Pipeline,
    patterns: Sequence[str],
    output_dir: str,
    load_model,
    *,
    repr_layers: Sequence[int],
    include: Sequence[str],
    num_shards: int = 16,
    toks_per_batch: int = 4096,
    truncation_seq_length: int | None = 1022,
    upper_case: bool = False,
    strip_stop: bool = False,
    pack: bool = False,
) -> None:
    """Add the extraction of every record in ``patterns`` to ``pipeline``.

    ``load_model`` is a picklable callable (a module-level function, or a ``functools.partial`` of one)
    that gives the model on a worker. The index lists records sorted by label.
    """
    settings = {
        "repr_layers": tuple(repr_layers), "include": tuple(include), "toks_per_batch": toks_per_batch, "pack": pack,
        "truncation_seq_length": truncation_seq_length, "upper_case": upper_case,
    }  # fmt: skip
    _ = (
        pipeline
        | "Patterns" >> beam.Create(list(patterns))
        | "ReadFasta" >> beam.FlatMap(read_fasta_files, strip_stop)
        | "KeyByShard" >> beam.Map(lambda record: (shard_of(record[0], num_shards), record))
        | "GroupShards" >> beam.GroupByKey()
        | "Extract" >> beam.ParDo(ExtractShard(load_model, output_dir, settings))
        | "Gather" >> beam.combiners.ToList()
        | "WriteIndex" >> beam.Map(_write_index, output_dir)
    )
