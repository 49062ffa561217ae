"""ULMFiT stage 2: train_lm(init_from=...) starts from pretrained weights on the same vocabulary."""
import functools

import numpy as np
import pytest

from conftest import train_tiny_lm, write_corpus
from trainer.checkpoints.pretrained import PretrainedModelError, weights_by_path
from trainer.models.pretrained_lm import load_language_model
from trainer.optim.schedules import one_cycle


def finetune(model_dir, data_dir, init_from, build_input=None, max_lr=1e-2):
    from trainer.lm.training import train_lm  # pylint: disable=g-import-not-at-top
    return train_lm(model_dir, data_dir, init_from=init_from, build_input=build_input,
                    batch_size=4, bptt=10, max_steps=1, eval_batch_size=4, steps_per_loop=1,
                    schedule=functools.partial(one_cycle, max_lr=max_lr))


def test_finetuning_starts_from_the_pretrained_weights(pretrained_lm, tmp_path):
    model_dir, data_dir = pretrained_lm
    # A vanishing learning rate: after one step the weights are still the pretrained ones.
    target_corpus = write_corpus(tmp_path / "target.txt", paragraphs=80, seed=5)
    finetune(str(tmp_path / "tuned"), str(tmp_path / "target_data"), model_dir,
             build_input=target_corpus, max_lr=1e-12)
    pretrained, _ = load_language_model(model_dir)
    tuned, config = load_language_model(str(tmp_path / "tuned"))
    assert config.model["hidden_size"] == 20  # the pretrained size, not the gin default
    before, after = weights_by_path(pretrained), weights_by_path(tuned)
    for name in before:
        np.testing.assert_allclose(after[name].numpy(), before[name].numpy(), atol=1e-6,
                                   err_msg=name)


def test_finetuning_refuses_data_of_another_vocabulary(pretrained_lm, tmp_path):
    other_data = str(tmp_path / "other_data")
    train_tiny_lm(other_data, str(tmp_path / "other_model"),
                  write_corpus(tmp_path / "other.txt", paragraphs=200, seed=3), vocab_size=70,
                  steps=1)
    with pytest.raises(PretrainedModelError, match=rf"{other_data}/spm.model.*"
                       rf"{pretrained_lm[0]}/spm.model"):
        finetune(str(tmp_path / "tuned"), other_data, pretrained_lm[0])
