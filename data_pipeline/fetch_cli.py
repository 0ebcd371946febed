"""``esm-jax data list | fetch NAME... | verify [NAME...] | path NAME``: get the datasets of the manifest.

``fetch`` downloads each public file of a dataset (resuming a partial file with an HTTP Range request), checks its
size and SHA-256 before anything is unpacked, unpacks into a staging folder, checks the files the tasks read, and
only then renames the folder into the data root (``--data``, ``$ESM_JAX_DATA``, default ``~/.cache/esm_jax/data``).
Sources, first found wins: ``--from DIR`` (or ``file://``), ``--mirror URL``, ``$ESM_JAX_DATA_MIRROR``, an offline
mirror holding the dataset folder (``$ESM_JAX_SHARED_DATA``), then the public URL. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from data_pipeline import layout, manifest
from data_pipeline.errors import DataPipelineError
from esm_jax.files import write_json_atomically

RECORD_NAME = ".esm_jax_fetch.json"
DOWNLOADS = ".downloads"
_CHUNK = 1 << 16


class FetchError(DataPipelineError):
    """A dataset could not be fetched, verified or unpacked; nothing half-written is left in the data root."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``esm-jax data``."""
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esm-jax data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="every dataset, its source and licence, and whether it is here")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table (the README's Data section)")
    fetch = commands.add_parser("fetch", help="download, check and unpack datasets into the data root")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--from", dest="source", help="offline mirror folder (or file:// URL) instead of the internet")
    fetch.add_argument("--mirror", help="another host serving NAME/FILE for each public file ($ESM_JAX_DATA_MIRROR)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the dataset is already here")
    fetch.add_argument(
        "--allow-unverified", action="store_true", help="accept files with no known checksum and nothing to check"
    )
    verify = commands.add_parser("verify", help="check fetched datasets against the manifest's checksums")
    verify.add_argument("names", nargs="*", metavar="NAME")
    path = commands.add_parser("path", help="print the folder a dataset is read from")
    path.add_argument("name", metavar="NAME")
    for sub, run in ((listing, _list), (fetch, _fetch), (verify, _verify), (path, _path)):
        sub.add_argument("--data", type=Path, default=None, help="data root (default: $ESM_JAX_DATA or the cache)")
        sub.set_defaults(run=run)
    return parser


def _list(args: argparse.Namespace) -> int:
    datasets = manifest.load()
    if args.markdown:
        print(markdown_table(datasets.values()))
        return 0
    for dataset in datasets.values():
        here = "here" if layout.locate(dataset.name, args.data).is_dir() else "not fetched"
        print(f"{dataset.name:32s} {dataset.kind:11s} {here:12s} {dataset.title}")
        print(f"{'':32s} licence: {dataset.licence}")
    return 0


def markdown_table(datasets) -> str:
    """The datasets as a Markdown table: name, what, source, licence."""
    rows = ["| dataset | what | source | licence |", "|---|---|---|---|"]
    rows += [f"| `{d.name}` | {d.title} | {d.source} | {d.licence} |" for d in datasets]
    return "\n".join(rows)


def _path(args: argparse.Namespace) -> int:
    manifest.get(args.name)
    print(layout.require(args.name, args.data))
    return 0


def _verify(args: argparse.Namespace) -> int:
    datasets = manifest.load()
    names = args.names or [name for name in datasets if layout.locate(name, args.data).is_dir()]
    failed = []
    for name in names:
        dataset = manifest.get(name, datasets)
        folder = layout.require(name, args.data)
        bad = check_files(dataset, folder)
        print(f"{name}: {'ok' if not bad else 'FAILED'} ({len(dataset.files)} files checked) {folder}")
        for line in bad:
            print(f"  {line}")
        failed += [name] if bad else []
    if failed:
        commands = "; ".join(f"esm-jax data fetch {name} --force" for name in failed)
        raise FetchError(f"{', '.join(failed)}: files differ from the manifest; fetch again with `{commands}`")
    return 0


def check_files(dataset: manifest.Dataset, folder: Path) -> list[str]:
    """One line per file of ``folder`` that is missing or whose content does not match the manifest."""
    bad = []
    for relative, expected in dataset.files.items():
        path = folder / relative
        if not path.is_file():
            bad.append(f"{relative}: missing")
            continue
        try:
            found, size = manifest.content_sha256(path)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            bad.append(f"{relative}: unreadable ({error})")
            continue
        if (found, size) != (expected.sha256, expected.size):
            bad.append(f"{relative}: sha256 {found} ({size} bytes), expected {expected.sha256} ({expected.size} bytes)")
    return bad


def _fetch(args: argparse.Namespace) -> int:
    datasets = manifest.load()
    chosen = [manifest.get(name, datasets) for name in args.names]
    root = layout.data_root(args.data)
    for dataset in chosen:
        target = root / dataset.name
        if target.is_dir() and not args.force and not check_files(dataset, target):
            print(f"{dataset.name}: already in {target}")
            continue
        fetch_dataset(dataset, root, source=args.source, mirror=args.mirror, allow_unverified=args.allow_unverified)
        print(f"{dataset.name}: fetched and verified into {target}")
    return 0


def fetch_dataset(
    dataset: manifest.Dataset,
    root: Path,
    *,
    source: str | None = None,
    mirror: str | None = None,
    allow_unverified: bool = False,
) -> Path:
    """Fetch ``dataset`` into ``root/NAME``: all of it, checked, or nothing (see the module docstring)."""
    source = source.removeprefix("file://") if source else None
    mirror = mirror or os.environ.get("ESM_JAX_DATA_MIRROR") or None
    if mirror and (mirror.startswith("file://") or "://" not in mirror):
        source, mirror = source or mirror.removeprefix("file://"), None
    _check_fetchable(dataset, allow_unverified)
    staging = _writable_staging(root, dataset.name)
    try:
        prepared = _prepared_folder(dataset, source, mirror)
        if prepared is not None:
            _copy_prepared(dataset, prepared, staging)
        else:
            downloads = root / DOWNLOADS / dataset.name
            for download in dataset.downloads:
                local = _obtain(download, dataset.name, downloads, source, mirror)
                _unpack(download, local, staging)
            _derive(dataset, staging)
        bad = check_files(dataset, staging)
        if bad:
            raise FetchError(f"{dataset.name}: unpacked files do not match the manifest: {'; '.join(bad)}")
        record = {"dataset": dataset.name, "source": str(prepared) if prepared else (source or mirror or "public")}
        write_json_atomically(staging / RECORD_NAME, record)
        _move_into_place(staging, root / dataset.name)
    except OSError as error:
        raise FetchError(f"{dataset.name}: {error}; check the folder {root} (space, permissions) and retry") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _tidy_downloads(root / DOWNLOADS, dataset.name, finished=(root / dataset.name / RECORD_NAME).is_file())
    return root / dataset.name


def _tidy_downloads(downloads: Path, name: str, finished: bool) -> None:
    """Drop the downloads once unpacked; after a failure keep only partial files, for the next run to resume."""
    if finished:
        shutil.rmtree(downloads / name, ignore_errors=True)
    elif (downloads / name).is_dir():
        for path in (downloads / name).iterdir():
            if not path.name.endswith(".partial"):
                path.unlink()
    for folder in (downloads / name, downloads):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _check_fetchable(dataset: manifest.Dataset, allow_unverified: bool) -> None:
    if dataset.files or allow_unverified or all(d.sha256 for d in dataset.downloads):
        return
    raise FetchError(
        f"{dataset.name}: its public files have no known checksum and nothing can be checked after unpacking; "
        f"to fetch it anyway: `esm-jax data fetch {dataset.name} --allow-unverified`"
    )


def _writable_staging(root: Path, name: str) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".staging-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        return staging
    except OSError as error:
        raise FetchError(
            f"cannot write to the data root {root} ({error.strerror}); pass --data DIR or set $ESM_JAX_DATA to a "
            "writable folder"
        ) from None


def _prepared_folder(dataset: manifest.Dataset, source: str | None, mirror: str | None) -> Path | None:
    """A local folder that already holds the dataset's files (a prepared mirror), if any is in reach."""
    if mirror and not source:
        return None
    candidates = [Path(source)] if source else layout.offline_mirrors()
    for candidate in candidates:
        folder = candidate / dataset.name
        if dataset.files and all((folder / relative).is_file() for relative in dataset.files):
            return folder
    return None


def _copy_prepared(dataset: manifest.Dataset, folder: Path, staging: Path) -> None:
    for relative in dataset.files:
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / relative, destination)


def _obtain(download: manifest.Download, name: str, folder: Path, source: str | None, mirror: str | None) -> Path:
    """The download as a local file whose size and checksum have been checked."""
    if source:
        local = Path(source) / name / download.filename
        if not local.is_file():
            raise FetchError(f"{name}: the offline mirror {source} has no {name}/{download.filename}")
        _check_download(download, local, name)
        return local
    url = f"{mirror.rstrip('/')}/{name}/{download.filename}" if mirror else download.url
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / download.filename
    if not final.is_file():
        partial = final.with_name(final.name + ".partial")
        _download(url, partial, download.size)
        try:
            _check_download(download, partial, name)
        except FetchError:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(final)
    return final


def _check_download(download: manifest.Download, path: Path, name: str) -> None:
    size = path.stat().st_size
    if download.size and size != download.size:
        raise FetchError(f"{name}: {download.filename} has {size} bytes, expected {download.size}; fetch it again")
    if download.sha256:
        found = manifest.file_sha256(path)
        if found != download.sha256:
            raise FetchError(
                f"{name}: {download.filename} has sha256 {found}, expected {download.sha256}; the file was changed "
                "or damaged in transit: fetch it again or from another mirror"
            )


def _download(url: str, partial: Path, expected_size: int) -> None:
    """``url`` into ``partial``, resuming what is already there with a Range request."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "esm-jax"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = have and response.status == 206
            total = expected_size or (int(response.headers.get("Content-Length", 0)) + (have if resumed else 0))
            with open(partial, "ab" if resumed else "wb") as out:
                progress = Progress(partial.name.removesuffix(".partial"), total, have if resumed else 0)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    progress.update(len(chunk))
                progress.close()
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the partial file is already complete
            return
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}; check the URL or mirror and retry") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"{url}: {reason}; rerun the same command to resume, or use --from/--mirror") from None


class Progress:
    """A progress bar on a terminal; on anything else, one line at most every 10 seconds."""

    def __init__(self, label: str, total: int, done: int = 0):
        self.label, self.total, self.done = label, total, done
        self.tty = sys.stderr.isatty()
        self.last = time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.tty or now - self.last >= 10:
            self.last = now
            self._show(end="\r" if self.tty else "\n")

    def close(self) -> None:
        self._show(end="\n")

    def _show(self, end: str) -> None:
        share = f" {100 * self.done / self.total:5.1f}%" if self.total else ""
        print(f"{self.label}: {self.done / 1e6:.1f} MB{share}", end=end, file=sys.stderr, flush=True)


def _unpack(download: manifest.Download, local: Path, staging: Path) -> None:
    if download.unpack == "file":
        with open(local, "rb") as stream:
            _place(stream, local.name, staging / download.to)
        return
    try:
        if download.unpack == "zip":
            with zipfile.ZipFile(local) as archive:
                names = archive.namelist()
                for destination, member in download.members.items():
                    found = _member(names, member, local)
                    with archive.open(found) as stream:
                        _place(stream, found, staging / destination)
        else:
            with tarfile.open(local) as archive:
                names = [m.name for m in archive.getmembers() if m.isfile()]
                for destination, member in download.members.items():
                    found = _member(names, member, local)
                    with archive.extractfile(found) as stream:
                        _place(stream, found, staging / destination)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile) as error:
        raise FetchError(f"{local}: corrupt {download.unpack} archive ({error}); fetch it again") from None


def _member(names: list[str], member: str, archive: Path) -> str:
    """The archive member ``member`` names, at any folder depth."""
    matches = [name for name in names if name == member or name.endswith("/" + member)]
    if len(matches) != 1:
        raise FetchError(f"{archive}: expected one member {member}, found {len(matches)}; the archive is not this one")
    return matches[0]


def _place(stream: BinaryIO, source_name: str, destination: Path) -> None:
    """Copy ``stream`` to ``destination``, gzip-compressing or -decompressing when only one name ends in .gz."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source_name.endswith(".gz") and not destination.name.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=stream)
    if destination.name.endswith(".gz") and not source_name.endswith(".gz"):
        with gzip.GzipFile(destination, "wb", mtime=0) as out:
            shutil.copyfileobj(stream, out, _CHUNK)
    else:
        with open(destination, "wb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)


def _derive(dataset: manifest.Dataset, staging: Path) -> None:
    for relative, recipe in dataset.derived.items():
        if recipe not in DERIVATIONS:
            raise FetchError(f"{dataset.name}: unknown recipe {recipe!r} for {relative}; update esm-jax")
        DERIVATIONS[recipe](staging, staging / relative)


def proteingym_wild_types(staging: Path, destination: Path) -> None:
    """The full-length wild types of the three DMS assays, from the ProteinGym reference table's ``target_seq``."""
    table = staging / "ProteinGym_DMS_substitutions_reference.csv"
    with open(table, encoding="utf-8", newline="") as handle:
        rows = {row["DMS_id"]: row for row in csv.DictReader(handle)}
    lines = []
    for assay in ("BLAT_ECOLX_Stiffler_2015", "DLG4_RAT_McLaughlin_2012", "PABP_YEAST_Melamed_2013"):
        protein, sequence = rows[assay]["UniProt_ID"], rows[assay]["target_seq"]
        lines.append(
            f">{protein} UniProt_ID={protein} ProteinGym_DMS_id={assay} length={len(sequence)} "
            "numbering=1-based_matches_mutant_strings"
        )
        lines += [sequence[start : start + 60] for start in range(0, len(sequence), 60)]
    destination.write_text("\n".join(lines) + "\n", encoding="utf-8")


DERIVATIONS = {"proteingym-wild-types": proteingym_wild_types}


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the checked staging folder to ``target``, replacing an old copy only once the new one is complete."""
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
