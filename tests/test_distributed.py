"""Data parallelism on logical CPU devices (conftest makes 4): exact, with per-replica masks."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.lm_dataset import lm_dataset, worker_lm_dataset
from trainer.lm.task import LanguageModelTask
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optim.optimizer import FastaiAdam
from trainer.runtime.strategies import make_strategy
from conftest import train_tiny_lm

ROWS, T, V = 8, 10, 40  # ROWS: the global batch
NO_DROPOUT = dict(output_p=0, hidden_p=0, input_p=0, embed_p=0, weight_p=0)


def _task(strategy, lr=1e-2, jit_compile=False, **model_kw):
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        model = AWDLSTMLanguageModel(V, emb_size=8, hidden_size=12, **model_kw)
        per_replica = ROWS // strategy.num_replicas_in_sync
        model(tf.zeros([per_replica, T], tf.int32))
        adam = FastaiAdam(lr, 0.7, weight_decay=0.01, gradients_reduced=True,
                          global_clipnorm=0.05)  # small enough to clip: clipping is compared too
        adam.build(model.trainable_variables)
    return LanguageModelTask(model, adam, strategy, per_replica, seed=5, jit_compile=jit_compile)


def _global_batches(task, ids):
    data = tf.data.Dataset.from_tensor_slices((ids[:, :, :-1], ids[:, :, 1:]))
    return iter(task.strategy.experimental_distribute_dataset(data))  # rows split in order


def _mirrored(replicas):
    return make_strategy("mirrored", devices=[f"/cpu:{i}" for i in range(replicas)])


@pytest.mark.parametrize("replicas", [2, pytest.param(4, marks=pytest.mark.heavy)])
def test_mirrored_steps_equal_one_device_on_the_global_batch(replicas):
    ids = tf.random.stateless_uniform([2, ROWS, T + 1], [3, 4], 0, V, tf.int32)
    single = _task(make_strategy("one_device"), **NO_DROPOUT)
    mirrored = _task(_mirrored(replicas), **NO_DROPOUT)
    mirrored.model.set_weights(single.model.get_weights())
    single.train_loop(_global_batches(single, ids), tf.constant(2))
    mirrored.train_loop(_global_batches(mirrored, ids), tf.constant(2))
    for a, b in zip(single.model.get_weights(), mirrored.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for one, many in zip(single.states, mirrored.states):  # every replica's carried rows
        for a, b in zip(one, many):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def _reference_cross_entropy(model, ids, carry=True):
    """Per-token cross entropy of `ids` [batches, ROWS, T+1], one plain model call per batch on
    all rows, states carried from zero (what every replica's share must add up to)."""
    states, total = model.encoder.initial_states(ROWS), []
    for batch in ids:
        logits, new_states, _, _ = model(batch[:, :-1], states if carry else
                                         model.encoder.initial_states(ROWS), training=False)
        states = new_states
        total.append(tf.keras.losses.sparse_categorical_crossentropy(
            batch[:, 1:], logits, from_logits=True).numpy())
    return float(np.mean(total))


@pytest.mark.parametrize("replicas", [1, 2])
def test_evaluation_loops_in_graph_and_equals_a_plain_loop(replicas):
    ids = tf.random.stateless_uniform([7, ROWS, T + 1], [5, 4], 0, V, tf.int32)
    task = _task(_mirrored(replicas))
    # Larger weights than at initialisation, so the carried states change the loss clearly.
    task.model.set_weights([w * 5 for w in task.model.get_weights()])
    data = tf.data.Dataset.from_tensor_slices((ids[:, :, :-1], ids[:, :, 1:]))
    distributed = task.strategy.experimental_distribute_dataset(data)
    expected = _reference_cross_entropy(task.model, ids)
    assert abs(expected - _reference_cross_entropy(task.model, ids, carry=False)) > 1e-2
    # 7 batches in calls of 3, 3 and 1; a second evaluation starts again from zero states.
    assert task.evaluate(distributed, 7, steps_per_loop=3) == pytest.approx(expected, rel=1e-5)
    assert task.evaluate(distributed, 7, steps_per_loop=3) == pytest.approx(expected, rel=1e-5)
    assert task.eval_loop.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("weight_p, differ", [(0.5, True), (0.0, False)])
def test_each_replica_draws_its_own_weight_drop_mask(weight_p, differ):
    task = _task(_mirrored(2), lr=0.0, **{**NO_DROPOUT, "weight_p": weight_p})
    same_rows = tf.random.stateless_uniform([1, ROWS // 2, T + 1], [1, 2], 0, V, tf.int32)
    task.train_loop(_global_batches(task, tf.tile(same_rows, [1, 2, 1])), tf.constant(1))
    h = task.states[0][0].numpy()  # replica 0's rows, then replica 1's: same data
    assert (np.abs(h[:ROWS // 2] - h[ROWS // 2:]).max() > 1e-4) == differ


@pytest.mark.heavy
def test_jit_compiled_step_under_mirrored():
    ids = tf.random.stateless_uniform([2, ROWS, T + 1], [3, 4], 0, V, tf.int32)
    task = _task(_mirrored(2), jit_compile=True)
    loss, _ = task.train_loop(_global_batches(task, ids), tf.constant(2))
    assert np.isfinite(float(loss))
    for variable in task.model.trainable_variables:  # the copies stay in sync
        first, second = task.strategy.experimental_local_results(variable.value)
        np.testing.assert_array_equal(first, second)


def test_worker_dataset_gives_each_replica_its_own_stream(unique_manifest):
    strategy = _mirrored(2)
    distributed = strategy.distribute_datasets_from_function(
        lambda ctx: worker_lm_dataset(unique_manifest, "train", 3, 5, ctx, start_batch=1))
    for replica in range(2):
        expected = list(lm_dataset(unique_manifest, "train", 3, 5,
                                   tf.distribute.InputContext(2, replica, 2), start_batch=1))
        got = [strategy.experimental_local_results(x)[replica] for x, _ in distributed]
        assert len(got) == len(expected) > 2
        for a, (b, _) in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.heavy
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_are_finite_with_float32_variables(policy):
    from trainer.optim.optimizer import fastai_adam
    from trainer.optim.schedules import one_cycle
    ids = tf.random.stateless_uniform([3, ROWS, T + 1], [3, 4], 0, V, tf.int32)
    strategy = _mirrored(2)
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = AWDLSTMLanguageModel(V, emb_size=8, hidden_size=12)
            model(tf.zeros([ROWS // 2, T], tf.int32))
            adam = fastai_adam(*one_cycle(10, max_lr=1e-2), mixed_precision=policy,
                               gradients_reduced=True)
            adam.build(model.trainable_variables)
        task = LanguageModelTask(model, adam, strategy, ROWS // 2)
        before = [w.copy() for w in model.get_weights()]
        logits = model(ids[0, :, :-1], training=False)[0]
        loss, norm = task.train_loop(_global_batches(task, ids), tf.constant(3))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}[policy]
    assert np.isfinite(float(loss)) and np.isfinite(float(norm))
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
    assert task.states[0][0].dtype == tf.float32


def _fitted_tagger(strategy, ids, tags):
    """Two Keras-fit steps of a tagger (no BatchNorm: its statistics are per replica)."""
    from trainer.optim.optimizer import fastai_adam
    from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder
    from trainer.models.ulmfit_tagger import tagger_head
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        _, encoder, _, _ = tf2_ulmfit_encoder(vocab_size=V, emb_size=8, hidden_size=12,
                                              **NO_DROPOUT)
        model = tagger_head(encoder, 3)
        # beta 0 and eps 1: the step is g / (|g| + 1), so it shows the clipped gradient's scale.
        model.compile(fastai_adam(0.1, 0.0, beta_2=0.0, epsilon=1.0, clip_norm=0.05),
                      "sparse_categorical_crossentropy")
    model.fit(ids, tags, batch_size=ROWS, epochs=1, shuffle=False, verbose=0)
    return model


@pytest.mark.heavy
def test_downstream_fit_on_replicas_clips_the_summed_gradient_as_one_device():
    ids = tf.random.stateless_uniform([2 * ROWS, T], [5, 6], 4, V, tf.int32)
    tags = tf.random.stateless_uniform([2 * ROWS, T], [7, 8], 0, 3, tf.int32)
    single = _fitted_tagger(make_strategy("one_device"), ids, tags)
    mirrored = _fitted_tagger(_mirrored(2), ids, tags)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.heavy
@pytest.mark.parametrize("per_replica, rows", [(False, 4), (True, 8)])
def test_a_per_replica_batch_grows_with_the_replicas(tmp_path, corpus_file, per_replica, rows):
    """tpu.gin's batch_per_replica: batch_size 4 on 2 replicas trains 8 rows a step (each
    replica's carried states hold its 4), against 4 rows as a global batch."""
    model_dir = str(tmp_path / "model")
    train_tiny_lm(str(tmp_path / "data"), model_dir, corpus_file, steps=1,
                  strategy=make_strategy("mirrored", cpu_replicas=2),
                  batch_per_replica=per_replica)
    shapes = tf.train.load_checkpoint(model_dir).get_variable_to_shape_map()
    carried = [shape for name, shape in shapes.items() if name.startswith("carried_states/0/0")]
    assert carried == [[rows, 20]]
