"""A pretrained model directory: what makes a checkpoint loadable without the run that made it.

MODEL_DIR/lm_config.json holds the language model's architecture, its direction (a backward LM
reads every text reversed) and names the SentencePiece model its ids come from (a copy,
`spm.model`, lives beside it, so the directory can be moved or copied to gs:// as a whole).
The trainer writes both when a run starts; `trainer.convert_fastai` writes them for imported
weights. Downstream models and the exporter load through here
(trainer/models/pretrained_lm.py builds the language model).
"""
import dataclasses
import json
import os

import tensorflow as tf

from common.atomic_files import sha256_of, write_atomically
from common.errors import UserError
from common.tokenizer import SPM_NAME
from trainer.checkpoints.intact import check_intact, latest_intact_checkpoint

LM_CONFIG_NAME = "lm_config.json"
# What fixes the weights' shapes; the rest of a model config (dropouts) is free to change.
SHAPE_KEYS = ("vocab_size", "emb_size", "hidden_size", "num_layers", "pad_id")


class PretrainedModelError(UserError):
    pass


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    directory: str
    model: dict          # AWDLSTMLanguageModel's get_config()
    spm_sha256: str
    special_ids: dict
    backwards: bool = False  # trained on reversed streams: its downstream models reverse texts

    @property
    def spm_model_path(self) -> str:
        return os.path.join(self.directory, SPM_NAME)

    @property
    def shape(self) -> dict:
        """The architecture without the regularization: same weights, other dropouts."""
        return {k: self.model[k] for k in SHAPE_KEYS}


def write_pretrained_config(model_dir, model_config, spm_model_path, special_ids,
                            backwards=False):
    """Copies the SentencePiece model into `model_dir` and writes lm_config.json (last)."""
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(spm_model_path, "rb") as f:
        write_atomically(os.path.join(model_dir, SPM_NAME), f.read())
    config = {"model": model_config, "spm_model": SPM_NAME,
              "spm_sha256": sha256_of(spm_model_path), "special_ids": special_ids,
              "backwards": backwards}
    write_atomically(os.path.join(model_dir, LM_CONFIG_NAME), json.dumps(config, indent=2))


def encoder_source(pretrained, from_scratch):
    """(pretrained_weights or None, sizes, SentencePiece model, backwards) of a downstream
    model's encoder: `pretrained`'s weights, or with `from_scratch` its sizes and vocabulary,
    random weights; `backwards` is the pretrained model's direction."""
    config = load_pretrained_config(model_dir_and_checkpoint(pretrained)[0])
    if from_scratch:
        return None, config.shape, config.spm_model_path, config.backwards
    return pretrained, {}, config.spm_model_path, config.backwards


def model_dir_and_checkpoint(path):
    """`path` is a model directory (its latest checkpoint) or one checkpoint prefix in it."""
    if tf.io.gfile.isdir(path):
        checkpoint = latest_intact_checkpoint(path)
        if checkpoint is None:
            raise PretrainedModelError(f"{path}: no checkpoint in this directory. Pass a model "
                                       "directory that trainer.main or convert_fastai wrote.")
        return path, checkpoint
    if not tf.io.gfile.exists(path + ".index"):
        raise PretrainedModelError(f"{path}: neither a model directory nor a checkpoint prefix "
                                   "(PREFIX.index is missing). Pass a model directory that "
                                   "trainer.main or trainer.convert_fastai wrote.")
    check_intact(path)
    return os.path.dirname(path), path


def load_pretrained_config(model_dir) -> PretrainedConfig:
    path = os.path.join(model_dir, LM_CONFIG_NAME)
    if not tf.io.gfile.exists(path):
        raise PretrainedModelError(
            f"{path}: missing. Checkpoints from trainer.main carry it since lm_config.json was "
            "introduced; rerun the training, or import weights with trainer.convert_fastai.")
    with tf.io.gfile.GFile(path) as f:
        try:
            fields = json.load(f)
        except json.JSONDecodeError as e:
            raise PretrainedModelError(f"{path}: not valid JSON ({e}).") from None
    try:
        # convert_fastai wrote no pad_id before it wrote the whole model config; the embedding
        # row of padding is SentencePiece's pad id.
        model = {"pad_id": fields["special_ids"]["pad"], **fields["model"]}
        return PretrainedConfig(model_dir, model, fields["spm_sha256"], fields["special_ids"],
                                bool(fields.get("backwards", False)))
    except (KeyError, TypeError) as e:
        raise PretrainedModelError(f"{path}: field {e} is missing; write the directory again "
                                   "(trainer.main or trainer.convert_fastai import).") from None


def check_same_vocab(config: PretrainedConfig, spm_model_file):
    """Refuses ids from another SentencePiece model than the one the weights were trained on."""
    if spm_model_file and sha256_of(spm_model_file) != config.spm_sha256:
        raise PretrainedModelError(
            f"{spm_model_file} is not the SentencePiece model of the pretrained weights "
            f"({config.spm_model_path}): token ids would mean other pieces. Encode the data "
            f"with {config.spm_model_path} (data_pipeline.build --spm_model=...) or pretrain "
            "on this vocabulary.")


def restore_weights(weights: dict, checkpoint):
    """Restores `weights` ({path: variable}, see weights_by_path) from `checkpoint`; every one
    of them must be in it with its shape."""
    stored = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    for name, variable in weights.items():
        # Checkpoint keys escape "." in object names as "..".
        key = f"model/{name.replace('.', '..')}/.ATTRIBUTES/VARIABLE_VALUE"
        if stored.get(key) != variable.shape.as_list():
            raise PretrainedModelError(
                f"{checkpoint}: {name} is {'missing' if key not in stored else stored[key]}, "
                f"this model needs {variable.shape.as_list()}; the checkpoint is of another "
                "architecture than its lm_config.json says.")
    tf.train.Checkpoint(model=tf.train.Checkpoint(**weights)).restore(checkpoint).expect_partial()


def weights_by_path(model):
    """The model's variables keyed by their path inside the model, e.g. "encoder.lstm_0.cell.
    kernel": the names checkpoints save them under. (Keras 3 does not expose layers held in
    lists to tf.train.Checkpoint, so the model itself is not enough.)"""
    # model.weights, not model.variables: seed-generator states have process-global paths.
    weights = {v.path.split("/", 1)[-1].replace("/", "."): v for v in model.weights}
    if len(weights) != len(model.weights):
        raise ValueError(f"{model.name}: two variables share a path; name the layers apart.")
    return weights


def model_checkpoint(model, **others):
    """A tf.train.Checkpoint with the model's weights by path under "model" (the layout
    restore_weights reads) and `others` (optimizer, counters) beside them."""
    return tf.train.Checkpoint(model=tf.train.Checkpoint(**weights_by_path(model)), **others)
