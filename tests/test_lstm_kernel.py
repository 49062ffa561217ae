"""The fused LSTM kernel: outputs and gradients equal autodiff of the plain equations."""
import os

import numpy as np
import pytest
import tensorflow as tf

from lstm_reference import reference_lstm
from trainer.models.lstm_kernel import batch_shards, lstm_sequence
from trainer.runtime.strategies import make_strategy


def _case(batch, time, inputs, units, seed):
    rng = np.random.default_rng(seed)
    tensor = lambda *shape, scale=0.4: tf.constant(rng.uniform(-scale, scale, shape), tf.float32)
    return (tensor(batch, time, inputs, scale=1.0), tensor(batch, units), tensor(batch, units),
            tensor(inputs, 4 * units), tensor(units, 4 * units), tensor(4 * units))


def _outputs_and_gradients(fn, case):
    with tf.GradientTape() as tape:
        tape.watch(case)
        outputs, h, c = fn(*case)
        # Distinct weights on every output, so that each one's gradient is checked.
        weights = tf.random.stateless_normal(tf.shape(outputs), [7, 7])
        loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(3.0 * h) + tf.reduce_sum(c * c)
    return (outputs, h, c), tape.gradient(loss, case)


def _assert_like_the_reference(results, case):
    """results: ((outputs, h, c), gradients) of a kernel on `case`."""
    (out, h, c), grads = results
    (ref_out, ref_h, ref_c), ref_grads = _outputs_and_gradients(reference_lstm, case)
    for a, b in [(out, ref_out), (h, ref_h), (c, ref_c)]:
        np.testing.assert_allclose(a, b, atol=1e-6)
    names = ["inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"]
    for name, a, b in zip(names, grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("batch,time,inputs,units", [(1, 1, 3, 2), (3, 7, 5, 4), (4, 20, 6, 9)])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_kernel_matches_autodiff_of_the_reference(batch, time, inputs, units, compiled):
    case = _case(batch, time, inputs, units, seed=batch * time)
    fused = lambda *a: lstm_sequence(*a, implementation="fused")
    if compiled:  # inside a jit_compile'd step, as on TPU
        fused = tf.function(fused, jit_compile=True)
    _assert_like_the_reference(_outputs_and_gradients(fused, case), case)


@pytest.mark.parametrize("shards", [2, 3])
def test_batch_slices_run_side_by_side_give_the_whole_batch_outputs_and_gradients(shards):
    case = _case(6, 9, 5, 4, seed=shards)
    gate = tf.Variable(True)
    sliced = tf.function(lambda *a: _outputs_and_gradients(lambda *b: lstm_sequence(
        *b, implementation="fused", shards=shards, backprop=gate.read_value()), a))
    _assert_like_the_reference(sliced(*case), case)
    gate.assign(False)
    assert all(not np.any(g.numpy()) for g in sliced(*case)[1])
    ops = {op.type for op in sliced.get_concrete_function(*case).graph.get_operations()}
    assert "Split" in ops  # the batch was in fact cut


@pytest.mark.parametrize("batch", [5, 1])  # uneven slices; a slice of no rows
def test_a_batch_of_unknown_size_is_cut_at_run_time(batch):
    case = _case(batch, 4, 3, 2, seed=batch)
    # The states' batch is known, the inputs' is not: as in the LM's evaluation on replicas.
    signature = [tf.TensorSpec([None, *t.shape[1:]]) if k == 0 else tf.TensorSpec(t.shape)
                 for k, t in enumerate(case)]
    run = tf.function(lambda *a: _outputs_and_gradients(
        lambda *b: lstm_sequence(*b, implementation="fused", shards=2), a),
        input_signature=signature)
    _assert_like_the_reference(run(*case), case)
    ops = {op.type for op in run.get_concrete_function().graph.get_operations()}
    assert "SplitV" in ops


def test_the_batch_is_cut_evenly_once_per_core_into_slices_of_16_rows_or_more():
    assert batch_shards(32, cores=2) == 2
    assert batch_shards(31, cores=2) == 1  # uneven slices would be compiled twice
    assert batch_shards(24, cores=2) == 1  # 12 rows a slice are too few
    assert batch_shards(64, cores=8) == 4
    assert batch_shards(48, cores=8) == 3
    assert batch_shards(None, cores=2) == 2  # unknown: cut at run time, see below
    assert batch_shards(256, cores=1) == 1


def test_the_replicas_of_a_strategy_on_one_machine_share_its_cores():
    cores = len(os.sched_getaffinity(0))
    assert batch_shards(None) == cores
    with make_strategy("mirrored", cpu_replicas=2).scope():
        assert batch_shards(None) == max(1, cores // 2)


def test_gradient_reaches_raw_kernel_through_a_dropped_one():
    x, h0, c0, kernel, raw, bias = _case(2, 6, 3, 4, seed=1)
    mask = tf.cast(tf.random.stateless_uniform(raw.shape, [1, 2]) > 0.5, tf.float32) * 2
    def loss(fn):
        with tf.GradientTape() as tape:
            tape.watch(raw)
            outputs = fn(x, h0, c0, kernel, raw * mask, bias)[0]
            value = tf.reduce_sum(outputs ** 2)
        return tape.gradient(value, raw)
    fused = loss(lambda *a: lstm_sequence(*a, implementation="fused"))
    np.testing.assert_allclose(fused, loss(reference_lstm), rtol=1e-5, atol=1e-6)
    assert (fused.numpy()[mask.numpy() == 0] == 0).all()  # dropped weights get no gradient


def test_a_closed_backprop_gate_gives_zero_gradients_and_an_open_one_the_full_gradients():
    case = _case(3, 7, 5, 4, seed=3)
    gate = tf.Variable(True)

    @tf.function  # one trace, both states of the gate
    def run(*case):
        return _outputs_and_gradients(
            lambda *a: lstm_sequence(*a, implementation="fused", backprop=gate.read_value()), case)

    (out, _, _), grads = run(*case)
    (ref_out, _, _), ref_grads = _outputs_and_gradients(reference_lstm, case)
    np.testing.assert_allclose(out, ref_out, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    gate.assign(False)
    (closed_out, _, _), closed_grads = run(*case)
    np.testing.assert_allclose(closed_out, ref_out, atol=1e-6)  # the forward pass is the same
    assert all(not np.any(g.numpy()) for g in closed_grads)
    assert run.experimental_get_tracing_count() == 1


def test_cudnns_backward_pass_is_skipped_while_the_gate_is_closed(monkeypatch):
    """A frozen layer on a GPU costs no backward pass: a stand-in for cuDNN's LSTM (the fused
    kernel, counting its backward passes) runs backward only while the gate is open."""
    from trainer.models import lstm_kernel
    backward_passes = tf.Variable(0)

    def cudnn_stand_in(*args):
        @tf.custom_gradient
        def counted(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                outputs = lstm_kernel._fused_lstm(*args)

            def gradient(*dys):
                with tf.control_dependencies([backward_passes.assign_add(1)]):
                    return tape.gradient(outputs, args, output_gradients=dys,
                                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return outputs, gradient
        return counted(*[tf.convert_to_tensor(a) for a in args])
    monkeypatch.setattr(lstm_kernel, "_cudnn_lstm", cudnn_stand_in)
    case = _case(3, 7, 5, 4, seed=3)
    gate = tf.Variable(True)
    run = tf.function(lambda *case: _outputs_and_gradients(
        lambda *a: lstm_sequence(*a, implementation="cudnn", backprop=gate.read_value()), case))
    _, grads = run(*case)
    _, ref_grads = _outputs_and_gradients(reference_lstm, case)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert int(backward_passes.numpy()) == 1
    gate.assign(False)
    _, closed = run(*case)
    assert all(not np.any(g.numpy()) for g in closed)
    assert int(backward_passes.numpy()) == 1  # not run again
