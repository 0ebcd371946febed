"""Small inputs for end-to-end runs of ``esm-jax eval`` tasks: a tiny random ESM-2 saved as an official fair-esm
checkpoint, and a held-out split of real UniRef50 representatives."""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path

from esm_jax import ModelConfig, build_model, pretrained
from eval.summary import headlines

# ESM-2 checkpoints imply an FFN four times the width
TINY = ModelConfig(architecture="esm2", num_layers=2, embed_dim=32, attention_heads=4, ffn_embed_dim=128)


def save_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write ``esm2_tiny.pt`` (and its contact regression) into ``folder`` and return its path."""
    path = Path(folder) / "esm2_tiny.pt"
    pretrained.save_fair_esm(build_model(TINY, seed=seed), path)
    return path


def build_heldout_dataset(shared_data: Path, folder: Path, proteins: int, max_length: int) -> Path:
    """The first ``proteins`` UniRef50 representatives of at most ``max_length`` residues, built by the data pipeline
    as UR50/S with a quarter of the clusters held out; returns the dataset folder."""
    from data_pipeline.build.dataset import build_dataset
    from data_pipeline.layout import BuildOptions, CorpusFiles
    from esm_jax.fasta import iter_fasta

    source = shared_data / "uniref50_ur90_cluster_sample" / "uniref50_train_filt.fasta"
    short = (record for record in iter_fasta(source) if len(record.sequence) <= max_length)
    records = list(islice(short, proteins))
    fasta = folder / "ur50.fasta"
    fasta.write_text("".join(f">{r.record_id}\n{r.sequence}\n" for r in records))
    files = CorpusFiles(uniref50_fastas=(str(fasta),))
    return build_dataset("ur50_s", files, folder / "built", BuildOptions(heldout_fraction=0.25)).data_dir


def assert_summarised(task: str, results: dict, folder: Path) -> None:
    """``esm-jax eval summary`` reads ``task``'s results: every figure it names is there, and one is a number.

    Small inputs can leave a figure undefined (no partition with a DSSP structure): the summary shows it as "—".
    """
    figures = headlines(task, results, Path(folder))
    assert any(math.isfinite(figure.value) for figure in figures)
