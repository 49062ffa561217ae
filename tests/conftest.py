import os
import random

# Keep TF quiet and on the CPU in tests; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

_WORDS = ("the model reads tokens and predicts the next one while a hidden state carries "
          "context from batch to batch so long documents are learned as streams of text "
          "with dropout on weights embeddings inputs and outputs").split()


def write_corpus(path, paragraphs: int, seed: int = 0) -> str:
    """A small English-like text file: `paragraphs` blank-line separated paragraphs."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for p in range(paragraphs):
            lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 15)))
                     for _ in range(rng.randint(1, 3))]
            f.write(f"paragraph {p}. " + "\n".join(lines) + "\n\n")
    return str(path)


@pytest.fixture
def corpus_file(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", paragraphs=600)
