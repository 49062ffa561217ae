"""python -m trainer.export --checkpoint=MODEL_DIR_OR_CKPT --output=DIR [--fixed_seq_len=N]

A classifier's or tagger's run directory (it has downstream.json) becomes the SavedModel that
trainer/downstream/serving.py describes: raw text in, labels or tags out. Several classifier
runs, comma-separated (`--checkpoint=FORWARD_RUN,BACKWARD_RUN`), become one SavedModel of their
ensemble: the mean of their probabilities. A language model
(pretrained or fine-tuned) becomes the encoder's SavedModel below.

Writes a SavedModel that needs neither this package nor a Python tokenizer, only TensorFlow and
tensorflow-text (whose SentencePiece op runs in the graph). Dropout and weight drop are off.
Serving signatures (`mask` is True on tokens, False on padding; padding id 1):
  string_encoder(text: string [batch])          -> hidden [batch, time, emb], mask
  numericalized_encoder(ids: int32 [batch, time]) -> hidden, mask
  spm_processor(text: string [batch])           -> ids, mask
  lm_head(ids: int32 [batch, time])             -> logits [batch, time, vocab] (next token)
Calling the loaded object (or a tensorflow_hub.KerasLayer of it) runs string_encoder's hidden
states. With --fixed_seq_len, `time` is that length (longer texts are cut); otherwise it is the
longest text of the batch. The directory appears complete or not at all.
"""
import data_pipeline.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import os

# Before TensorFlow loads: keep its C++ INFO lines out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags
import tensorflow as tf

from data_pipeline.atomic_files import temporary_path
from data_pipeline.errors import run_tool
from trainer.downstream.saved_run import ensemble_members
from trainer.downstream.serving import mark_classification_signature, serving_module
from trainer.models.xla import portable
from trainer.pretrained import PretrainedModelError, load_language_model
from trainer.ulmfit_encoder import SentencePieceIds, token_mask


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


def export(checkpoint, output, fixed_seq_len=None):
    """Exports `checkpoint` to `output`: a classifier or tagger run directory as
    trainer/downstream/serving.py describes, else the LM (model directory or checkpoint prefix)."""
    if tf.io.gfile.exists(output):
        raise PretrainedModelError(f"{output}: exists; pass a new --output (nothing was "
                                   "written).")
    runs = ensemble_members(checkpoint)
    if runs:
        if fixed_seq_len:
            raise PretrainedModelError(f"{checkpoint} is a fine-tuned run: its model reads "
                                       "texts as training did; drop --fixed_seq_len.")
        module = serving_module(runs)
    else:
        lm, config = load_language_model(checkpoint)
        module = ULMFiTServing(lm, config.spm_model_path, fixed_seq_len)
    staging = temporary_path(output.rstrip("/"))
    with portable():  # serves on any host: no cuDNN, and TF Serving needs no XLA
        tf.saved_model.save(module, staging, signatures=module.signatures())
    mark_classification_signature(staging)
    tf.io.gfile.rename(staging, output)
    return output


FLAGS = flags.FLAGS


def main(argv):
    del argv
    path = export(FLAGS.checkpoint, FLAGS.output, FLAGS.fixed_seq_len)
    print(f"SavedModel written to {path}")


if __name__ == "__main__":
    flags.DEFINE_string("checkpoint", None, "A model directory of trainer.main (an LM, a "
                        "classifier or a tagger) or trainer.convert_fastai, or one LM "
                        "checkpoint prefix in it; or classifier runs, comma-separated, for "
                        "their ensemble.", required=True)
    flags.DEFINE_string("output", None, "The SavedModel directory to create.", required=True)
    flags.DEFINE_integer("fixed_seq_len", None, "Pad/cut every text to this many ids.")
    run_tool(main)
