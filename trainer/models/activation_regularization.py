"""AR and TAR (Merity et al. 2017), which fastai's RNNRegularizer adds to the loss.

AR penalizes large outputs of the last LSTM, alpha * mean(h^2); TAR penalizes outputs that
change fast, beta * mean((h_t - h_{t-1})^2). The language model applies AR to the dropped-out
outputs and TAR to the raw ones. fastai's TextLearner adds the same callback to classifiers
(alpha 2, beta 1, both on the pooled encoder outputs), so a fastai classifier is regularized
too: `ActivationRegularization` does that inside a Keras model.
"""
import keras
import tensorflow as tf

from trainer.models.xla import compiled


@compiled  # fused: TF's gradient of the shifted slices copies them twice
def activation_regularization(raw_output, dropped_output, alpha=2.0, beta=1.0):
    """AR: alpha * mean(dropped^2), TAR: beta * mean((raw_t - raw_{t-1})^2), as fastai."""
    loss = 0.0
    if alpha:
        loss += alpha * tf.reduce_mean(tf.square(tf.cast(dropped_output, tf.float32)))
    if beta:
        diff = raw_output[:, 1:] - raw_output[:, :-1]
        loss += beta * tf.reduce_mean(tf.square(tf.cast(diff, tf.float32)))
    return loss


def masked_activation_regularization(hidden, mask, alpha=2.0, beta=1.0):
    """AR and TAR over the positions where `mask` [batch, time] is True (TAR: over pairs of
    neighbours that both are).

    fastai's mean runs over the whole padded batch, so its penalty shrinks with the padding a
    text's batch-mates bring; a mean over tokens makes it the same for a text in any batch.
    """
    hidden = tf.cast(hidden, tf.float32)
    weights = tf.cast(mask, tf.float32)[:, :, None]
    units = tf.cast(tf.shape(hidden)[-1], tf.float32)

    def mean(squares, weights):
        return tf.reduce_sum(squares * weights) / tf.maximum(tf.reduce_sum(weights) * units, 1.0)

    loss = 0.0
    if alpha:
        loss += alpha * mean(tf.square(hidden), weights)
    if beta:
        loss += beta * mean(tf.square(hidden[:, 1:] - hidden[:, :-1]),
                            weights[:, 1:] * weights[:, :-1])
    return loss


class ActivationRegularization(keras.layers.Layer):
    """(hidden, token_mask) -> hidden unchanged; in training, adds masked AR/TAR to the loss."""

    def __init__(self, alpha=2.0, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = alpha, beta

    def call(self, hidden, token_mask, training=False):
        if training and (self.alpha or self.beta):
            self.add_loss(masked_activation_regularization(hidden, token_mask, self.alpha,
                                                           self.beta))
        return hidden

    def compute_output_shape(self, hidden_shape, token_mask_shape):
        return hidden_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}
