"""fastai's SentenceEncoder and SortedDL: whole texts in bptt chunks, batches of similar lengths."""
import numpy as np
import pytest
import tensorflow as tf

from common.errors import CorpusError
from data_pipeline.labeled_data import labelled_dataset, sorted_order, train_steps
from trainer.models.activation_regularization import (activation_regularization,
                                                      masked_activation_regularization)
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.models.pooling_classifier import masked_concat_pool
from trainer.models.sentence_encoder import ChunkedEncoder, last_tokens
from trainer.models.ulmfit_classifier import ulmfit_classifier

NO_DROPOUT = dict(output_p=0.0, hidden_p=0.0, input_p=0.0, embed_p=0.0, weight_p=0.0)


def _encoder(vocab=40):
    model = AWDLSTMLanguageModel(vocab, emb_size=6, hidden_size=10, num_layers=2, **NO_DROPOUT)
    model(tf.zeros([1, 1], tf.int32))
    return model.encoder


def test_chunks_carry_the_states_so_outputs_equal_one_pass():
    encoder = _encoder()
    ids = tf.random.stateless_uniform([3, 10], [1, 2], 4, 40, tf.int32)
    whole, _ = encoder(ids)
    for bptt in (3, 5, 10, 16):  # 16: a text shorter than bptt is one chunk of its length
        np.testing.assert_allclose(ChunkedEncoder(encoder, bptt)(ids), whole, atol=1e-6)


def test_a_chunk_runs_only_the_rows_whose_text_reaches_it():
    encoder = _encoder()
    lengths = [11, 2, 7, 5]  # right-padded to 11; bptt 3: chunks at 0, 3, 6, 9
    ids = np.ones([4, 11], np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(n) + 4 + row
    rows_run, call = [], encoder.call

    def counting(chunk, *args, **kwargs):
        rows_run.append(int(chunk.shape[0]))
        return call(chunk, *args, **kwargs)

    encoder.call = counting  # eager: tf.while_loop runs as a Python loop
    outputs = {multiple: ChunkedEncoder(encoder, 3, row_multiple=multiple)(tf.constant(ids))
               for multiple in (1, 2)}
    assert rows_run == [4, 3, 2, 1] + [4, 4, 2, 2]  # fastai's real_bs; then in pairs
    del encoder.call
    for row, n in enumerate(lengths):  # each text's outputs are its own, whoever ran beside it
        alone = ChunkedEncoder(encoder, 3)(tf.constant(ids[row:row + 1, :n]))
        for out in outputs.values():
            np.testing.assert_allclose(out[row, :n], alone[0], atol=1e-6)


def test_no_gradient_crosses_a_chunk_boundary():
    encoder = _encoder()
    ids = tf.constant([[4, 5, 6, 7, 8, 9]])  # every position its own embedding row
    with tf.GradientTape() as tape:
        hidden = ChunkedEncoder(encoder, 3)(ids)
        second_chunk = tf.reduce_sum(hidden[:, 3:])
    rows = tf.convert_to_tensor(tape.gradient(second_chunk, encoder.embedding.embeddings))
    magnitude = tf.reduce_sum(tf.abs(rows), axis=1).numpy()
    assert (magnitude[[4, 5, 6]] == 0).all() and (magnitude[[7, 8, 9]] > 0).all()


def test_padding_and_batch_mates_never_change_a_texts_logits():
    model, _ = ulmfit_classifier(num_classes=3, vocab_size=40, emb_size=6, hidden_size=10,
                                 num_layers=2, bptt=4, max_len=6, **NO_DROPOUT)
    short = [2, 9, 12, 7, 3]
    alone = model(tf.constant([short]), training=False)
    longer = [2] + list(range(4, 14)) + [3]  # 12 ids: 7 pads after the short text
    batched = model(tf.constant([short + [1] * 7, longer]), training=False)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)


def test_the_head_pools_each_texts_last_max_len_tokens():
    mask = tf.constant(np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool))
    window = last_tokens(mask, 2).numpy().astype(int)
    np.testing.assert_array_equal(window, [[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1],
                                           [1, 0, 0, 0, 0, 0]])
    hidden = np.random.default_rng(0).normal(size=(3, 6, 4)).astype(np.float32)
    pooled = masked_concat_pool(tf.constant(hidden), tf.constant(window, tf.bool)).numpy()
    for row, (begin, end) in enumerate([(2, 4), (4, 6), (0, 1)]):
        tokens = hidden[row, begin:end]
        np.testing.assert_allclose(pooled[row], np.concatenate(
            [tokens[-1], tokens.max(0), tokens.mean(0)]), rtol=1e-6)


def test_sorted_batches_group_similar_lengths_and_reshuffle_every_epoch():
    lengths = np.random.default_rng(1).integers(1, 400, 1000)
    evaluation = sorted_order(lengths, 8)
    assert (np.diff(lengths[evaluation]) <= 0).all()
    orders = [sorted_order(lengths, 8, np.random.default_rng([0, epoch])) for epoch in (0, 1)]
    for order in orders:
        assert sorted(order) == list(range(1000))
        assert lengths.argmax() in order[:8]  # the largest batch comes first
        batches = order.reshape(-1, 8)
        # Texts in a batch come from one megabatch of 400 texts, sorted by length: the spread
        # within a batch is far below the spread of random batches.
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread < 0.2 * np.mean([np.ptp(lengths[b]) for b in np.arange(1000).reshape(-1, 8)])
    assert not np.array_equal(*orders)
    np.testing.assert_array_equal(orders[0], sorted_order(lengths, 8, np.random.default_rng([0, 0])))


def test_each_pass_over_a_labelled_dataset_is_a_new_reproducible_order():
    ids = [[2] + [5] * n + [3] for n in range(20)]
    labels = list(range(20))
    def passes(dataset):
        return [[int(t) for _, targets in dataset for t in targets] for _ in range(2)]
    first, again = passes(labelled_dataset(ids, labels, 4, shuffle_seed=3)), \
        passes(labelled_dataset(ids, labels, 4, shuffle_seed=3))
    assert first == again and first[0] != first[1] and sorted(first[0]) == labels
    # Evaluation: longest first, padded per batch to a multiple of length_multiple.
    for multiple in (1, 8):
        for x, y in labelled_dataset(ids, labels, 4, length_multiple=multiple):
            longest = max(len(ids[int(k)]) for k in y)
            assert x.shape[1] == -(-longest // multiple) * multiple
            assert all((row[len(ids[int(k)]):] == 1).all() for row, k in zip(x.numpy(), y))


def test_training_drops_the_partial_batch_and_rows_are_not_rounded_past_a_chunk():
    ids = [[2] + [5] * n + [3] for n in range(22)]  # lengths 2..23, label = length - 2
    labels = list(range(22))
    train = list(labelled_dataset(ids, labels, 4, shuffle_seed=1, drop_remainder=True))
    assert len(train) == train_steps(len(ids), 4, "train.jsonl") == 5
    # As fastai's SortedDL with drop_last: the last, shortest batch (lengths 2 and 3) goes.
    assert sorted(int(t) for _, y in train for t in y) == labels[2:]
    # Longest first, batches of 4: 23-20, 19-16, 15-12, 11-8, 7-4, 3-2, rounded up to a
    # multiple of 8, but 11 only to the 12 of a chunk (16 would be two chunks of 12).
    widths = [x.shape[1] for x, _ in labelled_dataset(ids, labels, 4, length_multiple=8,
                                                      chunk_length=12)]
    assert widths == [24, 24, 16, 12, 8, 8]
    with pytest.raises(CorpusError, match="train.jsonl: 3 training examples, fewer than one "
                                          "batch of 4"):
        train_steps(3, 4, "train.jsonl")


def test_classifier_training_adds_fastais_ar_and_tar_over_the_pooled_tokens():
    hidden = tf.random.stateless_normal([2, 7, 5], [3, 4])
    everywhere = tf.ones([2, 7], tf.bool)
    np.testing.assert_allclose(masked_activation_regularization(hidden, everywhere, 2.0, 1.0),
                               activation_regularization(hidden, hidden, 2.0, 1.0), rtol=1e-5)
    # A padded row gives the value of its tokens alone, whatever the padding holds.
    mask = tf.constant([[True] * 4 + [False] * 3] * 2)
    np.testing.assert_allclose(masked_activation_regularization(hidden, mask, 2.0, 1.0),
                               masked_activation_regularization(hidden[:, :4], mask[:, :4],
                                                                2.0, 1.0), rtol=1e-5)
    ids = tf.constant([[2, 9, 12, 7, 5, 3, 1, 1], [2, 4, 5, 6, 7, 8, 10, 3]])
    model, _ = ulmfit_classifier(num_classes=3, vocab_size=40, emb_size=6, hidden_size=10,
                                 num_layers=2, bptt=4, max_len=5, **NO_DROPOUT)
    model(ids, training=True)
    outputs = model.get_layer("encoder")(ids)
    expected = masked_activation_regularization(outputs, last_tokens(ids != 1, 5), 2.0, 1.0)
    assert len(model.losses) == 1
    np.testing.assert_allclose(model.losses[0], expected, rtol=1e-5)
    model(ids, training=False)
    assert not model.losses
    plain, _ = ulmfit_classifier(num_classes=3, vocab_size=40, emb_size=6, hidden_size=10,
                                 num_layers=2, ar_alpha=0.0, tar_beta=0.0, **NO_DROPOUT)
    plain(ids, training=True)
    assert not plain.losses
