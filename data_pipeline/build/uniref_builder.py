"""TFDS builder for the paper's pretraining sets: UR50/S, UR50/D and UR100 from UniRef-style FASTA files.

Configs (Rives et al., PNAS 2021, "pre-training datasets"):

* ``ur50_s`` -- UniRef50 representative sequences (one per cluster; the cluster id is the record id).
* ``ur50_d`` -- members sampled evenly across UniRef50 clusters: a cluster uniformly, then a member uniformly
  (see :mod:`data_pipeline.build.cluster_sampling`); ``draws_per_cluster`` draws per cluster on average.
* ``ur100`` -- every member sequence (UniRef100, or UniRef90 members where that is what the input holds).

Splits: ``train`` and ``validation``; a fixed fraction of UniRef50 clusters is held out by a stable hash
(:mod:`data_pipeline.build.heldout`), and every member of a held-out cluster leaves every training split.
Each example holds ``id``, ``cluster_id`` and ``sequence`` (exactly as read). Bad records follow
:mod:`data_pipeline.build.bad_records`. With ``use_beam=True`` the same examples are produced by an Apache Beam
pipeline (:mod:`data_pipeline.build.uniref_beam`) so generation can run on any Beam runner. Names, version, corpus
kinds and the input and option types are those of :mod:`data_pipeline.layout`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator

import tensorflow_datasets as tfds

from data_pipeline.build import corpus_rules
from data_pipeline.build.bad_records import BadRecordLog
from data_pipeline.build.cluster_sampling import cluster_draws
from data_pipeline.build.corpus_files import MappingRow, read_corpus_fasta, read_mapping
from data_pipeline.build.heldout import split_of
from data_pipeline.layout import (
    CLUSTER_DRAWS,
    CONFIG_CORPORA,
    MEMBERS,
    REPRESENTATIVES,
    TRAIN,
    VALIDATION,
    BuildOptions,
    CorpusFiles,
)
from data_pipeline.layout import VERSION as DATASET_VERSION
from data_pipeline.tf_runtime import tensorflow_without_accelerators
from esm_jax.fasta import FastaRecord

_DESCRIPTIONS = {
    "ur50_s": "UR50/S: UniRef50 representatives.",
    "ur50_d": "UR50/D: members sampled evenly across UniRef50 clusters (cluster first, then member).",
    "ur100": "UR100: every member sequence of every cluster.",
}


@dataclasses.dataclass(eq=False)
class UnirefConfig(tfds.core.BuilderConfig):
    corpus: str = REPRESENTATIVES


class UnirefMlm(tfds.core.GeneratorBasedBuilder):
    """UniRef pretraining corpora as TFRecord shards of ``{id, cluster_id, sequence}``."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {"1.0.0": "UR50/S, UR50/D and UR100 with a stable-hash held-out split of UniRef50 clusters."}
    BUILDER_CONFIGS = [
        UnirefConfig(name=name, corpus=corpus, description=_DESCRIPTIONS[name])
        for name, corpus in CONFIG_CORPORA.items()
    ]

    def __init__(self, *, files: CorpusFiles | None = None, options: BuildOptions | None = None, **kwargs) -> None:
        tensorflow_without_accelerators()
        self.files = files or CorpusFiles()
        self.options = options or BuildOptions()
        self.bad_records = BadRecordLog(self.options.on_bad_record)
        super().__init__(**kwargs)
        self._original_state.update(files=self.files, options=self.options)

    def _log_download_bytes(self) -> None:
        """Say nothing: TFDS's "Downloading and preparing dataset Unknown size" is wrong here, nothing is downloaded."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(doc="record id: first word of the FASTA header"),
                    "cluster_id": tfds.features.Text(doc="UniRef50 cluster of the record"),
                    "sequence": tfds.features.Text(doc="amino-acid sequence exactly as read"),
                }
            ),
            homepage="https://www.uniprot.org/help/uniref",
            citation="Rives et al., Biological structure and function emerge from scaling unsupervised learning "
            "to 250 million protein sequences, PNAS 118 (15) e2016239118, 2021.",
            metadata=tfds.core.MetadataDict(
                options={k: v for k, v in dataclasses.asdict(self.options).items() if k != "report_dir"},
                inputs=dataclasses.asdict(self.files),
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, object]:
        del dl_manager  # inputs are local files named in CorpusFiles; nothing is downloaded
        self._check_inputs()
        splits = [TRAIN, VALIDATION] if self.options.heldout_fraction > 0 else [TRAIN]
        if self.options.use_beam:
            from data_pipeline.build.uniref_beam import split_transform

            return {s: split_transform(self.builder_config.corpus, self.files, self.options, s) for s in splits}
        return {s: self._generate_examples(s) for s in splits}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
        """Local (single-process) generation of one split, streaming the input files."""
        generate = {
            REPRESENTATIVES: self._representatives,
            CLUSTER_DRAWS: self._cluster_draws,
            MEMBERS: self._members,
        }[self.builder_config.corpus]
        return generate(split)

    def _check_inputs(self) -> None:
        corpus = self.builder_config.corpus
        if corpus == REPRESENTATIVES and not self.files.uniref50_fastas:
            raise ValueError(f"config {self.builder_config.name} needs the UniRef50 FASTA (--uniref50)")
        if corpus != REPRESENTATIVES and not (self.files.member_fastas and self.files.mapping_tsv):
            raise ValueError(
                f"config {self.builder_config.name} needs member FASTA files (--members) and the cluster "
                "mapping TSV (--mapping)"
            )

    def _split(self, cluster_id: str) -> str:
        return split_of(cluster_id, self.options.heldout_fraction, self.options.heldout_salt)

    def _example(self, record: FastaRecord, cluster_id: str) -> dict[str, str]:
        sequence = corpus_rules.stored_sequence(record, self.options.upper_case)
        return {"id": record.record_id, "cluster_id": cluster_id, "sequence": sequence}

    def _representatives(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
        for record in self._valid_records(self.files.uniref50_fastas):
            if self._split(record.record_id) == split:
                yield record.record_id, self._example(record, record.record_id)

    def _members(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
        for cluster_id, record in self._valid_members():
            if self._split(cluster_id) == split:
                yield record.record_id, self._example(record, cluster_id)

    def _cluster_draws(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
        members: dict[str, list[str]] = defaultdict(list)
        for cluster_id, record in self._valid_members():
            if self._split(cluster_id) == split:
                members[cluster_id].append(record.record_id)
        drawn: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for cluster_id, ids in members.items():
            picks = cluster_draws(cluster_id, sorted(ids), self.options.draws_per_cluster, self.options.sampling_seed)
            for draw, member_id in enumerate(picks):
                drawn[member_id].append((cluster_id, draw))
        for cluster_id, record in self._valid_members(report=False):
            for _, draw in drawn.get(record.record_id, ()):
                yield f"{cluster_id}#{draw}", self._example(record, cluster_id)

    def _valid_records(
        self, paths: tuple[str, ...], report: bool = True, first_seen: dict[str, tuple[str, int]] | None = None
    ) -> Iterator[FastaRecord]:
        """Records that pass the rules, first occurrence of each id only; the others go to the bad-record log.

        ``first_seen`` collects where each id first occurred (ids and positions only, never sequences).
        """
        first_seen = {} if first_seen is None else first_seen
        for index, path in enumerate(paths):
            for record in read_corpus_fasta(path, index):
                where = (record.path, record.number)
                first = first_seen.setdefault(record.record_id, where)
                if first != where:
                    self._report(corpus_rules.duplicate(record, first), report)
                elif problem := corpus_rules.sequence_problem(record, self.options.upper_case):
                    self._report(problem, report)
                else:
                    yield record

    def _valid_members(self, report: bool = True) -> Iterator[tuple[str, FastaRecord]]:
        """``(cluster_id, record)`` for members that pass the rules, with mapping problems reported."""
        cluster_of = self._load_mapping(report)
        first_seen: dict[str, tuple[str, int]] = {}
        for record in self._valid_records(self.files.member_fastas, report, first_seen):
            row = cluster_of.get(record.record_id)
            if row is None:
                self._report(corpus_rules.member_without_cluster(record), report)
            else:
                yield row.cluster_id, record
        for member_id, row in cluster_of.items():
            if member_id not in first_seen:
                self._report(corpus_rules.mapping_without_sequence(row), report)

    def _load_mapping(self, report: bool) -> dict[str, MappingRow]:
        cluster_of: dict[str, MappingRow] = {}
        for row in read_mapping(self.files.mapping_tsv):
            first = cluster_of.setdefault(row.member_id, row)
            if first is not row:
                self._report(corpus_rules.duplicate_mapping(row, first), report)
        return cluster_of

    def _report(self, bad, report: bool) -> None:
        if report:
            self.bad_records.add(bad)
