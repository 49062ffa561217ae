"""Gin at the edge: the library's functions and classes that a config may bind, registered here
under the names the gin files use. Library modules stay plain Python (no gin imports); the entry
points (`train_lm`, `train_classifier`, `train_tagger`, trainer.main's `job`) call these
registered versions, which is how a binding such as `one_cycle.max_lr = 1e-2` reaches them.
"""
import gin

from data_pipeline import demo_tasks
from data_pipeline.build import BuildSettings
from trainer import fine_tuning, schedules, strategies
from trainer.models.config import AWD_LSTM_LM_CONFIG
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optimizer import fastai_adam
from trainer.ulmfit_classifier import ulmfit_classifier

LANGUAGE_MODEL = "AWDLSTMLanguageModel"

# It takes **config, so gin would accept any name; the allowlist makes a misspelled setting a
# parse error naming it, as for every other configurable.
language_model = gin.external_configurable(AWDLSTMLanguageModel, LANGUAGE_MODEL,
                                           allowlist=["drop_mult", *AWD_LSTM_LM_CONFIG])
build_settings = gin.external_configurable(BuildSettings, "BuildSettings")
# fastai's LM settings (beta_2, epsilon, weight_decay) are bound as optimizer.* in lm_training.gin.
optimizer = gin.external_configurable(fastai_adam, "optimizer")
make_strategy = gin.external_configurable(strategies.make_strategy, "make_strategy")
one_cycle = gin.external_configurable(schedules.one_cycle, "one_cycle")
stlr = gin.external_configurable(schedules.stlr, "stlr")
fit_recipe = gin.external_configurable(fine_tuning.fit_recipe, "fit_recipe")
demo_task_files = gin.external_configurable(demo_tasks.demo_task_files, "demo_task_files")
# The head's sizes and extra dropouts (lin_ftrs, ps) and AR/TAR; the encoder's sizes, dropouts
# and drop_mult come from AWDLSTMLanguageModel.* (see model_bindings), as for the LM.
classifier = gin.external_configurable(ulmfit_classifier, "ulmfit_classifier",
                                       allowlist=["lin_ftrs", "ps", "ar_alpha", "tar_beta"])


def model_bindings():
    """The AWDLSTMLanguageModel.* bindings, for models whose encoder is built by library code
    (tf2_ulmfit_encoder): the downstream trainers pass them on."""
    return gin.get_bindings(LANGUAGE_MODEL)
