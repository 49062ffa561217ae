"""The controller schedules a trainer it knows nothing about: loops, epochs, evaluation,
checkpoints, summaries and resume, checked on a trainer that only counts."""
import os

import numpy as np
import tensorflow as tf

from trainer.lm.controller import Controller, LoopPosition
from trainer.lm.divergence import LossSpikeGuard
from trainer.loop.run_checkpoints import RunCheckpoints


class CountingTrainer:
    """Advances a step counter as an optimizer would and records what it was asked to do."""

    def __init__(self, losses=None):
        self.steps = tf.Variable(0, dtype=tf.int64)
        self.calls = []
        self.losses = losses or {}

    def start_epoch(self, epoch, batch):
        self.calls.append(("start_epoch", epoch, batch))

    def train(self, num_steps):
        self.calls.append(("train", num_steps))
        self.steps.assign_add(num_steps)
        return {"loss": self.losses.get(int(self.steps.numpy()), 1.0), "grad_norm": 0.5}

    def evaluate(self):
        self.calls.append(("evaluate",))
        return {"loss": 2.0}


def controller(trainer, directory, **kwargs):
    position = LoopPosition()
    checkpoint = tf.train.Checkpoint(steps=trainer.steps, epoch=position.epoch,
                                     batch_in_epoch=position.batch_in_epoch)
    checkpoints = RunCheckpoints(checkpoint, directory, keep=None, step_counter=trainer.steps)
    settings = dict(epochs=2, steps_per_epoch=7, tokens_per_step=100, steps_per_loop=3,
                    checkpoint_every_steps=4, log_every_steps=1)
    return Controller(trainer, position=position, step_counter=trainer.steps,
                      checkpoints=checkpoints, summary_dir=directory,
                      **{**settings, **kwargs})


def checkpoint_steps(directory):
    return sorted(int(p.rsplit("-", 1)[1])
                  for p in tf.train.get_checkpoint_state(directory).all_model_checkpoint_paths)


def scalars(directory):
    """{tag: [(step, value)]} of the TensorBoard events in `directory`."""
    found = {}
    for path in tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_loops_stop_at_epoch_ends_and_each_epoch_is_evaluated(tmp_path):
    trainer = CountingTrainer()
    metrics = controller(trainer, str(tmp_path)).train()
    assert trainer.calls == [("start_epoch", 0, 0), ("train", 3), ("train", 3), ("train", 1),
                             ("evaluate",),
                             ("start_epoch", 1, 0), ("train", 3), ("train", 3), ("train", 1),
                             ("evaluate",)]
    assert metrics["step"] == 14 and metrics["valid_loss"] == 2.0 and metrics["train_loss"] == 1.0
    # Every 4 steps, rounded to the loop that crosses them, and the end.
    assert checkpoint_steps(str(tmp_path)) == [6, 10, 13, 14]
    train, evaluation = scalars(str(tmp_path / "train")), scalars(str(tmp_path / "eval"))
    assert [s for s, _ in train["loss"]] == [3, 6, 7, 10, 13, 14]
    assert {"grad_norm", "tokens_per_second"} <= set(train)
    assert evaluation["loss"] == [(7, 2.0), (14, 2.0)]


def test_max_steps_stops_inside_an_epoch_and_still_evaluates(tmp_path):
    trainer = CountingTrainer()
    metrics = controller(trainer, str(tmp_path), max_steps=5).train()
    assert trainer.calls == [("start_epoch", 0, 0), ("train", 3), ("train", 2), ("evaluate",)]
    assert metrics["step"] == 5 and "valid_loss" in metrics
    assert checkpoint_steps(str(tmp_path))[-1] == 5


def test_a_resumed_run_goes_on_from_the_batch_it_saved(tmp_path):
    first = CountingTrainer()
    controller(first, str(tmp_path), max_steps=5).train()
    trainer = CountingTrainer()
    resumed = controller(trainer, str(tmp_path))
    assert resumed.restore() and int(trainer.steps.numpy()) == 5
    resumed.train()
    assert trainer.calls[:3] == [("start_epoch", 0, 5), ("train", 2), ("evaluate",)]
    assert trainer.calls[3] == ("start_epoch", 1, 0) and int(trainer.steps.numpy()) == 14
    assert not controller(CountingTrainer(), str(tmp_path / "empty")).restore()


def test_states_in_a_loss_spike_are_not_checkpointed(tmp_path):
    # The loss after step 12 is 10x the running loss: a spike, shorter than the patience.
    trainer = CountingTrainer(losses={12: 10.0, 13: 10.0, 14: 10.0})
    run = controller(trainer, str(tmp_path), steps_per_loop=1, epochs=2,
                     guard=LossSpikeGuard(factor=2.0, patience=3))
    run.train()
    saved = checkpoint_steps(str(tmp_path))
    assert saved == [4, 8]  # not 12, and not the spiking end state (14)
    np.testing.assert_equal(run.guard.last_good[1], 8)
