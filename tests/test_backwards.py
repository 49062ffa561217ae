"""Backward language models (fastai's backwards=True) and what is built on them."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import train_tiny_lm, write_corpus
from common.errors import UserError
from common.tokenizer import SPECIAL_IDS, load_sentencepiece
from trainer.checkpoints.pretrained import load_pretrained_config
from trainer.fine_tuning.tagging import train_tagger
from trainer.generate import generate
from trainer.models.pretrained_lm import load_language_model
from trainer.models.reverse_tokens import reverse_tokens
from trainer.models.ulmfit_classifier import ulmfit_classifier

NO_DROPOUT = dict(output_p=0.0, hidden_p=0.0, input_p=0.0, embed_p=0.0, weight_p=0.0)


def backward_copy(model_dir, target):
    """`model_dir` relabelled as a backward LM: the direction is all that differs."""
    shutil.copytree(model_dir, target)
    path = os.path.join(target, "lm_config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, "backwards": True}, f)
    return str(target)


@pytest.mark.heavy
def test_a_backward_lm_records_its_direction_and_is_fine_tuned_as_one(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", paragraphs=200)
    data = str(tmp_path / "data")
    backward = str(tmp_path / "backward")
    metrics = train_tiny_lm(data, backward, corpus, steps=2, backwards=True)
    assert np.isfinite(metrics["valid_perplexity"])
    assert load_pretrained_config(backward).backwards
    with pytest.raises(UserError, match="backward language model; fine-tune it as one: "
                                        "train_lm.backwards=True"):
        train_tiny_lm(data, str(tmp_path / "forward_on_backward"), corpus, steps=1,
                      init_from=backward)
    with pytest.raises(UserError, match="resume it with train_lm.backwards=True"):
        train_tiny_lm(data, backward, corpus, steps=1)  # the other direction, same directory


def test_the_tagger_refuses_a_backward_encoder(pretrained_lm, tmp_path):
    backward = backward_copy(pretrained_lm[0], tmp_path / "backward")
    with pytest.raises(UserError, match="is a backward language model; the tagger reads words "
                                        "left to right: pass a forward one"):
        train_tagger(str(tmp_path / "tagger"), pretrained=backward)
    assert not (tmp_path / "tagger").exists()


def test_reverse_tokens_keeps_padding_after_the_text():
    ids = tf.constant([[2, 5, 6, 7, 3, 1, 1], [2, 8, 9, 10, 11, 12, 3]])
    np.testing.assert_array_equal(reverse_tokens(ids, 1),
                                  [[3, 7, 6, 5, 2, 1, 1], [3, 12, 11, 10, 9, 8, 2]])


def test_a_backward_classifier_reads_each_text_reversed():
    config = dict(num_classes=3, vocab_size=40, emb_size=6, hidden_size=10, num_layers=2,
                  bptt=3, max_len=4, **NO_DROPOUT)
    forward, _ = ulmfit_classifier(**config)
    backward, _ = ulmfit_classifier(backwards=True, **config)
    for mine, theirs in zip(backward.weights, forward.weights):
        mine.assign(theirs)
    texts = [[2, 9, 12, 7, 3], [2] + list(range(4, 14)) + [3]]
    padded = tf.constant([t + [1] * (12 - len(t)) for t in texts])
    reversed_ = tf.constant([t[::-1] + [1] * (12 - len(t)) for t in texts])
    np.testing.assert_allclose(backward(padded, training=False),
                               forward(reversed_, training=False), atol=1e-6)
    assert not np.allclose(backward(padded, training=False), forward(padded, training=False))


def test_a_backward_lm_generates_the_text_before_the_prompt(pretrained_lm, tmp_path):
    model_dir = backward_copy(pretrained_lm[0], tmp_path / "backward")
    lm, config = load_language_model(model_dir)
    processor = load_sentencepiece(config.spm_model_path)
    prompt = "the model reads"
    text, ids = generate(lm, processor, prompt, n_words=6, temperature=1.0, top_k=3, seed=4,
                         backwards=True)
    assert (text, ids) == generate(lm, processor, prompt, 6, 1.0, 3, seed=4, backwards=True)
    assert text.endswith(prompt)
    # Read right to left: EOS, the prompt reversed, then each sample given all after it.
    context = [SPECIAL_IDS["eos"]] + processor.encode(prompt)[::-1]
    logits = lm(tf.constant([context + ids]), training=False)[0][0].numpy()
    logits[:, [SPECIAL_IDS[k] for k in ("unk", "pad", "eos")]] = -np.inf
    for position, token in enumerate(ids, start=len(context) - 1):
        assert token in np.argsort(-logits[position])[:3], (position, token)
    completes = [t == SPECIAL_IDS["bos"] or processor.id_to_piece(t).startswith("▁")
                 for t in ids]
    assert sum(completes) == 6 and completes[-1]  # stops as the 6th word is complete
    if SPECIAL_IDS["bos"] not in ids:
        assert text == processor.decode(ids[::-1] + processor.encode(prompt))
