"""trainer.runtime.allocator: TF's CPU tensors on the BFC allocator, which reuses what a step
freed."""
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import os, sys
import tensorflow as tf
from trainer.runtime.allocator import bfc_serves_cpu, use_bfc_allocator

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "main":  # trainer.main's imports and gin parsing run no op before job()
    from trainer import main
    main.parse_gin(["gin_configs/smoke.gin"], [])
    main.use_bfc_allocator()  # what job() calls
elif sys.argv[1] == "late":
    tf.constant(1.0) + 1  # an op first: TF has made its CPU allocator already
    use_bfc_allocator()
served = bfc_serves_cpu()
growth = []
for _ in range(4):  # 200 MB tensors, far above glibc's mmap threshold
    before = rss_mb()
    block = tf.fill([50 * 2**20], 1.0)
    float(block[-1])
    del block
    growth.append(rss_mb() - before)
print(served, os.environ.get("TF_CPU_BFC_MEM_LIMIT_IN_MB"), *growth)
"""


def _run(mode, **env):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    served, limit, *growth = out.stdout.split()
    return served == "True", limit, [float(g) for g in growth]


@pytest.mark.heavy
def test_trainer_main_puts_tensors_on_bfc_which_keeps_freed_memory_for_the_next_one():
    served, limit, growth = _run("main")
    assert served
    assert int(limit) > 1024  # the host's memory, not TF's 64 GB default
    # The first block is paged in once and stays; the later ones reuse it.
    assert growth[0] > 150 and max(growth[1:]) < 20, growth


# Where TensorFlow turns its oneDNN ops on (its default on an AVX-512 EPYC with VNNI/BF16, not
# on the AVX2-only one of earlier sessions), its CPU allocator pools freed memory already; these
# two tests are about TF's plain allocator, so they turn oneDNN off.
PLAIN = {"TF_ENABLE_ONEDNN_OPTS": "0"}


@pytest.mark.heavy
def test_without_it_tf_maps_each_big_tensor_afresh():
    served, _, growth = _run("default", **PLAIN)
    assert not served
    assert max(growth) < 50, growth  # glibc unmaps each freed block: nothing stays


@pytest.mark.heavy
def test_after_the_first_op_it_is_too_late_and_a_users_limit_wins():
    served, limit, _ = _run("late", TF_CPU_BFC_MEM_LIMIT_IN_MB="4096", **PLAIN)
    assert not served and limit == "4096"
