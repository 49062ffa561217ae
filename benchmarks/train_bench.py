"""Training-step throughput, measured side by side in one run.

  python benchmarks/train_bench.py [--batch_size=32 --bptt=70 --steps=8]

Rows: our full AWD-LSTM LM train step (all regularizers, fastai Adam, clipping, carried states),
the same step compiled with XLA, and a plain Keras LSTM stack of the same sizes without
regularizers; achieved FLOP/s against a matmul peak measured in the same run; and the input
pipeline's tokens/s against what the model consumes. Targets (issue 4): >= 0.95x plain Keras,
>= 0.70 of matmul peak, pipeline >= 20x consumption.
"""
import os
import tempfile
import time

from absl import app, flags
import keras
import tensorflow as tf

from data_pipeline.build import BuildSettings, build
from model_flops import flops_per_token, matmul_peak  # same directory
from data_pipeline.lm_dataset import lm_dataset
from trainer.lm.task import LanguageModelTask, token_cross_entropy
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optim.optimizer import fastai_adam
from trainer.runtime.strategies import make_strategy

flags.DEFINE_integer("batch_size", 32, "Rows per step.")
flags.DEFINE_integer("bptt", 70, "Tokens per row per step.")
flags.DEFINE_integer("vocab_size", 8000, "Vocabulary.")
flags.DEFINE_integer("emb_size", 400, "Embedding size.")
flags.DEFINE_integer("hidden_size", 1152, "LSTM size.")
flags.DEFINE_integer("steps", 8, "Timed steps per row (after 2 warm-up steps).")
flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "ulmfit_pydocs"),
                    "pydocs data directory (built if absent) for the input-pipeline row.")
FLAGS = flags.FLAGS


def _time_steps(step, batch, steps):
    for _ in range(2):
        step(*batch)
    start = time.perf_counter()
    for _ in range(steps):
        result = step(*batch)
    float(tf.nest.flatten(result)[0])
    return steps * FLAGS.batch_size * FLAGS.bptt / (time.perf_counter() - start)


def ours(batch, jit_compile):
    strategy = make_strategy("one_device", devices=["/cpu:0"])
    with strategy.scope():
        model = AWDLSTMLanguageModel(FLAGS.vocab_size, emb_size=FLAGS.emb_size,
                                     hidden_size=FLAGS.hidden_size)
        model(batch[0])
        adam = fastai_adam(1e-3, 0.7, gradients_reduced=True)  # the trainer's step, clipping too
        adam.build(model.trainable_variables)
    task = LanguageModelTask(model, adam, strategy, FLAGS.batch_size, jit_compile=jit_compile)
    data = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    return _time_steps(lambda *_: task.train_loop(data, tf.constant(1)), batch, FLAGS.steps)


def plain_keras(batch):
    model = keras.Sequential([
        keras.layers.Embedding(FLAGS.vocab_size, FLAGS.emb_size),
        keras.layers.LSTM(FLAGS.hidden_size, return_sequences=True),
        keras.layers.LSTM(FLAGS.hidden_size, return_sequences=True),
        keras.layers.LSTM(FLAGS.emb_size, return_sequences=True),
        keras.layers.Dense(FLAGS.vocab_size)])
    model(batch[0])
    adam = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(inputs, targets):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(token_cross_entropy(targets, model(inputs, training=True)))
        adam.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                 model.trainable_variables))
        return loss
    return _time_steps(step, batch, FLAGS.steps)


def pipeline_rate():
    manifest = build(FLAGS.data_dir, BuildSettings(input="builtin:pydocs"))
    start, tokens = time.perf_counter(), 0
    for x, _ in lm_dataset(manifest, "train", FLAGS.batch_size, FLAGS.bptt):
        tokens += int(tf.size(x))
    return tokens / (time.perf_counter() - start)


def main(argv):
    del argv
    ids = tf.random.stateless_uniform([FLAGS.batch_size, FLAGS.bptt + 1], [0, 1], 0,
                                      FLAGS.vocab_size, tf.int32)
    batch = (ids[:, :-1], ids[:, 1:])
    peak = matmul_peak()
    rates = {"ours": ours(batch, False), "ours, jit_compile": ours(batch, True),
             "plain Keras LSTM stack": plain_keras(batch)}
    per_token = flops_per_token(FLAGS.vocab_size, FLAGS.emb_size, FLAGS.hidden_size)
    print(f"\nAWD-LSTM {FLAGS.emb_size}/{FLAGS.hidden_size}x3, vocab {FLAGS.vocab_size}, "
          f"batch {FLAGS.batch_size}, bptt {FLAGS.bptt}; {per_token / 1e6:.1f} MFLOP/token; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s; {os.cpu_count()} cores")
    print(f"{'train step':<26} {'tokens/s':>10} {'vs plain':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:>10,.0f} {rate / rates['plain Keras LSTM stack']:>8.2f}x "
              f"{rate * per_token / 1e9:>8.1f} {rate * per_token / peak:>8.2f}")
    pipeline = pipeline_rate()
    print(f"{'input pipeline':<26} {pipeline:>10,.0f} {pipeline / rates['ours']:>8.0f}x "
          "model consumption")


if __name__ == "__main__":
    app.run(main)
