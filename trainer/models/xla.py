"""`compiled`: tf.function(jit_compile=True) where XLA can compile, and `portable()`, inside
which functions are traced to run on any host (for exports).

TensorFlow's TPU build (tensorflow-tpu, what a TPU VM runs) links no XLA backend for the CPU: a
jit_compile'd function placed there fails ("could not find registered transfer manager for
platform Host"), e.g. the eager call that builds a model's variables. There the same function
runs as a plain tf.function on the host, and inside a TPU step it is compiled with the rest of
the step anyway. Decided at the first call, once the runtime is up: asking earlier would start
it before a strategy sets up its logical devices.

A SavedModel must serve wherever it is loaded: TF Serving runs XLA-compiled functions only with
XLA enabled in the server, and a graph traced while a GPU was visible would hold cuDNN ops, which
have no CPU kernel. So what is traced inside `portable()` uses no XLA, and the LSTM its portable
kernel (lstm_kernel.py).
"""
import contextlib
import functools

import tensorflow as tf

_portable = False


@contextlib.contextmanager
def portable():
    """Functions traced inside run on any host: no XLA, no cuDNN."""
    global _portable
    previous, _portable = _portable, True
    try:
        yield
    finally:
        _portable = previous


def tracing_portably() -> bool:
    return _portable


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
    """`fn` as a tf.function compiled by XLA where the host CPU can be, plain inside
    `portable()` (see the module)."""
    functions = {}

    @functools.wraps(fn)
    def call(*args, **kwargs):
        jit = not _portable and host_compiles()
        if jit not in functions:
            functions[jit] = tf.function(fn, jit_compile=jit)
        return functions[jit](*args, **kwargs)
    return call
