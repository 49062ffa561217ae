"""The train step: non-destructive weight drop, carried states, XLA, and its NaN guard."""
import functools
import numpy as np
import pytest
import tensorflow as tf

from trainer.lm.task import LanguageModelTask
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optim.optimizer import FastaiAdam

B, T, V = 4, 10, 40


def _task(lr=1e-3, jit_compile=False, **model_kw):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = AWDLSTMLanguageModel(V, emb_size=8, hidden_size=16, **model_kw)
        model(tf.zeros([B, T], tf.int32))
        adam = FastaiAdam(lr, 0.7, weight_decay=0.0, gradients_reduced=True)
        adam.build(model.trainable_variables)
    return LanguageModelTask(model, adam, strategy, B, seed=3, jit_compile=jit_compile)


def _batches(task, count=3):
    ids = tf.random.stateless_uniform([count, B, T + 1], [1, 1], 0, V, tf.int32)
    data = tf.data.Dataset.from_tensor_slices((ids[:, :, :-1], ids[:, :, 1:]))
    return iter(task.strategy.experimental_distribute_dataset(data))


def test_weight_drop_never_changes_the_stored_kernel():
    task = _task(lr=0.0, weight_p=0.5)
    kernels = [rnn.cell.recurrent_kernel for rnn in task.model.encoder.rnns]
    before = [k.numpy().copy() for k in kernels]
    loss, _ = task.train_loop(_batches(task), tf.constant(3))
    assert np.isfinite(float(loss)) and int(task.optimizer.iterations) == 3
    for kernel, original in zip(kernels, before):
        np.testing.assert_array_equal(kernel.numpy(), original)


def test_states_are_carried_and_reset():
    task = _task()
    task.train_loop(_batches(task, 1), tf.constant(1))
    h_last = task.states[-1][0].numpy()
    assert np.abs(h_last).max() > 0
    task.reset_states()
    assert all(np.abs(v.numpy()).max() == 0 for pair in task.states for v in pair)


NO_DROPOUT = dict(output_p=0, hidden_p=0, input_p=0, embed_p=0, weight_p=0)


@pytest.mark.heavy
def test_xla_compiled_step_matches_the_plain_step():
    # Dropout off: XLA draws stateless random numbers its own way, so masks differ by design.
    plain, compiled = _task(**NO_DROPOUT), _task(jit_compile=True, **NO_DROPOUT)
    compiled.model.set_weights(plain.model.get_weights())
    loss_plain, _ = plain.train_loop(_batches(plain), tf.constant(3))
    loss_xla, _ = compiled.train_loop(_batches(compiled), tf.constant(3))
    inputs, targets = next(_batches(compiled))
    states = [(h[:B], c[:B]) for h, c in compiled.states]
    assert "HloModule" in compiled._gradients.experimental_get_compiler_ir(
        inputs, targets, states, tf.constant([1, 2], tf.int64))(stage="hlo")
    np.testing.assert_allclose(float(loss_xla), float(loss_plain), rtol=1e-5)
    for a, b in zip(plain.model.get_weights(), compiled.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.heavy
def test_xla_step_with_all_regularizers_is_repeatable():
    def run():
        task = _task(jit_compile=True, weight_p=0.5)
        task.model.set_weights(reference)
        loss, _ = task.train_loop(_batches(task), tf.constant(2))
        return float(loss), task.model.get_weights()
    reference = _task().model.get_weights()
    (loss_a, weights_a), (loss_b, weights_b) = run(), run()
    assert np.isfinite(loss_a) and loss_a == loss_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_without_saving(tmp_path):
    from data_pipeline.build_settings import BuildSettings
    from trainer.lm.divergence import DivergenceError
    from trainer.lm.training import train_lm
    from trainer.optim.schedules import one_cycle
    from conftest import write_corpus
    corpus = write_corpus(tmp_path / "c.txt", 400)
    with pytest.raises(DivergenceError, match=r"at step (\d+); stopped without saving"):
        train_lm(str(tmp_path / "model"), str(tmp_path / "data"), build_input=corpus,
                 batch_size=4, bptt=8, steps_per_loop=1, checkpoint_every_steps=1,
                 schedule=functools.partial(one_cycle, max_lr=1e30),
                 build_settings=functools.partial(BuildSettings, vocab_size=100),
                 model=functools.partial(AWDLSTMLanguageModel, emb_size=8, hidden_size=8))
    saved = tf.train.get_checkpoint_state(str(tmp_path / "model"))
    steps = [int(p.rsplit("-", 1)[1]) for p in saved.all_model_checkpoint_paths]
    assert steps and max(steps) == len(steps)  # one per finite step, none after the failure
