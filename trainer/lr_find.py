"""python -m trainer.lr_find --gin_file=CONFIG [--gin_param=...] --output=lr_find.png
    [--start_lr=1e-7] [--end_lr=10] [--num_it=100] [--nostop_div]

fastai's `learn.lr_find()` on the job a config describes, the language model (lm_training.gin,
finetune_lm.gin, ...) or a classifier or tagger (classifier.gin, tagger.gin): a mock training
whose learning rate grows exponentially (trainer/optim/lr_finder.py), then the plot of smoothed loss
against learning rate (log scale) with fastai's suggestions marked, and the suggestions printed.
A downstream model trains its head alone, as a fastai learner does before unfreezing.

It never touches a run: the job runs in a temporary directory that is deleted afterwards, and no
--model_dir is taken. (A missing data directory is built, as training would build it.) The
plot needs matplotlib: pip install -e '.[plot]'. The recorded steps go to OUTPUT.json beside the
plot.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import os

# Before TensorFlow loads: keep its C++ INFO lines out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import functools
import io
import json
import tempfile

from absl import flags
import tensorflow as tf

from common.atomic_files import write_atomically
from common.errors import UserError, run_tool
from trainer import configurables
from trainer import main as trainer_main
from trainer.optim.lr_finder import LRSweep, SweepFinished


def sweep_parts(sweep, trainer):
    """What `trainer` (a gin name) takes to run as `sweep`'s mock training."""
    if trainer == "train_lm":
        return {"schedule": sweep.schedule, "controller": sweep.controller}
    # The head alone for as long as the sweep takes (it raises SweepFinished when done), with
    # the rest of the configured recipe (its optimizer, discriminative rates).
    return {"recipe": functools.partial(
        configurables.fit_recipe, schedule=sweep.schedule, stages=((sweep.num_it, 1, 0.0),),
        callbacks=[sweep.keras_callback()])}


def find_lr(sweep, trainer):
    """Runs the configured job (gin already parsed) as `sweep`'s mock training."""
    scratch = tempfile.mkdtemp(prefix="lr_find_")
    try:
        trainer_main.run_job(scratch, sweep_parts(sweep, trainer))
    except SweepFinished:
        return sweep.suggestions()
    finally:
        tf.io.gfile.rmtree(scratch)
    raise UserError("the job ended before the sweep did; lr_find runs the jobs of "
                    "trainer.main's configs (job.trainer).")


def _pyplot():
    try:
        import matplotlib  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise UserError("lr_find's plot needs matplotlib: pip install -e '.[plot]'.") from None
    matplotlib.use("Agg")  # no display
    from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
    return pyplot


def plot(pyplot, sweep, suggestions, path):
    """Writes the loss-vs-lr plot (fastai's plot_lr_find: the last 5 steps left out)."""
    figure, axes = pyplot.subplots()
    axes.plot(sweep.lrs[:-5], sweep.losses[:-5])
    for (name, (lr, loss)), color in zip(suggestions.items(), ("tab:orange", "tab:green")):
        axes.plot(lr, loss, "o", color=color, label=f"{name}: {lr:.2e}")
    axes.set(xscale="log", xlabel="Learning Rate", ylabel="Loss (smoothed)")
    axes.legend(loc="best")
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    pyplot.close(figure)
    write_atomically(path, image.getvalue())


FLAGS = flags.FLAGS


def main(argv):
    del argv
    pyplot = _pyplot()  # before the sweep, not after it
    trainer = trainer_main.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    sweep = LRSweep(FLAGS.start_lr, FLAGS.end_lr, FLAGS.num_it, FLAGS.stop_div)
    suggestions = find_lr(sweep, trainer)
    if os.path.dirname(FLAGS.output):
        tf.io.gfile.makedirs(os.path.dirname(FLAGS.output))
    plot(pyplot, sweep, suggestions, FLAGS.output)
    record = {"lrs": sweep.lrs, "losses": sweep.losses,
              "suggestions": {k: v[0] for k, v in suggestions.items()}}
    write_atomically(os.path.splitext(FLAGS.output)[0] + ".json", json.dumps(record))
    print(f"{len(sweep.lrs)} steps; plot written to {FLAGS.output}")
    for name, (lr, loss) in suggestions.items():
        print(f"{name}: lr {lr:.2e} (smoothed loss {loss:.4f})")


if __name__ == "__main__":
    trainer_main.define_gin_flags()
    flags.DEFINE_string("output", "lr_find.png", "The plot (PNG) to write.")
    flags.DEFINE_float("start_lr", 1e-7, "The first step's learning rate.", lower_bound=0)
    flags.DEFINE_float("end_lr", 10.0, "The rate the sweep would reach at step num_it.")
    flags.DEFINE_integer("num_it", 100, "Steps of the sweep (at least 6).", lower_bound=6)
    flags.DEFINE_boolean("stop_div", True, "Stop once the smoothed loss exceeds 4x its best.")
    run_tool(main)
