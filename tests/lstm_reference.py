"""The LSTM equations in plain Python, one time step at a time: the reference for the kernels."""
import tensorflow as tf


def reference_lstm(x, h, c, kernel, recurrent_kernel, bias):
    """x [batch, time, in]; ONE recurrent kernel for every step. Returns (outputs, h, c)."""
    outputs = []
    for t in range(x.shape[1]):
        z = tf.matmul(x[:, t], kernel) + tf.matmul(h, recurrent_kernel) + bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outputs.append(h)
    return tf.stack(outputs, 1), h, c
