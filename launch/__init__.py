"""Launchers: Cloud TPU VM jobs (tpu_vm) and the local single-GPU smoke test (local_gpu_smoke)."""
