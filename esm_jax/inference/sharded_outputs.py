"""Extracted representations as a few large arrays instead of one file per protein.

A shard is a folder of ``.npy`` files for a run of consecutive records, written whole and renamed
into place, so a reader or a resumed run sees complete shards only:

* ``records.tsv``: ``row``, ``label``, ``residues`` (L) of each record, in row order;
* ``offsets.npy`` (n + 1,): record ``i``'s residues are rows ``offsets[i]:offsets[i + 1]`` of
* ``representations.<layer>.npy`` (Σ L, D), per residue;
* ``mean_representations.<layer>.npy`` and ``bos_representations.<layer>.npy`` (n, D);
* ``contacts.npy`` (Σ L²,), each record's (L, L) map flattened, from ``contact_offsets.npy`` (n + 1,).

Arrays are opened memory-mapped: a reader touches only the records it asks for. The keys are those
of the per-protein ``.npz`` files with ``/`` replaced by ``.``; :class:`ExtractedShards` gives back
fair-esm's nested dict for one record.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esm_jax.errors import EsmJaxError
from esm_jax.files import current_umask

RECORDS_FILE = "records.tsv"
_GROUPS = ("representations", "mean_representations", "bos_representations")


class ShardWriter:
    """Fills one shard's arrays record by record in a hidden folder; :meth:`commit` renames it into place."""

    def __init__(self, path: Path, labels: Sequence[str], lengths: Sequence[int], dims: dict[str, int]):
        """``dims`` maps each array key (``representations/<layer>``, ``mean_representations/<layer>``, ...,
        ``contacts``) to its width (0 for ``contacts``)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial"))
        self.staging.chmod(0o777 & ~current_umask())  # as mkdir would make it, not mkdtemp's 0700
        self.labels, self.lengths = list(labels), np.asarray(lengths, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.contact_offsets = np.concatenate([[0], np.cumsum(self.lengths**2)])
        self.arrays = {key: self._open(key, width) for key, width in dims.items()}
        self.filled = np.zeros(len(self.labels), bool)

    def _open(self, key: str, width: int) -> np.ndarray:
        group = key.split("/")[0]
        if key == "contacts":
            shape: tuple[int, ...] = (int(self.contact_offsets[-1]),)
        elif group == "representations":
            shape = (int(self.offsets[-1]), width)
        else:
            shape = (len(self.labels), width)
        filename = self.staging / f"{key.replace('/', '.')}.npy"
        return np.lib.format.open_memmap(filename, mode="w+", dtype=np.float32, shape=shape)

    def put(self, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Store record ``row``'s arrays (the keys of a per-protein ``.npz``, ``label`` aside)."""
        for key, values in arrays.items():
            if key == "label":
                continue
            target = self.arrays[key]
            if key == "contacts":
                target[self.contact_offsets[row] : self.contact_offsets[row + 1]] = values.ravel()
            elif key.startswith("representations/"):
                target[self.offsets[row] : self.offsets[row + 1]] = values
            else:
                target[row] = values
        self.filled[row] = True

    def commit(self) -> Path:
        """Flush, check every record was stored, and move the shard into place."""
        missing = np.flatnonzero(~self.filled)
        if missing.size:
            raise RuntimeError(f"shard {self.path.name}: records {missing[:5].tolist()} were never stored")
        for values in self.arrays.values():
            values.flush()
        self.arrays.clear()
        np.save(self.staging / "offsets.npy", self.offsets)
        np.save(self.staging / "contact_offsets.npy", self.contact_offsets)
        records = enumerate(zip(self.labels, self.lengths, strict=True))
        rows = "".join(f"{row}\t{label}\t{length}\n" for row, (label, length) in records)
        (self.staging / RECORDS_FILE).write_text("row\tlabel\tresidues\n" + rows, encoding="utf-8")
        os.replace(self.staging, self.path)
        return self.path

    def discard(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.staging, ignore_errors=True)


class ExtractedShards:
    """Read the shards of an ``esm-jax extract --format shards`` output folder, memory-mapped.

    ``shards[label]`` is fair-esm's dict for one record; :meth:`means` stacks every record's mean
    representation of one layer in index order.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        index = self.output_dir / "index.tsv"
        if not index.is_file():
            raise EsmJaxError(f"{index}: no index; run the extraction (all processes) to the end first")
        lines = index.read_text(encoding="utf-8").splitlines()[1:]
        self.locations = {}
        for line in lines:
            shard, row, label = line.split("\t", 2)
            self.locations[label] = (shard, int(row))
        self._opened: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def labels(self) -> list[str]:
        return list(self.locations)

    def _shard(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._opened:
            folder = self.output_dir / "shards" / name
            self._opened[name] = {file.stem: np.load(file, mmap_mode="r") for file in folder.glob("*.npy")}
        return self._opened[name]

    def __getitem__(self, label: str) -> dict:
        shard, row = self.locations[label]
        arrays = self._shard(shard)
        start, stop = arrays["offsets"][row : row + 2]
        result: dict = {"label": label}
        for key, values in arrays.items():
            group, _, layer = key.partition(".")
            if group in _GROUPS:
                value = values[start:stop] if group == "representations" else values[row]
                result.setdefault(group, {})[int(layer)] = np.array(value)
        if "contacts" in arrays:
            low, high = arrays["contact_offsets"][row : row + 2]
            length = int(stop - start)
            result["contacts"] = np.array(arrays["contacts"][low:high]).reshape(length, length)
        return result

    def means(self, layer: int) -> np.ndarray:
        """(records, D) mean representations of ``layer``, in the order of ``labels``."""
        key = f"mean_representations.{layer}"
        return np.stack([self._shard(shard)[key][row] for shard, row in self.locations.values()])
