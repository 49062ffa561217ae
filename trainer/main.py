"""python -m trainer.main --gin_file=gin_configs/smoke.gin [--gin_param=...] --model_dir=DIR"""
import os

# Before TensorFlow loads: keep its C++ INFO lines (oneDNN, XLA service) out of the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import json
import sys

from absl import app, flags
import gin
import tensorflow as tf

from data_pipeline.sources import CorpusError
from trainer import downstream_training, lm_training
from trainer.allocator import keep_freed_memory
from trainer.pretrained import PretrainedModelError

del downstream_training  # imported for its gin configurables

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. train_lm.epochs=2.")
flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs (local or gs://).")


@gin.configurable
def job(model_dir, trainer=lm_training.train_lm, reuse_freed_memory=True):
    """What a config trains: the language model (default), or e.g. `job.trainer =
    @train_classifier` / `@train_tagger` (downstream_training). `reuse_freed_memory`: see
    trainer/allocator.py (about 25% faster LM steps on CPU)."""
    if reuse_freed_memory:
        keep_freed_memory()
    return trainer(model_dir)


def main(argv):
    del argv
    tf.get_logger().setLevel("WARNING")  # not one INFO line per all-reduce setup
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_param)
    try:
        metrics = job(FLAGS.model_dir)
    except (CorpusError, PretrainedModelError, lm_training.NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    with tf.io.gfile.GFile(os.path.join(FLAGS.model_dir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    print(json.dumps(metrics, indent=2))
    if "valid_perplexity" in metrics:
        ratio = metrics["valid_perplexity"] / metrics["valid_unigram_perplexity"]
        print(f"valid perplexity {metrics['valid_perplexity']:.1f} vs unigram "
              f"{metrics['valid_unigram_perplexity']:.1f} (ratio {ratio:.3f})")


if __name__ == "__main__":
    app.run(main)
