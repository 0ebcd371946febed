"""Extract per-residue and per-sequence representations and contact maps, as fair-esm's extract.py.

Each sequence is written to ``<output_dir>/<label>.npz`` with fair-esm's keys flattened:
``label``, ``representations/<layer>`` (L, D), ``mean_representations/<layer>`` (D,),
``bos_representations/<layer>`` (D,) and ``contacts`` (L, L), where L is the number of
residues after truncation. :func:`load_extracted` turns a file back into fair-esm's nested dict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from esm_jax.files import atomic_output, write_text_atomically
from esm_jax.inference.embedding import SequenceOutputs, encode_records, iter_outputs, packs_by_default
from esm_jax.model import ESM

INCLUDE_CHOICES = ("mean", "per_tok", "bos", "contacts")
_MAX_NAME_BYTES = 200


@dataclasses.dataclass(frozen=True)
class ExtractionSummary:
    sequences: int
    residues: int
    seconds: float
    output_dir: Path
    files: dict[str, Path]

    @property
    def residues_per_second(self) -> float:
        return self.residues / max(self.seconds, 1e-9)


def output_names(labels: Sequence[str]) -> list[str]:
    """File stems for ``labels``: path separators replaced, long names shortened, clashes numbered."""
    names, used = [], set()
    for number, label in enumerate(labels, start=1):
        name = label.replace(os.sep, "_").replace("\0", "_") or "unnamed"
        if name in (".", ".."):
            name = f"_{name}"
        if len(name.encode()) > _MAX_NAME_BYTES:
            digest = hashlib.sha1(label.encode()).hexdigest()[:12]
            name = name.encode()[: _MAX_NAME_BYTES - 13].decode(errors="ignore") + "-" + digest
        if name in used:
            name = f"{name}-{number}"
        used.add(name)
        names.append(name)
    return names


def _sequence_arrays(label: str, outputs: SequenceOutputs, include: Sequence[str]) -> dict:
    arrays: dict[str, np.ndarray] = {"label": np.array(label)}
    for layer, residues in outputs.residues.items():
        if "per_tok" in include:
            arrays[f"representations/{layer}"] = residues
        if "mean" in include:
            arrays[f"mean_representations/{layer}"] = residues.mean(axis=0)
        if "bos" in include:
            arrays[f"bos_representations/{layer}"] = outputs.bos[layer]
    if "contacts" in include:
        arrays["contacts"] = outputs.contacts
    return arrays


def extract(
    model: ESM,
    records: Sequence[tuple[str, str]],
    output_dir: str | os.PathLike,
    *,
    repr_layers: Sequence[int] = (-1,),
    include: Sequence[str] = ("mean",),
    toks_per_batch: int = 4096,
    truncation_seq_length: int | None = 1022,
    upper_case: bool = False,
    pack: bool | None = None,
    row_width: int | None = None,
    show_progress: bool = True,
) -> ExtractionSummary:
    """Run ``model`` over ``records`` and write one ``.npz`` per sequence into ``output_dir``.

    Every sequence is validated before anything is computed or written. Sequences go into
    token-budget batches of a few fixed shapes (one compilation each): packed several to a row
    of ``row_width`` tokens when ``pack`` is on (default: on TPUs and GPUs, see
    :func:`~esm_jax.inference.embedding.packs_by_default`) and no contacts are asked for (packed rows
    cannot give them), else length-sorted one to a row. The files are the same either way.
    """
    unknown = set(include) - set(INCLUDE_CHOICES)
    if unknown or not include:
        raise ValueError(f"include must name some of {INCLUDE_CHOICES}, got {list(include)}")
    model.normalize_layers(repr_layers)
    encoded = encode_records(records, truncation_seq_length, upper_case)
    names = output_names([label for label, _ in records])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    residues = sum(len(ids) for ids in encoded)
    start = time.perf_counter()
    with tqdm(total=residues, unit="res", unit_scale=True, desc="extract", disable=not show_progress) as bar:
        outputs = iter_outputs(
            model,
            encoded,
            repr_layers,
            return_contacts="contacts" in include,
            toks_per_batch=toks_per_batch,
            pack=packs_by_default(model) if pack is None else pack,
            row_width=row_width,
            progress=bar,
        )
        for sequence in outputs:
            label = records[sequence.index][0]
            path = output_dir / f"{names[sequence.index]}.npz"
            with atomic_output(path, "wb") as handle:
                np.savez(handle, **_sequence_arrays(label, sequence, include))
            files[label] = path
    index_lines = "".join(f"{files[label].name}\t{label}\n" for label, _ in records)
    write_text_atomically(output_dir / "index.tsv", "file\tlabel\n" + index_lines)
    return ExtractionSummary(len(records), residues, time.perf_counter() - start, output_dir, files)


def load_extracted(path: str | os.PathLike) -> dict:
    """Read an extracted ``.npz`` back into fair-esm's nested layout (``{"representations": {33: ...}}``)."""
    result: dict = {}
    with np.load(path) as data:
        for key in data.files:
            if "/" in key:
                group, layer = key.split("/")
                result.setdefault(group, {})[int(layer)] = data[key]
            else:
                result[key] = data[key].item() if key == "label" else data[key]
    return result
