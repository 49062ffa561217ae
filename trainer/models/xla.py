"""`compiled`: tf.function(jit_compile=True) where XLA can compile for the host's CPU.

TensorFlow's TPU build (tensorflow-tpu, what a TPU VM runs) links no XLA backend for the CPU: a
jit_compile'd function placed there fails ("could not find registered transfer manager for
platform Host"), e.g. the eager call that builds a model's variables. There the same function
runs as a plain tf.function on the host, and inside a TPU step it is compiled with the rest of
the step anyway. Decided at the first call, once the runtime is up: asking earlier would start
it before a strategy sets up its logical devices.
"""
import functools

import tensorflow as tf


@functools.cache
def host_compiles() -> bool:
    """Whether XLA compiles a function for the host CPU (False on TensorFlow's TPU build)."""
    with tf.init_scope(), tf.device("/CPU:0"):  # eager, even when called while tracing
        try:
            tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(1.0))
            return True
        except tf.errors.NotFoundError:
            return False


def compiled(fn):
    """`fn` as a tf.function compiled by XLA where the host CPU can be (see the module)."""
    function = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal function
        if function is None:
            function = tf.function(fn, jit_compile=host_compiles())
        return function(*args, **kwargs)
    return call
