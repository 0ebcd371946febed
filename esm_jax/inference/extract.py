"""Extract per-residue and per-sequence representations and contact maps, as fair-esm's extract.py.

Each sequence is written to ``<output_dir>/<name>.npz``, ``name`` being the first word of its
FASTA header (:func:`output_names`; ``index.tsv`` pairs each file with the whole header), with
fair-esm's keys flattened: ``label`` (the whole header), ``representations/<layer>`` (L, D),
``mean_representations/<layer>`` (D,), ``bos_representations/<layer>`` (D,) and ``contacts``
(L, L), where L is the number of residues after truncation. :func:`load_extracted` turns a file
back into fair-esm's nested dict. ``output_format="shards"`` writes the same arrays as a few large
memory-mappable shards instead (:mod:`esm_jax.inference.sharded_outputs`).

Runs scale out and resume:

* ``num_processes`` processes (hosts, or several on one host) each take a disjoint, deterministic
  share of the records (:func:`process_share`) and write their own files into one folder; each
  lists its records in ``index-<id>-of-<n>.tsv``, and the process that completes the set merges
  them into ``index.tsv``, which lists every record once, in FASTA order.
* Every file or shard is written whole and renamed into place. Rerunning the same command after a
  crash or kill skips what is already there and computes the rest. ``extract.json`` records what
  the folder was made with; a rerun asking for something else stops before writing anything.

Proteins longer than ``truncation_seq_length`` are cut to it (``long="truncate"``, as fair-esm does), or
covered whole by overlapping windows (``long="sliding"``, :func:`window_starts`): windows of
``truncation_seq_length`` residues (at most the model's limit), each starting half a window after the last;
each residue's representation is the average over the windows holding it, the mean and BOS vectors
are taken from those (BOS averaged over windows), and each contact is averaged over the windows holding both
residues; pairs further apart than any window holds are NaN (not predicted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from esm_jax.errors import EsmJaxError
from esm_jax.files import atomic_output, write_json_atomically, write_text_atomically
from esm_jax.inference.embedding import SequenceOutputs, encode_records, iter_outputs, packs_by_default
from esm_jax.inference.sharded_outputs import ShardWriter
from esm_jax.model import ESM
from esm_jax.progress import progress_bar

INCLUDE_CHOICES = ("mean", "per_tok", "bos", "contacts")
OUTPUT_FORMATS = ("npz", "shards")
LONG_MODES = ("truncate", "sliding")
MANIFEST = "extract.json"
_MAX_NAME_BYTES = 200


@dataclasses.dataclass(frozen=True)
class ExtractionSummary:
    sequences: int  # records of this process's share
    residues: int
    computed: int  # records computed by this run (the rest were already written)
    seconds: float
    output_dir: Path
    index: Path | None  # index.tsv, once every process has finished
    files: dict[str, Path]  # label -> .npz file of each record of the share (npz format)

    @property
    def residues_per_second(self) -> float:
        return self.residues / max(self.seconds, 1e-9)


def output_names(labels: Sequence[str]) -> list[str]:
    """File stems for ``labels``: the header's first word (gene callers append ``# 2 # 181 # ...;`` after it).

    Path separators are replaced and long names shortened. Names that clash (also when they differ only in
    case, as on macOS and Windows file systems) get ``-<record number>`` appended; ``index.tsv`` pairs every
    file with its whole header.
    """
    names, used = [], set()
    for number, label in enumerate(labels, start=1):
        name = _file_stem(label)
        while name.casefold() in used:
            name = f"{name}-{number}"
        used.add(name.casefold())
        names.append(name)
    return names


def _file_stem(label: str) -> str:
    words = label.split(None, 1)
    name = (words[0] if words else "").replace("/", "_").replace(os.sep, "_").replace("\0", "_") or "unnamed"
    if name in (".", ".."):
        name = f"_{name}"
    if len(name.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha1(label.encode()).hexdigest()[:12]
        name = name.encode()[: _MAX_NAME_BYTES - 13].decode(errors="ignore") + "-" + digest
    return name


def truncation_warning(records: Sequence[tuple[str, str]], truncation_seq_length: int | None) -> str | None:
    """One line saying how many proteins truncation cuts, and the longest; ``None`` when it cuts none."""
    if not truncation_seq_length:
        return None
    long = [(len(sequence), label) for label, sequence in records if len(sequence) > truncation_seq_length]
    if not long:
        return None
    length, label = max(long)
    return (
        f"{len(long)} of {len(records)} proteins are longer than {truncation_seq_length} residues (longest: "
        f"{label.split(None, 1)[0]!r}, {length:,}); only their first {truncation_seq_length} are used; "
        "--long sliding covers them whole"
    )


def sliding_window(model: ESM, truncation_seq_length: int | None) -> int | None:
    """Residues per window of ``long="sliding"``: ``truncation_seq_length``, at most what the model takes."""
    widest = model.config.max_batch_width
    limits = [n for n in (truncation_seq_length, None if widest is None else widest - 2) if n]
    return min(limits) if limits else None


def window_starts(length: int, window: int | None) -> list[int]:
    """Where the windows covering ``length`` residues start: every half window, the last ending at the end."""
    if window is None or length <= window:
        return [0]
    return [*range(0, length - window, max(1, window // 2)), length - window]


def _averaged(parts: Sequence[tuple[int, SequenceOutputs]], index: int, length: int) -> SequenceOutputs:
    """One sequence's outputs from its windows ``(start, outputs)``: each value averaged over the windows holding it."""
    if len(parts) == 1:
        return dataclasses.replace(parts[0][1], index=index)
    cover = np.zeros(length)
    residues = {layer: np.zeros((length, values.shape[1])) for layer, values in parts[0][1].residues.items()}
    for start, outputs in parts:
        for layer, values in outputs.residues.items():
            residues[layer][start : start + len(values)] += values
        cover[start : start + len(values)] += 1
    dtype = next(iter(parts[0][1].residues.values())).dtype
    residues = {layer: (total / cover[:, None]).astype(dtype) for layer, total in residues.items()}
    bos = {layer: np.mean([outputs.bos[layer] for _, outputs in parts], axis=0) for layer in residues}
    contacts = None
    if parts[0][1].contacts is not None:
        total, pairs = np.zeros((length, length)), np.zeros((length, length))
        for start, outputs in parts:
            stop = start + len(outputs.contacts)
            total[start:stop, start:stop] += outputs.contacts
            pairs[start:stop, start:stop] += 1
        with np.errstate(invalid="ignore"):
            contacts = (total / pairs).astype(parts[0][1].contacts.dtype)
    return SequenceOutputs(index, residues, bos, contacts)


def process_share(lengths: Sequence[int], process_id: int, num_processes: int) -> list[int]:
    """The record indices process ``process_id`` of ``num_processes`` computes, in FASTA order.

    Records are dealt longest first, round robin, so every process gets about the same residues; the
    shares depend on the lengths alone, so every process computes the same split without talking.
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in 0..{num_processes - 1} (of {num_processes} processes)")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return sorted(order[process_id::num_processes])


def shard_chunks(indices: Sequence[int], lengths: Sequence[int], residues_per_shard: int) -> list[list[int]]:
    """``indices`` cut, in order, into runs of at most ``residues_per_shard`` residues (at least one record)."""
    chunks: list[list[int]] = []
    total = residues_per_shard
    for index in indices:
        if total + lengths[index] > residues_per_shard:
            chunks.append([])
            total = 0
        chunks[-1].append(index)
        total += lengths[index]
    return chunks


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


def array_widths(model: ESM, layers: Sequence[int], include: Sequence[str]) -> dict[str, int]:
    groups = {"per_tok": "representations", "mean": "mean_representations", "bos": "bos_representations"}
    widths = {
        f"{groups[kind]}/{layer}": model.representation_width(layer)
        for kind in groups
        if kind in include
        for layer in layers
    }
    return widths | ({"contacts": 0} if "contacts" in include else {})


def _output_config(model: ESM) -> dict:
    """The model settings that change its outputs (not how it runs: kernel, layer loop, rematerialisation)."""
    runtime = ("attention_impl", "scan_layers", "remat_policy")
    return {key: value for key, value in model.config.to_dict().items() if key not in runtime}


def _fingerprint(records: Sequence[tuple[str, str]]) -> str:
    """A digest of every label and sequence: a rerun on another FASTA file is told apart."""
    digest = hashlib.sha256()
    for label, sequence in records:
        digest.update(f"{label}\n{sequence}\n".encode())
    return f"{len(records)} records, sha256 {digest.hexdigest()[:16]}"


def _check_manifest(output_dir: Path, manifest: dict) -> None:
    """Refuse to add to a folder made with other settings; record the settings in a new one."""
    path = output_dir / MANIFEST
    if not path.is_file():
        write_json_atomically(path, manifest)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EsmJaxError(f"{path}: unreadable ({exc}); delete it or choose a new output folder") from None
    differ = sorted(key for key in manifest.keys() | saved.keys() if manifest.get(key) != saved.get(key))
    if differ:
        changes = "; ".join(f"{key}: {saved.get(key)!r} there, {manifest.get(key)!r} now" for key in differ)
        raise EsmJaxError(
            f"{output_dir} holds an extraction made with other settings ({changes}); rerun with the same "
            "settings to finish it, or choose a new output folder"
        )


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
    output_format: str = "npz",
    residues_per_shard: int = 100_000,
    process_id: int = 0,
    num_processes: int = 1,
    model_name: str | None = None,
    show_progress: bool = True,
    long: str = "truncate",
) -> ExtractionSummary:
    """Run ``model`` over this process's share of ``records`` and write their outputs into ``output_dir``.

    Every sequence is validated before anything is computed or written. Sequences go into
    token-budget batches of a few fixed shapes (one compilation each, ``toks_per_batch`` per device):
    packed several to a row of ``row_width`` tokens when ``pack`` is on (default: on TPUs and GPUs,
    see :func:`~esm_jax.inference.embedding.packs_by_default`) and no contacts are asked for, else
    length-sorted one to a row. The outputs are the same either way. ``output_format`` is ``npz``
    (one file per record) or ``shards`` (runs of ``residues_per_shard`` residues); records or shards
    already in the folder are kept, not recomputed. ``model_name`` goes into ``extract.json`` so a
    rerun with another model is refused. ``long`` says what becomes of proteins longer than
    ``truncation_seq_length``: ``truncate`` or ``sliding`` (see the module's description).
    """
    unknown = set(include) - set(INCLUDE_CHOICES)
    if unknown or not include:
        raise ValueError(f"include must name some of {INCLUDE_CHOICES}, got {list(include)}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if long not in LONG_MODES:
        raise ValueError(f"long must be one of {LONG_MODES}, got {long!r}")
    if truncation_seq_length is not None and truncation_seq_length < 0:
        raise ValueError(
            f"truncation_seq_length must be positive (or 0 or None: no truncation), got {truncation_seq_length}"
        )
    layers = model.normalize_layers(repr_layers)
    window = sliding_window(model, truncation_seq_length) if long == "sliding" else None
    encoded = encode_records(records, None if long == "sliding" else truncation_seq_length, upper_case)
    lengths = [len(ids) for ids in encoded]
    share = process_share(lengths, process_id, num_processes)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise EsmJaxError(f"{output_dir}: a file, not a folder; give a folder for the outputs")
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "model": model_name, "config": _output_config(model), "include": sorted(include), "repr_layers": list(layers),
        "truncation_seq_length": truncation_seq_length, "format": output_format, "records": _fingerprint(records),
        "processes": num_processes, "residues_per_shard": residues_per_shard if output_format == "shards" else None,
    }  # fmt: skip
    if long == "sliding":
        manifest["long"] = long
    _check_manifest(output_dir, manifest)
    run = Run(model, encoded, records, output_dir, layers, include, toks_per_batch, pack, row_width, window)
    start = time.perf_counter()
    residues = sum(lengths[i] for i in share)
    with progress_bar(total=residues, unit="res", unit_scale=True, desc="extract", disable=not show_progress) as bar:
        if output_format == "npz":
            computed, files = run.to_files(share, bar)
            index_rows = [f"{path.name}\t{label}" for label, path in files.items()]
        else:
            computed, index_rows = run.to_shards(shard_chunks(share, lengths, residues_per_shard), process_id, bar)
            files = {}
    index = _write_index(output_dir, records, index_rows, output_format, process_id, num_processes)
    seconds = time.perf_counter() - start
    return ExtractionSummary(len(share), residues, computed, seconds, output_dir, index, files)


class Run:
    """One extraction's settings, and the two ways of writing its outputs."""

    def __init__(self, model, encoded, records, output_dir, layers, include, toks_per_batch, pack, row_width, window):
        self.model, self.encoded, self.records, self.output_dir = model, encoded, records, output_dir
        self.layers, self.include, self.window = layers, include, window
        self.names = output_names([label for label, _ in records])
        self.options = {
            "return_contacts": "contacts" in include,
            "toks_per_batch": toks_per_batch,
            "pack": packs_by_default(model) if pack is None else pack,
            "row_width": row_width,
        }

    def windows(self, indices: Sequence[int]) -> list[tuple[int, int, list[int]]]:
        """``(record index, start, token ids)`` of the windows covering each record (one, if the record fits)."""
        pieces = []
        for index in indices:
            ids = self.encoded[index]
            for start in window_starts(len(ids), self.window):
                pieces.append((index, start, ids[start : start + self.window] if self.window else ids))
        return pieces

    def outputs(self, indices: Sequence[int], bar: tqdm | None) -> Iterator[tuple[int, dict]]:
        """``(record index, arrays)`` of every record of ``indices``, in batch order (windows averaged)."""
        pieces = self.windows(indices)
        windows = [ids for _, _, ids in pieces]
        parts: dict[int, list[tuple[int, SequenceOutputs]]] = {}
        for window in iter_outputs(self.model, windows, self.layers, **self.options):
            index, start, _ = pieces[window.index]
            parts.setdefault(index, []).append((start, window))
            length = len(self.encoded[index])
            if len(parts[index]) < len(window_starts(length, self.window)):
                continue
            sequence = _averaged(sorted(parts.pop(index), key=lambda part: part[0]), index, length)
            if bar is not None:
                bar.update(length)
            yield index, _sequence_arrays(self.records[index][0], sequence, self.include)

    def to_files(self, share: Sequence[int], bar: tqdm) -> tuple[int, dict[str, Path]]:
        """One ``.npz`` per record (label -> file); records whose file exists are skipped."""
        paths = {index: self.output_dir / f"{self.names[index]}.npz" for index in share}
        todo = [index for index in share if not paths[index].is_file()]
        bar.update(sum(len(self.encoded[i]) for i in share) - sum(len(self.encoded[i]) for i in todo))
        for index, arrays in self.outputs(todo, bar):
            with atomic_output(paths[index], "wb") as handle:
                np.savez(handle, **arrays)
        return len(todo), {self.records[index][0]: paths[index] for index in share}

    def to_shards(self, chunks: list[list[int]], process_id: int, bar: tqdm) -> tuple[int, list[str]]:
        """One shard per chunk; shards already in place are skipped."""
        widths = array_widths(self.model, self.layers, self.include)
        computed, rows = 0, []
        for number, chunk in enumerate(chunks):
            name = f"p{process_id:05d}-s{number:05d}"
            path = self.output_dir / "shards" / name
            rows += [f"{name}\t{row}\t{self.records[index][0]}" for row, index in enumerate(chunk)]
            if path.is_dir():
                bar.update(sum(len(self.encoded[i]) for i in chunk))
                continue
            self.write_shard(path, chunk, widths, bar)
            computed += len(chunk)
        return computed, rows

    def write_shard(self, path: Path, chunk: Sequence[int], widths: dict[str, int], bar: tqdm | None = None) -> None:
        """Compute the records ``chunk`` and write them, in that order, as the shard ``path``."""
        labels = [self.records[index][0] for index in chunk]
        writer = ShardWriter(path, labels, [len(self.encoded[i]) for i in chunk], widths)
        try:
            row_of = {index: row for row, index in enumerate(chunk)}
            for index, arrays in self.outputs(chunk, bar):
                writer.put(row_of[index], arrays)
            writer.commit()
        except BaseException:
            writer.discard()
            raise


def _write_index(
    output_dir: Path, records, rows: list[str], output_format: str, process_id: int, num_processes: int
) -> Path | None:
    """This process's part of the index; the whole ``index.tsv`` once every part is there."""
    header = "file\tlabel\n" if output_format == "npz" else "shard\trow\tlabel\n"
    if num_processes == 1:
        lines = rows
    else:
        part = output_dir / f"index-{process_id:05d}-of-{num_processes:05d}.tsv"
        write_text_atomically(part, header + "".join(f"{row}\n" for row in rows))
        parts = [output_dir / f"index-{i:05d}-of-{num_processes:05d}.tsv" for i in range(num_processes)]
        if not all(path.is_file() for path in parts):
            return None
        lines = _merged_parts(output_dir, parts, records, output_format)
    index = write_text_atomically(output_dir / "index.tsv", header + "".join(f"{line}\n" for line in lines))
    remove_leftovers(output_dir)
    return index


def _merged_parts(output_dir: Path, parts: list[Path], records, output_format: str) -> list[str]:
    """Every process's index lines, one per record, in FASTA order."""
    by_label = {}
    for path in parts:
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            label = line.split("\t", 1)[1] if output_format == "npz" else line.split("\t", 2)[2]
            by_label[label] = line
    missing = [label for label, _ in records if label not in by_label]
    if missing:
        raise EsmJaxError(f"{output_dir}: the index parts lack records {missing[:3]}; rerun the missing processes")
    return [by_label[label] for label, _ in records]


def remove_leftovers(output_dir: Path) -> None:
    """Temporary files and shard folders of killed runs (every process has finished when this runs)."""
    for leftover in [*output_dir.glob(".*.partial"), *output_dir.glob("shards/.*.partial")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


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
