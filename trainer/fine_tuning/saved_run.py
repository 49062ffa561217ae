"""A fine-tuned classifier's or tagger's run directory: what it holds and how to rebuild it.

MODEL_DIR/downstream.json says which model the run trained and everything needed to build it
again (sizes, settings, the label vocabulary); MODEL_DIR/spm.model is the vocabulary's
SentencePiece model; MODEL_DIR/weights the trained weights. Export and predict read a run
through `load_run` alone, so they need no gin and no training data.
"""
import dataclasses
import json
import os

import tensorflow as tf

from common.atomic_files import write_atomically
from trainer.checkpoints.pretrained import (PretrainedModelError, model_checkpoint, restore_weights,
                                            weights_by_path)
from trainer.models.ulmfit_classifier import ulmfit_classifier
from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder
from trainer.models.ulmfit_tagger import tagger_head
from trainer.runtime.strategies import checkpoint_write_dir

RUN_FILE = "downstream.json"
SPM_FILE = "spm.model"


@dataclasses.dataclass(frozen=True)
class RunDescription:
    task: str            # "classifier" or "tagger"
    labels: list         # class or tag strings, in the model's output order
    encoder: dict        # AWDLSTMEncoder.config: sizes and dropouts
    settings: dict       # classifier: bptt, max_len, lin_ftrs, ps, output_p, backwards;
                         # tagger: max_len


def describe(task, model, labels, max_len, backwards=False):
    """The RunDescription of a model train_classifier or train_tagger built."""
    if task == "classifier":
        chunked = model.get_layer("encoder")
        head = model.get_layer("classifier_head").config
        settings = {"bptt": chunked.bptt, "max_len": max_len, "lin_ftrs": list(head["lin_ftrs"]),
                    "ps": list(head["ps"]), "output_p": head["output_p"],
                    "backwards": backwards}
        return RunDescription(task, list(labels), dict(chunked.encoder.config), settings)
    return RunDescription(task, list(labels), dict(model.get_layer("encoder").config),
                          {"max_len": max_len})


def build_model(description, spm_model_file=None, pretrained_weights=None):
    """The Keras model a description describes (fresh weights unless `pretrained_weights`)."""
    config = {**description.encoder}
    if description.task == "classifier":
        settings = description.settings
        model, _ = ulmfit_classifier(
            num_classes=len(description.labels), spm_model_file=spm_model_file,
            pretrained_weights=pretrained_weights, bptt=settings["bptt"],
            max_len=settings["max_len"], lin_ftrs=settings["lin_ftrs"], ps=settings["ps"],
            output_p=settings["output_p"], backwards=settings.get("backwards", False), **config)
        return model
    _, encoder_num, outmask_num, _ = tf2_ulmfit_encoder(
        spm_model_file=spm_model_file, pretrained_weights=pretrained_weights, **config)
    return tagger_head(encoder_num, len(description.labels), outmask_num)


def save_run(model_dir, model, description, spm_model_file, metrics):
    """Writes the weights, spm.model, downstream.json and metrics.json (last) of a run; on the
    chief only, the one writer of a run directory."""
    write_dir = checkpoint_write_dir(None, model_dir)
    tf.io.gfile.makedirs(write_dir)
    model_checkpoint(model).write(os.path.join(write_dir, "weights"))
    if write_dir != model_dir:  # another worker's: saving may gather values from every worker
        tf.io.gfile.rmtree(write_dir)
        return metrics
    tf.io.gfile.copy(spm_model_file, os.path.join(model_dir, SPM_FILE), overwrite=True)
    write_atomically(os.path.join(model_dir, RUN_FILE),
                     json.dumps(dataclasses.asdict(description), indent=2))
    write_atomically(os.path.join(model_dir, "metrics.json"), json.dumps(metrics, indent=2))
    return metrics


def is_run(path):
    return tf.io.gfile.exists(os.path.join(path, RUN_FILE))


def ensemble_members(paths):
    """The run directories of "RUN" or "RUN,RUN,..." (an ensemble); [] if `paths` is one path
    that is no run (e.g. a language model)."""
    members = [p for p in paths.split(",") if p]
    if len(members) == 1:
        return members if is_run(members[0]) else []
    for path in members:
        if not is_run(path):
            raise PretrainedModelError(f"{path}: not a classifier run directory (no {RUN_FILE}); "
                                       "an ensemble joins runs of classifier.gin.")
    return members


def load_run(model_dir):
    """(Keras model with the run's trained weights, RunDescription, spm.model path)."""
    path = os.path.join(model_dir, RUN_FILE)
    try:
        with tf.io.gfile.GFile(path) as f:
            description = RunDescription(**json.load(f))
    except (json.JSONDecodeError, TypeError) as e:
        raise PretrainedModelError(f"{path}: not a run description ({e}); train the run again "
                                   "to rewrite it.") from None
    spm_model_file = os.path.join(model_dir, SPM_FILE)
    model = build_model(description, spm_model_file)
    weights = os.path.join(model_dir, "weights")
    if not tf.io.gfile.exists(weights + ".index"):
        raise PretrainedModelError(f"{model_dir}: no trained weights ({weights}); the run did "
                                   "not finish. Run its training command again.")
    restore_weights(weights_by_path(model), weights)
    return model, description, spm_model_file

