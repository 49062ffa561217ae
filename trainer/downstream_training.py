"""ULMFiT stage 3: fine-tune a pretrained encoder as a classifier or a sequence tagger.

`train_classifier` and `train_tagger` are gin entry points (gin_configs/classifier.gin and
tagger.gin, run by trainer.main). Both train with Keras' fit and ULMFiT's recipe: a schedule
(STLR by default), FastaiAdam with discriminative learning rates per layer group, gradual
unfreezing, gradient clipping. `from_scratch=True` trains the same architecture, with the
same recipe, from random weights: the baseline that pretraining has to beat.

A run checkpoints after every epoch (MODEL_DIR/resume); started again with the same model_dir
it goes on from the last finished epoch (weights, optimizer state, schedule position and
unfreezing stage), and a finished run only evaluates again. The resumed epochs see the data in
another order and draw other dropout masks than an uninterrupted run would.
"""
import json
import os
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from data_pipeline import labeled_data as data
from data_pipeline.atomic_files import write_atomically
from data_pipeline.demo_tasks import write_demo_tasks
from data_pipeline.sources import SPLITS
from trainer.checkpoints import latest_intact_checkpoint
from trainer.fine_tuning import (GradualUnfreezing, discriminative_lr_factors, layer_groups,
                                 unfreeze_last)
from trainer.optimizer import fastai_adam
from trainer.pretrained import (PretrainedModelError, load_pretrained_config, model_checkpoint,
                                model_dir_and_checkpoint)
from trainer.schedules import stlr
from trainer.span_f1 import span_f1
from trainer.strategies import checkpoint_write_dir, make_strategy
from trainer.ulmfit_classifier import ulmfit_classifier
from trainer.ulmfit_tagger import tagger_head
from trainer.ulmfit_encoder import tf2_ulmfit_encoder


@gin.configurable
def demo_task_files(task, directory="/tmp/ulmfit_demo_tasks"):
    """{split: path} of a demo task ("classify" or "tag"), written on first use."""
    files = {split: os.path.join(directory, f"{task}-{split}.jsonl") for split in SPLITS}
    if not all(tf.io.gfile.exists(f) for f in files.values()):
        write_demo_tasks(directory)
    return files


def _encoder_source(pretrained, from_scratch):
    """(pretrained_weights or None, architecture overrides, spm model) of the encoder."""
    model_dir, _ = model_dir_and_checkpoint(pretrained)
    config = load_pretrained_config(model_dir)
    if from_scratch:  # same architecture and vocabulary, random weights
        return None, config.shape, config.spm_model_path
    return pretrained, {}, config.spm_model_path


@gin.configurable
def fit_recipe(model, loss, train, valid, epochs, steps_per_epoch, schedule=stlr,
               discriminative_factor=2.6, gradual_unfreezing=True, clip_norm=0.25,
               weight_decay=0.01, metrics=(), model_dir=None, tokens_per_epoch=None):
    """Compiles `model` with ULMFiT's optimizer settings and fits it; returns the history."""
    groups = layer_groups(model)
    factors = discriminative_lr_factors(groups, discriminative_factor or 1.0)
    lr, beta_1 = schedule(epochs * steps_per_epoch)
    adam = fastai_adam(lr, beta_1, clip_norm=clip_norm, weight_decay=weight_decay,
                       lr_factors=factors)
    adam.build(model.trainable_variables)  # every variable, frozen ones included
    model.compile(adam, loss, metrics=list(metrics), jit_compile=False)
    callbacks = [GradualUnfreezing(groups)] if gradual_unfreezing else []
    if tokens_per_epoch:
        callbacks.append(TokensPerSecond(tokens_per_epoch))
    initial_epoch = 0
    if model_dir:
        checkpoints = EpochCheckpoints(model, adam, os.path.join(model_dir, "resume"))
        initial_epoch = checkpoints.restore(steps_per_epoch)
        callbacks += [checkpoints, keras.callbacks.TensorBoard(model_dir, update_freq=10)]
    history = model.fit(train, validation_data=valid, epochs=epochs, callbacks=callbacks,
                        initial_epoch=initial_epoch, shuffle=False,
                        verbose=2)  # `train` reshuffles itself
    unfreeze_last(groups, len(groups))
    return history


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the model and optimizer state after every epoch (the last one is kept)."""

    def __init__(self, model, optimizer, directory):
        super().__init__()
        self.directory = directory
        self.checkpoint = model_checkpoint(model, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, checkpoint_write_dir(tf.distribute.get_strategy(), directory), 1)

    def restore(self, steps_per_epoch):
        """Restores the last epoch's checkpoint, if any; returns the epoch to go on from."""
        latest = latest_intact_checkpoint(self.directory)
        if not latest:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        # Checkpoints are written at epoch ends only, so the step count is whole epochs.
        epoch = int(self.checkpoint.optimizer.iterations.numpy()) // steps_per_epoch
        logging.info("Resumed from %s: %d epochs done.", latest, epoch)
        return epoch

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)

    def on_train_end(self, logs=None):
        if self.manager.directory != self.directory:  # a non-chief worker's scratch copy
            tf.io.gfile.rmtree(self.manager.directory)


class TokensPerSecond(keras.callbacks.Callback):
    """Adds `tokens_per_s` (training tokens, padding excluded) to each epoch's log line."""

    def __init__(self, tokens_per_epoch):
        super().__init__()
        self.tokens_per_epoch = tokens_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.end = time.perf_counter()  # validation runs after the last batch; not counted

    def on_epoch_end(self, epoch, logs=None):
        logs["tokens_per_s"] = self.tokens_per_epoch / (self.end - self.start)


def _save(model_dir, model, metrics):
    tf.io.gfile.makedirs(model_dir)
    model_checkpoint(model).write(os.path.join(model_dir, "weights"))
    write_atomically(os.path.join(model_dir, "metrics.json"), json.dumps(metrics, indent=2))
    return metrics


def _label_ids(labels, vocabulary, path):
    index = {label: i for i, label in enumerate(vocabulary)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise PretrainedModelError(f"{path}: labels {unknown[:5]} never occur in the train "
                                   "file; the model has no class for them.")
    return [index[label] for label in labels]


@gin.configurable(denylist=["model_dir"])
def train_classifier(model_dir, pretrained=gin.REQUIRED, files=None, from_scratch=False,
                     max_len=256, batch_size=32, epochs=4, seed=0):
    """Fine-tunes a classifier; `files` {train, valid, test} are JSONL (default: the demo
    task). Returns accuracy on valid and test."""
    files = files or demo_task_files("classify")
    keras.utils.set_random_seed(seed)
    weights, architecture, spm_model = _encoder_source(pretrained, from_scratch)
    encoder = data.PieceEncoder(spm_model, max_len)

    def encoded(split):
        texts, labels = data.read_classification(files[split])
        return [encoder.text_ids(t) for t in texts], labels

    splits = {split: encoded(split) for split in SPLITS}
    vocabulary = data.label_vocabulary(splits["train"][1])
    train_ids = splits["train"][0]

    def dataset(split, shuffle_seed=None):
        ids, labels = splits[split]
        return data.labelled_dataset(ids, _label_ids(labels, vocabulary, files[split]),
                                     batch_size, shuffle_seed=shuffle_seed)

    with make_strategy().scope():
        model, _ = ulmfit_classifier(num_classes=len(vocabulary), pretrained_weights=weights,
                                     spm_model_file=spm_model, **architecture)
        fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   dataset("train", seed), dataset("valid"), epochs,
                   -(-len(train_ids) // batch_size), metrics=["accuracy"], model_dir=model_dir,
                   tokens_per_epoch=sum(map(len, train_ids)))
    metrics = {"labels": vocabulary, "from_scratch": from_scratch}
    for split in ("valid", "test"):
        metrics[f"{split}_accuracy"] = float(model.evaluate(dataset(split), verbose=0,
                                                            return_dict=True)["accuracy"])
    return _save(model_dir, model, metrics)


def _predicted_tags(model, dataset, word_starts, vocabulary, batch_size):
    """Per-word tag strings of an unshuffled dataset, read off each word's first piece."""
    tags = []
    for k, (ids, _) in enumerate(dataset):
        predictions = np.argmax(model(ids, training=False).numpy(), -1)
        starts = word_starts[k * batch_size:(k + 1) * batch_size]
        tags += [[vocabulary[p] for p in data.word_predictions(row, s)]
                 for row, s in zip(predictions, starts)]
    return tags


@gin.configurable(denylist=["model_dir"])
def train_tagger(model_dir, pretrained=gin.REQUIRED, files=None, from_scratch=False,
                 max_len=128, batch_size=32, epochs=4, outside_tag="O", seed=0):
    """Fine-tunes the seed's sequence tagger; `files` {train, valid, test} are JSONL or
    TSV/CoNLL (default: the demo task). Returns span-level F1 on valid and test."""
    files = files or demo_task_files("tag")
    keras.utils.set_random_seed(seed)
    weights, architecture, spm_model = _encoder_source(pretrained, from_scratch)
    encoder = data.PieceEncoder(spm_model, max_len)
    sentences = {split: data.read_tagging(path) for split, path in files.items()}
    vocabulary = data.label_vocabulary([t for _, tags in sentences["train"] for t in tags],
                                       outside_tag)

    def encoded(split):
        ids, labels, starts = [], [], []
        for words, tags in sentences[split]:
            row, word_starts = encoder.word_ids(words)
            ids.append(row)
            labels.append(data.align_labels(_label_ids(tags, vocabulary, files[split]),
                                            word_starts, len(row)))
            starts.append(word_starts)
        return ids, labels, starts

    splits = {split: encoded(split) for split in SPLITS}  # (ids, piece labels, word starts)
    train_ids = splits["train"][0]

    def dataset(split, shuffle_seed=None):
        ids, labels, _ = splits[split]
        return data.labelled_dataset(ids, labels, batch_size, data.IGNORE, shuffle_seed)

    with make_strategy().scope():
        _, encoder_num, _, _ = tf2_ulmfit_encoder(pretrained_weights=weights,
                                                  spm_model_file=spm_model, **architecture)
        model = tagger_head(encoder_num, len(vocabulary))
        fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(ignore_class=data.IGNORE),
                   dataset("train", seed), dataset("valid"), epochs,
                   -(-len(train_ids) // batch_size), model_dir=model_dir,
                   tokens_per_epoch=sum(map(len, train_ids)))
    metrics = {"tags": vocabulary, "from_scratch": from_scratch}
    for split in ("valid", "test"):
        predicted = _predicted_tags(model, dataset(split), splits[split][2], vocabulary,
                                    batch_size)
        truth = [tags for _, tags in sentences[split]]  # words cut off by max_len count as O
        metrics.update({f"{split}_{k}": v for k, v in span_f1(truth, predicted).items()})
    return _save(model_dir, model, metrics)
