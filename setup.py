"""AWD-LSTM / ULMFiT pretraining and fine-tuning on TensorFlow 2."""
from setuptools import find_packages, setup

# tensorflow-hub's KerasLayer is a Keras 2 layer: it needs tf-keras beside Keras 3, and it
# imports pkg_resources, which setuptools 81 removed. torch requires setuptools>=77 and would
# otherwise take the newest, so every extra that can bring torch keeps the same cap.
SETUPTOOLS = "setuptools<81"
HUB = ["tensorflow-hub>=0.16.1,<0.17", "tf-keras>=2.20,<2.22", SETUPTOOLS]
TORCH = ["torch>=2.4,<3", SETUPTOOLS]
PLOT = ["matplotlib>=3.8,<4"]
# data_pipeline.build --runner=...; Beam 2.77 takes protobuf 6, which TF 2.21 accepts (>=6.31).
BEAM = ["apache-beam[tfrecord]>=2.77,<3"]
# The TensorFlow versions accelerators ship: 2.20 is the newest TPU build (tensorflow-tpu),
# 2.21 the newest generic one. tensorflow-text is built against exactly one TF minor version
# and requires the *generic* tensorflow distribution, so on a TPU VM it must be installed
# without its dependencies: launch/tpu_install.py does that, never `pip install .[tpu]`.
TENSORFLOW = ["tensorflow>=2.20,<2.22", "tensorflow-text>=2.20,<2.22"]
# What a TPU VM needs (installed by launch/tpu_install.py). TF 2.20 asks for libtpu~=0.0.14;
# the newest libtpu on PyPI (0.0.52) no longer exports TF's TPU entry points and aborts
# `import tensorflow` (ConfigureDistributedTpuOp_DoWork), so libtpu is pinned to the release
# TF names. A named TPU (pods) is resolved through the Cloud TPU API client.
TPU = ["tensorflow-tpu==2.20.0", "libtpu==0.0.14", "cloud-tpu-client>=0.10"]
# trainer/optim/optimizer.py and the LSTM kernel use Keras internals
# (trainer/models/keras_internals.py lists them; tests/test_keras_internals.py checks them): the
# Keras minor version they were tested with. Raise the bound after that test passes on a newer one.
KERAS = "keras>=3.15,<3.16"

setup(
    name="tf2-ulmfit",
    version="0.1.0",
    description="AWD-LSTM / ULMFiT language models on TensorFlow 2: pretraining at scale, "
    "fine-tuning for classification and sequence tagging.",
    packages=find_packages(include=["common", "trainer", "trainer.*", "data_pipeline",
                                    "data_pipeline.*", "gin_configs", "launch"]),
    package_data={"": ["*.gin"]},
    python_requires=">=3.10,<3.14",
    install_requires=[
        *TENSORFLOW,
        KERAS,
        "sentencepiece>=0.2.0,<0.3",
        "tensorflow-datasets>=4.9.9,<4.10",
        "gin-config==0.5.0",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "tensorboard>=2.20,<2.22",  # tf.summary writes events only when it is installed
        "numpy>=1.26,<2.5",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", *HUB, *PLOT, *BEAM],
        # trainer.lr_find's plot.
        "plot": PLOT,
        # Corpus preparation on Apache Beam (DirectRunner, Dataflow, ...).
        "beam": BEAM,
        # Loading an export with tensorflow_hub.KerasLayer.
        "hub": HUB,
        "tpu": TPU,
        "gpu": ["tensorflow[and-cuda]>=2.20,<2.22"],
        # .pth weight exchange with fastai (trainer.convert_fastai) needs torch alone; .npz
        # needs nothing. Never in the core install.
        "fastai": TORCH,
        # fastai itself, for benchmarks/compare_fastai.py and the fastai parity tests. fastai
        # requires torchvision, whose PyPI wheels pin a CUDA torch: see the README for CPU.
        "bench": [*TORCH, "fastai>=2.7,<2.9"],
    },
)
