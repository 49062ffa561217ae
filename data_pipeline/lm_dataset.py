"""Language-model batches with fastai LMDataLoader semantics, streamed from the shards.

One epoch of a split is one token stream: shards in a seeded order, documents shuffled inside
each shard (BOS/EOS already delimit them). Pipeline p of P (a replica or host, from the
`tf.distribute.InputContext`) owns the contiguous range [p*L, (p+1)*L) of that stream, L = T // P.
Its range is cut into `batch_size` contiguous rows of R tokens, and batch k is columns
[k*bptt, (k+1)*bptt) of every row, so row i of batch k+1 continues row i of batch k: the trainer
carries the LSTM state across batches. Every pipeline yields the same number of batches;
remainders are dropped so shapes are static.

Streaming: each row has its own reader over the shards its slice spans, and the rows' readers are
interleaved into batches. A reader loads one shard at a time (its documents must all be read to
shuffle them) and keeps only its slice of it, in 16 bits a token when the vocabulary allows, so
memory is at most about rows x one shard, whatever the corpus size, and the first batch waits only
for each row's first shard. Small shards keep that low: the build's default (`--shard_mb=4`,
~1 M tokens) makes it ~0.13 GB for 64 rows, plus the shards being loaded.

Shuffling across the split comes from the shard order, drawn from (seed, epoch) with numpy, and
the rows: the `batch_size` rows of a batch lie R tokens apart in the stream, in different shards
once R exceeds a shard, so every batch mixes randomly chosen parts of the whole split. Inside a
shard, documents come in an order drawn from a per-shard seed (a stateless op, so any reader of
the shard gets the same order). No index of the whole split is ever built or held.

`backwards=True` (a backward LM, fastai's `backwards=True`) reads the same epoch's stream exactly
reversed: shards in the reverse order, each shard's tokens reversed, so every document reads
EOS ... BOS, and the documents come in the reverse of the forward order. (fastai reverses each
document and keeps their shuffled order; both are a random order of reversed documents.)
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from common.errors import SettingError
from data_pipeline.manifest import Manifest, check_shard_sizes, load_manifest
from data_pipeline.shards import parse_ids
from data_pipeline.untuned import untuned

_WARN_BYTES = 2**30
_PARSE_RECORDS = 256


@dataclasses.dataclass(frozen=True)
class Piece:
    """Tokens [start, stop) of one shard's stream, as one row reads them."""
    file: str
    records: int            # documents in the shard
    shuffle_seed: tuple     # the shard's document-shuffle seed (a pair of int32)
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What pipeline `pipeline` of `num_pipelines` reads in one epoch of a split."""
    batches: int            # batches of the whole epoch (a resumed plan yields the last ones)
    rows: list              # per row, its Pieces in stream order


def plan_epoch(manifest: Manifest, split: str, batch_size: int, bptt: int, *, num_pipelines=1,
               pipeline=0, seed=0, epoch=0, shuffle=True, backwards=False,
               start_batch=0) -> EpochPlan:
    shards = manifest.split(split).shards
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    shard_seeds = rng.integers(2**31 - 1, size=(len(shards), 2))
    if backwards:
        order = order[::-1]
    total = sum(s.tokens for s in shards)
    per_pipeline = total // num_pipelines
    row_length = (per_pipeline - 1) // batch_size
    batches = row_length // bptt
    if batches == 0:
        raise SettingError(
            "{path}: split {split!r} has {total:,} tokens, too few for {pipelines} pipeline(s) x "
            "{batch_size} {rows} x {bptt} {columns} (one batch needs {needed:,}). Lower "
            "{batch_size} or {bptt}, or add text.", spell=str, path=manifest.path, split=split,
            total=total, pipelines=num_pipelines, rows=batch_size, columns=bptt,
            needed=num_pipelines * (batch_size * bptt + 1))
    position = np.cumsum([0] + [shards[i].tokens for i in order])  # of each shard's start
    rows, used = [], set()
    for row in range(batch_size):
        # Batch k reads tokens [k*bptt, (k+1)*bptt] of the row: inputs and the targets one on.
        first = pipeline * per_pipeline + row * row_length + start_batch * bptt
        end = first + (batches - start_batch) * bptt + 1 if start_batch < batches else first
        pieces = []
        for k in range(np.searchsorted(position, first, "right") - 1,
                       np.searchsorted(position, end, "left")):
            shard = shards[order[k]]
            if position[k + 1] > first and shard.tokens:
                pieces.append(Piece(manifest.shard_path(shard), shard.records,
                                    tuple(int(s) for s in shard_seeds[order[k]]),
                                    max(first - position[k], 0), min(end - position[k],
                                                                     shard.tokens)))
                used.add(order[k])
        rows.append(pieces)
    check_shard_sizes(manifest, [shards[i] for i in sorted(used)])  # only what is read
    return EpochPlan(batches, rows)


def _shard_tokens(path, records, seed, start, stop, shuffle, backwards, dtype):
    """A one-element dataset: tokens [start, stop) of a shard's documents in their seeded order
    (the shard's tokens reversed when `backwards`), as `dtype`."""
    def tokens(documents):
        if shuffle:
            documents = tf.gather(
                documents, tf.argsort(tf.random.stateless_uniform([records], seed=seed)))
        flat = documents.flat_values
        positions = tf.range(tf.cast(start, tf.int32), tf.cast(stop, tf.int32))
        # A gather, not a slice: a slice would share the shard's buffer (kept alive, and TF
        # logs an error when the rebatch below checks such a buffer's reference count).
        return tf.gather(flat, tf.size(flat) - 1 - positions if backwards else positions)
    # Parsed a few hundred records at a time: a whole shard's ids as int64 would be 8 bytes a
    # token, all at once.
    chunks = tf.data.TFRecordDataset(path).batch(_PARSE_RECORDS).map(
        lambda serialized: tf.cast(parse_ids(serialized), dtype))
    return chunks.ragged_batch(records).map(lambda parts: tokens(parts.merge_dims(0, 1)))


def _input_target_pairs(chunks, bptt):
    """Consecutive bptt-token chunks of a row -> int32 (chunk, the same shifted one token on)."""
    def pair(previous, chunk):
        target = tf.concat([previous[1:], chunk[:1]], 0)
        return chunk, tuple(tf.ensure_shape(tf.cast(ids, tf.int32), [bptt])
                            for ids in (previous, target))
    return chunks.scan(tf.zeros([bptt], chunks.element_spec.dtype), pair).skip(1)


def lm_dataset(manifest, split: str, batch_size: int, bptt: int, input_context=None, *,
               seed: int = 0, epoch: int = 0, shuffle: bool = True,
               start_batch: int = 0, backwards: bool = False) -> tf.data.Dataset:
    """`(inputs, targets)` int32 batches of shape [batch_size, bptt] for one epoch of `split`.

    `manifest` is a data directory, its manifest.json, or a loaded `Manifest`. `batch_size` is
    the rows this pipeline yields; every batch has that static shape (what XLA and TPUs need;
    fastai, too, uses a fixed bptt). `start_batch` resumes an epoch at that batch, reading only
    from there on. `backwards`: the stream reversed, for a backward LM.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    plan = plan_epoch(
        manifest, split, batch_size, bptt, seed=seed, epoch=epoch, shuffle=shuffle,
        backwards=backwards, start_batch=start_batch,
        num_pipelines=input_context.num_input_pipelines if input_context else 1,
        pipeline=input_context.input_pipeline_id if input_context else 0)
    steps = max(plan.batches - start_batch, 0)
    # What rows hold between batches, in half the memory when every id fits in 16 bits.
    dtype = tf.uint16 if manifest.vocab_size <= 2**16 else tf.int32
    held = batch_size * max(s.tokens for s in manifest.split(split).shards) * dtype.size
    if held > _WARN_BYTES:
        logging.warning(
            "%s: each of the %d rows holds up to one shard at a time: ~%.1f GB. Build the data "
            "directory with smaller shards (data_pipeline.build --shard_mb=4) to read it in "
            "less memory.", manifest.path, batch_size, held / 1e9)
    pieces = {field.name: tf.ragged.constant(
        [[getattr(p, field.name) for p in row] for row in plan.rows],
        dtype=tf.string if field.name == "file" else tf.int64,
        ragged_rank=1, inner_shape=(2,) if field.name == "shuffle_seed" else ())
        for field in dataclasses.fields(Piece)}

    def row_batches(row):
        mine = tuple(pieces[field.name][row] for field in dataclasses.fields(Piece))
        tokens = tf.data.Dataset.from_tensor_slices(mine).flat_map(
            lambda *piece: _shard_tokens(*piece, shuffle, backwards, dtype))
        return _input_target_pairs(tokens.rebatch(bptt), bptt)

    rows = tf.data.Dataset.range(batch_size).interleave(
        row_batches, cycle_length=batch_size, block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = rows.batch(batch_size, drop_remainder=True)
    return untuned(batches.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(
        tf.data.AUTOTUNE))


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
