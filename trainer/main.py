"""python -m trainer.main --gin_file=gin_configs/smoke.gin [--gin_param=...] --model_dir=DIR"""
# pylint: disable=wrong-import-position
from trainer.compilation_cache import check_compilation_cache, use_compilation_cache

# Before TensorFlow starts: it reads TF_XLA_FLAGS once, when it first lists its devices.
use_compilation_cache()

import data_pipeline.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import json
import os
import sys
import tokenize

from absl import app, flags
import gin
import tensorflow as tf

from data_pipeline.errors import UserError, run_tool
from trainer import lm_training
from trainer.allocator import use_bfc_allocator
from trainer.downstream import classification, tagging
from trainer.preemption import PREEMPTED_EXIT_CODE, Preempted
from trainer.strategies import is_chief

del classification, tagging  # imported for their gin entry points

# Includes such as 'gin_configs/lm_training.gin' resolve from any working directory.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gin.add_config_file_search_path(_PROJECT_ROOT)

FLAGS = flags.FLAGS


def define_gin_flags():
    """--gin_file and --gin_param, as every tool that runs a configured job takes them."""
    flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
    flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. train_lm.epochs=2.")


@gin.configurable
def job(model_dir, trainer=lm_training.train_lm, reuse_freed_memory=True):
    """What a config trains: the language model (default), or e.g. `job.trainer =
    @train_classifier` / `@train_tagger` (trainer/downstream/). `reuse_freed_memory`: TF's CPU
    tensors on the BFC allocator (trainer/allocator.py: faster LM steps on CPU, lower peak RSS
    than malloc's defaults). XLA executables are kept on disk for the next run
    (trainer/compilation_cache.py; the directory is $ULMFIT_XLA_CACHE_DIR)."""
    if reuse_freed_memory:
        use_bfc_allocator()
    check_compilation_cache()
    return trainer(model_dir)


def parse_gin(files, bindings):
    """Gin's parse errors, as one line naming the file or binding at fault."""
    for path in files:
        if not any(tf.io.gfile.exists(os.path.join(root, path)) for root in ("", _PROJECT_ROOT)):
            raise UserError(f"--gin_file={path}: no such file (the configs that come with this "
                            f"package are in {os.path.join(_PROJECT_ROOT, 'gin_configs')}).")
    try:
        gin.parse_config_files_and_bindings(files, bindings)
    except (ValueError, OSError, tokenize.TokenError, SyntaxError) as e:
        # gin's message names the file (or "bindings string") and the line.
        raise UserError(f"gin: {' '.join(str(e).split())}. Fix the --gin_file or --gin_param "
                        "it names.") from None


def run_job(model_dir):
    try:
        return job(model_dir)
    except (Preempted, UserError, RuntimeError) as e:
        # Gin appends "In call to configurable ..." lines to what a configurable raises.
        message = str(e).split("\n  In call to configurable")[0]
        if isinstance(e, Preempted):  # one line naming the checkpoint, and a restart code
            print(message, file=sys.stderr, flush=True)
            sys.exit(PREEMPTED_EXIT_CODE)
        if isinstance(e, UserError):
            raise UserError(message) from None
        if message.startswith("Required bindings"):  # a gin.REQUIRED argument left unset
            raise UserError(f"gin: {message}; set each with --gin_param, e.g. "
                            "--gin_param=\"train_lm.data_dir='/tmp/data'\".") from None
        raise


def main(argv):
    del argv
    tf.get_logger().setLevel("WARNING")  # not one INFO line per all-reduce setup
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    metrics = run_job(FLAGS.model_dir)
    if is_chief():  # one writer per model directory
        with tf.io.gfile.GFile(os.path.join(FLAGS.model_dir, "operative_config.gin"), "w") as f:
            f.write(gin.operative_config_str())
    print(json.dumps(metrics, indent=2))
    if "valid_perplexity" in metrics:
        ratio = metrics["valid_perplexity"] / metrics["valid_unigram_perplexity"]
        print(f"valid perplexity {metrics['valid_perplexity']:.1f} vs unigram "
              f"{metrics['valid_unigram_perplexity']:.1f} (ratio {ratio:.3f})")


if __name__ == "__main__":
    define_gin_flags()
    flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs (local or gs://).")
    run_tool(main)
