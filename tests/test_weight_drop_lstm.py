"""Weight drop: one mask per batch, per replica and step, off at inference, never destructive."""
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from lstm_reference import reference_lstm
from trainer.lm.task import mask_seed
from trainer.models import lstm_kernel
from trainer.models.lstm_kernel import select_implementation
from trainer.models.weight_drop_lstm import WeightDropLSTM, WeightDropLSTMCell, drop_connect

B, T, D, H = 3, 9, 5, 6


def _reference_lstm(x, kernel, recurrent_kernel, bias):
    zeros = tf.zeros([x.shape[0], recurrent_kernel.shape[0]])
    return reference_lstm(x, zeros, zeros, kernel, recurrent_kernel, bias)[0]


def test_layer_uses_one_dropped_kernel_for_all_time_steps():
    layer = WeightDropLSTM(H, weight_dropout=0.5)
    x = tf.random.normal([B, T, D])
    zeros = (tf.zeros([B, H]), tf.zeros([B, H]))
    seed = tf.constant([4, 2])
    out, _ = layer(x, zeros, training=True, seed=seed)
    cell = layer.cell
    dropped = drop_connect(cell.recurrent_kernel, 0.5, seed)
    np.testing.assert_allclose(out, _reference_lstm(x, cell.kernel, dropped, cell.bias),
                               atol=1e-6)
    # The mask really matters: the raw kernel gives other outputs.
    raw = _reference_lstm(x, cell.kernel, cell.recurrent_kernel, cell.bias)
    assert np.abs(out - raw).max() > 1e-3


def test_seed_api_cell_inside_keras_rnn_draws_one_mask_per_batch():
    cell = WeightDropLSTMCell(H, weight_dropout=0.5)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x = tf.random.normal([B, T, D])
    rnn(x)  # build
    state = cell.seed_generator.state.numpy()
    out = rnn(x, training=True)
    cell.seed_generator.state.assign(state)  # replay the draw this batch used
    dropped = cell.dropped_recurrent_kernel()
    np.testing.assert_allclose(out, _reference_lstm(x, cell.kernel, dropped, cell.bias),
                               atol=1e-6)
    np.testing.assert_allclose(  # inference: the raw kernel
        rnn(x, training=False),
        _reference_lstm(x, cell.kernel, cell.recurrent_kernel, cell.bias), atol=1e-6)
    assert not np.array_equal(rnn(x, training=True), rnn(x, training=True))  # new batch, new mask


def test_seed_api_cell_trains_with_one_mask_per_batch_and_keeps_dropped_weights():
    keras.utils.set_random_seed(0)
    cell = WeightDropLSTMCell(H, weight_dropout=0.5)
    model = keras.Sequential([keras.Input((T, D)), keras.layers.RNN(cell), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")  # a compiled (graph) train step, as users fit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, T, D)).astype(np.float32)
    y = x[:, -3:, :1].sum(1)
    kept = []
    for _ in range(2):
        before = cell.recurrent_kernel.numpy()
        model.train_on_batch(x, y)
        moved = cell.recurrent_kernel.numpy() != before
        # One mask for the whole batch: a dropped weight gets no gradient at any time step, and
        # it keeps its value (a mask per time step would leave almost none unmoved; a
        # destructive drop would zero them).
        assert 0.35 < moved.mean() < 0.65
        kept.append(moved)
    assert not np.array_equal(*kept)  # every batch draws its own mask
    losses = model.fit(x, y, epochs=40, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_masks_differ_across_steps_and_replicas_and_repeat_for_the_same_triple():
    raw = tf.ones([40, 80])
    def mask(step, replica):
        return drop_connect(raw, 0.5, mask_seed(7, step, replica)).numpy() > 0
    assert not np.array_equal(mask(1, 0), mask(2, 0))
    assert not np.array_equal(mask(1, 0), mask(1, 1))
    np.testing.assert_array_equal(mask(3, 1), mask(3, 1))
    assert abs(mask(1, 0).mean() - 0.5) < 0.05


def test_dropped_kernel_is_unbiased():
    raw = tf.random.normal([30, 40])
    draws = tf.stack([drop_connect(raw, 0.3, tf.constant([i, 9])) for i in range(400)])
    ratio = tf.reduce_mean(draws, 0) / raw
    assert abs(float(tf.reduce_mean(ratio)) - 1.0) < 0.01
    # Each entry: the mean of 400 scaled Bernoullis, std sqrt(0.3/0.7/400) ~ 0.033.
    assert float(tf.reduce_max(tf.abs(ratio - 1.0))) < 0.2


def test_no_weight_drop_at_inference():
    layer = WeightDropLSTM(H, weight_dropout=0.9)
    x = tf.random.normal([B, T, D])
    zeros = (tf.zeros([B, H]), tf.zeros([B, H]))
    out, _ = layer(x, zeros, training=False)
    cell = layer.cell
    np.testing.assert_allclose(
        out, _reference_lstm(x, cell.kernel, cell.recurrent_kernel, cell.bias), atol=1e-6)


def test_kernel_selection():
    assert select_implementation(has_gpu=True, under_xla=False) == "cudnn"
    assert select_implementation(has_gpu=True, under_xla=True) == "fused"
    assert select_implementation(has_gpu=False, under_xla=False) == "fused"


def test_gpu_path_hands_the_dropped_kernel_to_keras_cudnn_lstm():
    """With a GPU "visible", the layer calls Keras' cuDNN LSTM with the dropped kernel."""
    layer = WeightDropLSTM(H, weight_dropout=0.5)
    x = tf.random.normal([B, T, D])
    zeros = (tf.zeros([B, H]), tf.zeros([B, H]))
    layer(x, zeros)  # build
    seen = []

    def fake_cudnn(*args, recurrent_kernel, **kwargs):
        seen.append(tf.convert_to_tensor(recurrent_kernel))
        raise NotImplementedError  # as Keras does when no cuDNN op exists: falls back to fused

    with mock.patch.object(lstm_kernel, "gpu_available", return_value=True), \
            mock.patch.object(lstm_kernel, "backend_lstm", side_effect=fake_cudnn):
        seed = tf.constant([1, 1])
        out, _ = layer(x, zeros, training=True, seed=seed)
        layer(x, zeros, training=False)
        tf.function(lambda: layer(x, zeros, training=True, seed=seed), jit_compile=True)()
    dropped = drop_connect(layer.cell.recurrent_kernel, 0.5, seed)
    assert len(seen) == 2  # training and inference; the XLA call chose the fused kernel
    np.testing.assert_array_equal(seen[0], dropped)
    np.testing.assert_array_equal(seen[1], layer.cell.recurrent_kernel)
    np.testing.assert_allclose(out, _reference_lstm(x, layer.cell.kernel, dropped,
                                                    layer.cell.bias), atol=1e-6)
