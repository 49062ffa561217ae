"""Our AWD-LSTM LM train step against fastai's, side by side in one run.

  pip install -e '.[bench]'           # CPU-only machines: see the README's extras
  python benchmarks/compare_fastai.py [--rounds=4 --steps=4 --threads=2]

Both frameworks train the same language model (fastai's awd_lstm_lm_config: emb 400, hidden
1152 x 3, weight_p 0.2 and the other dropouts, tied decoder), on the same random ids (vocab
8000, batch 32, bptt 70), with fastai's Adam (decoupled weight decay 0.01), AR 2 / TAR 1,
gradient clipping 0.25 and the hidden state carried between steps. fastai's step is written as
its Learner runs it (model, RNNRegularizer's loss, clip, opt.step) without the Learner's
callback overhead, so it is a slightly faster reference than fastai itself.

Each framework runs in its own worker process (so each has its own peak RSS and thread pool);
the parent alternates timed rounds between them, so both see the same machine load, and
measures the fp32 matmul peak in the same run for MFU. Ours runs on the allocator trainer.main
picks (trainer/runtime/allocator.py: TF's BFC allocator), twice: on TensorFlow's kernels (train_lm's
default) and with the step compiled by XLA (`train_lm.jit_compile=True`), since which is faster
has depended on the CPU. fastai runs twice: with glibc's defaults (as fastai users run it) and
with glibc told to keep freed blocks on its heap (no mmap per large tensor; it speeds fastai up).

With --device=gpu (what benchmarks/accelerator_check.py runs on a GPU host) both train on the
first GPU, fastai on cuDNN's LSTM and ours on the kernel trainer.main would pick there, and the
memory columns give each framework's peak device memory instead of RSS; the glibc variant is
left out. Both frameworks use their own defaults for TF32 matmuls on GPUs that have them.
"""
import ctypes
import itertools
import json
import os
import resource
import subprocess
import sys
import time

from absl import app, flags

from machine import cpu_description, gpu_name  # same directory
from model_flops import flops_per_token, matmul_peak  # same directory

flags.DEFINE_integer("rounds", 4, "Timed rounds per framework, alternating.")
flags.DEFINE_integer("steps", 4, "Train steps per round.")
flags.DEFINE_integer("threads", os.cpu_count(), "Threads for both frameworks' math.")
flags.DEFINE_integer("batch_size", 32, "Rows per step.")
flags.DEFINE_integer("bptt", 70, "Tokens per row per step.")
flags.DEFINE_integer("vocab_size", 8000, "Vocabulary.")
flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where both frameworks train.")
flags.DEFINE_string("json_out", None, "Also write {worker: tokens/s} (WORKERS' keys) here.")
flags.DEFINE_string("worker", None, "Internal: run as one of WORKERS.")
FLAGS = flags.FLAGS

EMB, HIDDEN = 400, 1152
WORKERS = {"ours": "ours, TF kernels", "ours_xla": "ours, XLA step",
           "fastai": "fastai, glibc malloc", "fastai_tuned": "fastai, glibc heap kept"}
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # from glibc's malloc.h


def _peak_mb(ours):
    """Peak RSS on a CPU; on a GPU, the framework's peak device memory."""
    if FLAGS.device == "cpu":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if ours:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    import torch  # pylint: disable=g-import-not-at-top
    return torch.cuda.max_memory_allocated() / 2**20


def _fastai_step():
    import torch  # pylint: disable=g-import-not-at-top
    from fastai.optimizer import Adam  # pylint: disable=g-import-not-at-top
    # pylint: disable=g-import-not-at-top
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if FLAGS.device == "gpu" else "cpu")
    model = get_language_model(AWD_LSTM, FLAGS.vocab_size, dict(awd_lstm_lm_config)).to(device)
    model.train()
    model.reset()
    opt = Adam(list(model.parameters()), lr=1e-3, mom=0.7, sqr_mom=0.99, eps=1e-5, wd=0.01)
    ids = torch.randint(0, FLAGS.vocab_size, (FLAGS.batch_size, FLAGS.bptt + 1), device=device)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        logits, raw, dropped = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, FLAGS.vocab_size),
                                                 targets.reshape(-1))
        loss = loss + 2.0 * dropped.float().pow(2).mean() \
            + 1.0 * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        opt.zero_grad()
        return loss.item()  # waits for the device, so a round's time is the device's
    return step


def _our_step(jit_compile):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from trainer.lm.task import LanguageModelTask  # pylint: disable=g-import-not-at-top
    # pylint: disable=g-import-not-at-top
    from trainer.models.language_model import AWDLSTMLanguageModel
    from trainer.optim.optimizer import fastai_adam  # pylint: disable=g-import-not-at-top
    from trainer.runtime.strategies import make_strategy  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    strategy = make_strategy("one_device", devices=[f"/{FLAGS.device}:0"])
    ids = tf.random.stateless_uniform([FLAGS.batch_size, FLAGS.bptt + 1], [0, 1], 0,
                                      FLAGS.vocab_size, tf.int32)
    batch = (ids[:, :-1], ids[:, 1:])
    with strategy.scope():
        model = AWDLSTMLanguageModel(FLAGS.vocab_size, emb_size=EMB, hidden_size=HIDDEN)
        model(batch[0])
        adam = fastai_adam(1e-3, 0.7, gradients_reduced=True)
        adam.build(model.trainable_variables)
    task = LanguageModelTask(model, adam, strategy, FLAGS.batch_size, jit_compile=jit_compile)
    data = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    return lambda: float(task.train_loop(data, tf.constant(1))[0])


def _keep_freed_blocks_on_glibc_heap():
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


def worker(kind):
    """Warms up, then answers each `N` on stdin with the seconds N steps took and peak memory."""
    ours = kind.startswith("ours")
    if ours:  # imported here: the fastai workers' RSS holds no TensorFlow
        # TensorFlow as trainer.main imports it.
        import common.lean_tensorflow  # pylint: disable=g-import-not-at-top,unused-import
        from trainer.runtime import allocator  # pylint: disable=g-import-not-at-top
        allocator.use_bfc_allocator()
    elif kind == "fastai_tuned":
        _keep_freed_blocks_on_glibc_heap()
    step = _our_step(kind == "ours_xla") if ours else _fastai_step()
    before = _peak_mb(ours)
    assert not ours or allocator.bfc_serves_cpu()  # building the step made TF's devices
    for _ in range(2):
        step()
    print(f"ready {before:.0f}", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        for _ in range(int(line)):
            step()
        print(f"{time.perf_counter() - start:.6f} {_peak_mb(ours):.0f}", flush=True)


def main(argv):
    if FLAGS.worker:
        return worker(FLAGS.worker)
    del argv
    passed = [f"--{k}={getattr(FLAGS, k)}" for k in ("threads", "batch_size", "bptt",
                                                      "vocab_size", "device")]
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(here), here]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    if FLAGS.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:  # both frameworks share the GPU: TF must not take all of its memory at start
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    kinds = [k for k in WORKERS if FLAGS.device == "cpu" or k != "fastai_tuned"]
    workers = {}
    for kind in kinds:  # started one after the other: each warms up alone
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), f"--worker={kind}",
                                 *passed], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)
        ready = proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            sys.exit(f"the {kind} worker failed to start (see its error above)")
        workers[kind] = (proc, float(ready[1]))
    round_seconds = {kind: [] for kind in workers}
    peak_mb = {}
    for _ in range(FLAGS.rounds):
        for kind, (proc, _) in workers.items():
            proc.stdin.write(f"{FLAGS.steps}\n")
            proc.stdin.flush()
            elapsed, used_mb = proc.stdout.readline().split()
            round_seconds[kind].append(float(elapsed))
            peak_mb[kind] = float(used_mb)
    for proc, _ in workers.values():
        proc.stdin.close()
        proc.wait()
    peak = matmul_peak()
    per_token = flops_per_token(FLAGS.vocab_size, EMB, HIDDEN)
    tokens = FLAGS.rounds * FLAGS.steps * FLAGS.batch_size * FLAGS.bptt
    rate = {kind: tokens / sum(s) for kind, s in round_seconds.items()}
    where = "CPU" if FLAGS.device == "cpu" else f"GPU {gpu_name()}, host CPU"
    print(f"\n{where} {cpu_description()}")
    print(f"AWD-LSTM LM {EMB}/{HIDDEN}x3, vocab {FLAGS.vocab_size}, batch {FLAGS.batch_size}, "
          f"bptt {FLAGS.bptt}, {FLAGS.threads} threads; {per_token / 1e6:.1f} MFLOP/token; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s; {FLAGS.rounds} x {FLAGS.steps} steps each")
    # Step memory: the peak beyond what the process held before its first step (model,
    # optimizer state and framework), i.e. activations, gradients and workspace of a step.
    step_mb = {kind: peak_mb[kind] - workers[kind][1] for kind in workers}
    memory = "peak RSS MB" if FLAGS.device == "cpu" else "peak GPU MB"
    print(f"{'train step':<22} {'tokens/s':>9} {'vs fastai':>9} {'vs tuned':>9} {'MFU':>6} "
          f"{memory:>12} {'vs fastai':>9} {'step MB':>8} {'vs fastai':>9}")
    for kind in workers:
        tuned = (f"{rate[kind] / rate['fastai_tuned']:>8.2f}x" if "fastai_tuned" in rate
                 else f"{'-':>9}")
        print(f"{WORKERS[kind]:<22} {rate[kind]:>9,.0f} {rate[kind] / rate['fastai']:>8.2f}x "
              f"{tuned} {rate[kind] * per_token / peak:>6.2f} "
              f"{peak_mb[kind]:>12,.0f} {peak_mb[kind] / peak_mb['fastai']:>8.2f}x "
              f"{step_mb[kind]:>8,.0f} {step_mb[kind] / step_mb['fastai']:>8.2f}x")
    # The machine is shared: the spread of the per-round ratios says how far to trust the totals.
    for ours, kind in itertools.product(("ours", "ours_xla"), ("fastai", "fastai_tuned")):
        if kind in workers:
            ratios = [theirs / mine
                      for mine, theirs in zip(round_seconds[ours], round_seconds[kind])]
            print(f"{WORKERS[ours]} vs {WORKERS[kind]}, per round: {min(ratios):.2f}x to "
                  f"{max(ratios):.2f}x")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(rate, f)


if __name__ == "__main__":
    app.run(main)
