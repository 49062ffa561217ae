"""trainer.allocator: freed large blocks stay in the process for the next step to reuse."""
import subprocess
import sys

import pytest

_SCRIPT = """
import sys
import numpy as np
from trainer.allocator import keep_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = rss_mb()
block = np.ones(200 * 2**20 // 8)  # 200 MB, far above glibc's mmap threshold
del block
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_stay_mapped_only_with_the_setting():
    kept = {mode: float(subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True,
                                       capture_output=True, text=True).stdout)
            for mode in ("keep", "default")}
    assert kept["keep"] > 150 and kept["default"] < 50, kept
