"""A fine-tuned classifier or tagger as a tf.Module that serves raw text: what `trainer.export`
writes for a run directory and what `trainer.predict` runs. Tokenization is tensorflow-text's
SentencePiece op in the graph, so a SavedModel needs TensorFlow and tensorflow-text only.

Classifier (long texts are read whole, as in training; an ensemble of classifiers, e.g. a
forward and a backward one, scores with the mean of its members' probabilities):
  serving_default(text: string [batch]) -> scores [batch, classes], labels string [batch]
  classify(inputs: serialized tf.Example [batch], feature "text") -> classes string
      [batch, classes], scores [batch, classes]: TF Serving's Classification API
Tagger (a word's tag is read off its first piece; ids cut to the run's max_len as in training,
words cut off get the outside tag and scores 0):
  serving_default(text: string [batch]) -> words, tags string [batch, words] (split on
      whitespace, padded with ""), scores [batch, words, tags]
  tag_words(words: string [batch, words], padded with "") -> the same
  The object's `tag_ragged(words: ragged string [batch, (words)])` returns ragged tags, scores.
"""
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
import tensorflow_text as tf_text

from common.errors import UserError
from common.tokenizer import SPECIAL_IDS
from trainer.fine_tuning.saved_run import load_run
from trainer.models.ulmfit_encoder import SentencePieceIds

CLASSIFY_METHOD = "tensorflow/serving/classify"


class _Serving(tf.Module):
    """`runs`: [(Keras model, RunDescription, spm.model path)] of one run, or of an ensemble's
    members (one label vocabulary), each with its own tokenizer."""

    def __init__(self, runs):
        description = runs[0][1]
        super().__init__(name=description.task)
        # The Keras models stay out of the tracked attributes (each would add a float-typed
        # default signature of its own); their variables and the tokenizers are what is saved.
        self.model_weights = [w for model, _, _ in runs for w in model.weights]
        self.spm_ids = [SentencePieceIds(spm_model_file) for _, _, spm_model_file in runs]
        self.spm_models = [tf.saved_model.Asset(spm) for _, _, spm in runs]  # beside the graph
        self.label_names = tf.Variable(description.labels, trainable=False)  # saved with it
        self._models = [lambda ids, model=model: model(ids, training=False)
                        for model, _, _ in runs]


class ClassifierServing(_Serving):

    def __init__(self, runs):
        super().__init__(runs)
        text_spec = tf.TensorSpec([None], tf.string, name="text")
        self.serve = tf.function(self._serve, input_signature=[text_spec])
        self.classify = tf.function(self._classify, input_signature=[
            tf.TensorSpec([None], tf.string, name="inputs")])

    def scores(self, text):
        return tf.add_n([tf.nn.softmax(model(spm_ids(text)), axis=-1)
                         for model, spm_ids in zip(self._models, self.spm_ids)]
                        ) / len(self._models)

    def _serve(self, text):
        scores = self.scores(text)
        return {"scores": scores, "labels": tf.gather(self.label_names, tf.argmax(scores, -1))}

    def _classify(self, inputs):
        text = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
        scores = self.scores(text)
        return {"classes": tf.tile(self.label_names[None], [tf.shape(scores)[0], 1]),
                "scores": scores}

    def signatures(self):
        return {"serving_default": self.serve, "classify": self.classify}


class TaggerServing(_Serving):

    def __init__(self, runs):
        super().__init__(runs)
        self.max_len = runs[0][1].settings["max_len"]
        self.word_tokenizer = tf_text.SentencepieceTokenizer(self.spm_ids[0].spm_model_proto,
                                                             out_type=tf.int32)
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None], tf.string, name="text")])
        self.tag_words = tf.function(self._tag_words, input_signature=[
            tf.TensorSpec([None, None], tf.string, name="words")])
        self.tag_ragged = tf.function(self._tag_ragged, input_signature=[
            tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1)])

    def _tag_ragged(self, words):
        """{tags, scores} of ragged words [batch, (words)], as ragged [batch, (words)] and
        [batch, (words), tags]. As data_pipeline.labeled_data.PieceEncoder.word_ids, in the
        graph: each word's pieces, BOS + all pieces + EOS cut to max_len, each word read off
        its first piece; a word cut off (or with no piece) gets the outside tag, scores 0."""
        pieces = self.word_tokenizer.tokenize(words)  # [batch, (words), (pieces)]
        counts = pieces.row_lengths(axis=2).to_tensor()  # [batch, words]; 0 past a row's end
        column = lambda token: tf.RaggedTensor.from_tensor(tf.fill([words.nrows(), 1], token))
        ids = tf.concat([column(SPECIAL_IDS["bos"]), pieces.merge_dims(1, 2),
                         column(SPECIAL_IDS["eos"])], axis=1)[:, :self.max_len]
        length = tf.cast(ids.row_lengths(), tf.int64)[:, None]
        starts = 1 + tf.cumsum(counts, axis=1, exclusive=True)
        found = tf.logical_and(counts > 0, starts < length)
        piece_scores = self._models[0](ids.to_tensor(SPECIAL_IDS["pad"]))
        scores = tf.where(found[:, :, None], tf.gather(
            piece_scores, tf.minimum(starts, length - 1), batch_dims=1), 0.0)
        tags = tf.where(found, tf.argmax(scores, axis=-1), 0)  # 0: the outside tag
        return {"tags": tf.RaggedTensor.from_tensor(tf.gather(self.label_names, tags),
                                                    lengths=words.row_lengths()),
                "scores": tf.RaggedTensor.from_tensor(scores, lengths=words.row_lengths())}

    def _padded(self, words):
        tagged = self._tag_ragged(words)
        return {"words": words.to_tensor(default_value=""),
                "tags": tagged["tags"].to_tensor(default_value=""),
                "scores": tagged["scores"].to_tensor()}

    def _tag_words(self, words):
        return self._padded(tf.RaggedTensor.from_tensor(words, padding=""))

    def _serve(self, text):
        return self._padded(tf.strings.split(text))

    def signatures(self):
        return {"serving_default": self.serve, "tag_words": self.tag_words}


def serving_module(run_dirs):
    """The serving module of a classifier or tagger run directory (saved_run.load_run), or of
    an ensemble of classifier run directories (a list)."""
    run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    runs = [load_run(run_dir) for run_dir in run_dirs]
    if len(runs) == 1:
        serving = ClassifierServing if runs[0][1].task == "classifier" else TaggerServing
        return serving(runs)
    for run_dir, (_, description, _) in zip(run_dirs, runs):
        if description.task != "classifier":
            raise UserError(f"{run_dir}: a {description.task} run; an ensemble averages "
                            "classifiers' probabilities: pass classifier runs only.")
        if description.labels != runs[0][1].labels:
            raise UserError(f"{run_dir}: labels {description.labels[:6]} differ from "
                            f"{run_dirs[0]}'s {runs[0][1].labels[:6]}; an ensemble's members "
                            "are trained on the same task (the same train file).")
    return ClassifierServing(runs)


def mark_classification_signature(saved_model_dir):
    """Gives the `classify` signature TF Serving's Classification API method name (a
    tf.function signature is always exported as a Predict one)."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        if "classify" in meta_graph.signature_def:
            meta_graph.signature_def["classify"].method_name = CLASSIFY_METHOD
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(proto.SerializeToString())
