"""DropConnect on the hidden-to-hidden weights (AWD-LSTM's WeightDrop), non-destructive.

The raw recurrent kernel is the variable the optimizer updates. A training batch runs with
`raw * mask / (1 - p)`, one Bernoulli mask per batch shared by every time step; inference runs
with the raw kernel. The stored weights are never overwritten: a known TF port of ULMFiT assigns
`mask * W` each batch, so only (1 - p)^k of the weights survive k batches.
"""
import math

import keras
import tensorflow as tf

from trainer.models.lstm_kernel import gpu_available, lstm_sequence, lstm_step


def _torch_like_init(units):
    # PyTorch's LSTM init, which fastai's AWD-LSTM keeps: U(-1/sqrt(units), 1/sqrt(units)).
    bound = 1.0 / math.sqrt(units)
    return keras.initializers.RandomUniform(-bound, bound)


def drop_connect(raw_kernel, rate, seed):
    """`raw * mask / (1 - rate)` with a mask drawn from the stateless `seed` (shape [2])."""
    keep = tf.random.stateless_uniform(tf.shape(raw_kernel), seed) >= rate
    return tf.where(keep, raw_kernel / (1.0 - rate), tf.zeros_like(raw_kernel))


class WeightDropLSTMCell(keras.layers.LSTMCell):
    """An LSTMCell with weight dropout, usable inside `keras.layers.RNN`.

    Keras' RNN asks its cell for the recurrent dropout mask once before the time loop and resets
    it after; this cell uses those two hooks to draw one dropped kernel per batch.
    """

    def __init__(self, units, weight_dropout=0.5, **kwargs):
        if kwargs.get("dropout") or kwargs.get("recurrent_dropout"):
            raise ValueError("WeightDropLSTMCell regularizes with weight_dropout; use locked "
                             "dropout layers around the RNN instead of dropout/recurrent_dropout.")
        for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            kwargs.setdefault(name, _torch_like_init(units))
        kwargs.setdefault("unit_forget_bias", False)
        super().__init__(units, **kwargs)
        self.weight_dropout = weight_dropout
        self._batch_recurrent_kernel = None

    def dropped_recurrent_kernel(self, seed=None):
        """The recurrent kernel for one training batch; `seed` [2] int, else the cell's own."""
        if seed is None:
            seed = tf.cast(self.seed_generator.next(), tf.int32)
        return drop_connect(self.recurrent_kernel, self.weight_dropout, seed)

    def get_recurrent_dropout_mask(self, step_input):
        if self._batch_recurrent_kernel is None and self.weight_dropout > 0:
            self._batch_recurrent_kernel = self.dropped_recurrent_kernel()
        return None

    def reset_recurrent_dropout_mask(self):
        self._batch_recurrent_kernel = None

    def call(self, inputs, states, training=False):
        recurrent_kernel = self.recurrent_kernel
        if training and self._batch_recurrent_kernel is not None:
            recurrent_kernel = self._batch_recurrent_kernel
        projected = tf.matmul(inputs, self.kernel) + self.bias
        h, c, _ = lstm_step(projected, states[0], states[1], recurrent_kernel)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "weight_dropout": self.weight_dropout}


class WeightDropLSTM(keras.layers.Layer):
    """A whole-sequence LSTM layer with weight dropout on the fastest kernel (see lstm_kernel).

    Its weights live in a `WeightDropLSTMCell`, laid out as Keras' LSTM lays them out.
    `call(inputs, (h, c), training, seed)` returns (outputs, (h, c)); `seed` ([2] int) draws
    this batch's mask and is required when training with weight_dropout > 0.
    `backprop_if`: None, or a callable returning a scalar bool tensor; while it is False, the
    layer's gradients are zeros and its backward pass is skipped (gradual unfreezing freezes
    layers this way without tracing the train step anew: see trainer/fine_tuning/recipe.py).
    """

    def __init__(self, units, weight_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.weight_dropout = weight_dropout
        self.cell = WeightDropLSTMCell(units, weight_dropout, name="cell")
        self.backprop_if = None
        if gpu_available():
            # cuDNN, the fastest kernel on a GPU, cannot run inside XLA: Keras'
            # compile(jit_compile="auto") then leaves XLA off, as for keras.layers.LSTM.
            self.supports_jit = False

    def build(self, input_shape):
        self.cell.build((input_shape[0], input_shape[-1]))

    def call(self, inputs, initial_state, training=False, seed=None):
        recurrent_kernel = self.cell.recurrent_kernel
        if training and self.weight_dropout > 0:
            if seed is None:
                raise ValueError(f"{self.name}: training with weight_dropout needs a mask seed.")
            recurrent_kernel = self.cell.dropped_recurrent_kernel(seed)
        backprop = self.backprop_if() if training and self.backprop_if else None
        outputs, h, c = lstm_sequence(inputs, initial_state[0], initial_state[1], self.cell.kernel,
                                      recurrent_kernel, self.cell.bias, backprop=backprop)
        return outputs, (h, c)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "weight_dropout": self.weight_dropout}
