"""ULMFiT's fine-tuning recipes on a Keras model: layer groups, discriminative learning rates
and gradual unfreezing.

Layer groups follow fastai's awd_lstm_clas_split: the embedding, each LSTM, then the head
(every layer outside the encoder). Group k of n trains at lr / 2.6^(n-1-k), so the head gets
the full rate and the embedding the smallest. Gradual unfreezing trains only the last group in
the first epoch and unfreezes one more group each epoch.
"""
import keras


def layer_groups(model, encoder_name="encoder"):
    """[[embedding], [lstm_0], ..., [lstm_n], [head layers]] of a model built on the encoder."""
    encoder = model.get_layer(encoder_name)
    head = [layer for layer in model.layers if layer is not encoder and layer.weights]
    return [[encoder.embedding], *[[rnn] for rnn in encoder.rnns], head]


def discriminative_lr_factors(groups, factor=2.6):
    """{variable path: 1 / factor^(distance from the last group)} for FastaiAdam(lr_factors)."""
    return {v.path: factor ** -(len(groups) - 1 - k)
            for k, group in enumerate(groups) for layer in group for v in layer.weights}


def unfreeze_last(groups, count):
    """Makes the last `count` groups trainable and freezes the others."""
    for k, group in enumerate(groups):
        for layer in group:
            layer.trainable = k >= len(groups) - count


class GradualUnfreezing(keras.callbacks.Callback):
    """Epoch e (from 0) trains the last e + 1 groups. The optimizer must have been built on
    every variable beforehand (a frozen one joins later)."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def on_epoch_begin(self, epoch, logs=None):
        unfreeze_last(self.groups, epoch + 1)
        # The compiled train step fixed its variable list when it was traced.
        self.model.make_train_function(force=True)
