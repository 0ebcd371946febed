"""Data pipeline: FASTA corpora to TFRecord shards (TFDS builders) and tf.data MLM batches."""
