"""The LSTM recurrence over a whole sequence, on the fastest kernel the device has.

`lstm_sequence` takes the weights as plain tensors, so the caller can pass a weight-dropped
recurrent kernel and still get cuDNN. The choice is explicit (`select_implementation`):
  cudnn  GPU visible and not inside an XLA cluster: Keras' backend LSTM, which runs cuDNN.
  scan   everywhere else (CPU, TPU, any jit_compile): the input projection of all time steps is
         one matmul, and the time loop does only the small recurrent matmul and the gate math.
Gate order is Keras' (i, f, c, o), the same as PyTorch's (i, f, g, o).
"""
import tensorflow as tf
from keras.src import backend as keras_backend  # the entry keras.layers.LSTM uses for cuDNN
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

IMPLEMENTATIONS = ("cudnn", "scan")


def gpu_available() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def in_xla_context() -> bool:
    """True while tracing inside a jit_compile'd function, where cuDNN ops cannot run."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def select_implementation(has_gpu: bool, under_xla: bool) -> str:
    return "cudnn" if has_gpu and not under_xla else "scan"


def lstm_step(projected_input, h, c, recurrent_kernel):
    """One time step; `projected_input` is x @ kernel + bias for this step."""
    z = projected_input + tf.matmul(h, recurrent_kernel)
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    h = tf.sigmoid(o) * tf.tanh(c)
    return h, c


def _scan_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias):
    projected = tf.einsum("btd,dg->tbg", inputs, kernel) + bias  # time-major for the scan
    hs, cs = tf.scan(lambda carry, x: lstm_step(x, carry[0], carry[1], recurrent_kernel),
                     projected, initializer=(h0, c0))
    return tf.transpose(hs, [1, 0, 2]), hs[-1], cs[-1]


def _cudnn_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias):
    _, outputs, (h, c) = keras_backend.lstm(
        inputs, h0, c0, None, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias,
        activation=tf.tanh, recurrent_activation=tf.sigmoid, return_sequences=True)
    return outputs, h, c


def lstm_sequence(inputs, h0, c0, kernel, recurrent_kernel, bias, implementation=None):
    """inputs [batch, time, in] -> (outputs [batch, time, units], last h, last c)."""
    implementation = implementation or select_implementation(gpu_available(), in_xla_context())
    if implementation == "cudnn":
        try:
            return _cudnn_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias)
        except NotImplementedError:  # Keras found no usable cuDNN op after all
            pass
    return _scan_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias)
