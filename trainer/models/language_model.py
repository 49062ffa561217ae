"""AWD-LSTM language model: the encoder, output dropout, a decoder tied to the embedding, and the
AR/TAR penalty its trainer adds to the loss."""
import keras
import tensorflow as tf

from trainer.models.activation_regularization import activation_regularization
from trainer.models.awd_lstm import AWDLSTMEncoder, sub_seed
from trainer.models.config import AWD_LSTM_LM_CONFIG, awd_lstm_config
from trainer.models.dropouts import LockedDropout

_OUTPUT_SEED = 300


class AWDLSTMLanguageModel(keras.Model):
    """`call(ids, states, training, seed)` -> (logits, new_states, raw_output, dropped_output).

    `config`: sizes and dropouts over AWD_LSTM_LM_CONFIG (fastai's `awd_lstm_lm_config`), the
    dropouts times `drop_mult`. The decoder's weight IS the embedding matrix (tied), with its
    own bias. `ar_alpha`, `tar_beta`: fastai's TextLearner alpha and beta, kept with the model
    as the classifier and the tagger keep theirs; training adds `regularization(raw_output,
    dropped_output)` to the loss (0 turns either off).
    """

    def __init__(self, vocab_size, drop_mult=1.0, ar_alpha=2.0, tar_beta=1.0, **config):
        super().__init__()
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        config = awd_lstm_config(AWD_LSTM_LM_CONFIG, drop_mult, **config)
        self.output_p = config.pop("output_p")
        self.encoder = AWDLSTMEncoder(vocab_size, name="encoder", **config)
        self.output_dropout = LockedDropout(self.output_p, name="output_dropout")

    def build(self, input_shape):
        if not self.encoder.built:  # it may have been called on its own first
            self.encoder.build(input_shape)
        self.decoder_bias = self.add_weight(
            shape=(self.encoder.embedding.input_dim,), initializer="zeros", name="decoder_bias")

    def call(self, ids, states=None, training=False, seed=None):
        if training and seed is None:
            seed = tf.cast(self.encoder.seed_generator.next(), tf.int32)
        raw, new_states = self.encoder(ids, states, training=training, seed=seed)
        dropped = self.output_dropout(
            raw, training=training, seed=sub_seed(seed, _OUTPUT_SEED) if training else None)
        matrix = tf.cast(self.encoder.embedding.embeddings, dropped.dtype)
        logits = tf.einsum("bte,ve->btv", dropped, matrix)
        return logits + tf.cast(self.decoder_bias, logits.dtype), new_states, raw, dropped

    def regularization(self, raw_output, dropped_output):
        return activation_regularization(raw_output, dropped_output, self.ar_alpha, self.tar_beta)

    def get_config(self):
        return {"vocab_size": self.encoder.embedding.input_dim, "output_p": self.output_p,
                **{k: v for k, v in self.encoder.config.items() if k != "vocab_size"}}
