"""Streaming LM input on a large corpus: time to first batch, peak RSS and tokens/s of
lm_dataset, side by side with the whole-split reader it replaced, against what the LM train
step consumes.

  python benchmarks/stream_bench.py [--tokens=550000000 --work_dir=/tmp/stream_bench]

The corpus is synthetic, generated here and not committed: documents of random ids (50-2,000
tokens, vocab 8,000, BOS/EOS) written straight into shards of ~1 M tokens (what the build's
default `--shard_mb=4` gives at ~4 bytes of text a token) with a manifest, so 550 M tokens stand
for ~2.2 GB of text. SentencePiece encoding is not what is measured here (pipeline_bench.py
measures it). The corpus stays in --work_dir for reruns; its manifest is written last.

Each reader runs in a process of its own, so each has its own peak RSS (ru_maxrss, TensorFlow
included: "baseline" is the process after importing TensorFlow, before reading). The previous
reader is data_pipeline/lm_dataset.py as commit --previous has it, read from git: the reader as
it was, not a copy. The first --compare batches of both are checked equal. The model's
consumption is the trainer's LM train step (fastai's sizes, vocab 8,000, the same batch and
bptt), timed for --model_steps steps. Goals (issue 18): first batch < 5 s and peak RSS < 1 GB
whatever the corpus size, throughput >= 20x the model's consumption.
"""
import hashlib
import importlib.util
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

from machine import cpu_description  # same directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
from data_pipeline.manifest import Manifest, SplitInfo, load_manifest
from data_pipeline.shards import ShardWriter, shard_name

flags.DEFINE_integer("tokens", 550_000_000, "Tokens in the synthetic train split.")
flags.DEFINE_integer("shard_tokens", 1_000_000, "Tokens per shard (about).")
flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "stream_bench"),
                    "Where the corpus is generated (kept for reruns).")
flags.DEFINE_integer("batch_size", 64, "Rows per batch (fastai's default).")
flags.DEFINE_integer("bptt", 70, "Tokens per row per batch.")
flags.DEFINE_integer("batches", 2000, "Batches timed after the compared ones (at most the "
                     "rest of the epoch).")
flags.DEFINE_integer("compare", 50, "Leading batches checked equal between the readers.")
flags.DEFINE_integer("model_steps", 3, "Timed LM train steps (after one warm-up step).")
flags.DEFINE_string("previous", "02fd691", "Commit whose lm_dataset.py is the previous reader.")
flags.DEFINE_string("worker", None, "Internal: run one measurement (streaming, previous, model).")
FLAGS = flags.FLAGS

VOCAB = 8000
SPECIAL = {"unk": 0, "pad": 1, "bos": 2, "eos": 3}


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_shard(args):
    directory, index, count, tokens = args
    rng = np.random.default_rng(index)
    documents, written = [], 0
    while written < tokens:
        body = rng.integers(4, VOCAB, size=int(rng.integers(50, 2001)))
        documents.append([SPECIAL["bos"], *body.tolist(), SPECIAL["eos"]])
        written += len(documents[-1])
    writer = ShardWriter(os.path.join(directory, shard_name("train", index, count)))
    writer.write(documents)
    return writer.close()


def synthetic_corpus(directory, tokens, shard_tokens):
    settings = {"tokens": tokens, "shard_tokens": shard_tokens, "vocab": VOCAB}
    if os.path.exists(os.path.join(directory, "manifest.json")):
        manifest = load_manifest(directory, check_spm=False)
        if manifest.build_settings == settings:
            return manifest
    os.makedirs(directory, exist_ok=True)
    count = max(1, tokens // shard_tokens)
    start = time.perf_counter()
    with multiprocessing.Pool() as pool:
        shards = pool.map(_write_shard, [(directory, k, count, tokens // count)
                                         for k in range(count)])
    split = SplitInfo(sum(s.records for s in shards), sum(s.tokens for s in shards),
                      tuple(shards))
    manifest = Manifest(directory=directory, source="synthetic:stream_bench", spm_model="",
                        spm_sha256="", vocab_size=VOCAB, special_ids=SPECIAL,
                        splits={"train": split}, build_settings=settings)
    manifest.save()
    print(f"generated {split.tokens:,} tokens in {count} shards "
          f"({sum(s.bytes for s in shards) / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
    return manifest


def _reader(kind):
    if kind == "streaming":
        from data_pipeline.lm_dataset import lm_dataset
        return lm_dataset
    source = subprocess.run(["git", "-C", ROOT, "show", f"{FLAGS.previous}:"
                             "data_pipeline/lm_dataset.py"], capture_output=True, text=True,
                            check=True).stdout
    path = os.path.join(FLAGS.work_dir, f"lm_dataset_{FLAGS.previous}.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("previous_lm_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lm_dataset


def read(kind):
    manifest = load_manifest(FLAGS.work_dir, check_spm=False)
    lm_dataset = _reader(kind)
    baseline = _rss_mb()
    start = time.perf_counter()
    dataset = lm_dataset(manifest, "train", FLAGS.batch_size, FLAGS.bptt)
    batches = iter(dataset)
    digest = hashlib.sha256(next(batches)[0].numpy().tobytes())
    first = time.perf_counter() - start
    for _ in range(FLAGS.compare - 1):
        digest.update(next(batches)[0].numpy().tobytes())
    timed = min(FLAGS.batches, int(dataset.cardinality()) - FLAGS.compare)  # a small corpus
    start = time.perf_counter()
    for _ in range(timed):
        next(batches)
    rate = timed * FLAGS.batch_size * FLAGS.bptt / (time.perf_counter() - start)
    return {"first_batch_s": first, "tokens_per_s": rate, "baseline_mb": baseline,
            "peak_mb": _rss_mb(), "digest": digest.hexdigest()}


def model():
    import tensorflow as tf
    from trainer.lm.task import LanguageModelTask
    from trainer.models.language_model import AWDLSTMLanguageModel
    from trainer.optim.optimizer import fastai_adam
    from trainer.runtime.strategies import make_strategy
    strategy = make_strategy("one_device", devices=["/cpu:0"])
    batch = tf.random.stateless_uniform([2, FLAGS.batch_size, FLAGS.bptt], [0, 1], 4, VOCAB,
                                        tf.int32)
    with strategy.scope():
        lm = AWDLSTMLanguageModel(VOCAB, pad_id=SPECIAL["pad"])
        lm(batch[0])
        adam = fastai_adam(1e-3, 0.7, gradients_reduced=True)
        adam.build(lm.trainable_variables)
    task = LanguageModelTask(lm, adam, strategy, FLAGS.batch_size)
    data = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((batch[0], batch[1])).repeat()))
    float(task.train_loop(data, tf.constant(1))[0])
    start = time.perf_counter()
    float(task.train_loop(data, tf.constant(FLAGS.model_steps))[0])
    seconds = time.perf_counter() - start
    return {"tokens_per_s": FLAGS.model_steps * FLAGS.batch_size * FLAGS.bptt / seconds}


def _run_worker(kind):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    argv = [sys.executable, os.path.abspath(__file__), f"--worker={kind}",
            *(f"--{name}={getattr(FLAGS, name)}" for name in (
                "work_dir", "batch_size", "bptt", "batches", "compare", "model_steps",
                "previous"))]
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"the {kind} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(model() if FLAGS.worker == "model" else read(FLAGS.worker)))
        return
    manifest = synthetic_corpus(FLAGS.work_dir, FLAGS.tokens, FLAGS.shard_tokens)
    results = {kind: _run_worker(kind) for kind in ("streaming", "previous", "model")}
    consumption = results["model"]["tokens_per_s"]
    split = manifest.split("train")
    print(f"\nCPU {cpu_description()}")
    print(f"train split {split.tokens:,} tokens (~{split.tokens * 4 / 1e9:.2f} GB of text at 4 "
          f"bytes a token), {len(split.shards)} shards of ~{FLAGS.shard_tokens:,} tokens; batch "
          f"{FLAGS.batch_size} x bptt {FLAGS.bptt}; LM train step consumes "
          f"{consumption:,.0f} tokens/s")
    print(f"{'reader':<34} {'first batch s':>13} {'tokens/s':>11} {'x step':>8} "
          f"{'peak RSS MB':>12} {'baseline MB':>12}")
    for kind, label in (("previous", f"whole split in memory ({FLAGS.previous})"),
                        ("streaming", "streaming (lm_dataset now)")):
        r = results[kind]
        print(f"{label:<34} {r['first_batch_s']:>13.2f} {r['tokens_per_s']:>11,.0f} "
              f"{r['tokens_per_s'] / consumption:>7,.0f}x {r['peak_mb']:>12,.0f} "
              f"{r['baseline_mb']:>12,.0f}")
    same = results["previous"]["digest"] == results["streaming"]["digest"]
    print(f"first {FLAGS.compare} batches identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    app.run(main)
