"""ULMFiT's text classifier: the pretrained AWD-LSTM encoder under fastai's pooling head.

Documents longer than `fixed_seq_len` (or the data's max_len) are truncated to their first
tokens, where fastai instead runs the encoder over every bptt chunk and pools the last max_len
outputs; docstrings and most short texts fit whole.
"""
import keras

from trainer.models.pooling_classifier import PoolingLinearClassifier
from trainer.ulmfit_encoder import tf2_ulmfit_encoder

# fastai's awd_lstm_clas_config: the classifier regularizes harder than the language model.
CLASSIFIER_DROPOUTS = dict(hidden_p=0.3, input_p=0.4, embed_p=0.05, weight_p=0.5)


def ulmfit_classifier(*, num_classes, pretrained_weights=None, fixed_seq_len=None,
                      spm_model_file=None, lin_ftrs=(50,), output_p=0.4, ps=(0.1,),
                      **model_config):
    """(classifier: ids [batch, time] -> logits [batch, num_classes], spm_encoder_model).

    `pretrained_weights` and `model_config` are as for tf2_ulmfit_encoder; the encoder's
    dropouts default to fastai's classifier config.
    """
    _, encoder_num, outmask_num, spm_encoder_model = tf2_ulmfit_encoder(
        fixed_seq_len=fixed_seq_len, spm_model_file=spm_model_file,
        pretrained_weights=pretrained_weights, **{**CLASSIFIER_DROPOUTS, **model_config})
    head = PoolingLinearClassifier(num_classes, lin_ftrs, output_p, ps, name="classifier_head")
    logits = head(encoder_num.output, outmask_num.output)
    return keras.Model(encoder_num.input, logits, name="ulmfit_classifier"), spm_encoder_model
