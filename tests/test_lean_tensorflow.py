"""data_pipeline.lean_tensorflow: the command-line tools import TensorFlow without the optional
packages Keras would import with it, and those packages still import afterwards."""
import subprocess
import sys

import pytest

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


def test_a_process_that_imported_tensorflow_itself_keeps_keras_whole():
    pytest.importorskip("matplotlib")
    loaded, imported = _run("tensorflow")
    assert "matplotlib" in loaded.split(",") and imported == "matplotlib.pyplot"
