"""The trainer's data source: MLM batch iterators named by a training config (``data.factory``).

``esm_jax`` never imports this package; a training config names :func:`mlm_batches` by its
dotted path and the trainer loads it. A config either points at a built dataset
(``data.dataset_dir``) or at FASTA inputs that are built once into ``data.build_dir``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from data_pipeline.batch_plan import FIXED
from data_pipeline.build import DATASET_NAME, build_dataset
from data_pipeline.input_pipeline import MlmBatchIterator, PipelineConfig
from data_pipeline.uniref_builder import BuildOptions, CorpusFiles, UnirefMlm


def dataset_dir(data: ml_collections.ConfigDict) -> Path:
    """The dataset folder of ``data``, building it from its FASTA inputs on first use."""
    if data.dataset_dir:
        return Path(data.dataset_dir)
    folder = Path(data.build_dir).expanduser() / DATASET_NAME / data.dataset / str(UnirefMlm.VERSION)
    if folder.exists():
        return folder
    if jax.process_count() > 1:
        raise FileNotFoundError(
            f"{folder} does not exist; on several processes build the dataset first with `esm-jax build-data`"
        )
    files = CorpusFiles(
        uniref50_fastas=tuple(data.uniref50_fasta),
        member_fastas=tuple(data.member_fasta),
        mapping_tsv=data.mapping_tsv or None,
    )
    options = BuildOptions(heldout_fraction=data.heldout_fraction)
    return build_dataset(data.dataset, files, Path(data.build_dir).expanduser(), options).data_dir


def mlm_batches(data: ml_collections.ConfigDict, split: str, state: dict | None = None) -> MlmBatchIterator:
    """Masked batches of ``split`` for this process; ``train`` repeats, ``validation`` is one pass.

    ``data.shapes`` picks the batch shape policy (:mod:`data_pipeline.batch_plan`; ``fixed`` when absent).
    """
    training = split == "train"
    config = PipelineConfig(
        split=split,
        seed=data.seed if training else data.eval_seed,
        token_budget=data.global_token_budget // jax.process_count(),
        buckets=tuple(data.buckets),
        shapes=data.get("shapes", FIXED),
        max_residues=data.max_residues,
        block_records=data.block_records,
        repeat=training,
    )
    return MlmBatchIterator(dataset_dir(data), config, state=state)
