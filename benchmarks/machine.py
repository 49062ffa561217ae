"""The CPU a benchmark ran on, printed with every table: results differ between CPU families
(AVX-512 and AVX2-only machines both occur), so a figure means little without it."""
import os

_EXTENSIONS = ("avx512f", "avx512_bf16", "amx_tile", "avx2", "fma")


def cpu_description() -> str:
    """E.g. 'AMD EPYC, 2 cores, avx2 fma (no AVX-512)', from /proc/cpuinfo."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    found = [e for e in _EXTENSIONS if e in flags]
    note = "" if "avx512f" in flags else " (no AVX-512)"
    return f"{name}, {os.cpu_count()} cores, {' '.join(found) or 'no AVX'}{note}"


def gpu_name() -> str:
    """The first GPU's model as TensorFlow reports it (call only where a GPU is visible)."""
    # Imported here: compare_fastai's torch workers import this module and must not load TF.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    gpu = tf.config.list_physical_devices("GPU")[0]
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
