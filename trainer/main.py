"""python -m trainer.main --gin_file=gin_configs/smoke.gin [--gin_param=...] --model_dir=DIR"""
# pylint: disable=wrong-import-position
from trainer.runtime.compilation_cache import check_compilation_cache, use_compilation_cache

# Before TensorFlow starts: it reads TF_XLA_FLAGS once, when it first lists its devices.
use_compilation_cache()

import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import inspect
import json
import os
import sys
import tokenize

from absl import app, flags
import gin
import tensorflow as tf

from common.errors import UserError, run_tool
from trainer import configurables, gin_reach
from trainer.lm.preemption import PREEMPTED_EXIT_CODE, Preempted
from trainer.runtime.allocator import use_bfc_allocator
from trainer.runtime.strategies import is_chief

# Includes such as 'gin_configs/lm_training.gin' resolve from any working directory.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gin.add_config_file_search_path(_PROJECT_ROOT)

FLAGS = flags.FLAGS


def define_gin_flags():
    """--gin_file and --gin_param, as every tool that runs a configured job takes them."""
    flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
    flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. train_lm.epochs=2.")


@gin.configurable(denylist=["parts"])
def job(model_dir, trainer=configurables.train_lm, strategy=configurables.make_strategy,
        reuse_freed_memory=True, parts=None):
    """What a config trains: the language model (default), or e.g. `job.trainer =
    @train_classifier` / `@train_tagger` (trainer/fine_tuning/), on the strategy that
    `strategy()` makes (make_strategy.* in mirrored.gin etc.). `parts`: more arguments for
    the trainer (trainer.lr_find passes its own schedule). `reuse_freed_memory`: TF's CPU
    tensors on the BFC allocator (trainer/runtime/allocator.py: faster LM steps on CPU, lower peak
    RSS than malloc's defaults). XLA executables are kept on disk for the next run
    (trainer/runtime/compilation_cache.py; the directory is $ULMFIT_XLA_CACHE_DIR)."""
    if reuse_freed_memory:
        use_bfc_allocator()
    check_compilation_cache()
    # Made first: logical devices must be set up before any TF op runs.
    return trainer(model_dir, strategy=strategy(), **(parts or {}))


def _job_defaults():
    """{param: gin name} of job's defaults that are configurables (what an unbound job runs)."""
    return {name: configurables.registered_name(p.default)
            for name, p in inspect.signature(job).parameters.items()
            if configurables.registered_name(p.default)}


def check_reach(files, bindings):
    """The gin name of the job's trainer; a UserError for the first binding the job never uses,
    or a required setting of the trainer left unset."""
    statements = gin_reach.read_bindings(files, bindings, [_PROJECT_ROOT])
    defaults = _job_defaults()
    names, final = gin_reach.reached(statements, "job", defaults)
    problems = gin_reach.unreached(statements, names, final)
    trainer = gin_reach.referred(final, "job", "trainer") or defaults["trainer"]
    if problems:
        raise UserError(f"gin: {problems[0]}. The job is {trainer}: remove the binding, or fix "
                        "the --gin_file or --gin_param it names.")
    bound = {param for (_, selector, param) in final if selector == trainer}
    job_function = configurables.JOBS.get(trainer, lambda model_dir: None)  # or a user's own
    for name, p in inspect.signature(job_function).parameters.items():
        if p.default is p.empty and name != "model_dir" and name not in bound:
            example = {"pretrained": "/tmp/ulmfit_smoke"}.get(name, "/tmp/data")
            raise UserError(f"gin: {trainer}.{name} is required; set it with --gin_param, e.g. "
                            f"--gin_param=\"{trainer}.{name}='{example}'\".")
    return trainer


def parse_gin(files, bindings):
    """Parses the config; returns the gin name of the trainer it runs. Gin's parse errors, and
    bindings that reach nothing, as one line naming the file or binding at fault."""
    for path in files:
        if not any(tf.io.gfile.exists(os.path.join(root, path)) for root in ("", _PROJECT_ROOT)):
            raise UserError(f"--gin_file={path}: no such file (the configs that come with this "
                            f"package are in {os.path.join(_PROJECT_ROOT, 'gin_configs')}).")
    try:
        gin.parse_config_files_and_bindings(files, bindings)
    except (ValueError, OSError, tokenize.TokenError, SyntaxError) as e:
        # gin's message names the file (or "bindings string") and the line.
        message = " ".join(str(e).split()).rstrip(".")
        raise UserError(f"gin: {message}. Fix the --gin_file or --gin_param it names.") from None
    return check_reach(files, bindings)


def run_job(model_dir, parts=None):
    try:
        return job(model_dir, parts=parts)
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
