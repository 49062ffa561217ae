"""Every binding of every shipped .gin file reaches the code of the job it configures, and one
that reaches nothing is a UserError naming it (trainer/gin_reach.py)."""
import glob
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from trainer import configurables, gin_reach
from trainer import main as trainer_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = ["train_classifier.pretrained = '/tmp/lm'", "train_tagger.pretrained = '/tmp/lm'"]
# Each shipped job, with the add-on files the docs compose with it: (files, bindings, trainer).
JOBS = [
    (["smoke.gin"], [], "train_lm"),
    (["smoke.gin", "mirrored.gin"], [], "train_lm"),
    (["smoke.gin", "multiworker.gin"], [], "train_lm"),
    (["pretrain_awd_lstm.gin", "tpu.gin"], ["train_lm.data_dir = 'gs://b/d'"], "train_lm"),
    (["pretrain_awd_lstm.gin", "gpu.gin"], ["train_lm.data_dir = '/d'"], "train_lm"),
    (["finetune_lm.gin"], ["train_lm.init_from = '/lm'", "train_lm.data_dir = '/d'"],
     "train_lm"),
    (["classifier.gin"], PRETRAINED[:1], "train_classifier"),
    (["classifier.gin", "fine_tuning_course.gin"], PRETRAINED[:1], "train_classifier"),
    (["tagger.gin"], PRETRAINED[1:], "train_tagger"),
]


def _paths(files):
    return [os.path.join(ROOT, "gin_configs", f) for f in files]


@pytest.fixture
def parsed():
    def parse(files, bindings):
        return trainer_main.parse_gin(_paths(files), bindings)
    yield parse
    gin.clear_config()


def _statements(files, bindings=()):
    return gin_reach.read_bindings(_paths(files), bindings, [ROOT])


def test_every_shipped_config_is_one_of_the_checked_jobs():
    shipped = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "gin_configs", "*.gin"))}
    included = {s.origin.split("/")[-1] for files, _, _ in JOBS for s in _statements(files)}
    assert shipped == included


@pytest.mark.parametrize("files,bindings,trainer", JOBS, ids=["+".join(j[0]) for j in JOBS])
def test_every_binding_of_a_shipped_job_reaches_its_code(parsed, files, bindings, trainer):
    assert parsed(files, bindings) == trainer
    defaults = trainer_main._job_defaults()  # pylint: disable=protected-access
    names, final = gin_reach.reached(_statements(files, bindings), "job", defaults)
    unused = sorted({s.selector for s in final.values() if s.param and s.selector not in names})
    # The course recipe swaps fine_tuning.gin's STLR for one-cycles: only STLR's settings idle.
    assert unused == (["stlr"] if "fine_tuning_course.gin" in files else [])
    assert trainer in names and ("fit_recipe" in names) == (trainer != "train_lm")
    assert "optimizer" in names  # one optimizer name, for LM training and fine-tuning alike


@pytest.mark.parametrize("files,bindings,says", [
    (["smoke.gin"], ["ulmfit_classifier.drop_mult = 0.5"],
     "ulmfit_classifier.drop_mult (--gin_param) reaches nothing: nothing this job runs refers "
     "to @ulmfit_classifier. The job is train_lm"),
    (["classifier.gin", "fine_tuning_course.gin"], ["stlr.max_lr = 3e-3", *PRETRAINED[:1]],
     "stlr.max_lr (--gin_param) reaches nothing: this job does not use stlr: "
     f"fit_recipe.schedule is @one_cycle ({ROOT}/gin_configs/fine_tuning_course.gin)"),
    (["tagger.gin"], ["train_classifier.epochs = 2", *PRETRAINED[1:]],
     "train_classifier.epochs (--gin_param) reaches nothing: nothing this job runs refers to "
     "@train_classifier. The job is train_tagger"),
])
def test_a_binding_that_reaches_nothing_is_an_error(parsed, files, bindings, says):
    with pytest.raises(UserError) as raised:
        parsed(files, bindings)
    assert str(raised.value).startswith("gin: " + says)


def test_a_config_file_binding_that_reaches_nothing_names_the_file(parsed, tmp_path):
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'gin_configs/smoke.gin'\nfit_recipe.gradual_unfreezing = False\n")
    with pytest.raises(UserError, match=rf"fit_recipe.gradual_unfreezing \({mine}\) reaches "
                                        "nothing: nothing this job runs refers to @fit_recipe"):
        trainer_main.parse_gin([str(mine)], [])


def test_a_required_setting_left_unset_is_named_with_a_fix(parsed):
    with pytest.raises(UserError, match="gin: train_tagger.pretrained is required; set it with "
                                        "--gin_param, e.g. --gin_param=\"train_tagger.pretrained="):
        parsed(["tagger.gin"], [])


def _tiny_fit():
    from test_downstream import tiny_classifier  # pylint: disable=g-import-not-at-top
    model = tiny_classifier(num_layers=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(4, 30, (4, 5)).astype(np.int32), rng.integers(0, 3, 4)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    configurables.fit_recipe(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             batches, batches, 1, 1)
    return model.optimizer


@pytest.mark.parametrize("course", [False, True], ids=["paper", "course"])
def test_optimizer_settings_reach_the_fine_tuning_optimizer(parsed, course):
    """As train_classifier calls its recipe (classifier.gin: train_classifier.recipe =
    @fit_recipe): the LM's optimizer.* names set fine-tuning's optimizer too."""
    files = ["classifier.gin"] + (["fine_tuning_course.gin"] if course else [])
    parsed(files, [*PRETRAINED[:1], "optimizer.epsilon = 0.5", "optimizer.weight_decay = 0.1"])
    adam = _tiny_fit()
    assert (adam.epsilon, adam.weight_decay) == (0.5, 0.1)
    assert adam.global_clipnorm == (None if course else 0.25)


def test_model_settings_reach_the_language_model(parsed):
    parsed(["smoke.gin"], ["AWDLSTMLanguageModel.ar_alpha = 0.5",
                           "AWDLSTMLanguageModel.drop_mult = 0.5"])
    model = configurables.language_model(vocab_size=20)  # what train_lm.model makes
    assert (model.ar_alpha, model.tar_beta, model.output_p) == (0.5, 1.0, 0.05)
