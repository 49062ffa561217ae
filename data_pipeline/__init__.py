"""Text to training data: sources (files, the embedded pydocs corpus, TFDS), SentencePiece,
sharded TFRecords described by a manifest, the LM's batches (lm_dataset), and the labelled
files fine-tuning reads."""
