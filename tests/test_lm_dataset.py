"""lm_dataset: contiguous per-row streams, target shift, disjoint pipelines, seeded epochs."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.lm_dataset import lm_dataset
from data_pipeline.errors import CorpusError


def _epoch(manifest, batch, bptt, pipelines=1, pipeline=0, **kw):
    context = tf.distribute.InputContext(pipelines, pipeline, pipelines)
    return [(x.numpy(), y.numpy()) for x, y in lm_dataset(manifest, "train", batch, bptt,
                                                          context, **kw)]


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
