"""ULMFiT's fine-tuning recipe on a Keras model: layer groups, discriminative learning rates,
gradual unfreezing, a schedule (STLR by default), the optimizer (FastaiAdam by default), and
`fit_recipe`, which fits with all of them and checkpoints every epoch.

Layer groups follow fastai's awd_lstm_clas_split: the embedding, each LSTM, then the head
(every layer outside the encoder). Group k of n trains at lr / 2.6^(n-1-k), so the head gets
the full rate and the embedding the smallest (fastai's slice(lr / 2.6^4, lr) over 5 groups).
Gradual unfreezing trains only the last group in the first epoch and unfreezes one more group
each epoch (the paper), or follows the course recipe's stages.
"""
import os

import keras
import tensorflow as tf

from trainer.checkpoints.pretrained import model_checkpoint
from trainer.loop.keras_callbacks import EpochCheckpoints, KerasProgress
from trainer.loop.progress import Progress
from trainer.loop.run_checkpoints import RunCheckpoints
from trainer.models.awd_lstm import AWDLSTMEncoder
from trainer.optim.optimizer import fastai_adam
from trainer.optim.schedules import staged, stlr
from trainer.runtime.strategies import is_chief


def layer_groups(model):
    """[[embedding], [lstm_0], ..., [lstm_n], [head layers]] of a model built on one
    AWDLSTMEncoder: the model's layer that is it or wraps it (a ChunkedEncoder's `encoder`) is
    the encoder's; every other layer with weights is the head's."""
    def encoder_of(layer):
        inner = getattr(layer, "encoder", None)
        return layer if isinstance(layer, AWDLSTMEncoder) else (
            inner if isinstance(inner, AWDLSTMEncoder) else None)
    [outer] = [layer for layer in model.layers if encoder_of(layer)]
    encoder = encoder_of(outer)
    head = [layer for layer in model.layers if layer is not outer and layer.weights]
    return [[encoder.embedding], *[[rnn] for rnn in encoder.rnns], head]


def discriminative_lr_factors(groups, factor=2.6):
    """{variable path: 1 / factor^(distance from the last group)} for FastaiAdam(lr_factors)."""
    return {v.path: factor ** -(len(groups) - 1 - k)
            for k, group in enumerate(groups) for layer in group for v in layer.weights}


class GradualUnfreezing(keras.callbacks.Callback):
    """Epoch e trains the last `plan[e]` groups (the last count goes on); the groups before
    them stay as they are. The optimizer must have been built on every variable beforehand.

    Freezing is done by gates, not by Keras' `trainable`: every group stays trainable to Keras,
    so the train step is traced once for the whole fit instead of once per stage (~4-5 s each
    for the demo classifier, plus its first step's graph optimization). The optimizer leaves a
    frozen group's variables, moments and step counts alone (FastaiAdam.update_if), and a
    frozen LSTM, frozen like every layer below it, skips its backward pass
    (WeightDropLSTM.backprop_if), so a head-only stage costs what it did with Keras freezing.

    `clear_state`: zero the optimizer's moments and step counts whenever the count changes, as
    fastai's `Learner.freeze_to` does (so the groups already training restart their moments
    too); False keeps them.
    """

    def __init__(self, groups, plan, clear_state=True):
        super().__init__()
        self.groups, self.plan, self.clear_state = groups, list(plan), clear_state
        # The first trained group: the groups before it are frozen.
        self.first_trained = tf.Variable(0, trainable=False, name="first_trained_group")

    def _count(self, epoch):
        return self.plan[min(epoch, len(self.plan) - 1)]

    def _set_gates(self, on):
        self.model.optimizer.update_if = {}
        for k, group in enumerate(self.groups):
            trained = (lambda k=k: self.first_trained <= k) if on else None
            for layer in group:
                if hasattr(layer, "backprop_if"):
                    layer.backprop_if = trained
                if on:
                    self.model.optimizer.update_if.update(
                        {v.path: trained for v in layer.trainable_weights})
        # A train step traced before (or after) this fit must not keep (or miss) the gates.
        self.model.make_train_function(force=True)

    def on_train_begin(self, logs=None):
        self._set_gates(True)

    def remove_gates(self):
        """Every group trains again, in later fits too; also after a fit that raised."""
        if self.model is not None:  # None: the fit raised before it began
            self._set_gates(False)

    def on_train_end(self, logs=None):
        self.remove_gates()

    def on_epoch_begin(self, epoch, logs=None):
        count = self._count(epoch)
        if self.clear_state and epoch > 0 and count != self._count(epoch - 1):
            self.model.optimizer.clear_state()
        self.first_trained.assign(len(self.groups) - count)


def fit_recipe(model, loss, train, valid, epochs, steps_per_epoch, schedule=stlr,
               optimizer=fastai_adam, discriminative_factor=2.6, gradual_unfreezing=True,
               clear_state_on_unfreeze=True, stages=None, metrics=(), model_dir=None,
               tokens_per_epoch=None, callbacks=()):
    """Compiles `model` with `optimizer(learning_rate, beta_1, lr_factors=...)` (clipping and
    weight decay are its settings), driven by `schedule`, and fits it; returns the history.

    The paper's recipe (default): `schedule` over all `epochs`, one more group unfrozen each
    epoch (`gradual_unfreezing`). fastai's course recipe: `stages`, ((epochs, groups trained or
    None for all, max_lr), ...), each stage `schedule` afresh (one-cycle) from fresh optimizer
    state; the stages' epochs replace `epochs`.

    With `model_dir`, every epoch is checkpointed (MODEL_DIR/resume); run again with the same
    `model_dir`, it goes on from the last finished epoch (weights, optimizer state, schedule
    position and unfreezing stage), and a finished run trains no further. The resumed epochs see
    the data in another order and draw other dropout masks than an uninterrupted run would.
    `callbacks`: more Keras callbacks for the fit (e.g. the learning-rate finder's).
    `metrics`: Keras metric objects, not names: under TF's default strategy (one device) Keras
    resolves a name inside the train step's first trace, and the metric variables made there
    make it trace the step a second time.
    """
    groups = layer_groups(model)
    factors = discriminative_lr_factors(groups, discriminative_factor or 1.0)
    if stages:
        epochs = sum(stage_epochs for stage_epochs, _, _ in stages)
        lr, beta_1 = staged(schedule, [(n * steps_per_epoch, rate) for n, _, rate in stages])
        plan = [count or len(groups) for n, count, _ in stages for _ in range(n)]
    else:
        lr, beta_1 = schedule(epochs * steps_per_epoch)
        plan = range(1, len(groups) + 1) if gradual_unfreezing else [len(groups)]
    adam = optimizer(lr, beta_1, lr_factors=factors)
    adam.build(model.trainable_variables)  # every variable, frozen ones included
    model.compile(adam, loss, metrics=list(metrics), jit_compile=False)
    unfreezing = GradualUnfreezing(groups, plan, clear_state_on_unfreeze)
    progress = Progress(model_dir, epochs, chief=is_chief())
    callbacks = [unfreezing, *callbacks,
                 KerasProgress(progress, steps_per_epoch, tokens_per_epoch)]
    initial_epoch = 0
    if model_dir:
        checkpoints = EpochCheckpoints(
            RunCheckpoints(model_checkpoint(model, optimizer=adam),
                           os.path.join(model_dir, "resume"), keep=1), steps_per_epoch)
        initial_epoch = checkpoints.restore(adam.iterations)
        callbacks.append(checkpoints)
    try:
        return model.fit(train, validation_data=valid, epochs=epochs, callbacks=callbacks,
                         initial_epoch=initial_epoch, shuffle=False,  # `train` reshuffles itself
                         verbose=0)  # KerasProgress shows it
    finally:
        unfreezing.remove_gates()
