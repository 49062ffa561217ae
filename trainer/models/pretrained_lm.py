"""The language model of a pretrained model directory (trainer/checkpoints/pretrained.py reads
the directory): its architecture from lm_config.json, its weights from the checkpoint."""
import tensorflow as tf

from trainer.checkpoints.pretrained import (SHAPE_KEYS, PretrainedModelError, check_same_vocab,
                                            load_pretrained_config, model_dir_and_checkpoint,
                                            restore_weights, weights_by_path)
from trainer.models.language_model import AWDLSTMLanguageModel


def load_language_model(path, spm_model_file=None, **overrides):
    """(AWDLSTMLanguageModel with the pretrained weights, its PretrainedConfig).

    `path`: a model directory or checkpoint prefix. `spm_model_file`, when given, must be the
    pretraining SentencePiece model. `overrides` change non-shape settings, e.g. dropouts.
    """
    model_dir, checkpoint = model_dir_and_checkpoint(path)
    config = load_pretrained_config(model_dir)
    check_same_vocab(config, spm_model_file)
    resized = {k: v for k, v in overrides.items() if k in SHAPE_KEYS and v != config.model[k]}
    if resized:
        raise PretrainedModelError(
            f"{model_dir}: a model on these weights keeps their sizes "
            f"({', '.join(f'{k}={config.model[k]}' for k in resized)}), not {resized}. Drop "
            "those settings (e.g. AWDLSTMLanguageModel.emb_size) or train from scratch.")
    model = AWDLSTMLanguageModel(**{**config.model, **overrides})
    model(tf.zeros([1, 1], tf.int32))
    restore_weights(weights_by_path(model), checkpoint)
    return model, config
