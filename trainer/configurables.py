"""Gin at the edge: the jobs and the parts a config may bind, registered under the names the gin
files use. Only entry points (trainer.main, trainer.lr_find) import this module. Library code is
plain Python that takes its parts as arguments; the gin files wire them, e.g.
`train_lm.optimizer = @optimizer`, which is how `optimizer.epsilon = ...` reaches the optimizer
train_lm builds (trainer/gin_reach.py refuses a binding that reaches nothing).
"""
import gin

from data_pipeline.build_settings import BuildSettings
from trainer.fine_tuning import classification, recipe, tagging
from trainer.lm import training
from trainer.models.config import AWD_LSTM_LM_CONFIG, DROPOUTS
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.models.ulmfit_classifier import ulmfit_classifier
from trainer.models.ulmfit_tagger import ulmfit_tagger
from trainer.optim import schedules
from trainer.optim.optimizer import fastai_adam
from trainer.runtime import strategies

# What the caller always passes is denied to gin: a binding of it would never be used.
_PASSED_BY_JOB = ["model_dir", "strategy"]
JOBS = {
    "train_lm": training.train_lm,
    "train_classifier": classification.train_classifier,
    "train_tagger": tagging.train_tagger,
}
train_lm = gin.external_configurable(JOBS["train_lm"], "train_lm",
                                     denylist=_PASSED_BY_JOB + ["controller"])  # lr_find's
train_classifier, train_tagger = (gin.external_configurable(JOBS[name], name,
                                                            denylist=_PASSED_BY_JOB)
                                  for name in ("train_classifier", "train_tagger"))
make_strategy = gin.external_configurable(strategies.make_strategy, "make_strategy")

# The models: sizes, dropouts and AR/TAR, each under the model it belongs to. They take
# **config, so gin would accept any name; the allowlists make a misspelled setting a parse error.
_REGULARIZERS = ["drop_mult", "ar_alpha", "tar_beta"]
language_model = gin.external_configurable(
    AWDLSTMLanguageModel, "AWDLSTMLanguageModel",
    allowlist=_REGULARIZERS + list(AWD_LSTM_LM_CONFIG))
classifier = gin.external_configurable(
    ulmfit_classifier, "ulmfit_classifier",
    allowlist=_REGULARIZERS + list(DROPOUTS) + ["lin_ftrs", "ps"])
tagger = gin.external_configurable(ulmfit_tagger, "ulmfit_tagger",
                                   allowlist=_REGULARIZERS + list(DROPOUTS))

# Training: one optimizer for every job, the schedules, the fine-tuning recipe, data building.
optimizer = gin.external_configurable(
    fastai_adam, "optimizer", allowlist=["clip_norm", "beta_2", "epsilon", "weight_decay"])
one_cycle = gin.external_configurable(schedules.one_cycle, "one_cycle", denylist=["total_steps"])
stlr = gin.external_configurable(schedules.stlr, "stlr", denylist=["total_steps"])
fit_recipe = gin.external_configurable(
    recipe.fit_recipe, "fit_recipe",
    allowlist=["schedule", "optimizer", "discriminative_factor", "gradual_unfreezing",
               "clear_state_on_unfreeze", "stages"])
build_settings = gin.external_configurable(BuildSettings, "BuildSettings",
                                           denylist=["input", "spm_model"])

_NAMES = {id(wrapper): name for name, wrapper in (
    ("train_lm", train_lm), ("train_classifier", train_classifier),
    ("train_tagger", train_tagger), ("make_strategy", make_strategy))}


def registered_name(value):
    """The gin name of a job or strategy factory registered here, else None."""
    return _NAMES.get(id(value))
