"""Fine-tuned classifiers and taggers exported as SavedModels that serve raw text."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from data_pipeline import labeled_data as data
from trainer.checkpoints.pretrained import model_checkpoint
from trainer.export import export
from trainer.fine_tuning.classification import train_classifier
from trainer.fine_tuning.saved_run import load_run
from trainer.fine_tuning.tagging import predicted_tags, train_tagger
from trainer.predict import predict
from test_export import a_gpu_reported, graph_ops_and_xla

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "the model reads tokens and predicts next one while hidden state carries".split()
# The last text is longer than the classifier's bptt (8) and the tagger's max_len (10): whole
# texts in chunks for the one, ids cut (words past the cut tagged "O") for the other.
# Words the tiny vocabulary lacks come in several pieces, so a tag read off another piece than
# the first shows.
TEXTS = ["the zebra model reads quixotic tokens", "", "hidden state", " ".join(WORDS * 3)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def runs(pretrained_lm, tmp_path_factory):
    """(classifier run dir, tagger run dir), one epoch each on a tiny task."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    texts = [list(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(24)]
    classify = {s: _jsonl(root / f"c-{s}.jsonl", [
        {"text": " ".join(t), "label": ["a", "b", "c"][i % 3]} for i, t in enumerate(texts)])
        for s in ("train", "valid", "test")}
    tag = {s: _jsonl(root / f"t-{s}.jsonl", [
        {"tokens": t, "tags": ["B-DET" if w == "the" else "O" for w in t]} for t in texts])
        for s in ("train", "valid", "test")}
    train_classifier(str(root / "classifier"), pretrained=pretrained_lm[0], files=classify,
                     epochs=1, batch_size=8, bptt=8)
    train_tagger(str(root / "tagger"), pretrained=pretrained_lm[0], files=tag, epochs=1,
                 batch_size=8, max_len=10)
    # One epoch leaves the tagger saying "O" everywhere. A head that tags B-DET where the
    # hidden state at a word's first piece lies above the median along a random direction
    # makes half the words B-DET, each by its own piece, so a misaligned tag shows.
    tagger, description, spm_model = load_run(str(root / "tagger"))
    head = tagger.get_layer("tagger_head")
    hidden = keras.Model(tagger.input, head.input)
    encoder = data.PieceEncoder(spm_model, description.settings["max_len"])
    firsts = [hidden(tf.constant([ids]))[0].numpy()[start]
              for ids, starts in (encoder.word_ids(t.split()) for t in TEXTS)
              for start in starts if start >= 0]
    direction = np.random.default_rng(1).normal(size=head.kernel.shape[0]).astype(np.float32)
    head.kernel.assign(np.stack([np.zeros_like(direction), direction], axis=1))
    head.bias.assign([np.median(np.dot(firsts, direction)), 0.0])
    model_checkpoint(tagger).write(str(root / "tagger" / "weights"))
    return str(root / "classifier"), str(root / "tagger")


def _serve_in_a_fresh_process(saved_model, calls, tmp_path):
    """{name: outputs} of `calls` ({name: (signature, {input: value})}) in a process that
    imports only TensorFlow and tensorflow-text."""
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece op
        loaded = tf.saved_model.load({saved_model!r})
        out = {{}}
        for name, (signature, inputs) in json.loads({json.dumps(json.dumps(calls))}).items():
            if signature == "tag_ragged":
                result = loaded.tag_ragged(tf.ragged.constant(inputs["words"]))
            else:
                result = loaded.signatures[signature](**{{
                    k: tf.constant(v if k != "inputs" else [bytes.fromhex(x) for x in v])
                    for k, v in inputs.items()}})
            out[name] = {{k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy().tolist())
                         for k, v in result.items()}}
        assert not [m for m in sys.modules if m.split(".")[0] in ("trainer", "data_pipeline", "common")]
        print(json.dumps(out, default=lambda b: b.decode()))
    """)
    done = subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                          capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_predictions(from_run, from_saved_model):
    """trainer.predict's lines from a run and from its SavedModel: the same labels or tags;
    scores to float rounding (the run's kernel is compiled by XLA, the export's is not)."""
    assert len(from_run) == len(from_saved_model)
    for ours, theirs in zip(from_run, from_saved_model):
        assert ours.keys() == theirs.keys()
        for key in ours:
            if key == "scores":  # {label: probability} or per-word lists
                if isinstance(ours[key], dict):
                    assert ours[key].keys() == theirs[key].keys()
                    ours[key], theirs[key] = list(ours[key].values()), list(theirs[key].values())
                np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)
            else:
                assert ours[key] == theirs[key], key


def assert_serves_anywhere(saved_model):
    """No cuDNN op (no CPU kernel) and no function XLA must compile (TF Serving without XLA)."""
    ops, compiled = graph_ops_and_xla(saved_model)
    assert "StatefulPartitionedCall" in ops and not [op for op in ops if "Cudnn" in op]
    assert not compiled


def _example(text):
    return tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[text.encode()]))})).SerializeToString().hex()


@pytest.mark.heavy
def test_a_classifier_serves_raw_text_as_the_keras_model_scores_it(runs, tmp_path):
    model, description, spm_model = load_run(runs[0])
    encoder = data.PieceEncoder(spm_model, max_len=None)
    expected = [tf.nn.softmax(model(tf.constant([encoder.text_ids(t)]), training=False))[0]
                .numpy() for t in TEXTS]
    output = str(tmp_path / "classifier_savedmodel")
    with a_gpu_reported():  # exported on a GPU host, served on a CPU one
        export(runs[0], output)
    assert_serves_anywhere(output)
    served = _serve_in_a_fresh_process(output, {
        "raw": ("serving_default", {"text": TEXTS}),
        "api": ("classify", {"inputs": [_example(t) for t in TEXTS]})}, tmp_path)
    np.testing.assert_allclose(served["raw"]["scores"], expected, atol=1e-5)
    assert served["raw"]["labels"] == [description.labels[i] for i in np.argmax(expected, 1)]
    np.testing.assert_allclose(served["api"]["scores"], expected, atol=1e-5)
    assert served["api"]["classes"] == [description.labels] * len(TEXTS)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(tf.io.gfile.GFile(os.path.join(output, "saved_model.pb"), "rb").read())
    signatures = proto.meta_graphs[0].signature_def
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    assert set(signatures["classify"].inputs) == {"inputs"}


@pytest.mark.heavy
def test_a_tagger_serves_words_aligned_as_training_aligned_them(runs, tmp_path):
    model, description, spm_model = load_run(runs[1])
    encoder = data.PieceEncoder(spm_model, description.settings["max_len"])
    words = [t.split() for t in TEXTS]
    encoded = [encoder.word_ids(w) for w in words]
    expected = predicted_tags(model, [ids for ids, _ in encoded],
                              [starts for _, starts in encoded], description.labels, 4)
    assert expected[-1][-1] == "O" and any(-1 in s for _, s in encoded)  # some words cut off
    assert len(encoder.processor.encode("quixotic")) > 1
    found = {t for row, (_, starts) in zip(expected, encoded)
             for t, start in zip(row, starts) if start >= 0}
    assert found == {"O", "B-DET"}  # tags the model gave, both kinds
    output = str(tmp_path / "tagger_savedmodel")
    with a_gpu_reported():  # exported on a GPU host, served on a CPU one
        export(runs[1], output)
    assert_serves_anywhere(output)
    padded = [w + [""] * (max(map(len, words)) - len(w)) for w in words]
    served = _serve_in_a_fresh_process(output, {
        "raw": ("serving_default", {"text": TEXTS}),
        "split": ("tag_words", {"words": padded}),
        "ragged": ("tag_ragged", {"words": words})}, tmp_path)
    unpad = lambda rows: [[t for t in row if t] for row in rows]
    assert unpad(served["raw"]["words"]) == words
    for outputs in served.values():
        assert unpad(outputs["tags"]) == expected
    # Each word's scores are the model's at the word's first piece (0 where it was cut off).
    for k, (row, (ids, starts)) in enumerate(zip(words, encoded)):
        pieces = model(tf.constant([ids]), training=False)[0].numpy()
        scores = [pieces[s] if s >= 0 else np.zeros(2) for s in starts]
        np.testing.assert_allclose(served["ragged"]["scores"][k], scores, atol=1e-5)
        np.testing.assert_allclose(served["raw"]["scores"][k][:len(row)], scores, atol=1e-5)


@pytest.mark.heavy
def test_predict_gives_the_same_lines_from_a_run_and_from_its_savedmodel(runs, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    words = tmp_path / "words.jsonl"
    words.write_text("".join(json.dumps({"tokens": t.split()}) + "\n" for t in TEXTS))
    for run, inputs in zip(runs, ([texts], [texts, words])):
        saved_model = str(tmp_path / f"{os.path.basename(run)}_savedmodel")
        export(run, saved_model)
        for source in inputs:
            lines = []
            for model_dir in (run, saved_model):  # the tool on the SavedModel, in a process
                output = tmp_path / "out.jsonl"
                if model_dir == run:
                    predict(run, str(source), str(output), batch_size=3)
                else:
                    subprocess.run([sys.executable, "-m", "trainer.predict",
                                    f"--model_dir={model_dir}", f"--input={source}",
                                    f"--output={output}", "--batch_size=3"],
                                   check=True, capture_output=True, cwd=ROOT)
                lines.append([json.loads(line) for line in output.read_text().splitlines()])
            assert_same_predictions(*lines)
            assert len(lines[0]) == len(TEXTS)
            if run == runs[0]:  # the labels are the Keras model's
                model, description, spm_model = load_run(run)
                encoder = data.PieceEncoder(spm_model, max_len=None)
                best = [description.labels[int(np.argmax(model(tf.constant([encoder.text_ids(t)]))))]
                        for t in TEXTS]
                assert [row["label"] for row in lines[0]] == best
            else:
                assert [row["words"] for row in lines[0]] == [t.split() for t in TEXTS]
