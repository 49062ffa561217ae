"""fastai's Adam and one-cycle, checked against NumPy transcriptions of fastai's code."""
import math

import keras
import numpy as np
import tensorflow as tf

from trainer.optimizer import FastaiAdam, fastai_adam
from trainer.schedules import CombinedCosine, one_cycle


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
    """Weight decay everywhere but biases and BatchNorm's gamma/beta; clipping at 0.25; loss
    scaling under mixed_float16. A zero gradient leaves Adam's step at zero: only decay moves."""
    variables = [tf.Variable([1.0, 2.0], name=name) for name in ("kernel", "bias", "gamma")]
    fastai_adam(0.1, 0.9, weight_decay=0.5).apply_gradients(
        [(tf.zeros([2]), v) for v in variables])
    np.testing.assert_allclose(variables[0].numpy(), [0.95, 1.9])
    np.testing.assert_array_equal(variables[1].numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(variables[2].numpy(), [1.0, 2.0])
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
