"""Language-model batches with fastai LMDataLoader semantics, split across input pipelines.

One epoch of a split is one token stream: shards in a seeded order, documents shuffled inside
each shard (BOS/EOS already delimit them). Pipeline p of P (a replica or host, from the
`tf.distribute.InputContext`) owns the contiguous range [p*L, (p+1)*L) of that stream, L = T // P,
and reads only the shards that overlap it. Its range is cut into `batch_size` contiguous rows,
and batch k is columns [k*bptt, (k+1)*bptt) of every row, so row i of batch k+1 continues row i
of batch k: the trainer carries the LSTM state across batches. Every pipeline yields the same
number of batches; remainders are dropped so shapes are static.

`backwards=True` (a backward LM, fastai's `backwards=True`) reads the same epoch's stream exactly
reversed: shards in the reverse order, each shard's tokens reversed, so every document reads
EOS ... BOS, and the documents come in the reverse of the forward order. (fastai reverses each
document and keeps their shuffled order; both are a random order of reversed documents.)

Each pipeline holds its rows in memory (4 bytes a token), as fastai holds the whole corpus.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from data_pipeline.manifest import Manifest, check_shard_sizes, load_manifest
from data_pipeline.shards import parse_ids
from data_pipeline.errors import SettingError


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What pipeline `pipeline` of `num_pipelines` reads in one epoch of a split."""
    files: list          # shard paths overlapping this pipeline's range, in stream order
    records: list        # documents in each of those shards
    shuffle_seeds: list  # per-shard document-shuffle seed (a pair of int32)
    offset: int          # position of the range's first token in the first file's tokens
    rows: int            # batch_size
    row_length: int      # tokens per row (R); a row spans R + 1 tokens: targets overlap by one
    starts: np.ndarray   # start column of each batch within the rows (bptt columns each)


def plan_epoch(manifest: Manifest, split: str, batch_size: int, bptt: int, *, num_pipelines=1,
               pipeline=0, seed=0, epoch=0, shuffle=True, backwards=False) -> EpochPlan:
    shards = manifest.split(split).shards
    check_shard_sizes(manifest, shards)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    shard_seeds = rng.integers(2**31 - 1, size=(len(shards), 2))
    if backwards:
        order = order[::-1]
    total = sum(s.tokens for s in shards)
    per_pipeline = total // num_pipelines
    row_length = (per_pipeline - 1) // batch_size
    starts = np.arange(row_length // bptt) * bptt
    if len(starts) == 0:
        raise SettingError(
            "{path}: split {split!r} has {total:,} tokens, too few for {pipelines} pipeline(s) x "
            "{batch_size} {rows} x {bptt} {columns} (one batch needs {needed:,}). Lower "
            "{batch_size} or {bptt}, or add text.", spell=str, path=manifest.path, split=split,
            total=total, pipelines=num_pipelines, rows=batch_size, columns=bptt,
            needed=num_pipelines * (batch_size * bptt + 1))
    begin, end = pipeline * per_pipeline, pipeline * per_pipeline + batch_size * row_length + 1
    files, records, seeds, offset, position = [], [], [], 0, 0
    for index in order:
        shard = shards[index]
        if position < end and position + shard.tokens > begin:
            if not files:
                offset = begin - position
            files.append(manifest.shard_path(shard))
            records.append(shard.records)
            seeds.append(shard_seeds[index])
        position += shard.tokens
    return EpochPlan(files, records, seeds, offset, batch_size, row_length, starts)


def _shard_tokens(path, records, seed, shuffle, backwards):
    """All of a shard's tokens as one vector, documents in a seeded order (all reversed when
    `backwards`)."""
    documents = tf.data.TFRecordDataset(path).map(parse_ids).ragged_batch(records)
    def flatten(docs):
        if shuffle:
            order = tf.argsort(tf.random.stateless_uniform([records], seed=seed))
            docs = tf.gather(docs, order)
        return tf.reverse(docs.flat_values, [0]) if backwards else docs.flat_values
    return documents.map(flatten)


def lm_dataset(manifest, split: str, batch_size: int, bptt: int, input_context=None, *,
               seed: int = 0, epoch: int = 0, shuffle: bool = True,
               start_batch: int = 0, backwards: bool = False) -> tf.data.Dataset:
    """`(inputs, targets)` int32 batches of shape [batch_size, bptt] for one epoch of `split`.

    `manifest` is a data directory, its manifest.json, or a loaded `Manifest`. `batch_size` is
    the rows this pipeline yields; every batch has that static shape (what XLA and TPUs need;
    fastai, too, uses a fixed bptt). `start_batch` resumes an epoch at that batch.
    `backwards`: the stream reversed, for a backward LM.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    plan = plan_epoch(
        manifest, split, batch_size, bptt, seed=seed, epoch=epoch, shuffle=shuffle,
        backwards=backwards,
        num_pipelines=input_context.num_input_pipelines if input_context else 1,
        pipeline=input_context.input_pipeline_id if input_context else 0)
    needed = plan.rows * plan.row_length + 1
    files = tf.data.Dataset.from_tensor_slices(
        (plan.files, tf.constant(plan.records, tf.int64), tf.constant(plan.shuffle_seeds, tf.int64)))
    tokens = files.interleave(
        lambda path, records, shard_seed: _shard_tokens(path, records, shard_seed, shuffle,
                                                        backwards),
        cycle_length=min(len(plan.files), 4), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)

    def to_rows(per_shard):
        stream = per_shard.flat_values[plan.offset:plan.offset + needed]
        index = (tf.range(plan.rows)[:, None] * plan.row_length
                 + tf.range(plan.row_length + 1)[None, :])
        return tf.gather(stream, index)  # [rows, R + 1]

    starts = plan.starts[start_batch:]
    shape = [plan.rows, bptt]

    def batches(rows):
        return tf.data.Dataset.from_tensor_slices(starts).map(
            lambda start: (tf.ensure_shape(rows[:, start:start + bptt], shape),
                           tf.ensure_shape(rows[:, start + 1:start + 1 + bptt], shape)))

    dataset = tokens.ragged_batch(len(plan.files)).map(to_rows).flat_map(batches)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(starts))).prefetch(
        tf.data.AUTOTUNE)


def worker_lm_dataset(manifest, split: str, batch_size: int, bptt: int,
                      input_context: tf.distribute.InputContext, **kwargs) -> tf.data.Dataset:
    """One worker's input for `strategy.distribute_datasets_from_function`.

    Every replica reads its own part of the stream: replica g of R is pipeline g of R in
    `lm_dataset`. A worker hands consecutive elements of its dataset to its local replicas in
    turn, so their streams are interleaved here: element k*L + r is local replica r's batch k.
    `batch_size` is per replica; `kwargs` go to `lm_dataset`.
    """
    replicas = input_context.num_replicas_in_sync
    local = replicas // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local
    streams = [lm_dataset(manifest, split, batch_size, bptt,
                          tf.distribute.InputContext(replicas, first + r, replicas), **kwargs)
               for r in range(local)]
    if local == 1:
        return streams[0]
    steps = int(streams[0].cardinality())
    interleaved = tf.data.Dataset.zip(tuple(streams)).flat_map(
        lambda *batches: tf.data.Dataset.from_tensor_slices(
            tuple(tf.stack(part) for part in zip(*batches))))
    return interleaved.apply(tf.data.experimental.assert_cardinality(steps * local))
