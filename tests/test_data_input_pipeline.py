"""The tf.data input pipeline on real TFRecords: shapes, budget, crops, coverage, determinism, resume, damage."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.errors import CorruptShardError, DataPipelineError, IteratorStateError
from data_pipeline.input.batch_plan import TIGHT
from data_pipeline.input.host_agreement import single_host
from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig
from data_pipeline.input.shard_reader import read_split
from esm_jax.alphabet import Alphabet
from tests.pipeline_helpers import one_process_iterator, take

ALPHABET = Alphabet()
SMALL = PipelineConfig(token_budget=4096, block_records=512, seed=3)


def _iterator(data_dir, config=SMALL, **kwargs) -> MlmBatchIterator:
    return one_process_iterator(data_dir, config, **kwargs)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def _original_residues(batch, row) -> str:
    n = int(batch["residues"][row])
    ids = np.where(batch["loss_mask"][row] == 1, batch["targets"][row], batch["tokens"][row])[1 : n + 1]
    return "".join(ALPHABET.get_tok(int(i)) for i in ids)


def test_fixed_batches_are_typed_arrays_in_bucket_shapes(uniref_sample_datasets):
    batches = take(_iterator(uniref_sample_datasets["ur100"]), 60)
    allowed = {(SMALL.token_budget // b, b) for b in SMALL.buckets}
    for batch in batches:
        assert set(batch) == {"tokens", "targets", "loss_mask", "residues"}
        assert batch["tokens"].dtype == batch["targets"].dtype == batch["residues"].dtype == np.int32
        assert batch["loss_mask"].dtype == np.float32
        assert batch["tokens"].shape in allowed and batch["residues"].shape == batch["tokens"].shape[:1]
        assert (batch["residues"] + 2 <= batch["tokens"].shape[1]).all()
    assert len({b["tokens"].shape for b in batches}) > 2


def test_tight_batches_stay_within_the_token_budget(uniref_sample_datasets):
    config = PipelineConfig(token_budget=4096, block_records=512, shapes=TIGHT)
    for batch in take(_iterator(uniref_sample_datasets["ur50_s"], config), 40):
        rows, length = batch["tokens"].shape
        assert rows * length <= 4096 and length % 8 == 0 and (batch["residues"] > 0).all()
        assert batch["residues"].max() + 2 > length - 8


@pytest.mark.parametrize("max_residues", [1022, 126])
def test_rows_spell_a_random_window_of_the_stored_sequence(uniref_sample_datasets, max_residues):
    buckets = (64, 128, 256, 512, 1024) if max_residues == 1022 else (32, 64, 128)
    config = PipelineConfig(
        split="validation",
        token_budget=4096,
        buckets=buckets,
        max_residues=max_residues,
        repeat=False,
        include_ids=True,
    )
    stored = {e["id"]: e["sequence"] for e in read_split(uniref_sample_datasets["ur50_s"], "validation")}
    cropped_starts = set()
    with _iterator(uniref_sample_datasets["ur50_s"], config) as iterator:
        for batch in iterator:
            for row in np.flatnonzero(batch["residues"] > 0):
                full, window = stored[batch["ids"][row].decode()], _original_residues(batch, row)
                assert len(window) == min(len(full), max_residues) and window in full
                if len(full) > max_residues:
                    cropped_starts.add(full.index(window))
    assert len(cropped_starts) > 3


def test_one_epoch_without_repeat_reads_every_record_exactly_once(uniref_sample_datasets):
    config = PipelineConfig(split="validation", token_budget=4096, block_records=300, repeat=False, include_ids=True)
    with _iterator(uniref_sample_datasets["ur100"], config) as iterator:
        seen = Counter(i.decode() for batch in iterator for i in batch["ids"][batch["residues"] > 0])
    expected = Counter(e["id"] for e in read_split(uniref_sample_datasets["ur100"], "validation"))
    assert seen == expected


def test_the_same_seed_gives_the_same_batches_and_another_seed_others(uniref_sample_datasets):
    data = uniref_sample_datasets["ur50_d"]
    first, again = take(_iterator(data), 30), take(_iterator(data), 30)
    other = take(_iterator(data, PipelineConfig(token_budget=4096, block_records=512, seed=4)), 30)
    assert _same(first, again)
    assert not _same(first, other)


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig
    data_dir, state_path, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = PipelineConfig(token_budget=4096, block_records=512, seed=3)
    state = open(state_path).read() if state_path != "-" else None
    with MlmBatchIterator(data_dir, config, process_index=0, process_count=1, state=state) as iterator:
        batches = [next(iterator) for _ in range(count)]
        open(out + ".state.json", "w").write(iterator.state_json())
    np.savez(out + ".npz", **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    """
)


def _run_fresh_process(tmp_path: Path, data_dir: Path, state: str, count: int, name: str) -> tuple[list[dict], str]:
    out = tmp_path / name
    subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(data_dir), state, str(count), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    saved = np.load(f"{out}.npz")
    batches = [{k: saved[f"{i}/{k}"] for k in ("tokens", "targets", "loss_mask", "residues")} for i in range(count)]
    return batches, f"{out}.state.json"


def test_restore_in_a_fresh_process_continues_exactly_like_an_uninterrupted_run(uniref_sample_datasets, tmp_path):
    data = uniref_sample_datasets["ur100"]
    k, n = 75, 30
    uninterrupted = take(_iterator(data), k + n)
    _, state_path = _run_fresh_process(tmp_path, data, "-", k, "first")
    assert json.loads(Path(state_path).read_text())["block"] >= 1
    resumed, _ = _run_fresh_process(tmp_path, data, state_path, n, "resumed")
    assert _same(resumed, uninterrupted[k:])


def test_a_changed_host_count_resumes_at_the_same_amount_of_data(uniref_sample_datasets):
    data = uniref_sample_datasets["ur100"]
    two_hosts = _iterator(data, process_index=1, process_count=2, combine_lengths=single_host)
    take(two_hosts, 25)
    state = two_hosts.get_state()
    assert state["batch_in_block"] > 0
    one_host = _iterator(data, state=state)
    assert one_host.get_state()["block"] == 2 * (state["block"] + 1)
    assert one_host.get_state()["batch_in_block"] == 0
    again = _iterator(data, state=state)
    assert _same(take(one_host, 10), take(again, 10))


def test_a_state_from_other_settings_is_refused(uniref_sample_datasets):
    data = uniref_sample_datasets["ur100"]
    iterator = _iterator(data)
    take(iterator, 3)
    other = PipelineConfig(token_budget=8192, block_records=512, seed=3)
    with pytest.raises(IteratorStateError, match="different settings \\(token_budget\\)"):
        _iterator(data, other, state=iterator.state_json())
    with pytest.raises(IteratorStateError, match="different dataset"):
        _iterator(uniref_sample_datasets["ur50_s"], state=iterator.state_json())
    with pytest.raises(IteratorStateError, match="not an esm-jax iterator state"):
        _iterator(data, state='{"block": 1}')


def test_more_processes_than_shards_is_refused(uniref_sample_datasets):
    with pytest.raises(DataPipelineError, match="multiple of the host count"):
        _iterator(uniref_sample_datasets["ur100"], process_index=5, process_count=8, combine_lengths=single_host)


@pytest.fixture
def damaged_copy(uniref_sample_datasets, tmp_path) -> tuple[Path, Path]:
    copy = tmp_path / "copy"
    shutil.copytree(uniref_sample_datasets["ur50_s"], copy)
    return copy, sorted(copy.glob("*-validation.tfrecord-*"))[0]


def _read_validation(data_dir: Path) -> None:
    config = PipelineConfig(split="validation", token_budget=4096, repeat=False)
    with _iterator(data_dir, config) as iterator:
        for _ in iterator:
            pass


def test_a_truncated_shard_is_named_in_a_clear_error(damaged_copy):
    data_dir, shard = damaged_copy
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptShardError, match=f"{shard.name}: cannot read records .* truncated or corrupted"):
        _read_validation(data_dir)


def test_a_corrupted_shard_is_named_in_a_clear_error(damaged_copy):
    data_dir, shard = damaged_copy
    content = bytearray(shard.read_bytes())
    content[len(content) // 2 : len(content) // 2 + 8] = b"\xff" * 8
    shard.write_bytes(bytes(content))
    with pytest.raises(CorruptShardError, match=f"{shard.name}: cannot read records"):
        _read_validation(data_dir)


def test_a_shard_cut_at_a_record_boundary_is_caught_by_its_record_count(damaged_copy):
    data_dir, shard = damaged_copy
    content = shard.read_bytes()
    first_record_end = 8 + 4 + struct.unpack("<Q", content[:8])[0] + 4
    shard.write_bytes(content[:first_record_end])
    with pytest.raises(CorruptShardError, match=f"{shard.name}: expected records .* ends after 1 records"):
        _read_validation(data_dir)
