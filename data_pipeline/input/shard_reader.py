"""Read a process's share of a split's TFRecord shards as an endless (or one-epoch) stream of sequences.

Shards are dealt to processes round-robin (shard ``i`` to process ``i % process_count``), so processes read
disjoint files that together cover the split. A process's stream is its shards in a new order every epoch
(a permutation fixed by seed and epoch), epochs back to back. Any stream position maps to ``(shard, record)``
through the shard lengths recorded by TFDS, so reading can start anywhere without reading what comes before
the shard. Every shard read is checked: a truncated or corrupted file, or one holding fewer records than its
metadata says, raises :class:`CorruptShardError` naming the file.

A ``fraction`` below 1 trains on a fixed subset (Table 1's reduced-data rows): a record is kept when the stable hash
of its UniRef50 cluster id falls below ``fraction`` (:func:`kept_by_fraction`), so the subset depends on nothing but
the cluster ids (not on seed, shards or hosts) and smaller fractions give nested subsets. The kept records of a
process's shards are read once and served from memory, so a small subset costs no reading per epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from data_pipeline import counter_random
from data_pipeline.errors import CorruptShardError, DataPipelineError
from data_pipeline.tf_runtime import tensorflow_without_accelerators

_READ_BATCH = 4096
_TWO_POW_64 = float(1 << 64)


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str
    num_records: int


def split_shards(data_dir: str | Path, split: str) -> list[Shard]:
    """The shards of ``split`` in a TFDS dataset folder (the one holding ``dataset_info.json``), in file order."""
    tensorflow_without_accelerators()
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(str(data_dir)).info
    if split not in info.splits:
        raise DataPipelineError(f"{data_dir} has no split {split!r}; it has {sorted(info.splits)}")
    split_info = info.splits[split]
    return [Shard(str(path), int(n)) for path, n in zip(split_info.filepaths, split_info.shard_lengths, strict=True)]


def shards_for_process(shards: list[Shard], process_index: int, process_count: int) -> list[Shard]:
    """Round-robin share of ``shards`` for one process; refuses a process that would get nothing."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} is outside 0..{process_count - 1}")
    mine = shards[process_index::process_count]
    if not mine:
        raise DataPipelineError(
            f"the split has {len(shards)} shards, fewer than the {process_count} processes reading it; rebuild it "
            f"with a shard count that is a multiple of the host count (esm-jax build-data --hosts {process_count})"
        )
    return mine


def selection_key(cluster_id: str) -> float:
    """A number in [0, 1) fixed by the cluster id alone; a record belongs to fraction ``f`` when it is below ``f``."""
    return counter_random.stable_hash64(f"data-fraction\x00{cluster_id}") / _TWO_POW_64


def kept_by_fraction(cluster_ids: list[str], fraction: float) -> np.ndarray:
    """Boolean mask of the records kept by ``fraction``: nested in ``fraction``, independent of order and seed."""
    return np.array([selection_key(cluster_id) < fraction for cluster_id in cluster_ids], dtype=bool)


class ProcessStream:
    """The sequence of records one process reads: its shards, reordered every epoch, epochs back to back.

    With ``fraction < 1`` the shards are filtered once by :func:`kept_by_fraction` and their kept records held in
    memory; stream positions then count kept records only.
    """

    def __init__(
        self, shards: list[Shard], seed: int, fields: tuple[str, ...] = ("sequence",), fraction: float = 1.0
    ) -> None:
        self.seed = seed
        self.fields = fields
        self._tf = tensorflow_without_accelerators()
        self._kept: dict[str, dict[str, list[bytes]]] | None = None
        if fraction < 1.0:
            self._kept = {shard.path: self._select(shard, fraction) for shard in shards}
            shards = [Shard(shard.path, len(self._kept[shard.path][fields[0]])) for shard in shards]
        self.shards = shards
        self.epoch_records = sum(s.num_records for s in shards)
        if self.epoch_records == 0 and fraction < 1.0:
            raise DataPipelineError(
                f"data.fraction={fraction} keeps none of the records in this process's {len(shards)} shards "
                f"({shards[0].path}, ...); use a larger fraction"
            )
        if self.epoch_records == 0:
            raise DataPipelineError("the shards of this process hold no records")

    def _select(self, shard: Shard, fraction: float) -> dict[str, list[bytes]]:
        """The records of ``shard`` whose cluster is in ``fraction``, every field of this stream, in file order."""
        columns = self._read_file(shard, 0, shard.num_records, tuple(dict.fromkeys((*self.fields, "cluster_id"))))
        keep = kept_by_fraction([value.decode("utf-8") for value in columns["cluster_id"]], fraction)
        return {
            field: [value for value, kept in zip(columns[field], keep, strict=True) if kept] for field in self.fields
        }

    def shard_order(self, epoch: int) -> np.ndarray:
        stream = counter_random.stable_hash64(f"shard-order\x00{epoch}")
        return counter_random.permutation(self.seed, stream, len(self.shards))

    def read(self, start: int, count: int) -> dict[str, list[bytes]]:
        """Records at stream positions ``[start, start + count)`` as lists of bytes per field."""
        out: dict[str, list[bytes]] = {field: [] for field in self.fields}
        for shard, skip, take in self._segments(start, count):
            for field, values in self.read_shard(shard, skip, take).items():
                out[field].extend(values)
        return out

    def _segments(self, start: int, count: int):
        position, end = start, start + count
        while position < end:
            epoch, offset = divmod(position, self.epoch_records)
            for index in self.shard_order(epoch):
                shard = self.shards[index]
                if offset >= shard.num_records:
                    offset -= shard.num_records
                    continue
                take = min(shard.num_records - offset, end - position)
                yield shard, offset, take
                position += take
                offset = 0
                if position >= end:
                    break

    def read_shard(self, shard: Shard, skip: int, take: int) -> dict[str, list[bytes]]:
        """Records ``skip .. skip + take - 1`` of one shard (of its kept records, with a fraction below 1)."""
        if self._kept is not None:
            return {field: values[skip : skip + take] for field, values in self._kept[shard.path].items()}
        return self._read_file(shard, skip, take, self.fields)

    def _read_file(self, shard: Shard, skip: int, take: int, fields: tuple[str, ...]) -> dict[str, list[bytes]]:
        """Records ``skip .. skip + take - 1`` of one shard file, checked for damage and truncation."""
        tf = self._tf
        spec = {field: tf.io.FixedLenFeature([], tf.string) for field in fields}
        dataset = (
            tf.data.TFRecordDataset(shard.path, buffer_size=1 << 22)
            .skip(skip)
            .take(take)
            .batch(_READ_BATCH)
            .map(lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(2)
        )
        out: dict[str, list[bytes]] = {field: [] for field in fields}
        try:
            for batch in dataset.as_numpy_iterator():
                for field in fields:
                    out[field].extend(batch[field].tolist())
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            raise CorruptShardError(
                f"{shard.path}: cannot read records {skip}..{skip + take - 1} of this shard "
                f"({error.message.strip().splitlines()[0]}). The file is truncated or corrupted: rebuild the dataset "
                "(esm-jax build-data) or restore the file from a good copy."
            ) from error
        got = len(out[fields[0]])
        if got != take:
            raise CorruptShardError(
                f"{shard.path}: expected records {skip}..{skip + take - 1} but the file ends after {skip + got} "
                f"records while its metadata says {shard.num_records}. The shard is truncated: rebuild the dataset "
                "(esm-jax build-data) or restore the file from a good copy."
            )
        return out


def read_split(data_dir: str | Path, split: str) -> list[dict[str, str]]:
    """Every example of a split as ``{id, cluster_id, sequence}`` strings, in shard order (for checks and tools)."""
    shards = split_shards(data_dir, split)
    stream = ProcessStream(shards, seed=0, fields=("id", "cluster_id", "sequence"))
    examples: list[dict[str, str]] = []
    for shard in shards:
        columns = stream.read_shard(shard, 0, shard.num_records)
        examples += [
            {field: columns[field][i].decode("utf-8") for field in stream.fields} for i in range(shard.num_records)
        ]
    return examples
