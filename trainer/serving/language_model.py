"""A language model as a tf.Module that serves raw text: the encoder's SavedModel that
`trainer.export` writes (its docstring lists the signatures)."""
import tensorflow as tf

from trainer.models.ulmfit_encoder import SentencePieceIds, token_mask


class ULMFiTServing(tf.Module):
    """The exported object: an LM with its tokenizer, inference mode only."""

    def __init__(self, lm, spm_model_file, fixed_seq_len=None):
        super().__init__(name="ulmfit")
        # The Keras model stays out of the tracked attributes (it would add a float-typed
        # default signature of its own); its variables and the tokenizer are what is saved.
        self.model_weights = list(lm.weights)
        self.spm_ids = SentencePieceIds(spm_model_file, fixed_seq_len)
        self.tokenizer = self.spm_ids.tokenizer
        self.spm_model = tf.saved_model.Asset(spm_model_file)  # shipped beside the graph

        def spm_processor(text):
            ids = self.spm_ids(text)
            return {"ids": ids, "mask": token_mask(ids)}

        def numericalized_encoder(ids):
            hidden, _ = lm.encoder(ids, training=False)
            return {"hidden": hidden, "mask": token_mask(ids)}

        def string_encoder(text):
            return numericalized_encoder(self.spm_ids(text))

        def lm_head(ids):
            return {"logits": lm(ids, training=False)[0]}

        ids_spec = tf.TensorSpec([None, fixed_seq_len], tf.int32, name="ids")
        text_spec = tf.TensorSpec([None], tf.string, name="text")
        self.string_encoder = tf.function(string_encoder, input_signature=[text_spec])
        self.numericalized_encoder = tf.function(numericalized_encoder,
                                                 input_signature=[ids_spec])
        self.spm_processor = tf.function(spm_processor, input_signature=[text_spec])
        self.lm_head = tf.function(lm_head, input_signature=[ids_spec])
        self.__call__ = tf.function(lambda text: string_encoder(text)["hidden"],
                                    input_signature=[text_spec])

    def signatures(self):
        return {name: getattr(self, name) for name in
                ("string_encoder", "numericalized_encoder", "spm_processor", "lm_head")}
