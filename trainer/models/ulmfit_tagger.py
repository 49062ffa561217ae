"""Sequence taggers: a softmax over tags at every position of the encoder's output. The seed's
`ulmfit_sequence_tagger`, and `ulmfit_tagger`, the one train_tagger fine-tunes (a classifier's
dropouts, AR/TAR)."""
import keras

from trainer.models.activation_regularization import ActivationRegularization
from trainer.models.config import downstream_config
from trainer.models.pooling_classifier import TORCH_LINEAR_INIT
from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder


def tagger_head(encoder_num, num_classes, outmask_num=None, ar_alpha=0.0, tar_beta=0.0):
    """ids [batch, time] -> tag probabilities [batch, time, num_classes] on `encoder_num`;
    with `outmask_num`, training adds AR/TAR over the tokens' outputs (as fastai's TextLearner
    does for every model it trains)."""
    hidden = encoder_num.output
    if outmask_num is not None:
        hidden = ActivationRegularization(ar_alpha, tar_beta, name="activation_regularization")(
            hidden, outmask_num.output)
    probabilities = keras.layers.Dense(num_classes, activation="softmax",
                                       kernel_initializer=TORCH_LINEAR_INIT,
                                       name="tagger_head")(hidden)
    return keras.Model(encoder_num.input, probabilities, name="ulmfit_sequence_tagger")


def ulmfit_sequence_tagger(*, num_classes=3, pretrained_weights=None, fixed_seq_len=None,
                           spm_model_file=None, also_return_spm_encoder=False):
    """The seed's API. Returns the tagger, or (tagger, spm_encoder_model) with
    `also_return_spm_encoder`.

    `pretrained_weights`: a model directory or checkpoint of trainer.main or
    trainer.convert_fastai; its lm_config.json gives the architecture. Without it, an
    uninitialized model of fastai's default size over `spm_model_file`'s vocabulary.
    """
    _, encoder_num, _, spm_encoder_model = tf2_ulmfit_encoder(
        fixed_seq_len, spm_model_file, pretrained_weights=pretrained_weights)
    tagger = tagger_head(encoder_num, num_classes)
    return (tagger, spm_encoder_model) if also_return_spm_encoder else tagger


def ulmfit_tagger(*, num_classes, pretrained_weights=None, spm_model_file=None, drop_mult=1.0,
                  ar_alpha=2.0, tar_beta=1.0, **model_config):
    """The tagger to fine-tune: ids [batch, time] -> tag probabilities.

    `pretrained_weights`, `spm_model_file` and the sizes in `model_config` are as for
    tf2_ulmfit_encoder. The dropouts are AWD_LSTM_CLAS_CONFIG's, updated by `model_config`,
    times `drop_mult` (fastai starts every downstream model from the classifier config);
    `ar_alpha`, `tar_beta` as fastai's TextLearner adds them to any model it trains.
    """
    sizes, dropouts = downstream_config(drop_mult, **model_config)
    _, encoder_num, outmask_num, _ = tf2_ulmfit_encoder(
        pretrained_weights=pretrained_weights, spm_model_file=spm_model_file, **sizes, **dropouts)
    return tagger_head(encoder_num, num_classes, outmask_num, ar_alpha, tar_beta)
