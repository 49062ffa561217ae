"""common.lean_tensorflow: the command-line tools import TensorFlow without the optional
packages Keras would import with it, and those packages still import afterwards; and without
TensorFlow's C++ chatter in their output (common/tf_log_filter.py)."""
import os
import re
import subprocess
import sys

import pytest

from common import tf_log_filter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = """
import sys
first = sys.argv[1]
if first == "tensorflow":
    import tensorflow
import trainer.main
loaded = sorted(name for name in ("matplotlib", "sklearn", "pandas", "scipy") if name in sys.modules)
print(",".join(loaded) or "-")
import matplotlib.pyplot
print(matplotlib.pyplot.__name__)
"""


def _run(first):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, first], check=True,
                         capture_output=True, text=True)
    return out.stdout.split()


def test_tools_import_tensorflow_without_keras_optional_packages():
    pytest.importorskip("matplotlib")  # the test extra installs it; Keras imports it if present
    assert _run("tool") == ["-", "matplotlib.pyplot"]


@pytest.mark.heavy
def test_a_process_that_imported_tensorflow_itself_keeps_keras_whole():
    pytest.importorskip("matplotlib")
    loaded, imported = _run("tensorflow")
    assert "matplotlib" in loaded.split(",") and imported == "matplotlib.pyplot"


def test_tools_start_quietly_unless_asked(tmp_path):
    """TensorFlow's C++ start-up log (oneDNN, CUDA lines, `E0000 ... cuInit` on a machine with no
    GPU driver) stays out of a tool's output; --verbose or the user's TF_CPP_MIN_LOG_LEVEL
    shows it."""
    argv = [sys.executable, "-m", "trainer.generate", f"--model_dir={tmp_path}/nothing",
            "--prompt=the"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert quiet.returncode == 1
    assert quiet.stderr.startswith(f"error: {tmp_path}/nothing: neither a model directory")
    assert quiet.stderr.count("\n") == 1, quiet.stderr  # that line only
    verbose = subprocess.run(argv + ["--verbose"], capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=600)
    assert verbose.returncode == 1 and verbose.stderr.endswith(quiet.stderr)
    c_plus_plus_log = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", re.M)
    assert c_plus_plus_log.search(verbose.stderr), verbose.stderr


def _log_filter():
    return subprocess.Popen([sys.executable, "-S", tf_log_filter.__file__],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _filtered(*writes):
    """What tf_log_filter passes of `writes`, each written to it separately."""
    proc = _log_filter()
    for data in writes:
        proc.stdin.write(data)
        proc.stdin.flush()
    out, _ = proc.communicate()
    return out


def _record(severity, where, text):
    return f"{severity}0000 00:00:1796191295.746061   12988 {where}] {text}\n".encode()


def test_the_filter_drops_start_up_chatter_and_cache_noise_and_keeps_the_rest():
    start = [b"WARNING: All log messages before absl::InitializeLog() is called are written to "
             b"STDERR\n", _record("I", "port.cc:153", "oneDNN custom operations are on."),
             b"2026-12-02 08:00:38.482304: I tensorflow/core/util/port.cc:153] oneDNN custom "
             b"operations are on.\n",  # TF 2.20's format
             b"2026-12-02 08:00:38.482304: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] "
             b"TF-TRT Warning: Could not find TensorRT\n",
             _record("W", "x.cc:1", "a start-up warning"),
             b"To enable the following instructions: AVX2 FMA, in other operations\n",
             _record("E", "cuda_platform.cc:52", "failed call to cuInit: UNKNOWN ERROR (303)")]
    running = [_record("W", "x.cc:2", "a warning while running"),
               _record("I", "service.cc:153", "XLA service initialized"),
               _record("E", "text_format.cc:378", "Error parsing text-format "
                       "tensorflow.XlaSerializedCacheEntry: 2:1: Expected identifier, got: 6"),
               _record("E", "cpu_aot_loader.cc:220", "Loading XLA:CPU AOT result. Target "
                       "machine feature +prefer-no-scatter is not  supported on the host"),
               _record("E", "other.cc:9", "an error that matters"),
               b"Traceback (most recent call last):\n"]
    marker = tf_log_filter.STARTED
    out = _filtered(b"".join(start), marker[:5], marker[5:], b"".join(running))
    assert out == running[0] + running[4] + running[5]


def test_a_progress_bar_passes_before_its_line_ends():
    proc = _log_filter()
    proc.stdin.write(b"\repoch 1/3:  10%|#  | 20/195")
    proc.stdin.flush()
    assert os.read(proc.stdout.fileno(), 100) == b"\repoch 1/3:  10%|#  | 20/195"
    proc.stdin.close()
    proc.wait()


def test_python_log_records_shown_are_ours_at_info_and_anyones_from_warning_up():
    import logging  # pylint: disable=import-outside-toplevel

    from common import lean_tensorflow  # pylint: disable=import-outside-toplevel
    ours = os.path.join(ROOT, "trainer", "lm", "controller.py")
    theirs = os.path.join(os.path.dirname(logging.__file__), "gin", "resource_reader.py")
    shown = {(path, level): lean_tensorflow._own_info_only(  # pylint: disable=protected-access
        logging.LogRecord("absl", level, path, 1, "message", None, None))
        for path in (ours, theirs) for level in (logging.INFO, logging.WARNING, logging.ERROR)}
    assert shown == {(ours, logging.INFO): True, (ours, logging.WARNING): True,
                     (ours, logging.ERROR): True, (theirs, logging.INFO): False,
                     (theirs, logging.WARNING): True, (theirs, logging.ERROR): True}
