"""benchmarks/accelerator_check.py on a CPU: it runs what a CPU can and names what it skipped."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.heavy
def test_on_a_cpu_it_checks_resume_and_float16_and_names_the_rest_skipped(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "accelerator_check.py"),
                           f"--work_dir={tmp_path / 'work'}"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: CPU only: ")
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[2:]}
    assert rows["cudnn_vs_fused"] == ["skipped", "no GPU"]
    assert rows["replica_masks"][0] == "skipped" and rows["tpu_bf16_loops"] == ["skipped", "no TPU"]
    assert rows["exact_resume"][0] == "ok" and "largest weight difference after 8 steps: 0.0e+00" \
        in rows["exact_resume"][1]
    assert rows["mixed_float16"][0] == "ok" and "tokens/s" in rows["mixed_float16"][1]
