"""Text generation from the language model (fastai's learn.predict for LMs)."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common.tokenizer import SPECIAL_IDS, load_sentencepiece
from trainer.generate import generate
from trainer.models.pretrained_lm import load_language_model
PROMPT = "the model reads"


def test_generation_is_seeded_and_samples_only_the_lms_likeliest_pieces(pretrained_lm):
    lm, config = load_language_model(pretrained_lm[0])
    processor = load_sentencepiece(config.spm_model_path)
    text, ids = generate(lm, processor, PROMPT, n_words=12, temperature=1.0, top_k=3, seed=5)
    assert (text, ids) == generate(lm, processor, PROMPT, 12, 1.0, 3, seed=5)
    assert ids != generate(lm, processor, PROMPT, 12, 1.0, 3, seed=6)[1]
    # One pass over the whole sequence: every sampled piece was among the 3 likeliest
    # (unk, pad and BOS excluded) given everything before it.
    prompt = [SPECIAL_IDS["bos"]] + processor.encode(PROMPT)
    logits = lm(tf.constant([prompt + ids]), training=False)[0][0].numpy()
    logits[:, [SPECIAL_IDS[k] for k in ("unk", "pad", "bos")]] = -np.inf
    for position, token in enumerate(ids, start=len(prompt) - 1):
        assert token in np.argsort(-logits[position])[:3], (position, token)
    starts = [t == SPECIAL_IDS["eos"] or processor.id_to_piece(t).startswith("▁") for t in ids]
    assert sum(starts) == 12
    if SPECIAL_IDS["eos"] not in ids:
        assert text == processor.decode(prompt[1:] + ids)
    # Greedy: no seed matters. This tiny LM repeats a piece that starts no word: the cap ends it.
    greedy = generate(lm, processor, PROMPT, n_words=5, top_k=1, seed=1, max_pieces=40)[1]
    assert greedy == generate(lm, processor, PROMPT, 5, top_k=1, seed=2, max_pieces=40)[1]
    assert len(greedy) <= 40


@pytest.mark.heavy
def test_generate_prints_the_prompt_and_its_continuation(pretrained_lm):
    done = subprocess.run([sys.executable, "-m", "trainer.generate",
                           f"--model_dir={pretrained_lm[0]}", f"--prompt={PROMPT}",
                           "--n_words=4", "--seed=3", "--stop_at_eos"],
                          capture_output=True, text=True, check=True)
    lm, config = load_language_model(pretrained_lm[0])
    text, _ = generate(lm, load_sentencepiece(config.spm_model_path), PROMPT, 4, seed=3,
                       stop_at_eos=True)
    assert done.stdout.strip() == text.strip() and text.startswith(PROMPT)
