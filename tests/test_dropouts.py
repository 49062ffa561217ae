"""Locked and embedding dropout."""
import keras
import numpy as np
import tensorflow as tf

from trainer.models.dropouts import EmbeddingDropout, LockedDropout


def test_locked_dropout_shares_one_mask_over_time():
    out = LockedDropout(0.4)(tf.ones([8, 20, 30]), training=True, seed=tf.constant([1, 2]))
    out = out.numpy()
    assert (out == out[:, :1, :]).all()  # constant along time
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.6], rtol=1e-6)
    assert 0.3 < (out[:, 0] == 0).mean() < 0.5
    assert (LockedDropout(0.4)(tf.ones([2, 3, 4]), training=False) == 1).numpy().all()


def test_embedding_dropout_drops_whole_words_and_keeps_the_matrix():
    embedding = keras.layers.Embedding(50, 4)
    embedding.build((None,))
    before = embedding.embeddings.numpy().copy()
    ids = tf.constant([[3, 3, 7, 9, 3, 11, 7]] * 2)
    out = EmbeddingDropout(embedding, 0.5, pad_id=1)(ids, training=True, seed=tf.constant([5, 5]))
    matrix = embedding.embeddings.numpy()
    np.testing.assert_array_equal(matrix, before)
    for row, word in zip(out.numpy()[0], ids.numpy()[0]):
        # Every occurrence of a word is either dropped or kept, scaled by 1 / (1 - p).
        assert np.allclose(row, 0) or np.allclose(row, matrix[word] * 2)
    same_word = out.numpy()[:, [0, 1, 4]]
    assert (same_word == same_word[:, :1]).all()
    np.testing.assert_array_equal(
        EmbeddingDropout(embedding, 0.5, pad_id=1)(ids, training=False), tf.gather(matrix, ids))
