"""Build a UniRef pretraining dataset (TFRecord shards) from FASTA files in one call, safely.

The dataset is generated into a temporary folder beside the destination and moved into place only when complete,
with its bad-record report, so an interrupted or failed build never leaves a half-written dataset and never
touches an existing one unless ``overwrite`` is asked for (and then only after the new one is complete).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from data_pipeline.build.bad_records import BadRecord, BadRecordLog
from data_pipeline.errors import DataPipelineError
from data_pipeline.layout import CONFIG_NAMES, REPORT_NAME, BuildOptions, CorpusFiles, dataset_folder
from data_pipeline.tf_runtime import tensorflow_without_accelerators
from esm_jax.files import write_json_atomically

LOGGER = logging.getLogger("data_pipeline")


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """Where the dataset went and what it holds."""

    data_dir: Path
    config: str
    examples: dict[str, int]
    shards: dict[str, int]
    bad_records: dict[str, object]
    seconds: float


def choose_num_shards(num_shards: int | None, host_count: int | None) -> int | None:
    """Shards per split: as given, a multiple of ``host_count`` when asked, or None for TFDS's size-based choice."""
    if host_count is None:
        return num_shards
    if host_count < 1:
        raise ValueError(f"host count must be positive, got {host_count}")
    if num_shards is None:
        return host_count
    if num_shards % host_count:
        raise ValueError(
            f"{num_shards} shards cannot be split evenly over {host_count} hosts; "
            f"use a multiple of {host_count} (for example {host_count * max(1, num_shards // host_count)})"
        )
    return num_shards


def build_dataset(
    config: str,
    files: CorpusFiles,
    out_dir: str | Path,
    options: BuildOptions | None = None,
    *,
    num_shards: int | None = None,
    host_count: int | None = None,
    beam_runner: object | None = None,
    beam_options: object | None = None,
    overwrite: bool = False,
) -> BuildResult:
    """Generate ``config`` (``ur50_s``, ``ur50_d`` or ``ur100``) under ``out_dir`` and return a summary.

    ``files`` is a :class:`CorpusFiles`, ``options`` a :class:`BuildOptions`. With ``beam_runner`` (for example
    ``apache_beam.runners.DirectRunner()``) generation runs as an Apache Beam pipeline; ``beam_options`` defaults to
    empty ``PipelineOptions`` (Beam would otherwise parse this program's command line).
    """
    tensorflow_without_accelerators()
    import tensorflow_datasets as tfds

    from data_pipeline.build.uniref_builder import UnirefMlm

    if config not in CONFIG_NAMES:
        raise ValueError(f"unknown config {config!r}; choose one of {', '.join(CONFIG_NAMES)}")
    options = options or BuildOptions()
    out_dir = Path(out_dir)
    final_dir = dataset_folder(out_dir, config)
    if final_dir.exists() and not overwrite:
        raise DataPipelineError(
            f"{final_dir} already exists; choose another output folder or pass --overwrite to replace it "
            "(the old dataset is kept until the new one is complete)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as staging:
        staging = Path(staging)
        report_dir = staging / "bad_record_parts"
        report_dir.mkdir()
        use_beam = beam_runner is not None or beam_options is not None
        options = dataclasses.replace(options, use_beam=use_beam, report_dir=str(report_dir))
        builder = UnirefMlm(config=config, data_dir=staging / "data", files=files, options=options)
        if use_beam and beam_options is None:
            from apache_beam.options.pipeline_options import PipelineOptions

            beam_options = PipelineOptions(flags=[])
        download_config = tfds.download.DownloadConfig(
            num_shards=choose_num_shards(num_shards, host_count), beam_runner=beam_runner, beam_options=beam_options
        )
        try:
            builder.download_and_prepare(download_config=download_config)
        except AssertionError as error:
            if "No examples were yielded" not in str(error):
                raise
            raise DataPipelineError(
                f"a split of {config} has no valid records ({builder.bad_records.summary()}); check the input files, "
                "or lower --heldout-fraction for a very small corpus"
            ) from error
        log = _merge_bad_records(builder.bad_records, report_dir)
        built_dir = Path(builder.data_dir)
        write_json_atomically(built_dir / REPORT_NAME, log.to_json())
        _move_into_place(built_dir, final_dir)
    result = _summarise(final_dir, config, log, time.monotonic() - started)
    LOGGER.info(
        "built %s in %.1f s: %s; %s; report %s",
        config,
        result.seconds,
        ", ".join(f"{split} {n:,} examples" for split, n in result.examples.items()),
        log.summary(),
        final_dir / REPORT_NAME,
    )
    return result


def _merge_bad_records(log: BadRecordLog, report_dir: Path) -> BadRecordLog:
    """Add the bad records Beam workers wrote as JSON lines to the local log (deduplicated)."""
    for part in sorted(glob.glob(str(report_dir / "bad_records-*.jsonl"))):
        for line in Path(part).read_text(encoding="utf-8").splitlines():
            if line.strip():
                log.add(BadRecord.from_json(json.loads(line)))
    return log


def _move_into_place(built_dir: Path, final_dir: Path) -> None:
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        retired = final_dir.with_name(f".{final_dir.name}.replaced-{time.time_ns()}")
        final_dir.rename(retired)
        built_dir.rename(final_dir)
        shutil.rmtree(retired)
    else:
        built_dir.rename(final_dir)


def _summarise(data_dir: Path, config: str, log: BadRecordLog, seconds: float) -> BuildResult:
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(str(data_dir)).info
    examples = {name: split.num_examples for name, split in info.splits.items()}
    shards = {name: split.num_shards for name, split in info.splits.items()}
    return BuildResult(data_dir, config, examples, shards, log.to_json(), seconds)
