"""The trainer's data source: MLM batch iterators named by a training config (``data.factory``).

``esm_jax`` never imports this package; a training config names :func:`mlm_batches` by its
dotted path and the trainer loads it. A config either points at a built dataset
(``data.dataset_dir``) or at FASTA inputs that are built once into ``data.build_dir``
(:func:`data_pipeline.layout.ensure_dataset`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from data_pipeline.input.batch_plan import FIXED
from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig
from data_pipeline.layout import BuildOptions, CorpusFiles, check_dataset, dataset_folder, ensure_dataset


def dataset_dir(data: ml_collections.ConfigDict) -> Path:
    """The dataset folder of ``data``, building it from its FASTA inputs on first use."""
    if data.dataset_dir:
        return check_dataset(data.dataset_dir)
    build_dir = Path(data.build_dir).expanduser()
    if jax.process_count() > 1 and not dataset_folder(build_dir, data.dataset).exists():
        raise FileNotFoundError(
            f"{dataset_folder(build_dir, data.dataset)} does not exist; on several processes build the dataset first "
            "with `esm-jax build-data`"
        )
    files = CorpusFiles(
        uniref50_fastas=tuple(data.uniref50_fasta),
        member_fastas=tuple(data.member_fasta),
        mapping_tsv=data.mapping_tsv or None,
    )
    options = BuildOptions(heldout_fraction=data.heldout_fraction)
    return ensure_dataset(data.dataset, None, build_dir, files=files, options=options)


def mlm_batches(data: ml_collections.ConfigDict, split: str, state: dict | None = None) -> MlmBatchIterator:
    """Masked batches of ``split`` for this process; ``train`` repeats, ``validation`` is one pass.

    ``data.shapes`` picks the batch shape policy (:mod:`data_pipeline.input.batch_plan`; ``fixed`` when absent).
    ``data.fraction`` (1 when absent) keeps that share of the training clusters; held-out data is never reduced.
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
        fraction=data.get("fraction", 1.0) if training else 1.0,
    )
    return MlmBatchIterator(dataset_dir(data), config, state=state)
