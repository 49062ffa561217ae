"""Data-parallel scaling on this machine: 1 vs 2 replicas (logical CPU devices), one run.

  python benchmarks/scaling_bench.py [--global_batch=32 --bptt=70 --steps=3]

Prints tokens/s per replica count and a step-time breakdown: reading the input, computing one
replica's gradients, all-reducing a gradient-sized list, and the whole step. On a 2-core CPU the
replicas share the same cores, so no speed-up is expected: the point is the breakdown (how much
the data-parallel machinery costs), which docs/distributed.md scales up to real hardware.
"""
import os
import tempfile
import time

from absl import app, flags
import tensorflow as tf

from model_flops import flops_per_token  # same directory
from trainer.lm.task import LanguageModelTask
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.optim.optimizer import fastai_adam
from trainer.runtime.strategies import logical_cpus, make_strategy

flags.DEFINE_integer("global_batch", 32, "Rows per step, split over the replicas.")
flags.DEFINE_integer("bptt", 70, "Tokens per row per step.")
flags.DEFINE_integer("vocab_size", 8000, "Vocabulary.")
flags.DEFINE_integer("steps", 3, "Timed steps (after 2 warm-up steps).")
FLAGS = flags.FLAGS


def _timed(fn, steps):
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        result = fn()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                          tf.nest.flatten(result)[:1])
    return (time.perf_counter() - start) / steps


def measure(replicas):
    strategy = make_strategy("mirrored", devices=logical_cpus(2)[:replicas])
    per_replica = FLAGS.global_batch // replicas
    with strategy.scope():
        model = AWDLSTMLanguageModel(FLAGS.vocab_size)
        model(tf.zeros([per_replica, FLAGS.bptt], tf.int32))
        adam = fastai_adam(1e-3, 0.7, gradients_reduced=True)
        adam.build(model.trainable_variables)
    task = LanguageModelTask(model, adam, strategy, per_replica)
    ids = tf.random.stateless_uniform([FLAGS.global_batch, FLAGS.bptt + 1], [0, 1], 0,
                                      FLAGS.vocab_size, tf.int32)
    data = tf.data.Dataset.from_tensors((ids[:, :-1], ids[:, 1:])).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(data))
    batch = next(iterator)
    states = [(h[:per_replica], c[:per_replica]) for h, c in task.states]
    seed = tf.constant([0, 1], tf.int64)
    gradients = tf.function(lambda: strategy.run(
        task._replica_gradients, args=(*batch, states, seed)))
    grads_like = [tf.zeros_like(v) for v in model.trainable_variables]
    all_reduce = tf.function(lambda: strategy.run(
        lambda: tf.distribute.get_replica_context().all_reduce("SUM", grads_like)))
    read_input = tf.function(lambda: next(iterator))
    step = _timed(lambda: task.train_loop(iterator, tf.constant(1)), FLAGS.steps)
    return {"replicas": replicas, "tokens_per_s": FLAGS.global_batch * FLAGS.bptt / step,
            "step": step, "input": _timed(read_input, FLAGS.steps),
            "gradients": _timed(gradients, FLAGS.steps),
            "all_reduce": _timed(all_reduce, FLAGS.steps),
            "gradient_mb": sum(v.shape.num_elements() for v in model.trainable_variables) * 4e-6,
            "checkpoint": _checkpoint_cost(model, adam)}


def _checkpoint_cost(model, adam):
    """(MB, seconds) of one save of the model and its optimizer, as the trainer saves them."""
    from trainer.checkpoints.pretrained import (  # pylint: disable=g-import-not-at-top
        model_checkpoint)
    checkpoint = model_checkpoint(model, optimizer=adam)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        checkpoint.write(os.path.join(directory, "ckpt"))
        seconds = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    return size / 1e6, seconds


def main(argv):
    del argv
    logical_cpus(2)  # before any TF op
    rows = [measure(1), measure(2)]
    print(f"\nAWD-LSTM 400/1152x3, vocab {FLAGS.vocab_size}, global batch {FLAGS.global_batch}, "
          f"bptt {FLAGS.bptt}, {flops_per_token(FLAGS.vocab_size, 400, 1152) / 1e6:.1f} "
          f"MFLOP/token, {rows[0]['gradient_mb']:.1f} MB of fp32 gradients all-reduced per step")
    print(f"{'replicas':>8} {'tokens/s':>9} {'step ms':>8} {'input ms':>9} {'grads ms':>9} "
          f"{'all-reduce ms':>14}")
    for r in rows:
        print(f"{r['replicas']:>8} {r['tokens_per_s']:>9,.0f} {r['step'] * 1e3:>8.0f} "
              f"{r['input'] * 1e3:>9.1f} {r['gradients'] * 1e3:>9.0f} "
              f"{r['all_reduce'] * 1e3:>14.1f}")
    print("(grads: the slowest replica's forward+backward on its share; replicas share 2 cores)")
    size, seconds = rows[0]["checkpoint"]
    print(f"checkpoint (model + Adam slots): {size:.0f} MB written in {seconds:.2f} s "
          f"({size / seconds:.0f} MB/s to local disk)")


if __name__ == "__main__":
    app.run(main)
