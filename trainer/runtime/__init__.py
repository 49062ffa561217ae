"""Where and how TensorFlow runs: the tf.distribute strategies, the CPU allocator, and the XLA
compilation cache."""
