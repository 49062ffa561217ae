"""python -m trainer.predict --model_dir=RUN_OR_SAVEDMODEL --input=FILE --output=FILE

Labels (classifier) or per-word tags (tagger) for every input, with a fine-tuned run directory
or the SavedModel `trainer.export` made of it: both run the same serving code
(trainer/serving/runs.py), so they give the same output. Classifier runs, comma-separated
(`--model_dir=FORWARD_RUN,BACKWARD_RUN`), predict as their ensemble (mean probabilities).

Input: a text file, one text per line (a tagger splits it into words on whitespace), or JSONL
(`.jsonl`): objects with "text" for a classifier, "tokens" (a list of words) for a tagger.
Output (JSONL, one line per input, written when complete): {"label", "scores": {label: p}}
or {"words", "tags"}. When every JSONL input also has its answer ("label", or "tags" one per
token), the accuracy (classifier) or span F1 (tagger) against it is printed too.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import json
import os

from absl import flags
import tensorflow as tf
from tqdm import tqdm

from common.atomic_files import commit, temporary_path
from common.errors import UserError, run_tool
from data_pipeline.labeled_data import read_jsonl
from trainer.fine_tuning.saved_run import ensemble_members
from trainer.fine_tuning.span_f1 import span_f1
from trainer.serving.runs import serving_module


def load_predictor(path):
    """The serving module of a run directory (or of an ensemble of them), or the loaded
    SavedModel of one."""
    runs = ensemble_members(path)
    if runs:
        return serving_module(runs)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import  (its ops)
        loaded = tf.saved_model.load(path)
        if hasattr(loaded, "label_names"):
            return loaded
        raise UserError(f"{path}: a SavedModel of a language model; predict needs a "
                        "classifier's or tagger's (python -m trainer.export --checkpoint=RUN).")
    raise UserError(f"{path}: neither a classifier or tagger run directory (no downstream.json) "
                    "nor a SavedModel; pass the --model_dir of a classifier.gin / tagger.gin run "
                    "or trainer.export's --output.")


def read_inputs(path, tagger):
    """(texts (str) or a tagger's JSONL "tokens", lists of words; the answers, labels or tag
    lists, when every JSONL row has one, else None)."""
    if not path.endswith(".jsonl"):
        with tf.io.gfile.GFile(path) as f:
            return [line.rstrip("\n") for line in f], None
    field = "tokens" if tagger else "text"
    rows = read_jsonl(path, [field])
    for number, row in rows:
        value = row[field]
        if not (isinstance(value, list) and all(isinstance(w, str) for w in value)
                if tagger else isinstance(value, str)):
            kind = "a list of words (strings)" if tagger else "a string"
            raise UserError(f"{path}:{number}: field {field!r} must be {kind}, not "
                            f"{json.dumps(value)[:40]}.")
    answer = "tags" if tagger else "label"
    answers = None
    if all(answer in row for _, row in rows):
        answers = [[str(t) for t in row[answer]] if tagger else str(row[answer])
                   for _, row in rows]
    return [row[field] for _, row in rows], answers


def score(predictions, answers, tagger):
    """{"span_f1": ...} of a tagger's predictions, {"accuracy": ...} of a classifier's."""
    if tagger:
        return {"span_f1": span_f1(answers, [p["tags"] for p in predictions])["f1"]}
    return {"accuracy": sum(p["label"] == a for p, a in zip(predictions, answers))
            / len(answers)}


def _classify(model, texts):
    out = model.serve(tf.constant(texts))
    names = [n.decode() for n in model.label_names.numpy()]
    return [{"label": label.decode(), "scores": dict(zip(names, map(float, scores)))}
            for label, scores in zip(out["labels"].numpy(), out["scores"].numpy())]


def _tag(model, rows):
    if isinstance(rows[0], str):  # raw text: split in the graph, words padded with ""
        out = model.serve(tf.constant(rows))
        return [{"words": [w.decode() for w in words if w], "tags": [t.decode() for t in tags if t]}
                for words, tags in zip(out["words"].numpy(), out["tags"].numpy())]
    ragged = tf.RaggedTensor.from_row_lengths(
        tf.constant([w for row in rows for w in row], tf.string), [len(r) for r in rows])
    return [{"words": words, "tags": [t.decode() for t in tags]}
            for words, tags in zip(rows, model.tag_ragged(ragged)["tags"].to_list())]


def predict(model_dir, input_path, output_path, batch_size=64):
    """Writes the predictions for `input_path` to `output_path`; returns (how many, the
    score against the input's answers or None)."""
    if not tf.io.gfile.exists(input_path):
        raise UserError(f"--input={input_path}: no such file.")
    model = load_predictor(model_dir)
    tagger = hasattr(model, "tag_ragged")
    rows, answers = read_inputs(input_path, tagger)
    temp, predictions = temporary_path(output_path), []
    with tf.io.gfile.GFile(temp, "w") as out, tqdm(total=len(rows), unit="texts") as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            predictions += (_tag if tagger else _classify)(model, batch)
            for prediction in predictions[start:]:
                out.write(json.dumps(prediction) + "\n")
            bar.update(len(batch))
    commit(temp, output_path)
    return len(rows), answers and score(predictions, answers, tagger)


FLAGS = flags.FLAGS


def main(argv):
    del argv
    count, scores = predict(FLAGS.model_dir, FLAGS.input, FLAGS.output, FLAGS.batch_size)
    print(f"{count} predictions written to {FLAGS.output}")
    for name, value in (scores or {}).items():
        print(f"{name} {value:.4f} against the input's answers")


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A classifier's or tagger's run directory, or its "
                        "exported SavedModel; or classifier runs, comma-separated, for their "
                        "ensemble.", required=True)
    flags.DEFINE_string("input", None, "Text lines, or JSONL (.jsonl).", required=True)
    flags.DEFINE_string("output", None, "The JSONL file to write.", required=True)
    flags.DEFINE_integer("batch_size", 64, "Texts per batch.")
    run_tool(main)
