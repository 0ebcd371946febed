"""Data pipeline: FASTA corpora to TFRecord shards (``build``) to MLM batches (``input``); names in ``layout``."""
