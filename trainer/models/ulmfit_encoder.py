"""The seed's encoder API: `tf2_ulmfit_encoder` and the in-graph SentencePiece tokenizer.

Raw strings go through tensorflow-text's SentencePiece op (in the graph, so a SavedModel needs no
Python tokenizer), BOS and EOS are added and rows are right-padded with the pad id. The LSTMs
run left to right, so padding after a text never changes its hidden states.
"""
import keras
import tensorflow as tf
import tensorflow_text as tf_text

from common.tokenizer import SPECIAL_IDS, load_sentencepiece
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.models.pretrained_lm import load_language_model
PAD_ID = SPECIAL_IDS["pad"]


class SentencePieceIds(keras.layers.Layer):
    """Raw strings [batch] -> ids [batch, time] int32: BOS + pieces + EOS, padded with PAD_ID.

    With `fixed_seq_len`, every row has that length; longer texts keep their first
    `fixed_seq_len` ids (so lose their EOS), as the seed's fixed-length encoder does and as
    common.tokenizer.model_ids cuts the downstream data.
    """

    def __init__(self, spm_model_file=None, fixed_seq_len=None, spm_model_proto=None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if spm_model_proto is None:
            with tf.io.gfile.GFile(spm_model_file, "rb") as f:
                spm_model_proto = f.read()
        self.spm_model_proto = spm_model_proto
        self.fixed_seq_len = fixed_seq_len
        self.tokenizer = tf_text.SentencepieceTokenizer(spm_model_proto, out_type=tf.int32,
                                                        add_bos=True, add_eos=True)

    def call(self, strings):
        ragged = self.tokenizer.tokenize(strings)
        shape = None if self.fixed_seq_len is None else [None, self.fixed_seq_len]
        return ragged.to_tensor(default_value=PAD_ID, shape=shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.fixed_seq_len)

    def get_config(self):
        # The proto is not JSON; a saved Keras model reloads it through spm_model_file.
        return {**super().get_config(), "fixed_seq_len": self.fixed_seq_len}


def token_mask(ids):
    """True where there is a token, False on padding."""
    return tf.not_equal(ids, PAD_ID)


def tf2_ulmfit_encoder(fixed_seq_len=None, spm_model_file=None, *, pretrained_weights=None,
                       **model_config):
    """The seed's four objects: (lm_model_num, encoder_num, outmask_num, spm_encoder_model).

    lm_model_num: ids -> next-token logits (decoder tied to the embedding); encoder_num: ids ->
    the last LSTM's hidden states [batch, time, emb_size]; outmask_num: ids -> bool mask
    (True = token, False = padding); spm_encoder_model: raw strings -> ids, or None without an
    `spm_model_file`. `pretrained_weights`: a model directory or checkpoint of trainer.main or
    trainer.convert_fastai (its architecture is used; `model_config` may override dropouts).
    Without it, `model_config` builds a randomly initialized model (fastai's default size; the
    vocabulary size is the SentencePiece model's unless `vocab_size` is given). All three numeric
    models share one set of weights. Called as the seed does, `tf2_ulmfit_encoder(fixed_seq_len,
    spm_model_file)`, or with keywords.
    """
    if pretrained_weights:
        lm, config = load_language_model(pretrained_weights, spm_model_file, **model_config)
        spm_model_file = spm_model_file or config.spm_model_path
    else:
        if "vocab_size" not in model_config:
            if not spm_model_file:
                raise ValueError("tf2_ulmfit_encoder needs pretrained_weights, or an "
                                 "spm_model_file (or vocab_size) for a randomly initialized model.")
            model_config["vocab_size"] = load_sentencepiece(spm_model_file).get_piece_size()
        lm = AWDLSTMLanguageModel(**model_config)
        # Built as load_language_model builds it, so its weights have the same paths and a
        # model saved from one loads into the other (trainer/fine_tuning/saved_run.py).
        lm(tf.zeros([1, 1], tf.int32))
    ids = keras.Input(shape=(fixed_seq_len,), dtype="int32", name="ids")
    hidden, _ = lm.encoder(ids)
    encoder_num = keras.Model(ids, hidden, name="encoder_num")
    logits = lm(ids)[0]
    lm_model_num = keras.Model(ids, logits, name="lm_model_num")
    mask = keras.layers.Lambda(token_mask, name="mask")(ids)
    outmask_num = keras.Model(ids, mask, name="outmask_num")
    spm_encoder_model = None
    if spm_model_file:
        strings = keras.Input(shape=(), dtype="string", name="text")
        spm_ids = SentencePieceIds(spm_model_file, fixed_seq_len, name="spm_ids")(strings)
        spm_encoder_model = keras.Model(strings, spm_ids, name="spm_encoder_model")
    return lm_model_num, encoder_num, outmask_num, spm_encoder_model
