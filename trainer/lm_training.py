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
from data_pipeline.lm_dataset import lm_dataset
from data_pipeline.manifest import MANIFEST_NAME, load_manifest
from data_pipeline.unigram import unigram_perplexity
from trainer.lm_task import LanguageModelTask
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optimizer import FastaiAdam
from trainer.schedules import one_cycle
from trainer.strategies import make_strategy

language_model = gin.external_configurable(AWDLSTMLanguageModel, "AWDLSTMLanguageModel")
build_settings = gin.external_configurable(BuildSettings, "BuildSettings")


@gin.configurable
def optimizer(lr_schedule, momentum_schedule, beta_2=0.99, epsilon=1e-5, weight_decay=0.01):
    adam = FastaiAdam(lr_schedule, momentum_schedule, beta_2, epsilon, weight_decay)
    adam.exclude_from_weight_decay(var_names=["bias"])  # fastai: wd_bn_bias=False
    return adam


def prepare_data(data_dir, build_input):
    """The manifest of `data_dir`, building it from `build_input` first if it is not there."""
    if build_input and not tf.io.gfile.exists(os.path.join(data_dir, MANIFEST_NAME)):
        logging.info("Building %s from %s.", data_dir, build_input)
        build(data_dir, build_settings(input=build_input))
    return load_manifest(data_dir)


def model_weights(model):
    """The model's variables keyed by their path inside the model, e.g. "encoder/lstm_0/cell/
    kernel": what checkpoints save, and what downstream models load by name. (Keras 3 does not
    expose layers held in lists to tf.train.Checkpoint, so the model itself is not enough.)"""
    # model.weights, not model.variables: seed-generator states have process-global paths.
    weights = {v.path.split("/", 1)[-1].replace("/", "."): v for v in model.weights}
    if len(weights) != len(model.weights):
        raise ValueError(f"{model.name}: two variables share a path; name the layers apart.")
    return tf.train.Checkpoint(**weights)


class NonFiniteLossError(FloatingPointError):
    pass


@gin.configurable(denylist=["model_dir"])
def train_lm(model_dir, data_dir=gin.REQUIRED, build_input=None, batch_size=64, bptt=70,
             epochs=1, max_steps=None, steps_per_loop=10, eval_batch_size=16, seed=0,
             clip_norm=0.25, ar_alpha=2.0, tar_beta=1.0, jit_compile=False,
             checkpoint_every_steps=500, keep_checkpoints=3, log_every_steps=50,
             deterministic=True, schedule=one_cycle):
    """Trains (or resumes) an AWD-LSTM LM in `model_dir`; returns final metrics.

    `batch_size` is global: each of the strategy's replicas gets batch_size / replicas rows.
    `max_steps` stops early (the schedule still spans all `epochs`).
    """
    keras.utils.set_random_seed(seed)  # the initial weights too: same config, same run
    if deterministic:
        tf.config.experimental.enable_op_determinism()  # bit-exact resume
    manifest = prepare_data(data_dir, build_input)
    strategy = make_strategy()
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"train_lm.batch_size={batch_size} must divide by {replicas} replicas.")
    per_replica = batch_size // replicas

    def train_data(epoch, skip):
        return strategy.distribute_datasets_from_function(
            lambda ctx: lm_dataset(manifest, "train", per_replica, bptt, ctx, seed=seed,
                                   epoch=epoch).skip(skip))

    steps_per_epoch = int(lm_dataset(manifest, "train", per_replica, bptt,
                                     tf.distribute.InputContext(replicas, 0, replicas))
                          .cardinality())
    total_steps = epochs * steps_per_epoch
    with strategy.scope():
        model = language_model(manifest.vocab_size)
        model(tf.zeros([per_replica, bptt], tf.int32))  # create the variables before restoring
        adam = optimizer(*schedule(total_steps))
        adam.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
    task = LanguageModelTask(model, adam, strategy, per_replica, seed, clip_norm, ar_alpha,
                             tar_beta, jit_compile)
    checkpoint = tf.train.Checkpoint(model=model_weights(model), optimizer=adam, epoch=epoch,
                                     batch_in_epoch=batch_in_epoch,
                                     carried_states=[list(s) for s in task.states])
    manager = tf.train.CheckpointManager(checkpoint, model_dir, keep_checkpoints,
                                         step_counter=adam.iterations)
    if manager.restore_or_initialize():
        logging.info("Resumed from %s: epoch %d, batch %d.", manager.latest_checkpoint,
                     int(epoch), int(batch_in_epoch))
    train_writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    valid = lambda: lm_dataset(manifest, "valid", eval_batch_size, bptt, shuffle=False)
    stop_at = min(total_steps, max_steps or total_steps)
    metrics = {}
    while int(epoch) < epochs and int(adam.iterations) < stop_at:
        if int(batch_in_epoch) == 0:
            task.reset_states()
        iterator = iter(train_data(int(epoch), int(batch_in_epoch)))
        bar = tqdm(total=steps_per_epoch, initial=int(batch_in_epoch), unit="step",
                   desc=f"epoch {int(epoch) + 1}/{epochs}")
        while int(batch_in_epoch) < steps_per_epoch and int(adam.iterations) < stop_at:
            steps = min(steps_per_loop, steps_per_epoch - int(batch_in_epoch),
                        stop_at - int(adam.iterations))
            start = time.perf_counter()
            loss, norm = task.train_loop(iterator, tf.constant(steps))
            loss, norm = float(loss), float(norm)
            tokens_per_s = steps * batch_size * bptt / (time.perf_counter() - start)
            step = int(adam.iterations)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; stopped without saving. The last good "
                    f"checkpoint is {manager.latest_checkpoint}. Lower the learning rate "
                    "(one_cycle.max_lr) or clip harder (train_lm.clip_norm).")
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
            if step % checkpoint_every_steps < steps:
                manager.save(checkpoint_number=step)
            metrics = {"step": step, "train_loss": loss, "tokens_per_second": tokens_per_s}
        bar.close()
        if int(batch_in_epoch) == steps_per_epoch:
            epoch.assign_add(1)
            batch_in_epoch.assign(0)
            metrics.update(evaluate(task, valid(), eval_batch_size, eval_writer, int(adam.iterations)))
            logging.info("epoch %d: %s", int(epoch), metrics)
    manager.save(checkpoint_number=int(adam.iterations))
    if "valid_perplexity" not in metrics:
        metrics.update(evaluate(task, valid(), eval_batch_size, eval_writer, int(adam.iterations)))
    metrics["valid_unigram_perplexity"] = unigram_perplexity(manifest)
    return metrics


def evaluate(task, dataset, batch_size, writer, step):
    loss = task.evaluate(dataset, batch_size)
    with writer.as_default(step=step):
        tf.summary.scalar("loss", loss)
        tf.summary.scalar("perplexity", math.exp(loss))
    return {"valid_loss": loss, "valid_perplexity": math.exp(loss)}
