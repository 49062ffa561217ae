"""lm_dataset: contiguous per-row streams, target shift, disjoint pipelines, seeded epochs,
batches equal to a plain in-memory reader's, exact resume, reading only what a batch needs."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from common.errors import CorpusError
from data_pipeline.lm_dataset import lm_dataset
from data_pipeline.manifest import SplitInfo
from data_pipeline.shards import ShardWriter, parse_ids, shard_name


def _epoch(manifest, batch, bptt, pipelines=1, pipeline=0, **kw):
    context = tf.distribute.InputContext(pipelines, pipeline, pipelines)
    return [(x.numpy(), y.numpy()) for x, y in lm_dataset(manifest, "train", batch, bptt,
                                                          context, **kw)]


def _reference_epoch(manifest, rows, bptt, pipelines=1, pipeline=0, seed=0, epoch=0,
                     shuffle=True, backwards=False):
    """The epoch as the module docstring defines it, read plainly: the whole split in memory."""
    shards = manifest.split("train").shards
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    shard_seeds = rng.integers(2**31 - 1, size=(len(shards), 2))
    stream = []
    for index in order[::-1] if backwards else order:
        path = manifest.shard_path(shards[index])
        documents = [ids.numpy() for ids in tf.data.TFRecordDataset(path).map(parse_ids)]
        if shuffle:
            permutation = tf.argsort(tf.random.stateless_uniform(
                [len(documents)], seed=shard_seeds[index])).numpy()
            documents = [documents[i] for i in permutation]
        tokens = np.concatenate(documents)
        stream.append(tokens[::-1] if backwards else tokens)
    stream = np.concatenate(stream)
    length = len(stream) // pipelines
    row_length = (length - 1) // rows
    part = stream[pipeline * length:]
    table = np.stack([part[r * row_length:(r + 1) * row_length + 1] for r in range(rows)])
    return [(table[:, k * bptt:(k + 1) * bptt], table[:, k * bptt + 1:(k + 1) * bptt + 1])
            for k in range(row_length // bptt)]


@pytest.mark.parametrize("rows, bptt, pipelines, shuffle, backwards", [
    (1, 1, 1, True, False), (3, 7, 1, True, True), (16, 5, 3, True, False),
    (64, 2, 1, False, False), (5, 70, 2, True, True), (2, 13, 4, False, True)])
def test_batches_equal_a_plain_in_memory_reader(unique_manifest, rows, bptt, pipelines, shuffle,
                                                backwards):
    for pipeline in range(pipelines):
        kw = dict(seed=7, epoch=2, shuffle=shuffle, backwards=backwards)
        got = _epoch(unique_manifest, rows, bptt, pipelines, pipeline, **kw)
        expected = _reference_epoch(unique_manifest, rows, bptt, pipelines, pipeline, **kw)
        assert len(got) == len(expected) > 0
        for (x, y), (x2, y2) in zip(got, expected):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_ids_past_16_bits_arrive_intact(unique_manifest, tmp_path):
    """Rows hold ids in 16 bits when the vocabulary allows it, else in 32."""
    ids = list(range(2**16 - 40, 2**16 + 40))
    writer = ShardWriter(str(tmp_path / shard_name("train", 0, 1)))
    writer.write([ids[:30], ids[30:]])
    shard = writer.close()
    wide = dataclasses.replace(unique_manifest, directory=str(tmp_path), vocab_size=2**16 + 40,
                               splits={"train": SplitInfo(2, 80, (shard,))})
    stream = _stream(wide, shuffle=False)
    np.testing.assert_array_equal(stream, ids)


@pytest.mark.parametrize("backwards", [False, True])
def test_resuming_at_any_batch_yields_the_rest_of_the_epoch(unique_manifest, backwards):
    whole = _epoch(unique_manifest, 6, 9, 2, 1, seed=1, backwards=backwards)
    for start in (1, 7, len(whole) - 1, len(whole)):
        resumed = lm_dataset(unique_manifest, "train", 6, 9, tf.distribute.InputContext(2, 1, 2),
                             seed=1, backwards=backwards, start_batch=start)
        assert int(resumed.cardinality()) == len(whole) - start
        rest = [(x.numpy(), y.numpy()) for x, y in resumed]
        assert len(rest) == len(whole) - start
        for (x, y), (x2, y2) in zip(rest, whole[start:]):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_first_batch_reads_only_the_shards_it_needs(unique_manifest):
    """One row with a short bptt: its first batch lies in the epoch's first shard, so a shard
    read later that is damaged (same size, bad content) fails only when reached."""
    order = np.random.default_rng([0, 0]).permutation(5)
    shard = unique_manifest.split("train").shards[order[-1]]
    path = unique_manifest.shard_path(shard)
    with open(path, "rb") as f:
        original = f.read()
    try:
        with open(path, "wb") as f:
            f.write(original[:20] + bytes(len(original) - 20))
        iterator = iter(lm_dataset(unique_manifest, "train", 1, 4))
        first = next(iterator)
        assert first[0].shape == (1, 4)
        with pytest.raises(tf.errors.DataLossError):
            for _ in iterator:
                pass
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_static_shapes_and_target_shift(unique_manifest):
    dataset = lm_dataset(unique_manifest, "train", 4, 7)
    assert dataset.element_spec[0].shape == (4, 7) and dataset.element_spec[0].dtype == tf.int32
    batches = _epoch(unique_manifest, 4, 7)
    assert len(batches) == int(dataset.cardinality()) > 3
    for x, y in batches:
        assert (x[:, 1:] == y[:, :-1]).all()


def test_rows_continue_across_batches(unique_manifest):
    batches = _epoch(unique_manifest, 4, 7)
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        assert (x1[:, 0] == y0[:, -1]).all()
    # Inside a document ids are consecutive: a row read across all batches keeps documents whole
    # and in order, so almost every step of a row is +1 (the rest are document boundaries).
    rows = np.concatenate([x for x, _ in batches], axis=1)
    steps = np.diff(rows, axis=1)
    assert (steps == 1).mean() > 0.9


@pytest.mark.parametrize("pipelines", [1, 2, 4])
def test_pipelines_are_disjoint_and_cover_the_split(unique_manifest, pipelines):
    batch, bptt = 3, 5
    seen, counts = [], set()
    for p in range(pipelines):
        batches = _epoch(unique_manifest, batch, bptt, pipelines, p)
        counts.add(len(batches))
        inputs = np.concatenate([x.ravel() for x, _ in batches])
        assert len(set(inputs.tolist())) == inputs.size  # rows do not overlap each other
        tokens = {int(t) for x, y in batches for t in np.concatenate([x, y[:, -1:]], 1).ravel()}
        seen.append(tokens)
    assert len(counts) == 1  # every replica runs the same number of steps
    union = set().union(*seen)
    assert sum(len(s) for s in seen) == len(union)  # disjoint
    total = unique_manifest.split("train").tokens
    # Only remainders are lost: < P (split), and per pipeline < batch + 1 (rows) + batch*bptt.
    assert total - len(union) < pipelines * (1 + batch + 1 + batch * bptt)


def test_epochs_are_seeded_shuffles(unique_manifest):
    a = _epoch(unique_manifest, 4, 7, seed=1, epoch=0)
    assert all((x == x2).all() for (x, _), (x2, _) in zip(a, _epoch(unique_manifest, 4, 7,
                                                                      seed=1, epoch=0)))
    b = _epoch(unique_manifest, 4, 7, seed=1, epoch=1)
    assert not (a[0][0] == b[0][0]).all()
    ordered = _epoch(unique_manifest, 4, 7, shuffle=False)
    assert ordered[0][0][0, 0] == 10  # no shuffle: the stream starts at the first document


def _stream(manifest, **kw):
    """The whole epoch's stream: one row, bptt 1, reads every token of the split in order."""
    batches = _epoch(manifest, 1, 1, **kw)
    return np.concatenate([x[0] for x, _ in batches] + [batches[-1][1][0]])


@pytest.mark.parametrize("epoch", [0, 1])
def test_backward_stream_is_the_forward_stream_reversed(unique_manifest, epoch):
    forward = _stream(unique_manifest, seed=3, epoch=epoch)
    backward = _stream(unique_manifest, seed=3, epoch=epoch, backwards=True)
    assert len(forward) == unique_manifest.split("train").tokens
    np.testing.assert_array_equal(backward, forward[::-1])
    assert not (forward == _stream(unique_manifest, seed=3, epoch=1 - epoch)).all()


def test_too_small_split_and_truncated_shard_are_clear_errors(unique_manifest, tmp_path):
    with pytest.raises(CorpusError, match="too few for 4 pipeline"):
        lm_dataset(unique_manifest, "train", 64, 70,
                   tf.distribute.InputContext(4, 0, 4))
    shard = unique_manifest.split("train").shards[2]
    path = unique_manifest.shard_path(shard)
    with open(path, "rb") as f:
        original = f.read()
    try:
        with open(path, "wb") as f:
            f.write(original[:-3])
        with pytest.raises(CorpusError, match=f"{shard.file}: {shard.bytes - 3} bytes"):
            lm_dataset(unique_manifest, "train", 4, 7)
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_shards_too_large_for_streaming_are_warned_about(unique_manifest, caplog):
    split = unique_manifest.split("train")
    claimed = tuple(dataclasses.replace(s, tokens=20_000_000) for s in split.shards)
    big = dataclasses.replace(unique_manifest, splits={"train": dataclasses.replace(
        split, shards=claimed, tokens=sum(s.tokens for s in claimed))})
    with caplog.at_level("WARNING"):
        lm_dataset(big, "train", 64, 70)  # built, not read: the claimed tokens are not there
    assert "~2.6 GB" in caplog.text and "--shard_mb=4" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        lm_dataset(unique_manifest, "train", 64, 7)
    assert "shard_mb" not in caplog.text
