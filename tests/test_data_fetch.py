"""``esm-jax data``: fetching datasets from a local HTTP mirror and an offline folder, every failure leaving nothing
half-written; the manifest's entries; ``esm-jax doctor``; libtpu kept quiet on CPU machines."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from data_pipeline import layout, manifest
from esm_jax.cli.main import main

CASP = ["T0866-D1.pdb", "T0866.aln", "T0866.fasta", "T0900-D1.pdb", "T0900.aln", "T0900.fasta"]


class Mirror(http.server.ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes); honours Range; ``status`` forces an error; logs request paths."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.status, self.requests = files, 200, []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if server.status != 200 or self.path not in server.files:
            self.send_error(server.status if server.status != 200 else 404)
            return
        body = server.files[self.path]
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = Mirror({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _manifest(tmp_path: Path, name: str, downloads: list[dict], files: dict[str, bytes]) -> Path:
    lines = [f'[datasets."{name}"]', 'title = "t"', 'kind = "evaluation"', 'licence = "MIT"', 'source = "s"']
    lines.append(f'[datasets."{name}".files]')
    for path, body in files.items():
        lines.append(f'"{path}" = {{ sha256 = "{hashlib.sha256(body).hexdigest()}", size = {len(body)} }}')
    for download in downloads:
        lines.append(f'[[datasets."{name}".downloads]]')
        for key, value in download.items():
            if isinstance(value, dict):
                lines.append(
                    f"members = {{ {', '.join(f'{k!r} = {v!r}'.replace(chr(39), chr(34)) for k, v in value.items())} }}"
                )
            else:
                lines.append(
                    f"{key} = "
                    + ("true" if value is True else "false" if value is False else repr(value).replace("'", '"'))
                )
    path = tmp_path / "datasets.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def casp(shared_data, tmp_path, mirror, monkeypatch):
    """A one-dataset manifest of the CASP12 example files served by ``mirror``; the data root is empty."""
    folder = shared_data / "casp12_dncon2_examples"
    bodies = {name: (folder / name).read_bytes() for name in CASP}
    port = mirror.server_address[1]
    downloads = []
    for name, body in bodies.items():
        mirror.files[f"/public/{name}"] = body
        downloads.append(
            dict(
                url=f"http://127.0.0.1:{port}/public/{name}",
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                verified=True,
                same_bytes=True,
                unpack="file",
                to=name,
            )
        )
    monkeypatch.setenv("ESM_JAX_DATA_MANIFEST", str(_manifest(tmp_path, "casp12_dncon2_examples", downloads, bodies)))
    monkeypatch.setenv("ESM_JAX_DATA", str(tmp_path / "root"))
    for variable in layout.MIRROR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return bodies


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_fetched_dataset_arrives_verifies_is_found_by_its_task_and_is_not_downloaded_again(casp, mirror, tmp_path):
    from eval.structure.contacts.sets import load_casp12

    assert main(["data", "fetch", "casp12_dncon2_examples"]) == 0
    root = tmp_path / "root"
    assert _leftovers(root) == ["casp12_dncon2_examples"]
    assert main(["data", "verify", "casp12_dncon2_examples"]) == 0
    assert [protein.name for protein in load_casp12(layout.data_root())] == ["T0866-D1", "T0900-D1"]
    served = len(mirror.requests)
    assert main(["data", "fetch", "casp12_dncon2_examples"]) == 0
    assert len(mirror.requests) == served


def test_a_missing_dataset_names_the_command_that_fetches_it(casp, tmp_path):
    with pytest.raises(layout.DatasetMissingError, match="esm-jax data fetch casp12_dncon2_examples"):
        layout.require("casp12_dncon2_examples")
    with pytest.raises(layout.DatasetMissingError, match=f"fetch casp12_dncon2_examples --data {tmp_path / 'x'}"):
        layout.require("casp12_dncon2_examples", tmp_path / "x")


def test_a_wrong_checksum_is_refused_before_unpacking_and_leaves_nothing(casp, mirror, tmp_path, capsys):
    mirror.files["/public/T0866.aln"] = b"tampered" + casp["T0866.aln"][8:]
    assert main(["data", "fetch", "casp12_dncon2_examples"]) == 2
    assert "T0866.aln has sha256" in capsys.readouterr().err
    assert _leftovers(tmp_path / "root") == []


def test_a_truncated_download_is_resumed_with_a_range_request(casp, mirror, tmp_path):
    partial = tmp_path / "root" / ".downloads" / "casp12_dncon2_examples" / "T0900.aln.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(casp["T0900.aln"][:1000])
    assert main(["data", "fetch", "casp12_dncon2_examples"]) == 0
    assert ("/public/T0900.aln", "bytes=1000-") in mirror.requests
    assert _leftovers(tmp_path / "root") == ["casp12_dncon2_examples"]


@pytest.mark.parametrize("status", [404, 500])
def test_a_server_error_is_one_line_and_leaves_nothing(casp, mirror, tmp_path, capsys, status):
    mirror.status = status
    assert main(["data", "fetch", "casp12_dncon2_examples"]) == 2
    err = capsys.readouterr().err
    assert f"HTTP {status}" in err and err.count("\n") == 1
    assert _leftovers(tmp_path / "root") == []


def test_an_unwritable_data_root_is_refused(casp, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "fetch", "casp12_dncon2_examples", "--data", str(blocker / "root")]) == 2
    assert "cannot write to the data root" in capsys.readouterr().err


def test_an_unknown_dataset_is_refused_with_the_known_ones(casp, capsys):
    assert main(["data", "fetch", "no_such_data"]) == 2
    assert "unknown dataset 'no_such_data'; known: casp12_dncon2_examples" in capsys.readouterr().err


def test_a_corrupt_archive_is_refused_and_leaves_nothing(tmp_path, mirror, monkeypatch, capsys):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner/a.txt", "hello")
    corrupt = buffer.getvalue()[:-30]
    mirror.files["/a.zip"] = corrupt
    download = dict(
        url=f"http://127.0.0.1:{mirror.server_address[1]}/a.zip",
        size=len(corrupt),
        sha256=hashlib.sha256(corrupt).hexdigest(),
        verified=True,
        same_bytes=True,
        unpack="zip",
        members={"a.txt": "a.txt"},
    )
    monkeypatch.setenv("ESM_JAX_DATA_MANIFEST", str(_manifest(tmp_path, "zipped", [download], {"a.txt": b"hello"})))
    assert main(["data", "fetch", "zipped", "--data", str(tmp_path / "root")]) == 2
    assert "corrupt zip archive" in capsys.readouterr().err
    assert _leftovers(tmp_path / "root") == []


def test_an_offline_mirror_folder_and_the_shared_data_work_without_a_network(casp, shared_data, tmp_path, mirror):
    assert main(["data", "fetch", "casp12_dncon2_examples", "--from", f"file://{shared_data}"]) == 0
    assert mirror.requests == []
    assert main(["data", "verify"]) == 0


def test_the_real_manifest_gives_every_dataset_a_source_a_licence_and_honest_checksums():
    datasets = manifest.load(manifest.MANIFEST_PATH)
    assert {"ss8_netsurfp2", "scope_astral40_2.07", "uniref50_ur90_cluster_sample", "uniref50_fasta"} <= set(datasets)
    for dataset in datasets.values():
        assert dataset.licence and dataset.source and dataset.downloads
        for download in dataset.downloads:
            assert download.url.startswith("https://")
            assert (download.verified and len(download.sha256) == 64) or (not download.verified and not download.sha256)


def test_the_real_manifest_matches_the_shared_data(shared_data):
    for dataset in manifest.load(manifest.MANIFEST_PATH).values():
        if (shared_data / dataset.name).is_dir():
            from data_pipeline.fetch_cli import check_files

            assert check_files(dataset, shared_data / dataset.name) == [], dataset.name


def test_doctor_prints_what_jax_sees_and_libtpu_stays_quiet_on_a_cpu_machine():
    env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
    result = subprocess.run(
        [sys.executable, "-m", "esm_jax.cli.main", "doctor"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    for label in (
        "platform:",
        "devices:",
        "device kind:",
        "libtpu:",
        "attention auto:",
        "cpu attention:",
        "host allocator:",
        "data root:",
        "weights cache:",
    ):
        assert label in result.stdout
    if shutil.which(os.environ.get("CXX", "c++")):
        assert "fused C++ kernel" in result.stdout
    assert "TPU_ACCELERATOR_TYPE" not in result.stderr and "TPU_WORKER_HOSTNAMES" not in result.stderr
