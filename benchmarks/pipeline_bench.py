"""Data pipeline throughput: SentencePiece encoding and TFRecord -> lm_dataset batches.

  python benchmarks/pipeline_bench.py [--data_dir=DIR] [--batch_size=64 --bptt=70]

Builds the embedded pydocs corpus into DATA_DIR if it is not there, then prints one table. The
trainer benchmark compares the lm_dataset figure with what the model consumes (goal: >= 20x).
"""
import os
import tempfile
import time

from absl import app, flags

from common.tokenizer import load_sentencepiece
from data_pipeline.build import BuildSettings, build
from data_pipeline.lm_dataset import lm_dataset
from data_pipeline.sources import read_documents

flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "ulmfit_pydocs"),
                    "Built (or to build) from builtin:pydocs.")
flags.DEFINE_integer("batch_size", 64, "Rows per batch.")
flags.DEFINE_integer("bptt", 70, "Tokens per row per batch.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions; the best is reported.")
FLAGS = flags.FLAGS


def _best_rate(work, repeats):
    """Best of `repeats` runs of `work()` (which returns tokens done), in tokens/s."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = work()
        rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


def main(argv):
    del argv
    manifest = build(FLAGS.data_dir, BuildSettings(input="builtin:pydocs"))
    processor = load_sentencepiece(manifest.spm_model_path)
    texts = [text for _, text in read_documents("builtin:pydocs")]

    def encode(threads):
        return lambda: sum(len(ids) for ids in processor.encode(
            texts, out_type=int, add_bos=True, add_eos=True, num_threads=threads))

    def read_epoch():
        tokens = 0
        for x, _ in lm_dataset(manifest, "train", FLAGS.batch_size, FLAGS.bptt):
            tokens += int(x.shape[0]) * int(x.shape[1])
        return tokens

    cores = os.cpu_count() or 1
    rows = [("SentencePiece encode, 1 thread", _best_rate(encode(1), FLAGS.repeats)),
            (f"SentencePiece encode, {cores} threads", _best_rate(encode(cores), FLAGS.repeats)),
            (f"TFRecord -> lm_dataset [{FLAGS.batch_size}x{FLAGS.bptt}] (epoch incl. setup)",
             _best_rate(read_epoch, FLAGS.repeats))]
    print(f"\ncorpus: {len(texts):,} documents; train split {manifest.split('train').tokens:,} "
          f"tokens; vocab {manifest.vocab_size}")
    print(f"{'stage':<58} {'tokens/s':>14}")
    for name, rate in rows:
        print(f"{name:<58} {rate:>14,.0f}")


if __name__ == "__main__":
    app.run(main)
