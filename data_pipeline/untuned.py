"""tf.data pipelines without tf.data's autotuning thread.

With autotuning on, deleting an iterator waits for that thread to wake from its sleep, which
doubles up to a minute: seen in gdb as the iterator's destructor waiting on
`Model::OptimizeLoop`. Keras makes an iterator per epoch, so a classifier's epoch waited 7-20 s
for the last one's; the LM trainer's last iterator held its process ~33 s after training. Off,
AUTOTUNE values fall back to tf.data's defaults (benchmarks/stream_bench.py measures the LM
input's throughput with them). A tf.distribute strategy that feeds devices through a
MultiDeviceIterator builds a pipeline of its own with default options, out of reach of these:
one device therefore runs under TensorFlow's default strategy (trainer/runtime/strategies.py).
"""
import tensorflow as tf


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
