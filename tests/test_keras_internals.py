"""The private Keras and TensorFlow APIs training relies on (trainer/models/keras_internals.py) are
there in the installed versions; when a release changes one, this names it."""
import keras
import tensorflow as tf

from trainer.models import keras_internals
from trainer.optim.optimizer import FastaiAdam


def test_the_installed_keras_has_every_internal_training_relies_on():
    problems = keras_internals.changed_internals()
    assert not problems, ("a Keras or TensorFlow release changed what trainer/optim/optimizer.py "
                          "or trainer/models/lstm_kernel.py relies on:\n" + "\n".join(problems))


def test_a_renamed_or_reshaped_internal_is_named():
    class Renamed(keras.optimizers.Optimizer):  # as a release might change the base class
        _clip_gradients = None  # gone

        def _distributed_tf_update_step(self, distribution, grads_and_vars, lr, extra=None):
            pass

        def exclude_from_weight_decay(self, var_names=None, var_names_pattern=None):
            pass  # stores nothing: the exclusions' attributes are never set

    problems = "\n".join(keras_internals.changed_internals(Renamed))
    assert "Renamed._clip_gradients is gone" in problems
    assert ("Renamed._distributed_tf_update_step now takes ('distribution', 'grads_and_vars', "
            "'lr', 'extra')") in problems
    assert "instances no longer have _exclude_from_weight_decay" in problems
    assert f"Keras {keras.__version__}" in problems


def test_every_private_member_fastai_adam_overrides_is_listed():
    """A new override of a private member must be listed, so the check above covers it."""
    overridden = {name for name, value in vars(FastaiAdam).items()
                  if name.startswith("_") and not name.startswith("__") and callable(value)}
    private_of_keras = {name for name in overridden
                        if hasattr(keras.optimizers.Optimizer, name)}
    assert private_of_keras <= set(keras_internals.OPTIMIZER_METHODS), private_of_keras


def test_the_xla_context_query_answers_inside_and_outside_xla():
    seen = []

    def probe(x):
        seen.append(keras_internals.in_xla_context())
        return x

    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    tf.function(probe)(tf.constant(1.0))
    assert seen == [True, False]
