"""The MLM input pipeline: TFRecord shards -> crop -> tokenise -> mask -> token-budget batches of numpy arrays.

How a process produces batches: its stream of records (:mod:`data_pipeline.input.shard_reader`, read with tf.data) is
cut into blocks of ``block_records`` records. A block is crop-measured, sorted by length (ties in random order),
planned into batches (:mod:`data_pipeline.input.batch_plan`) from the length profile shared by all hosts
(:mod:`data_pipeline.input.host_agreement`), and its batches are served in a random order. Each record's crop and mask
depend only on the seed and its stream position (:mod:`data_pipeline.counter_random`), so a block can be rebuilt
exactly from its index: the iterator state is ``(block, batch_in_block)`` (:mod:`data_pipeline.input.iterator_state`).
The next block is read ahead on a background thread while the current one is served.

A batch is a dict of numpy arrays whose leading dimension is the per-process batch, ready for
``jax.make_array_from_process_local_data``: ``tokens`` (int32, model input with masking applied), ``targets``
(int32, original id at selected positions, ``padding_idx`` elsewhere), ``loss_mask`` (float32, 1 at selected
positions) and ``residues`` (int32, residues per row, 0 for an empty padding row). Empty rows hold ``<cls><eos>`` so
the model never sees a row of padding only (its attention would have no key to attend to). ``include_ids`` adds
``ids`` (object array (rows,) of ``bytes``, ``b""`` for an empty row), for checks, not for devices.

Packed batches (``shapes="packed"``, :mod:`data_pipeline.input.packing`) are ``(token_budget // T, T)`` with ``T`` the
last bucket; each row holds whole sequences laid out ``<cls> residues <eos>`` back to back, then padding. They add
``segment_ids`` (int32, same shape): 0 at padding, k >= 1 on every token of the row's k-th sequence (1, 2, 3... left
to right), so padding and only padding has id 0. ``tokens``, ``targets`` and ``loss_mask`` mean what they mean
unpacked, and each sequence is cropped and masked exactly as it would be unpacked (same random stream).
``residues`` is the sum of the row's sequence lengths; an empty row is all padding (segment id 0 throughout: with
segment ids, padding attends to padding, so no attention row is empty; packed batches need a model that takes the
segment ids). ``ids`` is an object array (rows,) of tuples of ``bytes``, one id per segment in segment order
(``()`` for an empty row).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline import counter_random
from data_pipeline.errors import DataPipelineError
from data_pipeline.input import iterator_state
from data_pipeline.input.batch_plan import DEFAULT_BUCKETS, FIXED, SHAPES, PlannedBatch, bucket_of, plan_batches
from data_pipeline.input.cropping import DEFAULT_MAX_RESIDUES, crop_windows
from data_pipeline.input.host_agreement import LengthCombiner, jax_all_hosts, single_host
from data_pipeline.input.masking import mask_batch
from data_pipeline.input.packing import PackedBatch, packed_positions
from data_pipeline.input.shard_reader import ProcessStream, shards_for_process, split_shards
from data_pipeline.input.tokenization import ResidueTable
from esm_jax.masking_rule import MaskingRule

_SORT_COUNTER = 5 << 20


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides which batches come out (all of it is checked again on restore)."""

    split: str = "train"
    seed: int = 0
    token_budget: int = 32768
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    shapes: str = FIXED
    max_residues: int = DEFAULT_MAX_RESIDUES
    block_records: int = 16384
    repeat: bool = True
    masking: MaskingRule = MaskingRule()
    include_ids: bool = False
    fraction: float = 1.0  # share of the split's UniRef50 clusters read (shard_reader.kept_by_fraction)

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(set(self.buckets)) or self.buckets[-1] < self.max_residues + 2:
            raise ValueError(
                f"buckets must increase and the last must hold max_residues + 2 = {self.max_residues + 2} tokens"
            )
        if self.block_records < 1:
            raise ValueError("block_records must be positive")
        if self.shapes not in SHAPES:
            raise ValueError(f"shapes must be one of {SHAPES}, got {self.shapes!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise DataPipelineError(
                f"data.fraction must be in (0, 1] (e.g. 0.1, 0.01 or 0.001 for Table 1's reduced-data rows), "
                f"got {self.fraction}"
            )

    def settings(self) -> dict[str, Any]:
        """JSON form of the settings that change batches (``include_ids`` only adds a field).

        ``fraction`` appears only below 1, so states saved before it existed still restore.
        """
        data = dataclasses.asdict(self)
        data.pop("include_ids")
        if self.fraction == 1.0:
            data.pop("fraction")
        return json.loads(json.dumps(data))


@dataclasses.dataclass
class _Block:
    index: int
    sequences: list[bytes]
    ids: list[bytes] | None
    starts: np.ndarray
    residues: np.ndarray
    streams: np.ndarray
    record_at_rank: np.ndarray
    plan: list[PlannedBatch] | list[PackedBatch]
    order: np.ndarray


class MlmBatchIterator:
    """Endless (or, with ``repeat=False``, one-epoch) iterator of masked, bucketed or packed numpy batches."""

    def __init__(
        self,
        data_dir: str | Path,
        config: PipelineConfig = PipelineConfig(),
        *,
        process_index: int | None = None,
        process_count: int | None = None,
        combine_lengths: LengthCombiner | None = None,
        state: dict[str, Any] | str | None = None,
    ) -> None:
        self.config = config
        self.process_index, self.process_count = _process_position(process_index, process_count)
        self._combine = combine_lengths or _default_combiner(self.process_count)
        all_shards = split_shards(data_dir, config.split)
        fields = ("sequence", "id") if config.include_ids else ("sequence",)
        mine = shards_for_process(all_shards, self.process_index, self.process_count)
        self._stream = ProcessStream(mine, config.seed, fields, config.fraction)
        self._dataset = {
            "split": config.split,
            "num_examples": sum(s.num_records for s in all_shards),
            "shard_records": [s.num_records for s in all_shards],
        }
        self._table = ResidueTable()
        self._block_index, self._batch_in_block = 0, 0
        self._current: _Block | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfrecord-readahead")
        self._pending: dict[int, Future] = {}
        if state is not None:
            saved = iterator_state.from_json(state) if isinstance(state, str | bytes) else state
            self._block_index, self._batch_in_block = iterator_state.resume_point(
                saved, self.config.settings(), self._dataset, self.process_count
            )

    def __iter__(self) -> MlmBatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._current is None:
            self._current = self._prepare_block(self._block_index)
        block = self._current
        batch = self._assemble(block, block.plan[int(block.order[self._batch_in_block])])
        self._batch_in_block += 1
        if self._batch_in_block == len(block.plan):
            self._block_index, self._batch_in_block, self._current = self._block_index + 1, 0, None
        return batch

    def get_state(self) -> dict[str, Any]:
        """State after the last batch returned; JSON-able, the same on every host."""
        return iterator_state.make_state(
            self._block_index, self._batch_in_block, self.process_count, self.config.settings(), self._dataset
        )

    def state_json(self) -> str:
        return iterator_state.to_json(self.get_state())

    @property
    def epoch(self) -> float:
        """Epochs of this process's shards consumed so far, counted in started blocks."""
        return self._block_index * self.config.block_records / self._stream.epoch_records

    def close(self) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> MlmBatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _block_span(self, index: int) -> tuple[int, int]:
        size = self.config.block_records
        start = index * size
        if self.config.repeat:
            return start, size
        return start, max(0, min(size, self._stream.epoch_records - start))

    def _read(self, index: int) -> Future:
        if index not in self._pending:
            self._pending[index] = self._reader.submit(self._stream.read, *self._block_span(index))
        return self._pending[index]

    def _prepare_block(self, index: int) -> _Block:
        records = self._read(index).result()
        self._pending.pop(index)
        self._read(index + 1)
        start, count = self._block_span(index)
        sequences = records["sequence"]
        positions = np.arange(start, start + count, dtype=np.uint64)
        streams = positions * np.uint64(self.process_count) + np.uint64(self.process_index)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=count)
        starts, residues = crop_windows(lengths, self.config.max_residues, self.config.seed, streams)
        tie_break = counter_random.random_bits(self.config.seed, streams, _SORT_COUNTER)
        by_length = np.lexsort((tie_break, residues))
        size = self.config.block_records
        profile = np.zeros(size, dtype=np.int64)
        profile[size - count :] = residues[by_length] + 2
        combined = self._combined_profile(profile)
        if not combined.any():
            raise StopIteration
        record_at_rank = np.full(size, -1, dtype=np.int64)
        record_at_rank[size - count :] = by_length
        plan = plan_batches(combined, self.config.token_budget, self.config.buckets, self.config.shapes)
        order_stream = counter_random.stable_hash64(f"batch-order\x00{index}")
        order = counter_random.permutation(self.config.seed, order_stream, len(plan))
        ids = records.get("id")
        return _Block(index, sequences, ids, starts, residues, streams, record_at_rank, plan, order)

    def _combined_profile(self, profile: np.ndarray) -> np.ndarray:
        combined = np.asarray(self._combine(profile), dtype=np.int64)
        if combined.shape != profile.shape or np.any(combined < profile):
            raise DataPipelineError(
                "the length combiner must return an array of the same shape that is at least the local profile "
                "at every rank (an elementwise maximum over hosts)"
            )
        return combined

    def _assemble(self, block: _Block, planned: PlannedBatch | PackedBatch) -> dict[str, np.ndarray]:
        if isinstance(planned, PackedBatch):
            return self._assemble_packed(block, planned)
        records = np.full(planned.rows, -1, dtype=np.int64)
        records[: planned.stop - planned.start] = block.record_at_rank[planned.start : planned.stop]
        tokens, residues, streams = self._lay_out(block, records, planned.length)
        batch = mask_batch(tokens, residues, streams, self.config.seed, self._table, self.config.masking)
        batch["residues"] = residues
        if block.ids is not None:
            batch["ids"] = np.array([block.ids[r] if r >= 0 else b"" for r in records], dtype=object)
        return batch

    def _lay_out(self, block: _Block, records: np.ndarray, length: int) -> tuple[np.ndarray, ...]:
        """One record per row (``-1``: an empty ``<cls><eos>`` row): tokens, residues and random streams."""
        tokens = np.full((records.size, length), self._table.padding_idx, dtype=np.int32)
        tokens[:, :2] = (self._table.cls_idx, self._table.eos_idx)  # an empty row is <cls><eos>, never all padding
        residues = np.zeros(records.size, dtype=np.int32)
        streams = np.zeros(records.size, dtype=np.uint64)
        for row, record in enumerate(records.tolist()):
            if record < 0:
                continue
            n, first = int(block.residues[record]), int(block.starts[record])
            tokens[row, 1 : n + 1] = self._encode(block, record, first, n)
            tokens[row, n + 1] = self._table.eos_idx
            residues[row], streams[row] = n, block.streams[record]
        return tokens, residues, streams

    def _assemble_packed(self, block: _Block, planned: PackedBatch) -> dict[str, np.ndarray]:
        """Mask each sequence unpacked (grouped by bucket to keep that cheap), then copy it into its packed row."""
        shape = (planned.rows, planned.length)
        batch = {
            "tokens": np.full(shape, self._table.padding_idx, dtype=np.int32),
            "targets": np.full(shape, self._table.padding_idx, dtype=np.int32),
            "loss_mask": np.zeros(shape, dtype=np.float32),
            "segment_ids": np.zeros(shape, dtype=np.int32),
        }
        records, rows, numbers = _segments(block.record_at_rank, planned)
        sizes = block.residues[records] + 2
        offsets = _offsets_in_rows(rows, sizes)
        groups = bucket_of(sizes, self.config.buckets)
        for group in np.unique(groups):
            chosen = np.flatnonzero(groups == group)
            tokens, residues, streams = self._lay_out(block, records[chosen], self.config.buckets[group])
            unpacked = mask_batch(tokens, residues, streams, self.config.seed, self._table, self.config.masking)
            unpacked["segment_ids"] = np.broadcast_to(numbers[chosen, None], tokens.shape)
            inside, destination = packed_positions(
                rows[chosen], offsets[chosen], sizes[chosen], tokens.shape[1], planned.length
            )
            for key, values in unpacked.items():
                np.put(batch[key], destination, values[inside])
        batch["residues"] = np.bincount(rows, weights=sizes - 2, minlength=planned.rows).astype(np.int32)
        if block.ids is not None:
            batch["ids"] = _ids_per_row(block.ids, records, rows, planned.rows)
        return batch

    def _encode(self, block: _Block, record: int, first: int, n: int) -> np.ndarray:
        try:
            label = f"record {record} of block {block.index}"
            return self._table.encode(block.sequences[record][first : first + n], label)
        except ValueError as error:
            raise DataPipelineError(
                f"{error}; the dataset was not written by this builder or is damaged: rebuild it (esm-jax build-data)"
            ) from error


def real_tokens(batch: dict[str, np.ndarray]) -> int:
    """Tokens of a batch that belong to a sequence (``<cls>``, residues, ``<eos>``), not an empty row's or padding."""
    if "segment_ids" in batch:
        return int(np.count_nonzero(batch["segment_ids"]))
    return int(batch["residues"].sum() + 2 * np.count_nonzero(batch["residues"]))


def _segments(record_at_rank: np.ndarray, planned: PackedBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This host's records of a packed batch in row order, their rows and their segment numbers (1, 2, ...).

    A rank this host has no record for (another host's block is longer) is skipped, so numbers stay contiguous.
    """
    records, rows, numbers = [], [], []
    for row, ranks in enumerate(planned.segments):
        present = [record for record in record_at_rank[list(ranks)].tolist() if record >= 0]
        records += present
        rows += [row] * len(present)
        numbers += range(1, len(present) + 1)
    return np.array(records, dtype=np.int64), np.array(rows, dtype=np.int64), np.array(numbers, dtype=np.int32)


def _offsets_in_rows(rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Start column of each segment: the sizes of the segments before it in its row (``rows`` ascending)."""
    ends = np.cumsum(sizes)
    row_start = np.searchsorted(rows, rows, side="left")
    return ends - sizes - (ends[row_start] - sizes[row_start])


def _ids_per_row(ids: list[bytes], records: np.ndarray, rows: np.ndarray, row_count: int) -> np.ndarray:
    """Object array (rows,) of id tuples in segment order; a 2-D array would not hold rows of unequal length."""
    per_row: list[list[bytes]] = [[] for _ in range(row_count)]
    for record, row in zip(records.tolist(), rows.tolist(), strict=True):
        per_row[row].append(ids[record])
    result = np.empty(row_count, dtype=object)
    for row, row_ids in enumerate(per_row):
        result[row] = tuple(row_ids)
    return result


def _process_position(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is not None and process_count is not None:
        return process_index, process_count
    import jax

    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
    )


def _default_combiner(process_count: int) -> LengthCombiner:
    if process_count == 1:
        return single_host
    import jax

    if jax.process_count() != process_count:
        raise DataPipelineError(
            f"{process_count} processes were asked for but JAX runs {jax.process_count()}: hosts cannot agree on "
            "batch shapes; initialise jax.distributed, or pass combine_lengths=single_host if each process may "
            "deliver batches of its own shapes"
        )
    return jax_all_hosts
