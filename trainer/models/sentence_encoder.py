"""fastai's SentenceEncoder: a classifier reads a whole document, in bptt-sized chunks.

The AWD-LSTM encoder runs over one chunk after another, carrying the LSTM states from chunk to
chunk with no gradient across a boundary (fastai's AWD_LSTM detaches its hidden state), and
draws new dropout masks for each chunk, as fastai calls its encoder once per chunk. The
classifier then pools over each text's last `max_len` outputs (`last_tokens`).

Rows are right-padded: padding comes after a text and never changes its states. (fastai pads
on the left and keeps the outputs of the batch's last chunks, so which outputs a text pools over
depends on the batch it is in; per row, the window is always its own last max_len tokens.)
As fastai's SentenceEncoder runs a chunk on the rows whose text reaches it (its `real_bs`), so
does this one: a batch with one long text does not run its short ones through padding. The rows
are taken in groups of `row_multiple`, so the XLA-compiled LSTM kernel sees few batch sizes; a
row whose text has ended gets zeros as its outputs (no one reads them).
"""
import keras
import tensorflow as tf


class ChunkedEncoder(keras.layers.Layer):
    """ids [batch, time] -> the encoder's outputs [batch, time, emb_size], `bptt` at a time."""

    def __init__(self, encoder, bptt=72, row_multiple=8, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.bptt, self.row_multiple = encoder, bptt, row_multiple

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)

    def _rows_reaching(self, lengths, start):
        """Indices of the rows with a token at or after `start`, topped up with ended rows to a
        multiple of row_multiple (at least one row, all rows at most)."""
        reaching = tf.cast(lengths > start, tf.int32)
        multiple = self.row_multiple
        take = -(-tf.reduce_sum(reaching) // multiple) * multiple
        take = tf.clip_by_value(take, 1, tf.shape(lengths)[0])
        return tf.argsort(reaching, direction="DESCENDING", stable=True)[:take]

    def call(self, ids, training=False):
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        pad_id, units = self.encoder.config["pad_id"], self.encoder.units[-1]
        # Texts no longer than bptt run as one chunk of their own length, not padded to bptt.
        size = tf.minimum(length, self.bptt)
        chunks = (length + size - 1) // size
        padding = chunks * size - length  # its outputs are cut off below
        chunked = tf.reshape(tf.pad(ids, [[0, 0], [0, padding]], constant_values=pad_id),
                             [batch, chunks, size])
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(ids, pad_id), tf.int32), axis=1)

        def step(i, states, outputs):
            rows = self._rows_reaching(lengths, i * size)
            hidden, new_states = self.encoder(
                tf.gather(chunked[:, i], rows),
                [tuple(tf.gather(s, rows) for s in pair) for pair in states], training=training)
            at = rows[:, None]
            states = [tuple(tf.tensor_scatter_nd_update(old, at, tf.stop_gradient(new))
                            for old, new in zip(*pairs)) for pairs in zip(states, new_states)]
            return i + 1, states, outputs.write(
                i, tf.scatter_nd(at, hidden, tf.stack([batch, size, units])))

        states = self.encoder.initial_states(batch, self.compute_dtype)
        outputs = tf.TensorArray(self.compute_dtype, size=chunks, element_shape=[
            None, None, units])
        _, _, outputs = tf.while_loop(lambda i, *_: i < chunks, step,
                                      (tf.constant(0), states, outputs))
        hidden = tf.transpose(outputs.stack(), [1, 0, 2, 3])  # [batch, chunks, bptt, emb]
        return tf.reshape(hidden, [batch, -1, units])[:, :length]

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.encoder.units[-1])

    def get_config(self):
        return {**super().get_config(), "bptt": self.bptt, "row_multiple": self.row_multiple}


def last_tokens(token_mask, max_len):
    """True on each row's last `max_len` tokens (of a right-padded [batch, time] mask)."""
    lengths = tf.reduce_sum(tf.cast(token_mask, tf.int32), axis=1, keepdims=True)
    positions = tf.range(tf.shape(token_mask)[1])[None, :]
    return tf.logical_and(token_mask, positions >= lengths - max_len)


class LastTokens(keras.layers.Layer):
    """ids [batch, time] -> True on each text's last `max_len` tokens: what the head pools."""

    def __init__(self, max_len, pad_id, **kwargs):
        super().__init__(**kwargs)
        self.max_len, self.pad_id = max_len, pad_id

    def call(self, ids):
        return last_tokens(tf.not_equal(ids, self.pad_id), self.max_len)

    def compute_output_spec(self, ids):
        return keras.KerasTensor(ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len, "pad_id": self.pad_id}
