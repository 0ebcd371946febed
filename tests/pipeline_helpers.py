"""Single-process MLM batch iterators and batch taking, shared by the input-pipeline and packing tests."""

from __future__ import annotations

import numpy as np

from data_pipeline.input.input_pipeline import MlmBatchIterator, PipelineConfig


def one_process_iterator(data_dir, config: PipelineConfig, **kwargs) -> MlmBatchIterator:
    """An iterator that is process 0 of 1 unless ``kwargs`` say otherwise."""
    kwargs.setdefault("process_index", 0)
    kwargs.setdefault("process_count", 1)
    return MlmBatchIterator(data_dir, config, **kwargs)


def take(iterator: MlmBatchIterator, n: int) -> list[dict[str, np.ndarray]]:
    """The next ``n`` batches, closing the iterator afterwards."""
    with iterator:
        return [next(iterator) for _ in range(n)]
