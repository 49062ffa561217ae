"""benchmarks/accelerator_check.py on a CPU: it runs what a CPU can and names what it skipped."""
import json
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
    assert rows["lm_vs_fastai"][0] == "skipped" and "no GPU" in rows["lm_vs_fastai"][1]
    assert rows["exact_resume"][0] == "ok" and "largest weight difference after 8 steps: 0.0e+00" \
        in rows["exact_resume"][1]
    assert rows["mixed_float16"][0] == "ok" and "tokens/s" in rows["mixed_float16"][1]


@pytest.mark.heavy
def test_the_fastai_comparison_it_runs_on_a_gpu_writes_every_systems_rate(tmp_path):
    """accelerator_check reads compare_fastai's --json_out; here on the CPU at a tiny size."""
    pytest.importorskip("fastai")
    rates = tmp_path / "rates.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compare_fastai.py"),
                           "--rounds=1", "--steps=1", "--batch_size=2", "--bptt=5",
                           "--vocab_size=50", f"--json_out={rates}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rate = json.loads(rates.read_text())
    assert set(rate) == {"ours", "ours_xla", "fastai", "fastai_tuned"}
    assert all(tokens_per_second > 0 for tokens_per_second in rate.values())
    table = done.stdout.split("\n")
    assert any(line.startswith("CPU ") for line in table)
    for kind, label in {"ours": "ours, TF kernels", "ours_xla": "ours, XLA step",
                        "fastai": "fastai, glibc malloc"}.items():  # as the table prints them
        assert any(line.startswith(label) and f"{rate[kind]:,.0f}" in line for line in table)
