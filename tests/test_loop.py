"""The parts both training loops share (trainer/loop/): a run's checkpoints, and its progress,
tokens/s and TensorBoard scalars, written the same way by fine-tuning as by the LM."""
import json
import types

import keras
import numpy as np
import tensorflow as tf

from test_controller import scalars
from test_downstream import tiny_classifier
from test_user_errors import flip_byte
from trainer.fine_tuning.recipe import fit_recipe
from trainer.loop.run_checkpoints import RunCheckpoints


def test_fine_tuning_logs_what_the_lm_logs_where_the_lm_logs_it(tmp_path):
    model = tiny_classifier(num_layers=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (8, 5)).astype(np.int32), rng.integers(0, 3, 8)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 2 steps an epoch
    history = fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         batches, batches, 3, 2, model_dir=str(tmp_path), tokens_per_epoch=40,
                         metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    train, evaluation = scalars(str(tmp_path / "train")), scalars(str(tmp_path / "eval"))
    # Each epoch's end at its step count (2, 4, 6), as the LM's controller writes them.
    assert [step for step, _ in train["tokens_per_s"]] == [2, 4, 6]
    np.testing.assert_allclose([value for _, value in train["tokens_per_s"]],
                               history.history["tokens_per_s"], rtol=1e-6)  # float32 on disk
    np.testing.assert_allclose([value for _, value in evaluation["accuracy"]],
                               history.history["val_accuracy"], rtol=1e-6)
    assert [step for step, _ in evaluation["loss"]] == [2, 4, 6]
    assert tf.train.latest_checkpoint(str(tmp_path / "resume")).endswith("ckpt-3")


def test_a_non_chief_worker_saves_a_scratch_copy_that_close_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    worker = types.SimpleNamespace(
        cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
    step = tf.Variable(3)
    checkpoints = RunCheckpoints(tf.train.Checkpoint(step=step), str(tmp_path), 1,
                                 strategy=worker)
    saved = checkpoints.save(3)
    assert saved.startswith(str(tmp_path / ".worker-1") + "/")
    assert checkpoints.restore() is None  # the chief's directory holds nothing yet
    checkpoints.close()
    assert not (tmp_path / ".worker-1").exists()


def test_the_newest_intact_checkpoint_is_restored(tmp_path):
    step = tf.Variable(0)
    checkpoints = RunCheckpoints(tf.train.Checkpoint(step=step), str(tmp_path), 2)
    for n in (1, 2):
        step.assign(n)
        checkpoints.save(n)
    newest = tf.train.latest_checkpoint(str(tmp_path))
    flip_byte(tf.io.gfile.glob(newest + ".data-*")[0])  # the newest gives way to ckpt-1
    step.assign(9)
    assert RunCheckpoints(tf.train.Checkpoint(step=step), str(tmp_path), 2).restore().endswith(
        "ckpt-1")
    assert int(step.numpy()) == 1
