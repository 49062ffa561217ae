"""One LSTM layer, forward + backward: our fused kernel against torch.nn.LSTM, side by side.

  python benchmarks/lstm_layer_bench.py [--rounds=4 --batch_size=32 --bptt=70 --layers=...]

The three layer shapes of the AWD-LSTM LM (400->1152, 1152->1152, 1152->400), or `--layers`. Ours runs as the
train step runs it (`lstm_sequence` in a tf.function, gradients of inputs, states and weights);
torch's row needs the `[fastai]` extra (torch) and is skipped without it.
Rounds alternate between the two, with a pause so that neither's idle threads spin into the
other's timing. GFLOP/s counts the matmuls (forward x 3).
"""
import os
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from trainer.models.lstm_kernel import lstm_sequence
from trainer.runtime.allocator import use_bfc_allocator

flags.DEFINE_integer("rounds", 4, "Timed rounds per layer and framework (best one counts).")
flags.DEFINE_integer("batch_size", 32, "Rows.")
flags.DEFINE_integer("bptt", 70, "Time steps.")
flags.DEFINE_list("layers", ["400:1152", "1152:1152", "1152:400"],
                  "input:units per layer (default: fastai's AWD-LSTM; the main job's small model "
                  "is 128:256,256:256,256:128).")
FLAGS = flags.FLAGS


def _ours(inputs, units):
    rng = np.random.default_rng(0)
    weight = lambda *shape: tf.constant(rng.uniform(-0.1, 0.1, shape), tf.float32)
    args = (tf.constant(inputs), weight(FLAGS.batch_size, units), weight(FLAGS.batch_size, units),
            weight(inputs.shape[-1], 4 * units), weight(units, 4 * units), weight(4 * units))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(args)
            outputs = lstm_sequence(*args, implementation="fused")[0]
            loss = tf.reduce_sum(outputs * outputs)
        # Every gradient is used, or the graph would prune the weight gradients away.
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, args)])
    return lambda: float(step())


def _torch(inputs, units):
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        return None
    # TF's 0 means "all cores"; give torch the same.
    torch.set_num_threads(tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())
    lstm = torch.nn.LSTM(inputs.shape[-1], units, batch_first=True)
    x = torch.from_numpy(inputs).requires_grad_()

    def step():
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        outputs, _ = lstm(x)
        (outputs * outputs).sum().backward()
        return sum(float(p.grad.sum()) for p in (x, *lstm.parameters()))
    return step


def _best_seconds(step):
    times = []
    for _ in range(FLAGS.rounds):
        time.sleep(0.3)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv):
    del argv
    use_bfc_allocator()
    print(f"{'layer':<12} {'ours ms':>8} {'GFLOP/s':>8} {'torch ms':>9} {'GFLOP/s':>8} "
          f"{'ours vs torch':>14}")
    for inp, units in (map(int, layer.split(":")) for layer in FLAGS.layers):
        inputs = np.random.default_rng(1).uniform(
            -1, 1, (FLAGS.batch_size, FLAGS.bptt, inp)).astype(np.float32)
        flops = 3 * 2 * 4 * units * (inp + units) * FLAGS.batch_size * FLAGS.bptt
        steps = {"ours": _ours(inputs, units), "torch": _torch(inputs, units)}
        for step in filter(None, steps.values()):
            step()  # warm-up: tracing and XLA compilation
        seconds = {name: [] for name, step in steps.items() if step}
        for _ in range(2):  # alternate, so both see the same machine load
            for name in seconds:
                seconds[name].append(_best_seconds(steps[name]))
        best = {name: min(s) for name, s in seconds.items()}
        row = f"{inp}->{units:<6} {best['ours'] * 1e3:>8.0f} {flops / best['ours'] / 1e9:>8.1f}"
        if "torch" in best:
            row += (f" {best['torch'] * 1e3:>9.0f} {flops / best['torch'] / 1e9:>8.1f} "
                    f"{best['torch'] / best['ours']:>13.2f}x")
        print(row, flush=True)


if __name__ == "__main__":
    app.run(main)
