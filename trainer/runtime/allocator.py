"""Which allocator serves TensorFlow's CPU tensors in a training process.

By default TensorFlow takes every CPU tensor's buffer from malloc (except where it turns its
oneDNN ops on, TF_ENABLE_ONEDNN_OPTS: on an AVX-512 EPYC with VNNI/BF16 it did, and its CPU
allocator then pooled freed memory as BFC does; on the AVX2-only EPYC of earlier sessions it did
not). glibc serves large blocks (above its mmap threshold, at most 32 MB) with a fresh mmap
and returns them with munmap, so a
train step whose logits, activations and gradients are tens of MB page-faults its whole working
set in again, every step: the AWD-LSTM LM step spent about a quarter of its time there. TF's
BFC allocator (the one it uses on GPUs; on the CPU behind TF_CPU_ALLOCATOR_USE_BFC) keeps what a
step frees in its own pool and best-fits the next step's tensors into it. On the LM step
(benchmarks/compare_fastai.py, docs/performance.md) it is as fast as telling glibc to keep freed
blocks on its heap (what this module did before) with a 700 MB lower peak RSS. The cost: the
process keeps its peak tensor memory instead of returning it between steps, which a training
process does anyway.
"""
import os

import tensorflow as tf

_USE_BFC, _LIMIT_MB = "TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB"


def physical_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def use_bfc_allocator():
    """Puts TF's CPU tensors on the BFC allocator from the first op on.

    TF reads the setting when it creates its CPU device (the first op), so call this before
    any op runs (bfc_serves_cpu() tells afterwards); it runs none itself, so a strategy can
    still configure the devices. What a user exports wins.
    """
    os.environ.setdefault(_USE_BFC, "true")
    # TF's own limit is 64 GB, whatever the host has: a bigger job would fail to allocate.
    os.environ.setdefault(_LIMIT_MB, str(physical_memory_mb()))


def bfc_serves_cpu() -> bool:
    """True if TF's CPU allocator is the BFC one (only it keeps the statistics asked for).
    Creates TF's devices if no op has yet."""
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available"
        return False
    return True
