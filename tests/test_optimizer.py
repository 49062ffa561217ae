"""fastai's Adam and one-cycle, checked against NumPy transcriptions of fastai's code."""
import math

import keras
import numpy as np
import tensorflow as tf

from trainer.optim.optimizer import FastaiAdam, fastai_adam
from trainer.optim.schedules import CombinedCosine, one_cycle, staged


def test_fastai_adam_matches_fastai_step_by_step():
    lr, wd, sqr_mom, eps = 0.1, 0.01, 0.99, 1e-5
    moms = lambda step: 0.8 - 0.02 * tf.cast(step, tf.float32)  # a moving beta_1
    weight = tf.Variable([[0.5, -1.0], [2.0, 0.1]])
    bias = tf.Variable([0.3, -0.2], name="bias")
    adam = FastaiAdam(lr, moms, sqr_mom, eps, wd)
    adam.exclude_from_weight_decay(var_names=["bias"])
    p = {"w": weight.numpy().astype(np.float64), "b": bias.numpy().astype(np.float64)}
    avg = {k: np.zeros_like(v) for k, v in p.items()}
    sqr = {k: np.zeros_like(v) for k, v in p.items()}
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        grads = {"w": rng.normal(size=(2, 2)), "b": rng.normal(size=2)}
        adam.apply_gradients([(tf.constant(grads["w"], tf.float32), weight),
                              (tf.constant(grads["b"], tf.float32), bias)])
        mom = 0.8 - 0.02 * (step - 1)
        for k in p:  # fastai: weight_decay, average_grad(dampening), average_sqr_grad, adam_step
            if k == "w":
                p[k] *= 1 - lr * wd
            avg[k] = mom * avg[k] + (1 - mom) * grads[k]
            sqr[k] = sqr_mom * sqr[k] + (1 - sqr_mom) * grads[k] ** 2
            debias1, debias2 = 1 - mom ** step, 1 - sqr_mom ** step
            p[k] -= lr / debias1 * avg[k] / (np.sqrt(sqr[k] / debias2) + eps)
        np.testing.assert_allclose(weight.numpy(), p["w"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(bias.numpy(), p["b"], rtol=1e-5, atol=1e-7)


def test_a_variable_that_joins_late_takes_fastais_first_step():
    """fastai counts Adam's steps per parameter: a group unfrozen after k steps debiases its
    first step as a first step (with the optimizer's global count it would be ~0.8x here, and
    2-3x with one-cycle's moving beta_1)."""
    lr, eps = 0.1, 1e-5
    early, late = tf.Variable([1.0, -1.0]), tf.Variable([2.0, 3.0])
    adam = FastaiAdam(lr, 0.7, 0.99, eps, weight_decay=None)
    adam.build([early, late])
    for _ in range(5):
        adam.apply_gradients([(tf.constant([0.5, -0.2]), early)])
    first_step = lambda g: lr * g / (np.abs(g) + eps)  # both moments debias to g and g^2
    g = np.array([0.3, -4.0], np.float32)
    before = late.numpy()
    adam.apply_gradients([(tf.constant([0.1, 0.1]), early), (tf.constant(g), late)])
    np.testing.assert_allclose(before - late.numpy(), first_step(g), rtol=1e-5)
    adam.clear_state()  # fastai's freeze_to: every variable starts over
    before = early.numpy()
    adam.apply_gradients([(tf.constant(g), early)])
    np.testing.assert_allclose(before - early.numpy(), first_step(g), rtol=1e-5)


def test_a_frozen_group_has_no_gradient_and_the_clip_sees_the_trained_ones_only():
    """fastai clips the norm of the gradients that exist: a frozen group (here a LSTM kernel
    cuDNN computed a gradient for anyway, and an embedding's row gradient) stays put and does
    not shrink the trained group's step. With a large epsilon Adam's first step is linear in
    the gradient, so the clip shows: the trained gradient [3, 4] (norm 5) clipped to norm 1."""
    lr, eps = 1.0, 1e3
    frozen, table, trained = (keras.Variable(value, name=name) for value, name in (
        ([1.0], "lstm_kernel"), (np.zeros([3, 2]), "embedding"), ([0.0, 0.0], "head")))
    adam = FastaiAdam(lr, 0.9, 0.99, eps, weight_decay=None, global_clipnorm=1.0)
    adam.build([frozen, table, trained])
    off = lambda: tf.constant(False)
    adam.update_if = {frozen.path: off, table.path: off}
    rows = tf.IndexedSlices(100 * tf.ones([2, 2]), tf.constant([0, 2]), tf.constant([3, 2]))
    adam.apply_gradients([(tf.constant([100.0]), frozen), (rows, table),
                          (tf.constant([3.0, 4.0]), trained)])
    assert frozen.numpy().tolist() == [1.0] and not table.numpy().any()
    clipped = np.array([0.6, 0.8])
    np.testing.assert_allclose(-trained.numpy(), lr * clipped / (clipped + eps), rtol=1e-4)


def test_repeated_embedding_rows_step_as_one_dense_gradient():
    """fastai (PyTorch) sums a repeated token's gradient before Adam squares it."""
    slices = tf.IndexedSlices(tf.ones([3, 2]), tf.constant([0, 0, 1]), tf.constant([3, 2]))
    updated = []
    for gradient in (slices, tf.convert_to_tensor(slices)):
        table = tf.Variable(tf.zeros([3, 2]))
        FastaiAdam(0.1, 0.9, weight_decay=None).apply_gradients([(gradient, table)])
        updated.append(table.numpy())
    np.testing.assert_array_equal(updated[0], updated[1])


def test_the_factory_builds_fastais_settings():
    """Weight decay everywhere but BatchNorm's gamma/beta and the biases of Dense layers and the
    decoder (fastai decays nn.LSTM's biases); clipping at 0.25; loss scaling under
    mixed_float16. A zero gradient leaves Adam's step at zero: only decay moves."""
    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(2, return_sequences=True),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    lstm, _, dense = model.layers
    decayed = {v.path for v in lstm.weights} | {dense.kernel.path}
    assert any(v.path.endswith("cell/bias") for v in lstm.weights)
    before = [v.numpy() for v in model.trainable_variables]
    fastai_adam(0.1, 0.9, weight_decay=0.5).apply_gradients(
        [(tf.zeros_like(v), v) for v in model.trainable_variables])
    for variable, value in zip(model.trainable_variables, before):
        expected = value * 0.95 if variable.path in decayed else value
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=variable.path)
    assert isinstance(fastai_adam(0.1, 0.9, mixed_precision="mixed_float16"),
                      keras.optimizers.LossScaleOptimizer)
    # With no momentum Adam's step is g / (|g| + eps): eps = 1 shows the gradient's scale.
    clipped = tf.Variable([0.0, 0.0])
    fastai_adam(1.0, 0.0, beta_2=0.0, epsilon=1.0, weight_decay=0.0).apply_gradients(
        [(tf.constant([30.0, 40.0]), clipped)])  # global norm 50, clipped to 0.25
    np.testing.assert_allclose(clipped.numpy(), [-0.15 / 1.15, -0.2 / 1.2], rtol=1e-5)


def test_one_cycle_follows_fastai_fit_one_cycle():
    lr, mom = one_cycle(total_steps=100, max_lr=1e-2, div=25, div_final=1e5, pct_start=0.25)
    at = lambda schedule, step: float(schedule(step))
    assert math.isclose(at(lr, 0), 1e-2 / 25, rel_tol=1e-5)
    assert math.isclose(at(lr, 25), 1e-2, rel_tol=1e-5)
    assert math.isclose(at(lr, 100), 1e-2 / 1e5, rel_tol=1e-3)
    assert at(lr, 10) < at(lr, 20) < at(lr, 25) > at(lr, 50) > at(lr, 90)
    assert math.isclose(at(mom, 0), 0.8, rel_tol=1e-6)
    assert math.isclose(at(mom, 25), 0.7, rel_tol=1e-6)
    assert math.isclose(at(mom, 100), 0.8, rel_tol=1e-6)
    # Halfway through the warm-up, cosine is exactly between start and peak.
    assert math.isclose(at(CombinedCosine(100, 0.5, 0.0, 1.0, 0.0), 25), 0.5, rel_tol=1e-6)


def test_staged_schedules_start_afresh_at_each_stage():
    lr, mom = staged(one_cycle, [(20, 1e-2), (40, 1e-3)])
    at = lambda schedule, step: float(schedule(step))
    assert math.isclose(at(lr, 0), 1e-2 / 25, rel_tol=1e-5)
    assert math.isclose(at(lr, 5), 1e-2, rel_tol=1e-5)
    assert math.isclose(at(lr, 20), 1e-3 / 25, rel_tol=1e-5)  # the second one-cycle begins
    assert math.isclose(at(lr, 30), 1e-3, rel_tol=1e-5)
    assert math.isclose(at(mom, 19), float(one_cycle(20)[1](19)), rel_tol=1e-6)
    assert math.isclose(at(mom, 20), 0.8, rel_tol=1e-6)
    assert math.isclose(at(mom, 30), 0.7, rel_tol=1e-6)
