"""The build side: UniRef-style FASTA corpora checked record by record and written as TFRecord shards (TFDS)."""
