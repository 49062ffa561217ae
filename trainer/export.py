"""python -m trainer.export --checkpoint=MODEL_DIR_OR_CKPT --output=DIR [--fixed_seq_len=N]

A classifier's or tagger's run directory (it has downstream.json) becomes the SavedModel that
trainer/serving/runs.py describes: raw text in, labels or tags out. Several classifier
runs, comma-separated (`--checkpoint=FORWARD_RUN,BACKWARD_RUN`), become one SavedModel of their
ensemble: the mean of their probabilities. A language model
(pretrained or fine-tuned) becomes the encoder's SavedModel below.

Writes a SavedModel that needs neither this package nor a Python tokenizer, only TensorFlow and
tensorflow-text (whose SentencePiece op runs in the graph). Dropout and weight drop are off.
The language model's signatures (trainer/serving/language_model.py) (`mask` is True on tokens, False on padding; padding id 1):
  string_encoder(text: string [batch])          -> hidden [batch, time, emb], mask
  numericalized_encoder(ids: int32 [batch, time]) -> hidden, mask
  spm_processor(text: string [batch])           -> ids, mask
  lm_head(ids: int32 [batch, time])             -> logits [batch, time, vocab] (next token)
Calling the loaded object (or a tensorflow_hub.KerasLayer of it) runs string_encoder's hidden
states. With --fixed_seq_len, `time` is that length (longer texts are cut); otherwise it is the
longest text of the batch. The directory appears complete or not at all.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import os

# Before TensorFlow loads: keep its C++ INFO lines out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags
import tensorflow as tf

from common.atomic_files import temporary_path
from common.errors import run_tool
from trainer.checkpoints.pretrained import PretrainedModelError
from trainer.fine_tuning.saved_run import ensemble_members
from trainer.models.pretrained_lm import load_language_model
from trainer.models.xla import portable
from trainer.serving.language_model import ULMFiTServing
from trainer.serving.runs import mark_classification_signature, serving_module


def export(checkpoint, output, fixed_seq_len=None):
    """Exports `checkpoint` to `output`: a classifier or tagger run directory as
    trainer/serving/runs.py describes, else the LM (model directory or checkpoint prefix)."""
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
