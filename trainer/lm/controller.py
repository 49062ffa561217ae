"""The training loop's schedule, in the spirit of orbit's Controller: run a trainer's steps in
loops of `steps_per_loop`, evaluate at every epoch's end, checkpoint every
`checkpoint_every_steps` (good states only, see divergence.py), write TensorBoard summaries every
`log_every_steps` and show a progress bar with tokens/s (trainer/loop/: the parts it shares with
fine-tuning, and why there are two loops). It knows no model and no data.

A trainer is any object with:
  start_epoch(epoch, batch)  get ready to run the epoch from `batch` on (0: from its start)
  train(num_steps)           run that many steps; a dict of scalars with at least "loss"
  evaluate()                 a dict of scalars, e.g. {"loss": ..., "perplexity": ...}
The position (epoch, batch in epoch) lives in `position`, which the caller puts in the
checkpoint, so a resumed run goes on from the very batch where the checkpoint was written.
"""
from absl import logging
import tensorflow as tf

from trainer.lm.divergence import LossSpikeGuard
from trainer.loop.progress import Progress


def _count(variable):
    """A counter variable's value (int() does not take a distributed variable)."""
    return int(variable.numpy())


class LoopPosition:
    """Where the loop is: epochs done and batches done in the current epoch. Create it inside
    the strategy's scope, and checkpoint its variables with the model."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name="batch_in_epoch")


class Controller:

    def __init__(self, trainer, *, position, step_counter, checkpoints, summary_dir,
                 epochs, steps_per_epoch, tokens_per_step, max_steps=None, steps_per_loop=10,
                 checkpoint_every_steps=500, log_every_steps=50, guard=None, chief=True):
        """`step_counter`: the optimizer's iterations; `checkpoints`: the run's RunCheckpoints;
        `summary_dir`: TensorBoard's train/ and eval/ go there (on the chief only);
        `max_steps` stops early."""
        self.trainer, self.position, self.step_counter = trainer, position, step_counter
        self.checkpoints = checkpoints
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.tokens_per_step, self.steps_per_loop = tokens_per_step, steps_per_loop
        self.stop_at = min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch)
        self.checkpoint_every_steps, self.log_every_steps = checkpoint_every_steps, log_every_steps
        self.guard = guard or LossSpikeGuard()
        self.progress = Progress(summary_dir, epochs, chief)

    @property
    def step(self):
        return _count(self.step_counter)

    def restore(self):
        """Restores the newest intact checkpoint; False if there is none."""
        latest = self.checkpoints.restore()
        if not latest:
            return False
        self.guard.saved(latest, self.step)
        logging.info("Resumed from %s: epoch %d, batch %d.", latest,
                     _count(self.position.epoch), _count(self.position.batch_in_epoch))
        return True

    def train(self, preemption=None):
        """Runs to the last epoch (or max_steps); returns the last train and eval metrics.
        `preemption` (trainer/lm/preemption.py) is asked after every host loop whether to save and
        stop (it raises Preempted)."""
        epoch, batch = self.position.epoch, self.position.batch_in_epoch
        metrics = {}
        while _count(epoch) < self.epochs and self.step < self.stop_at:
            self.trainer.start_epoch(_count(epoch), _count(batch))
            with self.progress.epoch(_count(epoch), self.steps_per_epoch, _count(batch)):
                while _count(batch) < self.steps_per_epoch and self.step < self.stop_at:
                    steps = min(self.steps_per_loop, self.steps_per_epoch - _count(batch),
                                self.stop_at - self.step)
                    metrics = self._train_loop(steps)
                    if preemption:
                        preemption.save_if_preempted(self.checkpoints.manager, self.step)
            if _count(batch) == self.steps_per_epoch:
                epoch.assign_add(1)
                batch.assign(0)
                metrics.update(self.evaluate())
                logging.info("epoch %d: %s", _count(epoch), metrics)
        if self.guard.bad_checks:  # ended inside a loss spike: the newest checkpoint stays good
            logging.warning("The run ended in a loss spike; not saving it over %s.",
                            self.guard.last_good and self.guard.last_good[0])
        else:
            self.checkpoints.save(self.step)
        if "valid_loss" not in metrics:  # stopped inside an epoch (max_steps), or resumed done
            metrics.update(self.evaluate())
        return metrics

    def _train_loop(self, steps):
        self.progress.start()
        logs = {k: float(v) for k, v in self.trainer.train(steps).items()}
        logs["tokens_per_second"] = self.progress.steps_done(steps, logs["loss"],
                                                             steps * self.tokens_per_step)
        step = self.step
        good = self.guard.is_good(step, logs["loss"])
        self.position.batch_in_epoch.assign_add(steps)
        if step % self.log_every_steps < steps or step == self.stop_at:
            self.progress.write("train", step, logs)
        if step % self.checkpoint_every_steps < steps and good:
            self.guard.saved(self.checkpoints.save(step), step, logs["loss"])
        return {"step": step, "train_loss": logs["loss"],
                "tokens_per_second": logs["tokens_per_second"]}

    def evaluate(self):
        """The trainer's evaluation, written to eval/ and returned as valid_* metrics."""
        logs = {k: float(v) for k, v in self.trainer.evaluate().items()}
        self.progress.write("eval", self.step, logs)
        return {f"valid_{k}": v for k, v in logs.items()}
