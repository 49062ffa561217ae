"""Every private Keras and TensorFlow API the project relies on, in one place.

Keras' public optimizer cannot express fastai's Adam (gradients summed over replicas before the
clip, weight decay fused into the step, one beta_1 per step), and its public LSTM layer cannot
take a weight-dropped recurrent kernel on cuDNN. So trainer/optim/optimizer.py overrides or reads
the private members of `keras.optimizers.Optimizer` listed in OPTIMIZER_MEMBERS, and
trainer/models/lstm_kernel.py calls the backend LSTM and XLA-context query imported here. A
Keras or TensorFlow release may rename any of them without notice: `changed_internals()` says
what this installation lacks (tests/test_keras_internals.py runs it), and setup.py pins the Keras
versions it was tested with.
"""
import inspect

import keras
import tensorflow as tf
from keras.src import backend as _keras_backend
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

# The function keras.layers.LSTM calls, which runs cuDNN's kernel where it can.
backend_lstm = _keras_backend.lstm

# Private optimizer members trainer/optim/optimizer.py overrides (with these parameters) or reads.
OPTIMIZER_METHODS = {
    "_all_reduce_sum_gradients": ("grads_and_vars",),  # overridden: no per-replica sum
    "_clip_gradients": ("grads",),  # overridden: sum over replicas, then clip
    "_apply_weight_decay": ("variables",),  # overridden: decay fused into update_step
    "_use_weight_decay": ("variable",),  # overridden: exclusions searched in the path
    "_distributed_tf_update_step": ("distribution", "grads_and_vars", "learning_rate"),
    "_get_variable_index": ("variable",),  # read: a variable's slot index
    "_var_key": ("variable",),  # read: the key exclude_from_weight_decay stores
}
# Set by Optimizer.build / exclude_from_weight_decay, read by trainer/optim/optimizer.py.
OPTIMIZER_ATTRIBUTES = ("_trainable_variables", "_exclude_from_weight_decay",
                        "_exclude_from_weight_decay_pattern")


def in_xla_context() -> bool:
    """True while tracing inside a jit_compile'd function, where cuDNN ops cannot run."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def changed_internals(optimizer_class=keras.optimizers.Optimizer):
    """What this Keras lacks of what the project relies on, one line each; [] if nothing."""
    problems = []
    for name, parameters in OPTIMIZER_METHODS.items():
        method = getattr(optimizer_class, name, None)
        if method is None:
            problems.append(f"{optimizer_class.__name__}.{name} is gone")
            continue
        found = tuple(inspect.signature(method).parameters)[1:]  # without self
        if found != parameters:
            problems.append(f"{optimizer_class.__name__}.{name} now takes {found}, not "
                            f"{parameters}")
    optimizer = _plain_optimizer(optimizer_class)
    problems += [f"{optimizer_class.__name__} instances no longer have {name}"
                 for name in OPTIMIZER_ATTRIBUTES if not hasattr(optimizer, name)]
    if not callable(getattr(_keras_backend, "lstm", None)):
        problems.append("keras.src.backend.lstm is gone")
    if not callable(getattr(control_flow_util, "GraphOrParentsInXlaContext", None)):
        problems.append("tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext "
                        "is gone")
    return [f"{p} (Keras {keras.__version__}, TensorFlow {tf.__version__})" for p in problems]


def _plain_optimizer(optimizer_class):
    """An optimizer of `optimizer_class` built as fastai_adam builds FastaiAdam."""

    class Plain(optimizer_class):  # pylint: disable=abstract-method
        def update_step(self, gradient, variable, learning_rate):
            del gradient, variable, learning_rate

    optimizer = Plain(learning_rate=0.1, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build([keras.Variable(tf.zeros([2]))])
    return optimizer
