"""fastai's one-cycle policy as Keras schedules (learning rate and Adam's beta_1)."""
import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("ulmfit")
class CombinedCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine from `start` to `middle` over the first `pct_start` of `total_steps`, then to `end`.

    fastai's combined_cos: the position is step / total_steps, read before each step.
    """

    def __init__(self, total_steps, pct_start, start, middle, end):
        self.total_steps, self.pct_start = total_steps, pct_start
        self.start, self.middle, self.end = start, middle, end

    @staticmethod
    def _anneal(start, end, pos):
        return start + (1 + tf.cos(math.pi * (1 - pos))) * (end - start) / 2

    def __call__(self, step):
        # float64: in float32 the tail (max_lr / 1e5) would be lost to cancellation.
        pos = tf.cast(step, tf.float64) / self.total_steps
        warm = self._anneal(self.start, self.middle, tf.minimum(pos / self.pct_start, 1.0))
        cool = self._anneal(self.middle, self.end,
                            tf.clip_by_value((pos - self.pct_start) / (1 - self.pct_start), 0, 1))
        return tf.cast(tf.where(pos < self.pct_start, warm, cool), tf.float32)

    def get_config(self):
        return dict(total_steps=self.total_steps, pct_start=self.pct_start, start=self.start,
                    middle=self.middle, end=self.end)


def one_cycle(total_steps, max_lr=2e-3, div=25.0, div_final=1e5, pct_start=0.25,
              moms=(0.8, 0.7, 0.8)):
    """fastai's fit_one_cycle; moms defaults to TextLearner's (0.8, 0.7, 0.8).

    Returns (learning-rate schedule, beta_1 schedule).
    """
    lr = CombinedCosine(total_steps, pct_start, max_lr / div, max_lr, max_lr / div_final)
    return lr, CombinedCosine(total_steps, pct_start, *moms)


@keras.saving.register_keras_serializable("ulmfit")
class SlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3): a linear rise
    over the first `cut_frac` of the steps, a linear decay after; the lowest rate is max/ratio."""

    def __init__(self, total_steps, max_lr, cut_frac=0.1, ratio=32.0):
        self.total_steps, self.max_lr = total_steps, max_lr
        self.cut_frac, self.ratio = cut_frac, ratio

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        cut = max(math.floor(self.total_steps * self.cut_frac), 1)
        p = tf.where(t < cut, t / cut,
                     1 - (t - cut) / max(cut * (1 / self.cut_frac - 1), 1))
        p = tf.clip_by_value(p, 0.0, 1.0)
        return self.max_lr * (1 + p * (self.ratio - 1)) / self.ratio

    def get_config(self):
        return dict(total_steps=self.total_steps, max_lr=self.max_lr, cut_frac=self.cut_frac,
                    ratio=self.ratio)


def stlr(total_steps, max_lr=0.01, cut_frac=0.1, ratio=32.0, beta_1=0.7):
    """ULMFiT's STLR with Adam's beta_1 fixed (the paper's 0.7). Returns (lr, beta_1)."""
    return SlantedTriangular(total_steps, max_lr, cut_frac, ratio), beta_1


@keras.saving.register_keras_serializable("ulmfit")
class Staged(keras.optimizers.schedules.LearningRateSchedule):
    """Schedules one after another: part k (a schedule or a constant) starts at step
    `starts[k]` and sees the steps since then."""

    def __init__(self, parts, starts):
        self.parts, self.starts = list(parts), [int(s) for s in starts]

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        at = lambda part, s: tf.cast(part(s) if callable(part) else part, tf.float32)
        value = at(self.parts[0], step)
        for part, start in zip(self.parts[1:], self.starts[1:]):
            value = tf.where(step >= start, at(part, step - start), value)
        return value

    def get_config(self):
        return dict(parts=[keras.saving.serialize_keras_object(p) if callable(p) else p
                           for p in self.parts], starts=self.starts)

    @classmethod
    def from_config(cls, config):
        return cls([keras.saving.deserialize_keras_object(p) if isinstance(p, dict) else p
                    for p in config["parts"]], config["starts"])


def staged(schedule, stages):
    """`schedule` run afresh for each (steps, max_lr) stage, as fastai's course calls
    fit_one_cycle once per unfreezing stage. Returns (lr, beta_1)."""
    parts = [schedule(steps, max_lr=max_lr) for steps, max_lr in stages]
    starts = [sum(steps for steps, _ in stages[:k]) for k in range(len(stages))]
    return tuple(Staged([part[i] for part in parts], starts) for i in (0, 1))
