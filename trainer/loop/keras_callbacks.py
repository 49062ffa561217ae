"""RunCheckpoints and Progress for Keras' fit, as fine-tuning uses them."""
import contextlib

from absl import logging
import keras


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves `checkpoints` (the model and optimizer state) after every epoch.

    Not keras.callbacks.BackupAndRestore: in Keras 3 it writes one .weights.h5 that has no
    checksums (a damaged file can load silently) and that every worker of a multi-worker
    strategy writes at once.
    """

    def __init__(self, checkpoints, steps_per_epoch):
        super().__init__()
        self.checkpoints, self.steps_per_epoch = checkpoints, steps_per_epoch

    def restore(self, iterations):
        """Restores the last epoch's checkpoint, if any; the epoch to go on from. Checkpoints
        are written at epoch ends only, so `iterations` (the optimizer's step count, restored
        with it) is whole epochs."""
        latest = self.checkpoints.restore()
        if not latest:
            return 0
        epoch = int(iterations.numpy()) // self.steps_per_epoch
        logging.info("Resumed from %s: %d epochs done.", latest, epoch)
        return epoch

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(epoch + 1)

    def on_train_end(self, logs=None):
        self.checkpoints.close()


class KerasProgress(keras.callbacks.Callback):
    """`progress` for a fit of `steps_per_epoch` steps: a bar per epoch with the loss, the
    train loss every `log_every_steps` steps, each epoch's train and valid metrics in train/
    and eval/, and `tokens_per_s` (of `tokens_per_epoch` training tokens, padding excluded;
    validation not timed) in each epoch's logs."""

    def __init__(self, progress, steps_per_epoch, tokens_per_epoch=None, log_every_steps=10):
        super().__init__()
        self.progress, self.steps_per_epoch = progress, steps_per_epoch
        self.tokens_per_epoch, self.log_every_steps = tokens_per_epoch, log_every_steps
        self._bar = contextlib.ExitStack()

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._bar.enter_context(self.progress.epoch(epoch, self.steps_per_epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.progress.steps_done(1, logs["loss"])
        step = self._step()
        if step % self.log_every_steps == 0:
            self.progress.write("train", step, {"loss": logs["loss"]})

    def on_epoch_end(self, epoch, logs=None):
        self._bar.close()
        if self.tokens_per_epoch:
            logs["tokens_per_s"] = self.progress.tokens_per_second(self.tokens_per_epoch)
        step = self._step()
        self.progress.write("train", step, {k: v for k, v in logs.items()
                                            if not k.startswith("val_")})
        self.progress.write("eval", step, {k[len("val_"):]: v for k, v in logs.items()
                                           if k.startswith("val_")})
        logging.info("epoch %d: %s", epoch + 1, {k: round(float(v), 4) for k, v in logs.items()})

    def on_train_end(self, logs=None):
        self._bar.close()  # a fit that stopped inside an epoch
