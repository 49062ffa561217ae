"""Unigram perplexity of a split: the baseline any language model must beat."""
import math

import numpy as np
import tensorflow as tf

from data_pipeline.manifest import Manifest
from data_pipeline.shards import parse_ids


def _counts(manifest: Manifest, split: str) -> np.ndarray:
    counts = np.zeros(manifest.vocab_size, np.int64)
    files = [manifest.shard_path(s) for s in manifest.split(split).shards]
    for ids in tf.data.TFRecordDataset(files).batch(4096).map(
            lambda records: parse_ids(records).flat_values):
        counts += np.bincount(ids.numpy(), minlength=manifest.vocab_size)
    return counts


def unigram_perplexity(manifest: Manifest, eval_split: str = "valid") -> float:
    """exp(cross entropy of `eval_split` under add-one-smoothed train unigram frequencies)."""
    train = _counts(manifest, "train") + 1
    log_p = np.log(train / train.sum())
    evaluated = _counts(manifest, eval_split)
    return math.exp(-(evaluated * log_p).sum() / evaluated.sum())
