"""fastai's learning-rate finder (`Learner.lr_find`): a short mock training whose learning rate
grows exponentially from `start_lr` to `end_lr` over `num_it` steps, recording the smoothed loss
at each, and stopping once it diverges. The steepest fall of the loss and fastai's "valley" are
the suggested rates.

A sweep plugs into the trainers as they are: `schedule` replaces their learning-rate schedule,
`Controller` replaces the LM trainer's loop controller, `KerasCallback` rides on the
fine-tuning recipe's model.fit. When the sweep is over it raises `SweepFinished`, which ends
the job where it stands: nothing after the sweep runs (no evaluation, no saved model).
"""
import itertools
import math

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from common.errors import UserError


class SweepFinished(Exception):
    """The sweep has its losses; the job stops here."""


@keras.saving.register_keras_serializable("ulmfit")
class ExponentialSweep(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's SchedExp: start * (end / start) ** (step / num_it)."""

    def __init__(self, start_lr, end_lr, num_it):
        self.start_lr, self.end_lr, self.num_it = start_lr, end_lr, num_it

    def __call__(self, step):
        position = tf.cast(step, tf.float64) / self.num_it
        return tf.cast(self.start_lr * (self.end_lr / self.start_lr) ** position, tf.float32)

    def get_config(self):
        return dict(start_lr=self.start_lr, end_lr=self.end_lr, num_it=self.num_it)


class LRSweep:
    """One sweep: its schedule, and the (lr, smoothed loss) of each step taken."""

    def __init__(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, beta_1=0.9):
        self.lr = ExponentialSweep(start_lr, end_lr, max(num_it, 6))  # fastai's minimum
        self.num_it, self.stop_div = self.lr.num_it, stop_div
        self.beta_1 = beta_1  # fastai's Adam default: lr_find does not cycle the momentum
        self.lrs, self.losses = [], []
        self._average, self._best = 0.0, math.inf
        self._bar = None

    def schedule(self, total_steps=None, max_lr=None):
        """What a trainer's `schedule` binding returns: (learning rate, beta_1); the trainer's
        step count and rate do not matter."""
        del total_steps, max_lr
        return self.lr, self.beta_1

    def record(self, loss):
        """Notes the loss of the step just taken; raises SweepFinished when the sweep is over."""
        if self._bar is None:
            self._bar = tqdm(total=self.num_it, unit="step", desc="lr_find")
        step = len(self.lrs)
        self.lrs.append(float(self.lr(step)))
        # fastai's AvgSmoothLoss: an exponential moving average (0.98), debiased.
        self._average = 0.98 * self._average + 0.02 * loss
        smooth = self._average / (1 - 0.98 ** (step + 1))
        self.losses.append(smooth)
        self._best = min(self._best, smooth)
        self._bar.update(1)
        self._bar.set_postfix(lr=f"{self.lrs[-1]:.2e}", loss=f"{smooth:.4f}")
        diverged = not math.isfinite(smooth) or smooth > 4 * self._best
        if (diverged and self.stop_div) or len(self.lrs) >= self.num_it:
            self._bar.close()
            raise SweepFinished()

    def suggestions(self):
        """{"valley": (lr, loss), "steep": (lr, loss)} as fastai's lr_find computes them: on
        the steps after the first tenth, the last five dropped, and none from the first
        non-finite loss on."""
        lrs = np.array(self.lrs[self.num_it // 10:-5])
        losses = np.array(self.losses[self.num_it // 10:-5])
        not_finite = np.flatnonzero(~np.isfinite(losses))
        if len(not_finite):
            lrs, losses = lrs[:not_finite[0]], losses[:not_finite[0]]
        if len(losses) < 2:
            raise UserError(f"{len(self.losses)} steps recorded: too few to suggest a rate "
                            "(the loss diverged early); lower --start_lr or raise --num_it.")
        return {"valley": valley(lrs, losses), "steep": steep(lrs, losses)}

    def keras_callback(self):
        return KerasCallback(self)

    def controller(self, trainer, *, steps_per_epoch, **ignored):
        """A trainer.lm.controller.Controller stand-in for the LM trainer."""
        return Controller(self, trainer, steps_per_epoch)


def valley(lrs, losses):
    """fastai's valley: the longest run of falling loss (a longest decreasing subsequence),
    and the rate about half way down it (fastai's index)."""
    n, lds = len(losses), [1] * len(losses)
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return float(lrs[index]), float(losses[index])


def steep(lrs, losses):
    """fastai's steep: the rate where the loss falls fastest per unit of log(lr)."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    index = int(np.argmin(slopes))
    return float(lrs[index]), float(losses[index])


class KerasCallback(keras.callbacks.Callback):
    """Feeds model.fit's per-batch losses to the sweep."""

    def __init__(self, sweep):
        super().__init__()
        self.sweep = sweep

    def on_epoch_begin(self, epoch, logs=None):
        self.total = 0.0  # the epoch's summed batch losses so far

    def on_train_batch_end(self, batch, logs=None):
        # Keras' "loss" log is the mean since the epoch began; the sweep needs this batch's.
        total = logs["loss"] * (batch + 1)
        loss, self.total = total - self.total, total
        self.sweep.record(float(loss))


class Controller:
    """Runs the LM trainer's steps one at a time for the sweep: no checkpoints, no summaries,
    no evaluation."""

    def __init__(self, sweep, trainer, steps_per_epoch):
        self.sweep, self.trainer, self.steps_per_epoch = sweep, trainer, steps_per_epoch

    def restore(self):
        return False

    def train(self, preemption=None):
        """Runs epochs until the sweep raises SweepFinished."""
        if preemption:
            preemption.close()  # a sweep keeps nothing: SIGTERM just ends it
        for epoch in itertools.count():
            self.trainer.start_epoch(epoch, 0)
            for _ in range(self.steps_per_epoch):
                self.sweep.record(self.trainer.train(1)["loss"])
