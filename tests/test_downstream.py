"""ULMFiT downstream: pooling, label alignment, the fine-tuning recipe, classifier and tagger."""
import functools
import inspect
import json
import math
import os

import gin
import keras
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from common.errors import CorpusError
from common.tokenizer import SPECIAL_IDS, model_ids
from data_pipeline import labeled_data as data
from data_pipeline.demo_tasks import classification_examples, tag_words
from trainer import configurables
from trainer.checkpoints.pretrained import PretrainedModelError
from trainer.fine_tuning.classification import train_classifier
from trainer.fine_tuning.recipe import (GradualUnfreezing, discriminative_lr_factors,
                                        fit_recipe, layer_groups)
from trainer.fine_tuning.span_f1 import span_f1
from trainer.fine_tuning.tagging import train_tagger
from trainer.loop.keras_callbacks import KerasProgress
from trainer.loop.progress import Progress
from trainer.models.config import AWD_LSTM_CLAS_CONFIG, DROPOUTS
from trainer.models.pooling_classifier import masked_concat_pool
from trainer.models.ulmfit_classifier import ulmfit_classifier
from trainer.models.ulmfit_encoder import SentencePieceIds
from trainer.models.ulmfit_tagger import ulmfit_sequence_tagger
from trainer.optim.optimizer import FastaiAdam
from trainer.optim.schedules import SlantedTriangular, one_cycle

NO_DROPOUT = dict(hidden_p=0.0, input_p=0.0, embed_p=0.0, weight_p=0.0)


def tiny_classifier(num_layers=3):
    model, _ = ulmfit_classifier(num_classes=3, vocab_size=30, emb_size=6, hidden_size=10,
                                 num_layers=num_layers, output_p=0.0, ps=(0.0,), **NO_DROPOUT)
    return model


def test_pooling_ignores_padding():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 6, 4)).astype(np.float32)
    hidden[0, 4:] = 1e3  # whatever the encoder put on padding must not matter
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    pooled = masked_concat_pool(tf.constant(hidden), tf.constant(mask)).numpy()
    for row, length in ((0, 4), (1, 6)):
        tokens = hidden[row, :length]
        expected = np.concatenate([tokens[-1], tokens.max(0), tokens.mean(0)])
        np.testing.assert_allclose(pooled[row], expected, rtol=1e-6)


def test_label_alignment_round_trip(pretrained_lm):
    spm_model = os.path.join(pretrained_lm[0], "spm.model")
    words = ["the", "unpredictable", "tokens", "carries", "context"]
    labels = [0, 2, 1, 0, 3]
    encoder = data.PieceEncoder(spm_model, max_len=64)
    ids, starts = encoder.word_ids(words)
    assert len(ids) > len(words) + 2  # some word became several pieces
    assert encoder.processor.decode(ids[1:-1]) == " ".join(words)
    assert [ids[s] for s in starts] == [encoder.processor.encode(w)[0] for w in words]
    piece_labels = data.align_labels(labels, starts, len(ids))
    assert (piece_labels != data.IGNORE).sum() == len(words)
    assert data.word_predictions(piece_labels, starts) == labels
    # A word SentencePiece encodes to nothing has no piece to carry its tag; the next word
    # keeps its own.
    ids, starts = encoder.word_ids(["the", "\u200b", "tokens"])
    assert starts[1] == -1 and data.word_predictions(
        data.align_labels([1, 2, 3], starts, len(ids)), starts) == [1, 0, 3]
    full_ids, _ = encoder.word_ids(words)
    short_ids, short_starts = data.PieceEncoder(spm_model, max_len=6).word_ids(words)
    assert short_ids == full_ids[:6]  # cut as every text is: the first max_len ids
    assert short_starts[-1] == -1 and data.word_predictions(
        data.align_labels(labels, short_starts, 6), short_starts, missing=9)[-1] == 9


def test_one_truncation_rule_for_classifier_tagger_and_the_in_graph_tokenizer(pretrained_lm):
    spm_model = os.path.join(pretrained_lm[0], "spm.model")
    texts = ["a short text", " ".join(["the unpredictable tokens carry context"] * 8)]
    for max_len in (8, 64):
        encoder = data.PieceEncoder(spm_model, max_len)
        in_graph = SentencePieceIds(spm_model, fixed_seq_len=max_len)(tf.constant(texts)).numpy()
        for text, row in zip(texts, in_graph):
            ids = encoder.text_ids(text)
            assert ids == model_ids(encoder.processor.encode(text))[:max_len]
            assert list(row) == ids + [SPECIAL_IDS["pad"]] * (max_len - len(ids))
            assert encoder.word_ids(text.split())[0] == ids  # these words encode alike alone
    assert len(data.PieceEncoder(spm_model, 8).text_ids(texts[1])) == 8


def test_discriminative_rates_scale_each_groups_update():
    model = tiny_classifier()
    groups = layer_groups(model)
    assert len(groups) == 5  # embedding, 3 LSTMs, head
    adam = FastaiAdam(1e-2, 0.9, weight_decay=None, epsilon=1e-12,
                      lr_factors=discriminative_lr_factors(groups, 2.6))
    ids = tf.constant(np.random.default_rng(0).integers(4, 30, (4, 7)), tf.int32)
    before = [[v.numpy() for layer in g for v in layer.trainable_weights] for g in groups]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(ids, training=True)))
    adam.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                             model.trainable_variables))
    for k, group in enumerate(groups):
        after = [v.numpy() for layer in group for v in layer.trainable_weights]
        step = max(np.abs(a - b).max() for a, b in zip(after, before[k]))
        # Adam's first step moves every weight with a gradient by lr * factor.
        np.testing.assert_allclose(step, 1e-2 / 2.6 ** (4 - k), rtol=1e-3)


class _ChangedGroups(keras.callbacks.Callback):
    def __init__(self, groups):
        super().__init__()
        self.groups, self.changed = groups, []

    def _values(self):
        return [[v.numpy().copy() for layer in g for v in layer.weights if "moving" not in v.path]
                for g in self.groups]

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self._values()

    def on_epoch_end(self, epoch, logs=None):
        self.changed.append([k for k, (a, b) in enumerate(zip(self.start, self._values()))
                             if any(not np.array_equal(x, y) for x, y in zip(a, b))])


def test_gradual_unfreezing_trains_the_last_groups_first():
    model = tiny_classifier(num_layers=2)
    groups = layer_groups(model)
    adam = FastaiAdam(1e-2, 0.9)
    adam.build(model.trainable_variables)
    model.compile(adam, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (8, 5)).astype(np.int32), rng.integers(0, 3, 8)
    recorder = _ChangedGroups(groups)
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0,
                        callbacks=[GradualUnfreezing(groups, [1, 2, 3, 4]), recorder,
                                   KerasProgress(Progress(None, 4), 2, tokens_per_epoch=40)])
    assert recorder.changed == [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert len(history.history["tokens_per_s"]) == 4 and min(history.history["tokens_per_s"]) > 0


def test_the_course_recipe_runs_a_one_cycle_per_stage_from_fresh_adam_state():
    model = tiny_classifier(num_layers=2)  # 4 groups: embedding, 2 LSTMs, head
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (8, 5)).astype(np.int32), rng.integers(0, 3, 8)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 2 steps an epoch
    embedding = model.get_layer("encoder").encoder.embedding.embeddings
    before = embedding.numpy()
    stages = ((1, 1, 1e-2), (1, 2, 1e-2), (2, None, 5e-3))
    traces, train_step = [], model.train_step
    model.train_step = lambda data: traces.append(data) or train_step(data)
    history = fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         train, train, 99, 2, schedule=one_cycle, stages=stages,
                         metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    assert len(history.history["loss"]) == 4  # the stages' epochs, not `epochs`
    # Frozen groups are gated: one train step for every stage; the metric's variables exist
    # before it (made inside the trace, they would make Keras trace it again).
    assert len(traces) == 1 and len(history.history["accuracy"]) == 4
    assert not np.array_equal(before, embedding.numpy())  # the last stage trains every group
    adam = model.optimizer
    steps = [int(adam._steps[adam._get_variable_index(v)].numpy())
             for v in model.trainable_variables]
    assert steps == [4] * len(steps)  # every count restarted with the last stage (2 epochs)
    assert math.isclose(float(adam.learning_rate), 5e-3 / 1e5, rel_tol=1e-3)  # its cycle's end


def test_a_fit_that_raises_leaves_every_group_training():
    model = tiny_classifier(num_layers=2)
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (8, 5)).astype(np.int32), rng.integers(0, 3, 8)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("stopped")
    with pytest.raises(RuntimeError, match="stopped"):
        fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), train,
                   train, 2, 2, callbacks=[Stop()])  # stopped while only the head trains
    rnns = layer_groups(model)[1:-1]
    assert all(layer.backprop_if is None for group in rnns for layer in group)
    assert model.optimizer.update_if == {}


@pytest.mark.heavy
def test_a_killed_fine_tuning_run_goes_on_from_its_last_epoch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (8, 5)).astype(np.int32), rng.integers(0, 3, 8)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # one order: runs comparable
    initial = tiny_classifier(num_layers=2).get_weights()

    def run(model_dir):
        keras.backend.clear_session()  # layer names as a fresh process would have them
        model = tiny_classifier(num_layers=2)
        model.set_weights(initial)
        history = fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             batches, batches, epochs=3, steps_per_epoch=2, model_dir=model_dir)
        return model, history.epoch

    whole, _ = run(str(tmp_path / "whole"))
    unfreeze = GradualUnfreezing.on_epoch_begin

    def killed_in_epoch_2(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("killed")
        unfreeze(self, epoch, logs)
    with monkeypatch.context() as patch:
        patch.setattr(GradualUnfreezing, "on_epoch_begin", killed_in_epoch_2)
        with pytest.raises(RuntimeError, match="killed"):
            run(str(tmp_path / "resumed"))
    resumed, epochs_run = run(str(tmp_path / "resumed"))
    assert epochs_run == [2] and int(resumed.optimizer.iterations) == 6
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert run(str(tmp_path / "resumed"))[1] == []  # a finished run trains no further


def test_stlr_rises_then_decays_to_a_32nd():
    schedule = SlantedTriangular(total_steps=100, max_lr=0.32, cut_frac=0.1, ratio=32)
    lrs = np.array([float(schedule(t)) for t in range(101)])
    assert lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.32)
    assert lrs[100] == pytest.approx(0.01)
    assert np.all(np.diff(lrs[:11]) > 0) and np.all(np.diff(lrs[10:]) < 0)


def test_span_f1_counts_whole_spans():
    truth = [["B-ARG", "O", "B-ARG", "I-ARG"], ["O", "B-ARG"]]
    predicted = [["B-ARG", "O", "B-ARG", "O"], ["O", "B-ARG"]]
    scores = span_f1(truth, predicted)  # 2 of 3 predicted spans are right, of 3 true spans
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)


def test_tagger_signature_is_the_seeds():
    parameters = inspect.signature(ulmfit_sequence_tagger).parameters
    assert [(p.name, p.kind, p.default) for p in parameters.values()] == [
        ("num_classes", inspect.Parameter.KEYWORD_ONLY, 3),
        ("pretrained_weights", inspect.Parameter.KEYWORD_ONLY, None),
        ("fixed_seq_len", inspect.Parameter.KEYWORD_ONLY, None),
        ("spm_model_file", inspect.Parameter.KEYWORD_ONLY, None),
        ("also_return_spm_encoder", inspect.Parameter.KEYWORD_ONLY, False)]


def test_tagger_loads_pretrained_weights_and_refuses_another_vocabulary(pretrained_lm,
                                                                        tmp_path):
    model_dir = pretrained_lm[0]
    tagger, spm_encoder = ulmfit_sequence_tagger(
        num_classes=3, pretrained_weights=model_dir, fixed_seq_len=16,
        spm_model_file=os.path.join(model_dir, "spm.model"), also_return_spm_encoder=True)
    lines = []
    tagger.summary(print_fn=lines.append)
    assert "tagger_head" in "\n".join(lines)
    probabilities = tagger(spm_encoder(tf.constant(["the model reads", "tokens"]))).numpy()
    assert probabilities.shape == (2, 16, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    other = str(tmp_path / "other")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a completely different text"] * 50),
                                   model_prefix=other, vocab_size=20, unk_id=0, pad_id=1,
                                   bos_id=2, eos_id=3, minloglevel=2)
    with pytest.raises(PretrainedModelError, match=rf"{other}\.model.*{model_dir}"):
        ulmfit_sequence_tagger(pretrained_weights=model_dir, spm_model_file=f"{other}.model")


def test_readers_name_the_bad_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: field 'label' is missing"):
        data.read_classification(str(bad))
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(CorpusError, match=r"uneven\.jsonl:1: 2 tokens but 1 tags"):
        data.read_tagging(str(uneven))
    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\nBlackburn\n")
    with pytest.raises(CorpusError, match=r"train\.conll:7: 'Blackburn' has no tag column"):
        data.read_tagging(str(conll))
    conll.write_text("EU\tB-ORG\nrejects\tO\n\nPeter\tB-PER\n")
    assert data.read_tagging(str(conll)) == [(["EU", "rejects"], ["B-ORG", "O"]),
                                             (["Peter"], ["B-PER"])]


def test_demo_tasks_come_from_the_code():
    assert tag_words(["Return", "`key`", "or", "default."], {"key", "default"}) == [
        "O", "B-ARG", "O", "B-ARG"]
    examples = classification_examples()
    train_labels = {e["label"] for e in examples["train"]}
    assert 15 <= len(train_labels) <= 20
    for split in ("valid", "test"):  # the classifier has a class for every label it meets
        assert examples[split] and {e["label"] for e in examples[split]} <= train_labels


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


_WORDS = "the reads tokens and predicts next one while hidden state carries".split()


def _word_task(rng, count):
    """`count` texts of 3-11 words; every other one has "model" among them."""
    texts = [list(rng.choice(_WORDS, rng.integers(3, 12))) for _ in range(count)]
    for words in texts[::2]:
        words.insert(rng.integers(len(words) + 1), "model")
    return texts


@pytest.mark.heavy
def test_classifier_and_tagger_learn_a_separable_task(pretrained_lm, tmp_path):
    """Held-out texts: the label says whether "model" occurs (half of them); the tag marks every
    "the". A model that does not learn stays near chance (0.5, and F1 near 0). The tiny LM had
    3 steps, so its layers are as good as random: they train from the first step (no gradual
    unfreezing: with the embedding frozen until the last epochs, some of these random LMs
    ended the 8 epochs at 0.55-0.77 accuracy, others at 1.0) at the head's rate (factor 1)."""
    recipe = functools.partial(fit_recipe, discriminative_factor=1.0, gradual_unfreezing=False)
    rng = np.random.default_rng(0)
    splits = {"train": _word_task(rng, 256), "valid": _word_task(rng, 48),
              "test": _word_task(rng, 48)}
    files = {split: _write_jsonl(tmp_path / f"c-{split}.jsonl", [
        {"text": " ".join(words), "label": "model" if "model" in words else "other"}
        for words in texts]) for split, texts in splits.items()}
    metrics = train_classifier(str(tmp_path / "classifier"), pretrained=pretrained_lm[0],
                               files=files, epochs=8, batch_size=16, recipe=recipe)
    assert metrics["labels"] == ["model", "other"] and metrics["test_accuracy"] >= 0.9, metrics
    assert tf.io.gfile.exists(str(tmp_path / "classifier" / "metrics.json"))

    tagged = {split: [(words, ["B-DET" if w == "the" else "O" for w in words])
                      for words in texts] for split, texts in splits.items()}
    conll = tmp_path / "t-train.conll"
    conll.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*sentence))
                                 for sentence in tagged["train"]) + "\n")
    files = {split: _write_jsonl(tmp_path / f"t-{split}.jsonl", [
        {"tokens": words, "tags": tags} for words, tags in tagged[split]])
        for split in ("valid", "test")}
    metrics = train_tagger(str(tmp_path / "tagger"), pretrained=pretrained_lm[0],
                           files={"train": str(conll), **files}, from_scratch=True, epochs=8,
                           batch_size=16, max_len=24, recipe=recipe)
    assert metrics["tags"] == ["O", "B-DET"] and metrics["test_f1"] >= 0.9, metrics


def test_downstream_models_honour_the_model_and_head_bindings(pretrained_lm, tmp_path):
    built = []

    def build_only(model, loss, *args, metrics=(), **kwargs):  # no training: the wiring is tested
        built.append(model)
        model.compile("sgd", loss, metrics=list(metrics))

    rows = [{"text": f"text number {i}", "label": str(i % 2)} for i in range(4)]
    classify = {s: _write_jsonl(tmp_path / f"c-{s}.jsonl", rows) for s in ("train", "valid", "test")}
    sentences = [{"tokens": ["the", "model"], "tags": ["B-DET", "O"]}] * 4
    tag = {s: _write_jsonl(tmp_path / f"t-{s}.jsonl", sentences) for s in ("train", "valid", "test")}
    with gin.unlock_config():  # as classifier.gin and tagger.gin wire the models
        gin.parse_config(["train_classifier.model = @ulmfit_classifier",
                          "train_tagger.model = @ulmfit_tagger",
                          "ulmfit_classifier.drop_mult = 0.5", "ulmfit_classifier.hidden_p = 0.2",
                          "ulmfit_classifier.lin_ftrs = (7,)",
                          "ulmfit_tagger.drop_mult = 0.5", "ulmfit_tagger.hidden_p = 0.2"])
    try:
        configurables.train_classifier(str(tmp_path / "c"), pretrained=pretrained_lm[0],
                                       files=classify, batch_size=4, recipe=build_only)
        configurables.train_tagger(str(tmp_path / "t"), pretrained=pretrained_lm[0], files=tag,
                                   batch_size=4, recipe=build_only)
    finally:
        gin.clear_config()
    classifier, tagger = built
    model = json.loads(open(os.path.join(pretrained_lm[0], "lm_config.json")).read())["model"]
    sizes = {k: v for k, v in model.items() if k not in DROPOUTS}
    encoder_dropouts = ("input_p", "embed_p", "weight_p")  # hidden_p is bound
    clas = AWD_LSTM_CLAS_CONFIG
    assert classifier.get_layer("encoder").encoder.config == {
        **sizes, **{k: clas[k] * 0.5 for k in encoder_dropouts}, "hidden_p": 0.2 * 0.5}
    head = classifier.get_layer("classifier_head").config
    assert head["lin_ftrs"] == (7,) and head["output_p"] == clas["output_p"] * 0.5
    # The tagger's too start from the classifier's dropouts, not the pretrained model's.
    assert tagger.get_layer("encoder").config == {
        **sizes, **{k: clas[k] * 0.5 for k in encoder_dropouts}, "hidden_p": 0.2 * 0.5}
