"""python -m trainer.predict --model_dir=RUN_OR_SAVEDMODEL --input=FILE --output=FILE

Labels (classifier) or per-word tags (tagger) for every input, with a fine-tuned run directory
or the SavedModel `trainer.export` made of it: both run the same serving code
(trainer/downstream/serving.py), so they give the same output.

Input: a text file, one text per line (a tagger splits it into words on whitespace), or JSONL
(`.jsonl`): objects with "text" for a classifier, "tokens" (a list of words) for a tagger.
Output (JSONL, one line per input, written when complete): {"label", "scores": {label: p}}
or {"words", "tags"}.
"""
import json
import os

from absl import flags
import tensorflow as tf
from tqdm import tqdm

from data_pipeline.atomic_files import commit, temporary_path
from data_pipeline.errors import UserError, run_tool
from data_pipeline.labeled_data import read_jsonl
from trainer.downstream.saved_run import is_run
from trainer.downstream.serving import serving_module


def load_predictor(path):
    """The serving module of a run directory, or the loaded SavedModel of one."""
    if is_run(path):
        return serving_module(path)
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
    """Texts (str), or a tagger's JSONL "tokens": lists of words."""
    if not path.endswith(".jsonl"):
        with tf.io.gfile.GFile(path) as f:
            return [line.rstrip("\n") for line in f]
    field = "tokens" if tagger else "text"
    rows = read_jsonl(path, [field])
    for number, row in rows:
        value = row[field]
        if not (isinstance(value, list) and all(isinstance(w, str) for w in value)
                if tagger else isinstance(value, str)):
            kind = "a list of words (strings)" if tagger else "a string"
            raise UserError(f"{path}:{number}: field {field!r} must be {kind}, not "
                            f"{json.dumps(value)[:40]}.")
    return [row[field] for _, row in rows]


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
    """Writes the predictions for `input_path` to `output_path`; returns how many."""
    if not tf.io.gfile.exists(input_path):
        raise UserError(f"--input={input_path}: no such file.")
    model = load_predictor(model_dir)
    tagger = hasattr(model, "tag_ragged")
    rows = read_inputs(input_path, tagger)
    temp = temporary_path(output_path)
    with tf.io.gfile.GFile(temp, "w") as out, tqdm(total=len(rows), unit="texts") as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            for prediction in (_tag if tagger else _classify)(model, batch):
                out.write(json.dumps(prediction) + "\n")
            bar.update(len(batch))
    commit(temp, output_path)
    return len(rows)


FLAGS = flags.FLAGS


def main(argv):
    del argv
    count = predict(FLAGS.model_dir, FLAGS.input, FLAGS.output, FLAGS.batch_size)
    print(f"{count} predictions written to {FLAGS.output}")


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A classifier's or tagger's run directory, or its "
                        "exported SavedModel.", required=True)
    flags.DEFINE_string("input", None, "Text lines, or JSONL (.jsonl).", required=True)
    flags.DEFINE_string("output", None, "The JSONL file to write.", required=True)
    flags.DEFINE_integer("batch_size", 64, "Texts per batch.")
    run_tool(main)
