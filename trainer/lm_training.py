"""Language-model training: the loop around LanguageModelTask (epochs, evaluation, checkpoints,
TensorBoard, progress), in the spirit of orbit's Controller. `train_lm` is the gin entry point.
"""
import math
import os
import time

from absl import logging
import gin
import keras
import tensorflow as tf
from tqdm import tqdm

from data_pipeline.build import BuildSettings, build
from data_pipeline.errors import CorpusError, SettingError, UserError
from data_pipeline.lm_dataset import lm_dataset, plan_epoch, worker_lm_dataset
from data_pipeline.manifest import MANIFEST_NAME, load_manifest, verify_shards
from data_pipeline.unigram import unigram_perplexity
from trainer.checkpoints import latest_intact_checkpoint
from trainer.divergence import LossSpikeGuard
from trainer.lm_task import LanguageModelTask
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optimizer import fastai_adam
from trainer.pretrained import (check_same_vocab, load_pretrained_config, model_checkpoint,
                                model_dir_and_checkpoint, restore_weights, weights_by_path,
                                write_pretrained_config)
from trainer.schedules import one_cycle
from trainer.strategies import checkpoint_write_dir, is_chief, make_strategy

language_model = gin.external_configurable(AWDLSTMLanguageModel, "AWDLSTMLanguageModel")
build_settings = gin.external_configurable(BuildSettings, "BuildSettings")


# fastai's LM settings (beta_2, epsilon, weight_decay) are bound as optimizer.* in lm_training.gin.
optimizer = gin.external_configurable(fastai_adam, "optimizer")


def _gin_name(field):
    """How a gin user sets a build setting that an error message names."""
    return {"input": "train_lm.build_input", "output_dir": "train_lm.data_dir"}.get(
        field, f"BuildSettings.{field}")


def prepare_data(data_dir, build_input, spm_model=None):
    """The manifest of `data_dir`, building it from `build_input` first if it is not there
    (encoded with `spm_model` when given, else with a SentencePiece model trained on it)."""
    if build_input and not tf.io.gfile.exists(os.path.join(data_dir, MANIFEST_NAME)):
        logging.info("Building %s from %s.", data_dir, build_input)
        try:
            build(data_dir, build_settings(input=build_input, spm_model=spm_model))
        except SettingError as e:
            raise CorpusError(e.spelled(_gin_name)) from None
    return load_manifest(data_dir)


def check_splits_fit(manifest, bptt, replicas, batch_size, eval_batch_size):
    """Fails before the first step, not after an epoch, if a split is too small for a batch."""
    for split, rows, setting in (("train", batch_size, "batch_size"),
                                 ("valid", eval_batch_size, "eval_batch_size")):
        try:
            plan_epoch(manifest, split, rows // replicas, bptt, num_pipelines=replicas)
        except SettingError as e:
            raise CorpusError(e.spelled(lambda field: f"train_lm.{setting}"
                                        if field == "batch_size" else f"train_lm.{field}")
                              ) from None


def run_reading_shards(manifest, fn, *args):
    """`fn(*args)`; a corrupt record met on the way is reported with its shard's name."""
    try:
        return fn(*args)
    except tf.errors.DataLossError:
        verify_shards(manifest)  # raises a CorpusError naming the shard and the repair
        raise


def _count(variable):
    """A counter variable's value (int() does not take a distributed variable)."""
    return int(variable.numpy())


@gin.configurable(denylist=["model_dir"])
def train_lm(model_dir, data_dir=gin.REQUIRED, build_input=None, batch_size=64, bptt=70,
             epochs=1, max_steps=None, steps_per_loop=10, eval_batch_size=16, seed=0,
             clip_norm=0.25, ar_alpha=2.0, tar_beta=1.0, jit_compile=False,
             checkpoint_every_steps=500, keep_checkpoints=3, log_every_steps=50,
             deterministic=True, mixed_precision=None, schedule=one_cycle, init_from=None,
             loss_spike_factor=2.0, loss_spike_patience=3):
    """Trains (or resumes) an AWD-LSTM LM in `model_dir`; returns final metrics.

    `init_from`: a pretrained model directory or checkpoint to fine-tune (ULMFiT stage 2): the
    architecture and weights come from it, and the data must be numbered by its SentencePiece
    model (a missing data_dir is built with it).

    `batch_size` is global: each of the strategy's replicas gets batch_size / replicas rows.
    `max_steps` stops early (the schedule still spans all `epochs`). `mixed_precision`:
    None, 'mixed_bfloat16' (TPU, recent CPUs) or 'mixed_float16' (GPU, with loss scaling);
    variables, softmax and loss stay float32. `loss_spike_*`: see trainer/divergence.py (None:
    train on through loss spikes, as fastai does).
    """
    strategy = make_strategy()  # first: logical devices must be set up before any TF op runs
    keras.utils.set_random_seed(seed)  # the initial weights too: same config, same run
    keras.mixed_precision.set_global_policy(mixed_precision or "float32")
    if deterministic:
        tf.config.experimental.enable_op_determinism()  # bit-exact resume
    pretrained = pretrained_checkpoint = None
    if init_from:
        pretrained_dir, pretrained_checkpoint = model_dir_and_checkpoint(init_from)
        pretrained = load_pretrained_config(pretrained_dir)
    manifest = prepare_data(data_dir, build_input, pretrained and pretrained.spm_model_path)
    if pretrained:
        check_same_vocab(pretrained, manifest.spm_model_path)
    replicas = strategy.num_replicas_in_sync
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value % replicas:
            raise UserError(f"train_lm.{name}={value} must divide by the {replicas} replicas.")
    check_splits_fit(manifest, bptt, replicas, batch_size, eval_batch_size)
    per_replica = batch_size // replicas

    def train_data(epoch, start_batch):
        return strategy.distribute_datasets_from_function(
            lambda ctx: worker_lm_dataset(manifest, "train", per_replica, bptt, ctx, seed=seed,
                                          epoch=epoch, start_batch=start_batch))

    eval_rows = eval_batch_size // replicas
    valid = lambda: strategy.distribute_datasets_from_function(
        lambda ctx: worker_lm_dataset(manifest, "valid", eval_rows, bptt, ctx, shuffle=False))

    steps_per_epoch = int(lm_dataset(manifest, "train", per_replica, bptt,
                                     tf.distribute.InputContext(replicas, 0, replicas))
                          .cardinality())
    total_steps = epochs * steps_per_epoch
    with strategy.scope():
        # Sizes from the pretrained model, dropouts from this config.
        shape = pretrained.shape if pretrained else {"vocab_size": manifest.vocab_size}
        model = language_model(**shape)
        model(tf.zeros([per_replica, bptt], tf.int32))  # create the variables before restoring
        adam = optimizer(*schedule(total_steps), clip_norm=clip_norm,
                         mixed_precision=mixed_precision,
                         gradients_reduced=True)  # LanguageModelTask all-reduces itself
        adam.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
    task = LanguageModelTask(model, adam, strategy, per_replica, seed, ar_alpha, tar_beta,
                             jit_compile)
    checkpoint = model_checkpoint(model, optimizer=adam, epoch=epoch,
                                  batch_in_epoch=batch_in_epoch,
                                  carried_states=[list(s) for s in task.states])
    chief, write_dir = is_chief(strategy), checkpoint_write_dir(strategy, model_dir)
    if chief:  # what downstream models and the exporter need to rebuild the model
        write_pretrained_config(model_dir, model.get_config(), manifest.spm_model_path,
                                manifest.special_ids)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, keep_checkpoints,
                                         step_counter=adam.iterations)
    guard = LossSpikeGuard(loss_spike_factor, loss_spike_patience)
    latest = latest_intact_checkpoint(model_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        guard.saved(latest, _count(adam.iterations))
        logging.info("Resumed from %s: epoch %d, batch %d.", latest, _count(epoch),
                     _count(batch_in_epoch))
    elif init_from:
        restore_weights(weights_by_path(model), pretrained_checkpoint)
        logging.info("Starting from the weights of %s.", init_from)
    writer = (lambda name: tf.summary.create_file_writer(os.path.join(model_dir, name))) \
        if chief else (lambda name: tf.summary.create_noop_writer())
    train_writer, eval_writer = writer("train"), writer("eval")
    stop_at = min(total_steps, max_steps or total_steps)
    metrics = {}
    while _count(epoch) < epochs and _count(adam.iterations) < stop_at:
        if _count(batch_in_epoch) == 0:
            task.reset_states()
        iterator = iter(train_data(_count(epoch), _count(batch_in_epoch)))
        with tqdm(total=steps_per_epoch, initial=_count(batch_in_epoch), unit="step",
                  desc=f"epoch {_count(epoch) + 1}/{epochs}", disable=not chief) as bar:
            while _count(batch_in_epoch) < steps_per_epoch and _count(adam.iterations) < stop_at:
                steps = min(steps_per_loop, steps_per_epoch - _count(batch_in_epoch),
                            stop_at - _count(adam.iterations))
                start = time.perf_counter()
                loss, norm = run_reading_shards(manifest, task.train_loop, iterator,
                                                tf.constant(steps))
                loss, norm = float(loss), float(norm)
                tokens_per_s = steps * batch_size * bptt / (time.perf_counter() - start)
                step = _count(adam.iterations)
                good = guard.is_good(step, loss)
                batch_in_epoch.assign_add(steps)
                bar.update(steps)
                bar.set_postfix(loss=f"{loss:.3f}", tokens_per_s=f"{tokens_per_s:,.0f}")
                if step % log_every_steps < steps or step == stop_at:
                    with train_writer.as_default(step=step):
                        tf.summary.scalar("loss", loss)
                        tf.summary.scalar("perplexity", math.exp(min(loss, 50)))
                        tf.summary.scalar("learning_rate", adam.learning_rate)
                        tf.summary.scalar("grad_norm", norm)
                        tf.summary.scalar("tokens_per_second", tokens_per_s)
                if step % checkpoint_every_steps < steps and good:
                    guard.saved(manager.save(checkpoint_number=step), step, loss)
                metrics = {"step": step, "train_loss": loss, "tokens_per_second": tokens_per_s}
        if _count(batch_in_epoch) == steps_per_epoch:
            epoch.assign_add(1)
            batch_in_epoch.assign(0)
            metrics.update(run_reading_shards(manifest, evaluate, task, valid(), eval_rows,
                                              eval_writer, _count(adam.iterations)))
            logging.info("epoch %d: %s", _count(epoch), metrics)
    if guard.bad_checks:  # ended inside a loss spike: the newest checkpoint stays a good one
        logging.warning("The run ended in a loss spike; not saving it over %s.",
                        guard.last_good and guard.last_good[0])
    else:
        manager.save(checkpoint_number=_count(adam.iterations))
    if not chief:
        tf.io.gfile.rmtree(write_dir)
    if "valid_perplexity" not in metrics:
        metrics.update(run_reading_shards(manifest, evaluate, task, valid(), eval_rows,
                                          eval_writer, _count(adam.iterations)))
    metrics["valid_unigram_perplexity"] = unigram_perplexity(manifest)
    return metrics


def evaluate(task, dataset, batch_size, writer, step):
    loss = task.evaluate(dataset, batch_size)
    with writer.as_default(step=step):
        tf.summary.scalar("loss", loss)
        tf.summary.scalar("perplexity", math.exp(loss))
    return {"valid_loss": loss, "valid_perplexity": math.exp(loss)}
