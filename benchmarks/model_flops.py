"""FLOPs of AWD-LSTM training and the machine's matmul peak, shared by the benchmarks."""
import time


def flops_per_token(vocab, emb, hidden, layers=3):
    """Matmul FLOPs of one training token: forward x 3 (backward is twice the forward)."""
    sizes = [emb] + [hidden] * (layers - 1) + [emb]
    lstm = sum(2 * 4 * out * (inp + out) for inp, out in zip(sizes, sizes[1:]))
    return 3 * (lstm + 2 * emb * vocab)


def matmul_peak(n=2048, repeats=10):
    """FLOP/s of an n^3 float32 matmul in TensorFlow: the ceiling MFU is measured against."""
    # Imported here: compare_fastai's torch worker imports this module and must not load TF.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul().numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start)
