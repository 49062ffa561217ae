"""ULMFiT's text classifier: the pretrained AWD-LSTM encoder under fastai's pooling head.

As fastai's SentenceEncoder, the encoder reads a whole text in `bptt`-sized chunks and the head
pools over its last `max_len` outputs (trainer/models/sentence_encoder.py). As fastai's
TextLearner, training adds AR and TAR on those outputs to the loss. On a backward language model's
encoder (`backwards`), the classifier reads each text reversed.
"""
import keras

from trainer.models.activation_regularization import ActivationRegularization
from trainer.models.config import downstream_config
from trainer.models.pooling_classifier import PoolingLinearClassifier
from trainer.models.reverse_tokens import ReverseTokens
from trainer.models.sentence_encoder import ChunkedEncoder, LastTokens
from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder


def ulmfit_classifier(*, num_classes, pretrained_weights=None, fixed_seq_len=None,
                      spm_model_file=None, drop_mult=1.0, bptt=72, max_len=72 * 20,
                      lin_ftrs=(50,), ps=(0.1,), ar_alpha=2.0, tar_beta=1.0,
                      backwards=False, **model_config):
    """(classifier: ids [batch, time] -> logits [batch, num_classes], spm_encoder_model).

    `pretrained_weights` and the sizes in `model_config` are as for tf2_ulmfit_encoder. The
    dropouts are AWD_LSTM_CLAS_CONFIG's, updated by `model_config`, times `drop_mult`; its
    `output_p` is the head's first dropout and `ps` (not scaled, as in fastai) the others,
    one per `lin_ftrs` layer and the output layer. `bptt` and `max_len` are fastai's
    text_classifier_learner's seq_len and max_len; `ar_alpha`, `tar_beta` its TextLearner's
    alpha and beta (0 turns them off). `backwards`: the encoder is a backward LM's.
    """
    sizes, dropouts = downstream_config(drop_mult, **model_config)
    output_p = dropouts.pop("output_p")
    _, encoder_num, _, spm_encoder_model = tf2_ulmfit_encoder(
        fixed_seq_len=fixed_seq_len, spm_model_file=spm_model_file,
        pretrained_weights=pretrained_weights, **sizes, **dropouts)
    ids, encoder = encoder_num.input, encoder_num.get_layer("encoder")
    pad_id = encoder.config["pad_id"]
    tokens = ReverseTokens(pad_id, name="reverse_tokens")(ids) if backwards else ids
    hidden = ChunkedEncoder(encoder, bptt, name="encoder")(tokens)
    pooled = LastTokens(max_len, pad_id, name="pooled_tokens")(tokens)
    hidden = ActivationRegularization(ar_alpha, tar_beta, name="activation_regularization")(
        hidden, pooled)
    head = PoolingLinearClassifier(num_classes, lin_ftrs, output_p, ps, name="classifier_head")
    logits = head(hidden, pooled)
    return keras.Model(ids, logits, name="ulmfit_classifier"), spm_encoder_model
