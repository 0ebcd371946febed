"""The held-out UniRef50 clusters for language-model evaluation: find or build the dataset, serve its batches.

The split is the data pipeline's ``validation`` split (clusters held out by a stable hash of the cluster id,
:mod:`data_pipeline.build.heldout`), so it is exactly what a model trained by this project never saw. Batches come
from :class:`data_pipeline.input.input_pipeline.MlmBatchIterator` with ``repeat=False``: one pass, masking exactly as
ESM trained (15% selected; 80/10/10), fixed by the masking seed, the last partial batches padded with empty
rows rather than dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_pipeline import layout
from esm_jax.alphabet import Alphabet


def find_or_build(data_root: Path, cache: Path, config: str = "ur50_s") -> Path:
    """The ``config`` dataset built from the UniRef sample in ``data_root``, built into ``cache`` on first use.

    The cache folder is keyed by the sample's files (:func:`data_pipeline.layout.source_key`), so another
    ``--data`` builds and uses its own dataset instead of one built from elsewhere.
    """
    files = layout.sample_corpus(data_root)
    return layout.ensure_dataset(config, data_root, Path(cache) / f"source-{layout.source_key(files)}", files=files)


def check_dataset(path: Path) -> Path:
    """``path`` itself, after checking it is a built dataset folder of the version the data pipeline reads."""
    return layout.check_dataset(path)


def split_size(dataset: Path, split: str) -> int:
    from data_pipeline.input.shard_reader import split_shards

    return sum(shard.num_records for shard in split_shards(dataset, split))


def training_sequences(dataset: Path) -> list[np.ndarray]:
    """Token ids (no BOS/EOS) of every sequence of the ``train`` split, for the n-gram baselines."""
    from data_pipeline.input.shard_reader import read_split

    alphabet = Alphabet()
    return [
        np.asarray(alphabet.encode(example["sequence"], label=f"{dataset} train record {example['id']}"))
        for example in read_split(dataset, "train")
    ]


def heldout_batches(dataset: Path, mask_seed: int, token_budget: int) -> Iterator[dict[str, np.ndarray]]:
    """One deterministic pass over the validation split as masked batches (empty padding rows included).

    Empty padding rows get ``<cls><eos>`` so no all-padding row reaches the model; they hold no masked token.
    Each batch carries its rows' record ``ids`` (empty for padding rows), so per-sequence results can be put in
    an order that does not depend on the batching.
    """
    from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig

    config = PipelineConfig(
        split="validation", seed=mask_seed, token_budget=token_budget, repeat=False, include_ids=True
    )
    alphabet = Alphabet()
    with MlmBatchIterator(dataset, config, process_index=0, process_count=1) as batches:
        for batch in batches:
            empty = batch["residues"] == 0
            batch["tokens"][empty, 0] = alphabet.cls_idx
            batch["tokens"][empty, 1] = alphabet.eos_idx
            yield batch


def original_tokens(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The unmasked sequences of a batch: the targets at selected positions, the input elsewhere."""
    return np.where(batch["loss_mask"] > 0, batch["targets"], batch["tokens"])
