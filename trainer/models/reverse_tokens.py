"""A backward model's input: each text's ids in reverse order, its padding left after it.

A backward language model (train_lm.backwards) learned from reversed streams, so a classifier
on its encoder reads every text reversed too, as fastai reverses the numericalized texts of
backwards DataLoaders. Doing it in the model, not in the data, means the exported SavedModel,
predict and an ensemble with a forward classifier all take texts as they are.
"""
import keras
import tensorflow as tf


def reverse_tokens(ids, pad_id):
    """Right-padded ids [batch, time] with each row's tokens reversed, padding kept at the end
    (SentencePiece never emits the pad id inside a text)."""
    lengths = tf.reduce_sum(tf.cast(tf.not_equal(ids, pad_id), tf.int32), axis=1)
    return tf.reverse_sequence(ids, lengths, seq_axis=1, batch_axis=0)


class ReverseTokens(keras.layers.Layer):

    def __init__(self, pad_id, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, ids):
        return reverse_tokens(ids, self.pad_id)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}
