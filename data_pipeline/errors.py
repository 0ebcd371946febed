"""Errors raised by the data pipeline; each names the file, the record and what to do next."""

from esm_jax.errors import EsmJaxError


class DataPipelineError(EsmJaxError):
    """Base class of every error the data pipeline raises on purpose."""


class BadRecordError(DataPipelineError, ValueError):
    """An input record breaks the corpus rules and the bad-record policy is ``fail``."""


class CorruptShardError(DataPipelineError, OSError):
    """A TFRecord shard is truncated, corrupted or holds a different number of records than its metadata says."""


class MalformedFileError(DataPipelineError, ValueError):
    """A downstream file (CSV, FASTA, structure, alignment) does not follow its format."""

    def __init__(self, path: object, where: str, problem: str, fix: str = ""):
        self.path = str(path)
        self.where = where
        self.problem = problem
        message = f"{self.path}: {where}: {problem}"
        super().__init__(f"{message}. {fix}" if fix else message)


class IteratorStateError(DataPipelineError, ValueError):
    """A saved iterator state does not fit the dataset or options it is restored into."""
