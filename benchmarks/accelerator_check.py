"""What only a GPU or TPU can show, checked in one short run on the first machine that has one.

  python benchmarks/accelerator_check.py [--work_dir=/tmp/accelerator_check]

Each check prints one row of a table headed by the device; a check this machine cannot run says
so ("skipped: ...") instead of passing. On a CPU it runs the resume and mixed-precision checks.
  cudnn_vs_fused    the cuDNN kernel against the fused one on the same weights, a weight-dropped
                    recurrent kernel included: outputs and gradients (GPU)
  replica_masks     each replica draws its own weight-drop mask, on 2 GPUs (Mirrored)
  exact_resume      N steps straight against N/2 + a resumed N/2 under op determinism: the
                    largest weight difference (cuDNN's LSTM has had nondeterminism reported)
  mixed_float16     an LM step with mixed_float16 (GPU's policy): finite loss, tokens/s
  lm_vs_fastai      LM train tokens/s against fastai/PyTorch on cuDNN, on the same GPU at fastai's
                    size (400/1152x3): benchmarks/compare_fastai.py --device=gpu, whose whole
                    table follows (GPU; needs the [bench] extra)
  tpu_bf16_loops    tpu.gin's bf16 step in host loops of steps_per_loop steps (TPU)
"""
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from machine import cpu_description, gpu_name  # same directory
from trainer.lm.task import mask_seed
from trainer.models.lstm_kernel import lstm_sequence
from trainer.models.weight_drop_lstm import drop_connect
from trainer.runtime.strategies import make_strategy

flags.DEFINE_string("work_dir", "/tmp/accelerator_check", "Scratch directory (data, runs).")
FLAGS = flags.FLAGS
SKIPPED = "skipped"


def device_name():
    tpus = tf.config.list_logical_devices("TPU")
    if tpus:
        return f"TPU ({len(tpus)} cores visible)"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} x GPU {gpu_name()}"
    return f"CPU only: {cpu_description()}"


def cudnn_vs_fused():
    if not tf.config.list_physical_devices("GPU"):
        return SKIPPED, "no GPU"
    rng = np.random.default_rng(0)
    value = lambda *shape: tf.constant(rng.uniform(-0.3, 0.3, shape), tf.float32)
    inputs, h0, c0 = value(8, 20, 16), value(8, 32), value(8, 32)
    kernel, recurrent, bias = value(16, 128), value(32, 128), value(128)
    dropped = drop_connect(recurrent, 0.5, tf.constant([3, 4]))

    def run(implementation):
        with tf.GradientTape() as tape:
            tape.watch([inputs, kernel, dropped, bias])
            outputs = lstm_sequence(inputs, h0, c0, kernel, dropped, bias, implementation)[0]
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        return [outputs, *tape.gradient(loss, [inputs, kernel, dropped, bias])]

    differences = [float(tf.reduce_max(tf.abs(a - b)))
                   for a, b in zip(run("cudnn"), run("fused"))]
    worst = max(differences)
    return ("ok" if worst < 1e-4 else "DIFFERS"), (
        f"max |cuDNN - fused|: outputs {differences[0]:.1e}, gradients {max(differences[1:]):.1e}")


def replica_masks():
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < 2:
        return SKIPPED, f"{len(gpus)} GPU(s); needs 2"
    strategy = tf.distribute.MirroredStrategy([g.name for g in gpus[:2]])
    recurrent = tf.ones([32, 128])

    @tf.function
    def masks():
        def replica():
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.cast(mask_seed(0, tf.constant(7, tf.int64), replica_id), tf.int32)
            return drop_connect(recurrent, 0.5, seed)
        return strategy.experimental_local_results(strategy.run(replica))
    first, second = masks()
    same = float(tf.reduce_mean(tf.cast(tf.equal(first, second), tf.float32)))
    return ("ok" if same < 0.9 else "SAME MASKS"), (
        f"{same:.0%} of mask entries agree (~50% expected)")


def _train(model_dir, data_dir, corpus, steps, **settings):
    from data_pipeline.build_settings import BuildSettings
    from trainer.lm.training import train_lm
    from trainer.models.language_model import AWDLSTMLanguageModel
    settings = {"batch_size": 16, "eval_batch_size": 16, "steps_per_loop": 2, **settings}
    return train_lm(model_dir, data_dir, build_input=corpus, bptt=35, max_steps=steps,
                    model=functools.partial(AWDLSTMLanguageModel, emb_size=64, hidden_size=128),
                    build_settings=functools.partial(BuildSettings, vocab_size=120,
                                                     valid_fraction=0.1), **settings)


def _weights(model_dir):
    """Every tensor of the checkpoint but how many saves the run made."""
    reader = tf.train.load_checkpoint(model_dir)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name not in ("_CHECKPOINTABLE_OBJECT_GRAPH",
                            "save_counter/.ATTRIBUTES/VARIABLE_VALUE")}


def exact_resume(corpus):
    data = os.path.join(FLAGS.work_dir, "data")
    _train(os.path.join(FLAGS.work_dir, "straight"), data, corpus, 8)
    resumed = os.path.join(FLAGS.work_dir, "resumed")
    _train(resumed, data, corpus, 4)
    _train(resumed, data, corpus, 8)
    straight, again = _weights(os.path.join(FLAGS.work_dir, "straight")), _weights(resumed)
    worst = max(float(np.max(np.abs(straight[k] - again[k]))) for k in straight)
    return ("ok" if worst == 0 else "NOT BIT-EXACT"), (
        f"largest weight difference after 8 steps: {worst:.1e} ({len(straight)} tensors)")


def mixed_float16(corpus):
    start = time.perf_counter()
    metrics = _train(os.path.join(FLAGS.work_dir, "float16"), os.path.join(FLAGS.work_dir, "data"),
                     corpus, 6, mixed_precision="mixed_float16")
    finite = np.isfinite(metrics["train_loss"])
    return ("ok" if finite else "NOT FINITE"), (
        f"loss {metrics['train_loss']:.3f}, {metrics['tokens_per_second']:,.0f} tokens/s "
        f"(run {time.perf_counter() - start:.0f} s)")


def lm_vs_fastai():
    if not tf.config.list_physical_devices("GPU"):
        return SKIPPED, "no GPU (on a CPU: benchmarks/compare_fastai.py)"
    if not all(importlib.util.find_spec(m) for m in ("torch", "fastai")):
        return SKIPPED, "needs the [bench] extra: pip install -e '.[bench]'"
    rates = os.path.join(FLAGS.work_dir, "lm_vs_fastai.json")
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, os.path.join(here, "compare_fastai.py"), "--device=gpu",
                           "--rounds=3", "--steps=10", f"--json_out={rates}"],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return "FAILED", f"compare_fastai.py: {last}"
    with open(rates) as f:
        rate = json.load(f)
    ours, theirs = rate["ours"], rate["fastai"]
    return ("ok" if ours >= theirs else "SLOWER"), (
        f"ours {ours:,.0f} tokens/s = {ours / theirs:.2f}x fastai's {theirs:,.0f} "
        f"(XLA step {rate['ours_xla'] / theirs:.2f}x)\n{done.stdout.strip()}")


def tpu_bf16_loops(corpus):
    if not tf.config.list_logical_devices("TPU"):
        return SKIPPED, "no TPU"
    metrics = _train(os.path.join(FLAGS.work_dir, "tpu"), os.path.join(FLAGS.work_dir, "data"),
                     corpus, 40, strategy=make_strategy("tpu", tpu="local"),
                     mixed_precision="mixed_bfloat16", jit_compile=True, steps_per_loop=20,
                     batch_per_replica=True)
    finite = np.isfinite(metrics["train_loss"])
    return ("ok" if finite else "NOT FINITE"), (
        f"loss {metrics['train_loss']:.3f}, {metrics['tokens_per_second']:,.0f} tokens/s")


def _corpus():
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)  # runs left there would resume
    os.makedirs(FLAGS.work_dir)
    path = os.path.join(FLAGS.work_dir, "corpus.txt")
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in range(150)]
    with open(path, "w") as f:
        for _ in range(3000):
            f.write(" ".join(rng.choice(words, rng.integers(5, 30))) + "\n\n")
    return path


def main(argv):
    del argv
    corpus = _corpus()
    print(f"device: {device_name()}")
    checks = [("cudnn_vs_fused", cudnn_vs_fused), ("replica_masks", replica_masks),
              ("exact_resume", lambda: exact_resume(corpus)),
              ("mixed_float16", lambda: mixed_float16(corpus)), ("lm_vs_fastai", lm_vs_fastai),
              ("tpu_bf16_loops", lambda: tpu_bf16_loops(corpus))]
    print(f"{'check':<16} {'result':<14} detail")
    for name, check in checks:
        result, detail = check()
        print(f"{name:<16} {result:<14} {detail}", flush=True)


if __name__ == "__main__":
    app.run(main)
