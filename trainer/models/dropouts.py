"""The AWD-LSTM dropouts other than weight drop, as small layers with explicit stateless seeds.

Seeds come from the caller (the train step derives them from seed, step and replica), so a
resumed run redraws exactly the same masks and every replica draws its own.
"""
import keras
import tensorflow as tf


def keep_mask(shape, rate, seed, dtype):
    """Bernoulli(1 - rate) mask scaled by 1 / (1 - rate)."""
    keep = tf.random.stateless_uniform(shape, seed) >= rate
    return tf.cast(keep, dtype) / (1.0 - rate)


class LockedDropout(keras.layers.Layer):
    """Variational dropout (fastai's RNNDropout): one mask per sequence, shared over time."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, x, training=False, seed=None):
        if not training or self.rate == 0:
            return x
        shape = tf.stack([tf.shape(x)[0], 1, tf.shape(x)[2]])
        return x * keep_mask(shape, self.rate, seed, x.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class EmbeddingDropout(keras.layers.Layer):
    """Drops whole rows of the embedding matrix (whole words) and rescales the rest.

    Looks up through `embedding`'s own matrix, so the weight a tied decoder reads is untouched.
    As nn.Embedding(padding_idx=pad_id), the lookup of `pad_id` passes no gradient to its row
    (a tied decoder still does).
    """

    def __init__(self, embedding, rate, pad_id, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.rate, self.pad_id = rate, pad_id

    def call(self, ids, training=False, seed=None):
        matrix = self.embedding.embeddings
        vectors = tf.cast(tf.gather(matrix, ids), self.compute_dtype)
        vectors = tf.where((ids == self.pad_id)[..., None], tf.stop_gradient(vectors), vectors)
        if not training or self.rate == 0:
            return vectors
        rows = keep_mask(tf.stack([tf.shape(matrix)[0], 1]), self.rate, seed, vectors.dtype)
        return vectors * tf.gather(rows, ids)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "pad_id": self.pad_id}
