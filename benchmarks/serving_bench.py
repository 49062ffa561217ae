"""What serving on any host costs: the encoder as an export traces it (portable: no XLA, no
cuDNN) against the encoder as training traces it (XLA-compiled LSTM kernel), side by side.

  python benchmarks/serving_bench.py [--rounds=5 --batch_size=32 --seq_len=70 --sizes=128:256:3]

Random weights (speed does not depend on them); rounds alternate between the two, best counts.
"""
import time

from absl import app, flags
import tensorflow as tf

from machine import cpu_description  # same directory
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.models.xla import portable
from trainer.runtime.allocator import use_bfc_allocator

flags.DEFINE_integer("rounds", 5, "Timed rounds per kind (the best one counts).")
flags.DEFINE_integer("batch_size", 32, "Texts per call.")
flags.DEFINE_integer("seq_len", 70, "Tokens per text.")
flags.DEFINE_integer("calls", 10, "Calls per round.")
flags.DEFINE_list("sizes", ["128:256:3", "400:1152:3"],
                  "emb:hidden:layers per model (the main job's, fastai's).")
FLAGS = flags.FLAGS
VOCAB = 8000


def _encoders(emb, hidden, layers):
    model = AWDLSTMLanguageModel(VOCAB, emb_size=emb, hidden_size=hidden, num_layers=layers,
                                 pad_id=1)
    ids = tf.random.uniform([FLAGS.batch_size, FLAGS.seq_len], 4, VOCAB, tf.int32)
    model(ids)
    training_traced = tf.function(lambda x: model.encoder(x)[0])
    exported = tf.function(lambda x: model.encoder(x)[0])
    training_traced(ids)
    with portable():
        exported(ids)  # traced here, as trainer.export traces
    return ids, {"XLA kernel (training's)": training_traced, "portable (exports')": exported}


def _best(function, ids):
    start = time.perf_counter()
    for _ in range(FLAGS.calls):
        function(ids).numpy()
    return (time.perf_counter() - start) / FLAGS.calls


def main(argv):
    del argv
    use_bfc_allocator()
    print(f"CPU: {cpu_description()}; batch {FLAGS.batch_size} x {FLAGS.seq_len} tokens, "
          f"best of {FLAGS.rounds} rounds of {FLAGS.calls} calls")
    print(f"{'model':<12} {'encoder':<24} {'ms/call':>8} {'tokens/s':>10} {'vs XLA':>7}")
    for size in FLAGS.sizes:
        emb, hidden, layers = map(int, size.split(":"))
        ids, kinds = _encoders(emb, hidden, layers)
        best = dict.fromkeys(kinds, float("inf"))
        for _ in range(FLAGS.rounds):
            for name, fn in kinds.items():
                best[name] = min(best[name], _best(fn, ids))
        reference = best["XLA kernel (training's)"]
        for name, seconds in best.items():
            tokens = FLAGS.batch_size * FLAGS.seq_len / seconds
            print(f"{size:<12} {name:<24} {seconds * 1e3:>8.1f} {tokens:>10,.0f} "
                  f"{reference / seconds:>6.2f}x")


if __name__ == "__main__":
    app.run(main)
