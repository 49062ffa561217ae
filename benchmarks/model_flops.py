"""FLOPs of AWD-LSTM training, shared by the benchmarks."""


def flops_per_token(vocab, emb, hidden, layers=3):
    """Matmul FLOPs of one training token: forward x 3 (backward is twice the forward)."""
    sizes = [emb] + [hidden] * (layers - 1) + [emb]
    lstm = sum(2 * 4 * out * (inp + out) for inp, out in zip(sizes, sizes[1:]))
    return 3 * (lstm + 2 * emb * vocab)
