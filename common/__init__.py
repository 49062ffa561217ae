"""What data_pipeline and trainer both use: user errors and how a tool reports them, atomic file
writes, SentencePiece's ids and models, and a quiet TensorFlow start."""
