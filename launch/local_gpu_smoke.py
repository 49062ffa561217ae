"""Smoke test on one local GPU before renting TPUs: is a GPU visible, does the LSTM run on cuDNN,
and how many tokens/s does the smoke config train at.

  python -m launch.local_gpu_smoke [--steps=300] [--model_dir=/tmp/ulmfit_gpu_smoke]

Exits 1 with one `error:` line when no GPU is visible, when the LSTM would not run on cuDNN, or
when --model_dir already holds a run (the smoke test times a fresh one).
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
from absl import flags
import gin
import tensorflow as tf

from common.errors import UserError, run_tool
from trainer import configurables
from trainer.models.weight_drop_lstm import WeightDropLSTM

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 300, "Training steps of the smoke config.")
flags.DEFINE_string("model_dir", "/tmp/ulmfit_gpu_smoke", "Where the smoke run writes.")


def lstm_kernel_ops():
    """Op types of a weight-dropped LSTM training call as traced here (incl. nested functions)."""
    layer = WeightDropLSTM(32, weight_dropout=0.2)
    call = tf.function(lambda x, h, c: layer(x, (h, c), training=True, seed=tf.constant([1, 2])))
    graph_def = call.get_concrete_function(
        tf.TensorSpec([4, 7, 16]), tf.TensorSpec([4, 32]), tf.TensorSpec([4, 32])
    ).graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {node.op for node in nodes}


def main(argv):
    del argv
    if tf.train.latest_checkpoint(FLAGS.model_dir):  # a resumed run would time no step
        raise UserError(f"--model_dir={FLAGS.model_dir} holds a run already; the smoke test "
                        "times a fresh one: pass a new --model_dir or delete that one.")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise UserError("no GPU visible: TensorFlow found no CUDA device. Check `nvidia-smi`, "
                        "and install the CUDA build with pip install -e '.[gpu]'.")
    cudnn = sorted(op for op in lstm_kernel_ops() if op.startswith("CudnnRNN"))
    if not cudnn:
        raise UserError("the LSTM did not pick cuDNN on this GPU (see "
                        "trainer/models/lstm_kernel.py).")
    print(f"GPU: {gpus[0].name}; LSTM kernel: {', '.join(cudnn)}")
    gin.parse_config_files_and_bindings(
        ["gin_configs/smoke.gin"], [f"train_lm.max_steps={FLAGS.steps}"])
    metrics = configurables.train_lm(FLAGS.model_dir)
    print(f"{FLAGS.steps} steps: {metrics['tokens_per_second']:,.0f} tokens/s, valid perplexity "
          f"{metrics['valid_perplexity']:.1f}")


if __name__ == "__main__":
    run_tool(main)
