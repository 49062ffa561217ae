"""glibc malloc settings for a training process.

TensorFlow (like PyTorch) takes every tensor's buffer from malloc. glibc serves large blocks
(above its mmap threshold, at most 32 MB) with a fresh mmap and returns them with munmap, so a
train step whose logits, activations and gradients are tens of MB page-faults its whole working
set in again, every step: the AWD-LSTM LM step spent about a quarter of its time there
(benchmarks/compare_fastai.py shows both settings). Serving all blocks from the heap and never
trimming it lets each step reuse the memory the previous one freed. The cost: the process keeps
its peak memory instead of returning it between steps, which a training process does anyway.
"""
import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Applies the settings to this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
