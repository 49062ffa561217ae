"""ULMFiT's classifier head (fastai's PoolingLinearClassifier) over the encoder's outputs.

Concat pooling: [last hidden state, max over time, mean over time] of the last LSTM's outputs,
each computed over tokens only (padding, id 1, is masked out). We pad on the right, so "last" is
the state at each row's last token; fastai pads on the left and reads position -1, the same
thing. Then BatchNorm-Dropout-Dense-ReLU-BatchNorm-Dropout-Dense, fastai's LinBnDrop blocks
(Dense without bias: a BatchNorm precedes it).
"""
import keras
import tensorflow as tf

# PyTorch's nn.Linear init, U(+-1/sqrt(fan_in)), which fastai's heads keep; Keras' Glorot
# default draws a head's weights about twice as large.
TORCH_LINEAR_INIT = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def masked_concat_pool(hidden, mask):
    """hidden [batch, time, dim], mask [batch, time] (True = pooled) -> [batch, 3 * dim]. "last"
    is the last True position of each row."""
    weights = tf.cast(mask, hidden.dtype)[:, :, None]
    last_position = tf.reduce_max(tf.where(mask, tf.range(tf.shape(mask)[1])[None, :], 0), axis=1)
    last = tf.gather(hidden, last_position, axis=1, batch_dims=1)
    lowest = tf.constant(hidden.dtype.min, hidden.dtype)
    max_pool = tf.reduce_max(tf.where(weights > 0, hidden, lowest), axis=1)
    mean_pool = tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(
        tf.reduce_sum(weights, axis=1), 1)
    return tf.concat([last, max_pool, mean_pool], axis=-1)


class ConcatPooling(keras.layers.Layer):

    def call(self, hidden, token_mask):
        return masked_concat_pool(hidden, token_mask)

    def compute_output_shape(self, hidden_shape, token_mask_shape):
        return (hidden_shape[0], 3 * hidden_shape[-1])


class PoolingLinearClassifier(keras.layers.Layer):
    """(hidden, token_mask) -> class logits (not `mask`: Keras reserves that name).

    `lin_ftrs`: the hidden layers' sizes; dropout `output_p` before the first Dense and `ps`
    before each next one (fastai's defaults are in trainer/models/ulmfit_classifier.py)."""

    def __init__(self, num_classes, lin_ftrs, output_p, ps, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(num_classes=num_classes, lin_ftrs=tuple(lin_ftrs),
                           output_p=output_p, ps=tuple(ps))
        sizes = [*lin_ftrs, num_classes]
        dropouts = [output_p, *ps]
        if len(dropouts) != len(sizes):
            raise ValueError(f"ps={ps} needs one dropout per lin_ftrs entry {lin_ftrs}.")
        self.pooling = ConcatPooling(name="concat_pooling")
        self.head = []
        for i, (units, rate) in enumerate(zip(sizes, dropouts)):
            last = i == len(sizes) - 1
            self.head += [
                keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn_{i}"),
                keras.layers.Dropout(rate, name=f"dropout_{i}"),
                keras.layers.Dense(units, use_bias=False, activation=None if last else "relu",
                                   kernel_initializer=TORCH_LINEAR_INIT, name=f"dense_{i}")]

    def call(self, hidden, token_mask, training=False):
        x = self.pooling(hidden, token_mask)
        for layer in self.head:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, hidden_shape, token_mask_shape):
        return (hidden_shape[0], self.config["num_classes"])

    def get_config(self):
        return {**super().get_config(), **self.config}
