import atexit
import functools
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np

# Keep TF quiet and on the CPU in tests; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# trainer.main keeps XLA executables in $XDG_CACHE_HOME/ulmfit_tf2/xla: the tests' runs share
# one cache of their own (not the user's), so a kernel shape is compiled once per session.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ulmfit_tests_cache_")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_pipeline.manifest import Manifest, SplitInfo  # noqa: E402
from data_pipeline.shards import ShardWriter, shard_name  # noqa: E402

# Replicas are simulated as logical CPU devices; they must exist before TensorFlow starts.
LOGICAL_CPUS = 4
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)

_WORDS = ("the model reads tokens and predicts the next one while a hidden state carries "
          "context from batch to batch so long documents are learned as streams of text "
          "with dropout on weights embeddings inputs and outputs").split()


def read_all(file):
    """All a file opened "w+" holds so far."""
    file.flush()
    file.seek(0)
    return file.read()


def sigkill_when(command, ready, timeout=300, sig=signal.SIGKILL, **popen_kwargs):
    """Runs `command` and sends it `sig` (SIGKILL) the moment `ready(its stderr so far)` is
    true; fails if it ends first. Returns its exit status and what it wrote to stderr."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                **popen_kwargs)
        try:
            deadline = time.time() + timeout
            while not ready(read_all(stderr)):
                assert proc.poll() is None, f"{command} ended before it could be signalled"
                assert time.time() < deadline, f"{command}: not ready after {timeout}s"
                time.sleep(0.005)
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        finally:
            proc.kill()
        return proc.returncode, read_all(stderr)


def write_corpus(path, paragraphs: int, seed: int = 0) -> str:
    """A small English-like text file: `paragraphs` blank-line separated paragraphs."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for p in range(paragraphs):
            lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 15)))
                     for _ in range(rng.randint(1, 3))]
            f.write(f"paragraph {p}. " + "\n".join(lines) + "\n\n")
    return str(path)


@pytest.fixture(scope="session")
def unique_manifest(tmp_path_factory):
    """A split whose every token id is unique, so positions can be traced exactly.

    Documents are runs of consecutive ids (a document = [k, k+1, ..., k+n-1]).
    """
    directory = str(tmp_path_factory.mktemp("unique"))
    rng = np.random.default_rng(0)
    next_id, shards = 10, []
    for k in range(5):
        docs = []
        for _ in range(rng.integers(20, 40)):
            length = int(rng.integers(3, 60))
            docs.append(list(range(next_id, next_id + length)))
            next_id += length
        writer = ShardWriter(f"{directory}/{shard_name('train', k, 5)}")
        writer.write(docs)
        shards.append(writer.close())
    split = SplitInfo(sum(s.records for s in shards), sum(s.tokens for s in shards), tuple(shards))
    return Manifest(directory=directory, source="synthetic", spm_model="", spm_sha256="",
                    vocab_size=next_id, special_ids={}, splits={"train": split},
                    build_settings={})


@pytest.fixture
def corpus_file(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", paragraphs=600)


def train_tiny_lm(data_dir, model_dir, corpus, vocab_size=90, steps=3, **settings):
    """Builds `corpus` into `data_dir` and trains a tiny AWD-LSTM LM (12/20x2) for `steps`
    steps; `settings`: more of train_lm's arguments."""
    from data_pipeline.build_settings import BuildSettings
    from trainer.lm.training import train_lm
    from trainer.models.language_model import AWDLSTMLanguageModel
    return train_lm(model_dir, data_dir, build_input=corpus, batch_size=4, bptt=10,
                    max_steps=steps, eval_batch_size=4, steps_per_loop=1,
                    model=functools.partial(AWDLSTMLanguageModel, emb_size=12, hidden_size=20,
                                            num_layers=2),
                    build_settings=functools.partial(BuildSettings, vocab_size=vocab_size,
                                                     valid_fraction=0.2), **settings)


@pytest.fixture(scope="session")
def pretrained_lm(tmp_path_factory):
    """(model_dir, data_dir) of a tiny LM trained for a few steps by train_lm."""
    root = tmp_path_factory.mktemp("pretrained")
    corpus = write_corpus(root / "corpus.txt", paragraphs=300)
    train_tiny_lm(str(root / "data"), str(root / "model"), corpus)
    return str(root / "model"), str(root / "data")
