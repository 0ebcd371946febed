"""Apache Beam version of the UniRef builder's example generation, for corpora too large for one machine.

The transforms group records by id (and members by cluster) with Beam, then apply the same rules
(:mod:`data_pipeline.build.corpus_rules`), held-out hash and cluster sampling as the local builder, so both produce the
same examples. Bad records are counted with Beam metrics and written as JSON lines under
``BuildOptions.report_dir`` (merged into the build report afterwards); with the ``fail`` policy the first one
stops the pipeline with its description. Input files are read one per worker: split a huge FASTA into several
files to read it in parallel.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam

from data_pipeline.build import corpus_rules
from data_pipeline.build.bad_records import BadRecord, BadRecordLog, Policy
from data_pipeline.build.cluster_sampling import cluster_draws
from data_pipeline.build.corpus_files import read_corpus_fasta, read_mapping
from data_pipeline.build.heldout import split_of
from data_pipeline.layout import CLUSTER_DRAWS, MEMBERS, REPRESENTATIVES, BuildOptions, CorpusFiles
from esm_jax.fasta import FastaRecord

BAD = "bad"


def split_transform(corpus: str, files: CorpusFiles, options: BuildOptions, split: str) -> beam.PTransform:
    """The PTransform that yields ``(key, example)`` for one split of one config."""
    build = {REPRESENTATIVES: _representatives, MEMBERS: _members, CLUSTER_DRAWS: _cluster_draws}[corpus]
    return build(files, options, split)


def _read_all(paths: tuple[str, ...]) -> beam.PTransform:
    @beam.ptransform_fn
    def read(pipeline):
        return (
            pipeline
            | "ListFiles" >> beam.Create(list(enumerate(paths)))
            | "ReadFasta" >> beam.FlatMap(lambda item: read_corpus_fasta(item[1], item[0], progress=False))
            | "KeyById" >> beam.Map(lambda record: (record.record_id, record))
        )

    return read()


def _example(record: FastaRecord, cluster_id: str, options: BuildOptions) -> dict[str, str]:
    sequence = corpus_rules.stored_sequence(record, options.upper_case)
    return {"id": record.record_id, "cluster_id": cluster_id, "sequence": sequence}


def _emit_bad(bads: list[BadRecord], options: BuildOptions):
    for bad in bads:
        beam.metrics.Metrics.counter("bad_records", bad.reason.value).inc()
        if Policy(options.on_bad_record) is Policy.FAIL:
            BadRecordLog(Policy.FAIL).add(bad)
        yield beam.pvalue.TaggedOutput(BAD, json.dumps(bad.to_json()))


def _judge_representative(item, options: BuildOptions):
    record_id, records = item
    kept, bads = corpus_rules.judge_representative(list(records), options.upper_case)
    yield from _emit_bad(bads, options)
    if kept is not None:
        yield kept.record_id, kept


def _judge_member(item, options: BuildOptions):
    member_id, grouped = item
    kept, bads = corpus_rules.judge_member(
        member_id, list(grouped["records"]), list(grouped["rows"]), options.upper_case
    )
    yield from _emit_bad(bads, options)
    if kept is not None:
        yield kept


def _write_bad(bad: beam.PCollection, options: BuildOptions, split: str) -> None:
    if options.report_dir:
        prefix = os.path.join(options.report_dir, f"bad_records-{split}")
        _ = bad | "WriteBadRecords" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")


def _in_split(options: BuildOptions, split: str):
    return lambda cluster_id: split_of(cluster_id, options.heldout_fraction, options.heldout_salt) == split


@beam.ptransform_fn
def _representatives(pipeline, files: CorpusFiles, options: BuildOptions, split: str):
    judged = (
        pipeline
        | "Read" >> _read_all(files.uniref50_fastas)
        | "GroupById" >> beam.GroupByKey()
        | "Judge" >> beam.FlatMap(_judge_representative, options).with_outputs(BAD, main="kept")
    )
    _write_bad(judged[BAD], options, split)
    in_split = _in_split(options, split)
    return (
        judged.kept
        | "InSplit" >> beam.Filter(lambda item: in_split(item[0]))
        | "ToExample" >> beam.Map(lambda item: (item[0], _example(item[1], item[0], options)))
    )


def _valid_members(pipeline, files: CorpusFiles, options: BuildOptions, split: str):
    records = pipeline | "Read" >> _read_all(files.member_fastas)
    rows = (
        pipeline
        | "ListMapping" >> beam.Create([files.mapping_tsv])
        | "ReadMapping" >> beam.FlatMap(read_mapping)
        | "KeyByMember" >> beam.Map(lambda row: (row.member_id, row))
    )
    judged = (
        {"records": records, "rows": rows}
        | "GroupByMember" >> beam.CoGroupByKey()
        | "Judge" >> beam.FlatMap(_judge_member, options).with_outputs(BAD, main="kept")
    )
    _write_bad(judged[BAD], options, split)
    in_split = _in_split(options, split)
    return judged.kept | "InSplit" >> beam.Filter(lambda item: in_split(item[0]))


@beam.ptransform_fn
def _members(pipeline, files: CorpusFiles, options: BuildOptions, split: str):
    return _valid_members(pipeline, files, options, split) | "ToExample" >> beam.Map(
        lambda item: (item[1].record_id, _example(item[1], item[0], options))
    )


def _draw_examples(item, options: BuildOptions):
    cluster_id, records = item
    by_id = {record.record_id: record for record in records}
    picks = cluster_draws(cluster_id, sorted(by_id), options.draws_per_cluster, options.sampling_seed)
    for draw, member_id in enumerate(picks):
        yield f"{cluster_id}#{draw}", _example(by_id[member_id], cluster_id, options)


@beam.ptransform_fn
def _cluster_draws(pipeline, files: CorpusFiles, options: BuildOptions, split: str):
    return (
        _valid_members(pipeline, files, options, split)
        | "GroupByCluster" >> beam.GroupByKey()
        | "Draw" >> beam.FlatMap(_draw_examples, options)
    )
