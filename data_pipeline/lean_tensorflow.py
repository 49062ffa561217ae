"""Imports TensorFlow for a command-line process, without what Keras imports just in case.

Keras 3 imports matplotlib.pyplot, scikit-learn, pandas and SciPy at start-up whenever they are
installed (for its plotting utility, scikit-learn wrappers, DataFrame inputs), and they are on
most machines that have fastai or Jupyter. Measured on a 2-core AMD EPYC with all four installed:
`import tensorflow` 7.3 s and 716 MB peak RSS, 3.6 s and 563 MB without them. The command-line
tools use none of those Keras features, so their modules import this one first: it imports
TensorFlow with the four hidden, then unhides them, so a later `import matplotlib`
(trainer.lr_find's plot) works as usual. A process that imported TensorFlow itself keeps Keras
whole; one that imports a tool's module (data_pipeline.build, say) before TensorFlow does not get
Keras' plotting, scikit-learn wrappers or DataFrame inputs: import TensorFlow first for those.
"""
import sys

KERAS_OPTIONAL = ("matplotlib", "sklearn", "pandas", "scipy")


def _import_tensorflow():
    if "tensorflow" in sys.modules:
        return  # too late; nothing to gain
    hidden = [name for name in KERAS_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError, which Keras expects
    try:
        import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


_import_tensorflow()
