"""An ensemble of classifiers (ULMFiT's forward + backward): the mean of their probabilities, in
predict and in the exported SavedModel."""
import json
import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from data_pipeline import labeled_data as data
from trainer.checkpoints.pretrained import load_pretrained_config
from trainer.export import export
from trainer.fine_tuning.saved_run import describe, load_run, save_run
from trainer.models.ulmfit_classifier import ulmfit_classifier
from trainer.predict import predict
from trainer.serving.runs import serving_module
from test_export import a_gpu_reported
from test_serving import assert_same_predictions, assert_serves_anywhere

TEXTS = ["the model reads tokens", "hidden state carries", "the " * 30 + "end"]


def _run(model_dir, pretrained, labels, backwards, seed):
    """A classifier run directory (a random head, scaled up so members disagree: the
    ensemble's arithmetic is the point)."""
    tf.keras.utils.set_random_seed(seed)
    model, _ = ulmfit_classifier(num_classes=len(labels), pretrained_weights=pretrained,
                                 bptt=8, max_len=12, backwards=backwards)
    for weight in model.get_layer("classifier_head").weights:
        weight.assign(weight * 4)
    spm_model = load_pretrained_config(pretrained).spm_model_path
    save_run(str(model_dir), model, describe("classifier", model, labels, 12, backwards),
             spm_model, {})
    return str(model_dir)


@pytest.fixture(scope="module")
def members(pretrained_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    return [_run(root / "forward", pretrained_lm[0], ["a", "b", "c"], False, 1),
            _run(root / "backward", pretrained_lm[0], ["a", "b", "c"], True, 2)]


def _probabilities(run):
    model, description, spm_model = load_run(run)
    encoder = data.PieceEncoder(spm_model, max_len=None)
    return np.concatenate([tf.nn.softmax(model(tf.constant([encoder.text_ids(t)]))).numpy()
                           for t in TEXTS])


@pytest.mark.heavy
def test_the_ensemble_scores_with_the_mean_of_its_members_probabilities(members, tmp_path):
    forward, backward = map(_probabilities, members)
    assert load_run(members[1])[1].settings["backwards"]
    assert np.abs(forward - backward).max() > 1e-3  # two different members
    expected = (forward + backward) / 2
    served = serving_module(members).serve(tf.constant(TEXTS))
    np.testing.assert_allclose(served["scores"], expected, atol=1e-6)
    assert [l.decode() for l in served["labels"].numpy()] == [
        "abc"[i] for i in np.argmax(expected, 1)]
    output = str(tmp_path / "ensemble_savedmodel")
    with a_gpu_reported():  # exported on a GPU host: still runs here, on the CPU
        export(",".join(members), output)
    assert_serves_anywhere(output)
    loaded = tf.saved_model.load(output)
    np.testing.assert_allclose(loaded.signatures["serving_default"](text=tf.constant(TEXTS))[
        "scores"], expected, atol=1e-6)


@pytest.mark.heavy
def test_predict_runs_an_ensemble_and_scores_labelled_input(members, tmp_path):
    labels = ["a", "b", "c"]
    inputs = tmp_path / "labelled.jsonl"
    inputs.write_text("".join(json.dumps({"text": t, "label": labels[k % 3]}) + "\n"
                              for k, t in enumerate(TEXTS)))
    saved_model = str(tmp_path / "savedmodel")
    export(",".join(members), saved_model)
    lines, scores = [], []
    for model_dir in (",".join(members), saved_model):
        output = tmp_path / "out.jsonl"
        count, score = predict(model_dir, str(inputs), str(output), batch_size=2)
        lines.append([json.loads(line) for line in output.read_text().splitlines()])
        scores.append(score)
        assert count == len(TEXTS)
    assert_same_predictions(*lines)
    expected = np.argmax(sum(map(_probabilities, members)), 1)
    assert [row["label"] for row in lines[0]] == [labels[i] for i in expected]
    accuracy = np.mean([labels[i] == labels[k % 3] for k, i in enumerate(expected)])
    assert scores == [{"accuracy": pytest.approx(accuracy)}] * 2


def test_members_must_share_their_labels(members, pretrained_lm, tmp_path):
    other = _run(tmp_path / "other", pretrained_lm[0], ["a", "b", "x"], False, 3)
    with pytest.raises(UserError, match="differ from"):
        serving_module([members[0], other])
    with pytest.raises(UserError, match="not a classifier run directory"):
        export(f"{members[0]},{tmp_path}", str(tmp_path / "out"))
