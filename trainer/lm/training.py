"""Language-model training, `train_lm`: it only wires the run (strategy, data, model,
optimizer, checkpoint, pretrained weights) and hands LanguageModelTask's steps to the
Controller, which runs the loop. Its parts come in as arguments (trainer/configurables.py lets
the gin files bind them).
"""
import math
import os
import time

from absl import logging
import keras
import tensorflow as tf

from common.errors import CorpusError, SettingError, UserError
from data_pipeline.build import build
from data_pipeline.build_settings import BuildSettings
from data_pipeline.lm_dataset import plan_epoch, worker_lm_dataset
from data_pipeline.manifest import MANIFEST_NAME, load_manifest, verify_shards
from data_pipeline.unigram import unigram_perplexity
from trainer.checkpoints.pretrained import (LM_CONFIG_NAME, check_same_vocab,
                                            load_pretrained_config, model_checkpoint,
                                            model_dir_and_checkpoint, restore_weights,
                                            weights_by_path, write_pretrained_config)
from trainer.lm.controller import Controller, LoopPosition
from trainer.lm.divergence import LossSpikeGuard
from trainer.lm.preemption import preemption_watcher
from trainer.lm.task import LanguageModelTask
from trainer.loop.run_checkpoints import RunCheckpoints
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optim.optimizer import fastai_adam
from trainer.optim.schedules import one_cycle
from trainer.runtime.strategies import is_chief


def _gin_name(field):
    """How a gin user sets a build setting that an error message names."""
    return {"input": "train_lm.build_input", "output_dir": "train_lm.data_dir"}.get(
        field, f"BuildSettings.{field}")


def _wait_for(manifest_path, build_input, seconds):
    """Until the chief has written `manifest_path`; a UserError naming it after `seconds`."""
    logging.info("Waiting up to %d s for the chief to build %s.", seconds, manifest_path)
    deadline = time.monotonic() + seconds
    while not tf.io.gfile.exists(manifest_path):
        if time.monotonic() > deadline:
            raise UserError(
                f"{manifest_path}: not written after {seconds:g} s, while the chief (worker 0) "
                f"builds it from {build_input}; see the chief's log, raise "
                "train_lm.data_wait_seconds, or build it first: python -m data_pipeline.build "
                f"--input={build_input} --output_dir={os.path.dirname(manifest_path)}")
        time.sleep(min(5.0, seconds / 10))


def prepare_data(data_dir, build_input, spm_model=None, chief=True, wait_seconds=3600,
                 build_settings=BuildSettings):
    """The manifest of `data_dir`, building it from `build_input` first if it is not there
    (encoded with `spm_model` when given, else with a SentencePiece model trained on it), with
    the BuildSettings that `build_settings(input, spm_model)` makes. Only the chief builds;
    other workers wait up to `wait_seconds` for its manifest."""
    manifest_path = os.path.join(data_dir, MANIFEST_NAME)
    if build_input and not tf.io.gfile.exists(manifest_path):
        if not chief:
            _wait_for(manifest_path, build_input, wait_seconds)
            return load_manifest(data_dir)
        logging.info("Building %s from %s.", data_dir, build_input)
        try:
            build(data_dir, build_settings(input=build_input, spm_model=spm_model))
        except SettingError as e:
            raise CorpusError(e.spelled(_gin_name)) from None
    return load_manifest(data_dir)


def _direction(backwards):
    return "backward" if backwards else "forward"


def epoch_steps(manifest, bptt, replicas, batch_size, eval_batch_size):
    """Batches in an epoch of train and of valid. Fails before the first step, not after an
    epoch, if a split is too small for a batch."""
    steps = []
    for split, rows, setting in (("train", batch_size, "batch_size"),
                                 ("valid", eval_batch_size, "eval_batch_size")):
        try:
            steps.append(plan_epoch(manifest, split, rows // replicas, bptt,
                                    num_pipelines=replicas).batches)
        except SettingError as e:
            raise CorpusError(e.spelled(lambda field: f"train_lm.{setting}"
                                        if field == "batch_size" else f"train_lm.{field}")
                              ) from None
    return steps


def run_reading_shards(manifest, fn, *args):
    """`fn(*args)`; a corrupt record met on the way is reported with its shard's name."""
    try:
        return fn(*args)
    except tf.errors.DataLossError:
        verify_shards(manifest)  # raises a CorpusError naming the shard and the repair
        raise


class LanguageModelTrainer:
    """What the controller drives: the task's steps over this run's data. `train_data(epoch,
    start_batch)` and `valid_data()` make distributed datasets."""

    def __init__(self, task, manifest, train_data, valid_data, valid_steps, steps_per_loop):
        self.task, self.manifest = task, manifest
        self.train_data, self.valid_data, self.valid_steps = train_data, valid_data, valid_steps
        self.steps_per_loop, self.iterator = steps_per_loop, None

    def start_epoch(self, epoch, batch):
        if batch == 0:
            self.task.reset_states()
        self.iterator = iter(self.train_data(epoch, batch))

    def train(self, num_steps):
        loss, norm = run_reading_shards(self.manifest, self.task.train_loop, self.iterator,
                                        tf.constant(num_steps))
        loss = float(loss)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)),
                "learning_rate": self.task.optimizer.learning_rate, "grad_norm": norm}

    def evaluate(self):
        loss = run_reading_shards(self.manifest, self.task.evaluate, self.valid_data(),
                                  self.valid_steps, self.steps_per_loop)
        return {"loss": loss, "perplexity": math.exp(loss)}


def train_lm(model_dir, data_dir, build_input=None, batch_size=64, bptt=70, epochs=1,
             max_steps=None, steps_per_loop=10, eval_batch_size=16, seed=0, jit_compile=False,
             checkpoint_every_steps=500, keep_checkpoints=3, log_every_steps=50,
             deterministic=True, mixed_precision=None, init_from=None, loss_spike_factor=2.0,
             loss_spike_patience=3, backwards=False, batch_per_replica=False,
             data_wait_seconds=3600, *, strategy=None, model=AWDLSTMLanguageModel,
             optimizer=fastai_adam, schedule=one_cycle, build_settings=BuildSettings,
             controller=Controller):
    """Trains (or resumes) an AWD-LSTM LM in `model_dir`; returns final metrics.

    `init_from`: a pretrained model directory or checkpoint to fine-tune (ULMFiT stage 2): the
    architecture and weights come from it, and the data must be numbered by its SentencePiece
    model (a missing data_dir is built with it). `backwards`: train a backward LM, on every
    stream reversed (fastai's backwards=True; lm_config.json records it, and classifiers on it
    read their texts reversed).

    `batch_size` is global: each of the strategy's replicas gets batch_size / replicas rows;
    with `batch_per_replica` it and `eval_batch_size` are each replica's (a TPU chip's on v4 and
    later), as in fastai's distributed training, so the global batch grows with the slice.
    `max_steps` stops early (the schedule still spans all `epochs`). `mixed_precision`:
    None, 'mixed_bfloat16' (TPU, recent CPUs) or 'mixed_float16' (GPU, with loss scaling);
    variables, softmax and loss stay float32. `loss_spike_*`: see trainer/lm/divergence.py (None:
    train on through loss spikes, as fastai does). `data_wait_seconds`: how long workers other
    than the chief wait for it to build a missing `data_dir`.

    The parts: `strategy` (default: TensorFlow's default strategy); `model(vocab_size, pad_id)`
    the language model, sizes and dropouts included; `optimizer(learning_rate, beta_1, ...)`,
    which the `schedule(total_steps)` it returns drives; `build_settings(input, spm_model)` for
    a data directory to build; `controller`, the class that runs the loop (trainer.optim.lr_finder
    swaps in its own).
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)  # the initial weights too: same config, same run
    keras.mixed_precision.set_global_policy(mixed_precision or "float32")
    if deterministic:
        tf.config.experimental.enable_op_determinism()  # bit-exact resume
    pretrained = pretrained_checkpoint = None
    if init_from:
        pretrained_dir, pretrained_checkpoint = model_dir_and_checkpoint(init_from)
        pretrained = load_pretrained_config(pretrained_dir)
    chief = is_chief(strategy)
    manifest = prepare_data(data_dir, build_input, pretrained and pretrained.spm_model_path,
                            chief, data_wait_seconds, build_settings)
    if pretrained:
        check_same_vocab(pretrained, manifest.spm_model_path)
        if pretrained.backwards != backwards:
            raise UserError(f"{init_from} is a {_direction(pretrained.backwards)} language "
                            f"model; fine-tune it as one: train_lm.backwards={not backwards}.")
    if tf.io.gfile.exists(os.path.join(model_dir, LM_CONFIG_NAME)) and \
            load_pretrained_config(model_dir).backwards != backwards:
        raise UserError(f"{model_dir}: holds a {_direction(not backwards)} language model; "
                        f"resume it with train_lm.backwards={not backwards}, or pass a new "
                        "--model_dir.")
    replicas = strategy.num_replicas_in_sync
    if batch_per_replica:
        batch_size, eval_batch_size = batch_size * replicas, eval_batch_size * replicas
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value % replicas:
            raise UserError(f"train_lm.{name}={value} must divide by the {replicas} replicas.")
    steps_per_epoch, valid_steps = epoch_steps(manifest, bptt, replicas, batch_size,
                                               eval_batch_size)
    per_replica, eval_rows = batch_size // replicas, eval_batch_size // replicas

    def train_data(epoch, start_batch):
        return strategy.distribute_datasets_from_function(
            lambda ctx: worker_lm_dataset(manifest, "train", per_replica, bptt, ctx, seed=seed,
                                          epoch=epoch, start_batch=start_batch,
                                          backwards=backwards))

    valid_data = lambda: strategy.distribute_datasets_from_function(
        lambda ctx: worker_lm_dataset(manifest, "valid", eval_rows, bptt, ctx, shuffle=False,
                                       backwards=backwards))
    with strategy.scope():
        # Sizes from the pretrained model, dropouts from this config.
        shape = pretrained.shape if pretrained else {"vocab_size": manifest.vocab_size,
                                                     "pad_id": manifest.special_ids["pad"]}
        model = model(**shape)
        model(tf.zeros([per_replica, bptt], tf.int32))  # create the variables before restoring
        adam = optimizer(*schedule(epochs * steps_per_epoch), mixed_precision=mixed_precision,
                         gradients_reduced=True)  # LanguageModelTask reduces itself
        adam.build(model.trainable_variables)
        position = LoopPosition()
    task = LanguageModelTask(model, adam, strategy, per_replica, seed, jit_compile,
                             eval_batch_size=eval_rows)
    checkpoint = model_checkpoint(model, optimizer=adam, epoch=position.epoch,
                                  batch_in_epoch=position.batch_in_epoch,
                                  carried_states=[list(s) for s in task.states])
    checkpoints = RunCheckpoints(checkpoint, model_dir, keep_checkpoints, adam.iterations,
                                 strategy)
    if chief:  # what downstream models and the exporter need to rebuild the model
        write_pretrained_config(model_dir, model.get_config(), manifest.spm_model_path,
                                manifest.special_ids, backwards)
    controller = controller(
        LanguageModelTrainer(task, manifest, train_data, valid_data, valid_steps,
                             steps_per_loop),
        position=position, step_counter=adam.iterations,
        checkpoints=checkpoints, summary_dir=model_dir, epochs=epochs, steps_per_epoch=steps_per_epoch,
        tokens_per_step=batch_size * bptt, max_steps=max_steps, steps_per_loop=steps_per_loop,
        checkpoint_every_steps=checkpoint_every_steps, log_every_steps=log_every_steps,
        guard=LossSpikeGuard(loss_spike_factor, loss_spike_patience), chief=chief)
    if not controller.restore() and init_from:
        restore_weights(weights_by_path(model), pretrained_checkpoint)
        logging.info("Starting from the weights of %s.", init_from)
    # After the restore: TensorFlow's multi-worker handler adds a counter to the checkpoint.
    preemption = preemption_watcher(strategy, checkpoints.manager)
    try:
        metrics = controller.train(preemption)
    finally:
        preemption.close()
    checkpoints.close()
    metrics["valid_unigram_perplexity"] = unigram_perplexity(manifest)
    return metrics
