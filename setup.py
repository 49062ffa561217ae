"""AWD-LSTM / ULMFiT pretraining and fine-tuning on TensorFlow 2."""
from setuptools import find_packages, setup

FASTAI = ["torch>=2.4,<3", "fastai>=2.7,<2.9"]

setup(
    name="tf2-ulmfit",
    version="0.1.0",
    description="AWD-LSTM / ULMFiT language models on TensorFlow 2: pretraining at scale, "
    "fine-tuning for classification and sequence tagging.",
    packages=find_packages(include=["trainer", "trainer.*", "data_pipeline", "data_pipeline.*",
                                    "gin_configs", "launch"]),
    package_data={"": ["*.gin"]},
    python_requires=">=3.10,<3.14",
    install_requires=[
        # tensorflow-text 2.21 is built against exactly TF 2.21; keep the two in lock step.
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "sentencepiece>=0.2.0,<0.3",
        "tensorflow-datasets>=4.9.9,<4.10",
        "gin-config==0.5.0",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "tensorboard>=2.20,<2.22",  # tf.summary writes events only when it is installed
        "numpy>=1.26,<2.5",
    ],
    extras_require={
        # tensorflow-hub's KerasLayer is a Keras 2 layer: it needs tf-keras beside Keras 3, and
        # it imports pkg_resources, which setuptools 81 removed.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "tensorflow-hub>=0.16.1,<0.17",
                 "tf-keras>=2.21,<2.22", "setuptools<81"],
        # Only a named (remote) TPU needs the resolver client; tpu='local' on a TPU VM does not.
        "tpu": ["cloud-tpu-client>=0.10"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # Weight exchange with fastai (trainer.convert_fastai) and the side-by-side benchmark
        # (benchmarks/compare_fastai.py). Never in the core install: only these tools need torch.
        "fastai": FASTAI,
        "bench": FASTAI,
    },
)
