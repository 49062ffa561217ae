"""What a "good" training state is, so a diverging run never overwrites its last good checkpoint.

A step's loss is good when it is finite and at most `factor` times the running loss (an
exponential moving average of the good losses before it). A loss can explode to 1e30 and stay
finite for many steps before it turns NaN; the controller saves only good states, so with
`keep_checkpoints` rotation the newest checkpoint on disk is always a good one. A run whose loss
stays bad for more than `patience` checks in a row (or is not finite at all) is stopped, naming
that checkpoint. fastai has no such guard and trains on through spikes: `factor=None` does the
same here (only a non-finite loss stops the run).
"""
import math

from common.errors import UserError


class DivergenceError(UserError):
    """The loss diverged; the message names the last good checkpoint and what to change."""


class LossSpikeGuard:

    def __init__(self, factor=2.0, patience=3, smoothing=0.9):
        self.factor, self.patience, self.smoothing = factor, patience, smoothing
        self.running = None
        self.bad_checks = 0
        self.first_bad_step = None
        self.last_good = None  # (checkpoint path, step, loss) of the newest good save

    def is_good(self, step, loss):
        """Records one check of the training loss; raises DivergenceError when it is time to
        stop."""
        if not math.isfinite(loss):
            self._stop(f"loss is {loss} at step {step}")
        if self.running is None or self.factor is None or loss <= self.factor * self.running:
            self.running = loss if self.running is None else (
                self.smoothing * self.running + (1 - self.smoothing) * loss)
            self.bad_checks, self.first_bad_step = 0, None
            return True
        self.bad_checks += 1
        self.first_bad_step = self.first_bad_step or step
        if self.bad_checks > self.patience:
            self._stop(f"loss is {loss:.4g} at step {step}, over {self.factor:g}x the running "
                       f"loss {self.running:.4g} since step {self.first_bad_step}")
        return False

    def saved(self, path, step, loss=None):
        """Notes the newest good checkpoint (`loss` None: restored, its loss not seen here)."""
        self.last_good = (path, step, loss)

    def _stop(self, what):
        fix = "Lower the learning rate (one_cycle.max_lr) or clip harder (optimizer.clip_norm)"
        if self.last_good is None:
            raise DivergenceError(f"{what}; stopped without saving. No checkpoint was saved "
                                  f"before it. {fix}, then run the same command to start over.")
        path, step, loss = self.last_good
        loss = "" if loss is None else f", loss {loss:.4g}"
        raise DivergenceError(
            f"{what}; stopped without saving. The last good checkpoint is {path} (step {step}"
            f"{loss}). {fix}, then run the same command: it resumes from that checkpoint, the "
            "newest one.")
