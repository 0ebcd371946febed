"""The input side: a built dataset's TFRecord shards read as masked, bucketed or packed MLM batches per process."""
