"""How a command-line tool imports TensorFlow: without what Keras imports just in case, and
without TensorFlow's C++ chatter in the tool's output. Every tool's module imports this first.

Lean: Keras 3 imports matplotlib.pyplot, scikit-learn, pandas and SciPy at start-up whenever
they are installed (for its plotting utility, scikit-learn wrappers, DataFrame inputs), and they
are on most machines that have fastai or Jupyter; that doubles the import's time and adds
~150 MB (docs/performance.md). The tools use none of those Keras features, so TensorFlow is
imported with the four hidden, then they are unhidden, so a later `import matplotlib`
(trainer.lr_find's plot) works as usual. A process that imported TensorFlow itself keeps Keras
whole; one that imports a tool's module (data_pipeline.build, say) before TensorFlow does not get
Keras' plotting, scikit-learn wrappers or DataFrame inputs: import TensorFlow first for those.

Quiet, in a tool run as `python -m` (trainer.*, data_pipeline.*, launch.*): what TensorFlow's C++
side writes to stderr goes through common/tf_log_filter.py, which says what it leaves
out; Python's own output (sys.stderr, progress bars, tracebacks, `error:` lines) goes straight
to stderr as before. Python log records below WARNING are shown only from this project's code.
`--verbose` on any tool, or a TF_CPP_MIN_LOG_LEVEL of the user's own, shows everything.
"""
import logging
import os
import subprocess
import sys

from absl import flags
from absl import logging as absl_logging

from common import tf_log_filter

flags.DEFINE_bool("verbose", False, "Show TensorFlow's C++ log and other libraries' INFO "
                  "lines (shown also when TF_CPP_MIN_LOG_LEVEL is set).")

KERAS_OPTIONAL = ("matplotlib", "sklearn", "pandas", "scipy")
_TOOL_PACKAGES = ("trainer", "data_pipeline", "launch")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_CODE = tuple(os.path.join(_ROOT, package) + os.sep
                  for package in ("common", *_TOOL_PACKAGES))
_filter_process = []  # held for the tool's life


def _import_tensorflow():
    if "tensorflow" in sys.modules:
        return  # too late; nothing to gain
    quiet = _is_quiet_tool()
    if quiet:
        _filter_cpp_log()
    hidden = [name for name in KERAS_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError, which Keras expects
    try:
        import tensorflow  # pylint: disable=import-outside-toplevel
        # CUDA logs as TF first lists its devices; TF reads TF_XLA_FLAGS then too, so a tool
        # that sets them (trainer.main's compilation cache) does so before importing this.
        tensorflow.config.list_physical_devices("GPU")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    if quiet:
        os.write(2, tf_log_filter.STARTED)


def _is_quiet_tool():
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (main is not None and main.name.startswith(tuple(p + "." for p in _TOOL_PACKAGES))
            and "--verbose" not in sys.argv  # flags are parsed later
            and "TF_CPP_MIN_LOG_LEVEL" not in os.environ)  # the user's own: they want TF's log


def _filter_cpp_log():
    """Points stderr (fd 2, where C++ writes) at the filter process for the rest of the tool's
    life, and Python's stderr at the real one. The filter is its own process so that what
    TensorFlow writes as it aborts still gets out; it ends when the tool does."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"  # INFO is dropped anyway: spare the pipe
    sys.stderr.flush()
    real_stderr = os.dup(2)
    noise_filter = subprocess.Popen([sys.executable, "-S", tf_log_filter.__file__],
                                    stdin=subprocess.PIPE, stdout=real_stderr)
    os.dup2(noise_filter.stdin.fileno(), 2)
    noise_filter.stdin.close()  # fd 2 is now the pipe's only writing end here
    _filter_process.append(noise_filter)
    # pylint: disable-next=consider-using-with
    sys.stderr = open(real_stderr, "w", buffering=1, encoding=sys.stderr.encoding,
                      errors="backslashreplace")
    handler = absl_logging.get_absl_handler()
    handler.python_handler.stream = sys.stderr
    handler.addFilter(_own_info_only)


def _own_info_only(record):
    return record.levelno >= logging.WARNING or record.pathname.startswith(_OWN_CODE)


_import_tensorflow()
