"""fastai AWD_LSTM language models in and out of our checkpoints.

  python -m trainer.convert_fastai import --state_dict=lm.pth --spm_model=spm.model --output=DIR
      [--backwards]   (a backward LM's weights)
  python -m trainer.convert_fastai export --checkpoint=DIR --output=lm.pth

fastai's `get_language_model(AWD_LSTM, vocab)` state_dict, per LSTM layer i:
  0.rnns.{i}.module.weight_ih_l0 [4h, in]   -> encoder.lstm_{i}.cell.kernel = transpose
  0.rnns.{i}.weight_hh_l0_raw    [4h, h]    -> encoder.lstm_{i}.cell.recurrent_kernel = transpose
  0.rnns.{i}.module.bias_ih_l0 + bias_hh_l0 -> encoder.lstm_{i}.cell.bias (Keras has one bias)
  0.encoder.weight [vocab, emb] -> encoder.embedding.embeddings; 1.decoder.bias -> decoder_bias
PyTorch's gate order (i, f, g, o) is Keras' (i, f, c, o): no reordering. `0.encoder_dp.emb.weight`
and the tied `1.decoder.weight` are the embedding again; `module.weight_hh_l0` is WeightDropout's
last dropped copy, recomputed by fastai on every forward pass. The `0.`/`1.` prefixes may be absent.
PyTorch's two biases cannot be recovered from their sum, so an import keeps them beside the
weights and an export gives them back while the summed bias is unchanged (an exact round trip);
after training, bias_ih carries the change. .pth files need torch (the [fastai] extra); .npz
files of the same names do not.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import io
import os
import re

from absl import app, flags
import numpy as np
import tensorflow as tf

from common.atomic_files import write_atomically
from common.errors import run_tool
from common.tokenizer import SPECIAL_IDS, load_sentencepiece

from trainer.checkpoints.pretrained import (PretrainedModelError, model_dir_and_checkpoint,
                                            weights_by_path, write_pretrained_config)
from trainer.models.language_model import AWDLSTMLanguageModel
from trainer.models.pretrained_lm import load_language_model

_LAYER_KEY = re.compile(r"rnns\.(\d+)\.")


def _strip(key):
    return key[2:] if key[:2] in ("0.", "1.") else key


def _require(state_dict, key, source):
    if key not in state_dict:
        raise PretrainedModelError(f"{source}: no {key!r}; not a fastai AWD_LSTM language model "
                                   f"state_dict (it has {sorted(state_dict)[:8]}...).")
    return state_dict[key]


def weights_from_state_dict(state_dict, source="state_dict"):
    """(AWDLSTMLanguageModel config, {weight path: array}, {split-bias name: array})."""
    sd = {_strip(k): np.asarray(v, np.float32) for k, v in state_dict.items()}
    embedding = _require(sd, "encoder.weight", source)
    layers = sorted({int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k))})
    if layers != list(range(len(layers))) or not layers:
        raise PretrainedModelError(f"{source}: LSTM layers {layers}, expected rnns.0 ... rnns.N.")
    weights = {"encoder.embedding.embeddings": embedding,
               "decoder_bias": sd.get("decoder.bias", np.zeros(len(embedding), np.float32))}
    biases = {}
    for i in layers:
        w_ih = _require(sd, f"rnns.{i}.module.weight_ih_l0", source)
        w_hh = _require(sd, f"rnns.{i}.weight_hh_l0_raw", source)
        b_ih = _require(sd, f"rnns.{i}.module.bias_ih_l0", source)
        b_hh = _require(sd, f"rnns.{i}.module.bias_hh_l0", source)
        cell = f"encoder.lstm_{i}.cell"
        weights.update({f"{cell}.kernel": w_ih.T, f"{cell}.recurrent_kernel": w_hh.T,
                        f"{cell}.bias": b_ih + b_hh})
        biases.update({f"bias_ih_{i}": b_ih, f"bias_hh_{i}": b_hh})
    for tied in ("encoder_dp.emb.weight", "decoder.weight"):
        if tied in sd and not np.array_equal(sd[tied], embedding):
            raise PretrainedModelError(f"{source}: {tied} differs from encoder.weight; only "
                                       "tied-weight language models are supported.")
    hidden = weights["encoder.lstm_0.cell.recurrent_kernel"].shape[0]
    shape = {"vocab_size": embedding.shape[0], "emb_size": embedding.shape[1],
             "hidden_size": hidden if len(layers) > 1 else embedding.shape[1],
             "num_layers": len(layers), "pad_id": SPECIAL_IDS["pad"]}
    return AWDLSTMLanguageModel(**shape).get_config(), weights, biases


def state_dict_from_weights(weights, num_layers, biases):
    """fastai's state_dict (prefixed names, numpy arrays) from {weight path: array} and the
    split biases an import kept (zeros for weights that never were fastai's)."""
    embedding = weights["encoder.embedding.embeddings"]
    sd = {"0.encoder.weight": embedding, "0.encoder_dp.emb.weight": embedding}
    for i in range(num_layers):
        cell = f"encoder.lstm_{i}.cell"
        w_hh = weights[f"{cell}.recurrent_kernel"].T
        b_ih, b_hh = biases[f"bias_ih_{i}"], biases[f"bias_hh_{i}"]
        if not np.array_equal(b_ih + b_hh, weights[f"{cell}.bias"]):  # trained since import
            b_ih = weights[f"{cell}.bias"] - b_hh
        sd.update({f"0.rnns.{i}.weight_hh_l0_raw": w_hh,
                   f"0.rnns.{i}.module.weight_ih_l0": weights[f"{cell}.kernel"].T,
                   f"0.rnns.{i}.module.bias_ih_l0": b_ih, f"0.rnns.{i}.module.bias_hh_l0": b_hh})
    sd.update({"1.decoder.weight": embedding, "1.decoder.bias": weights["decoder_bias"]})
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def load_state_dict(path):
    """A .pth (torch.load, needs torch) or .npz state_dict as {name: numpy array}."""
    if not tf.io.gfile.exists(path):
        raise PretrainedModelError(f"{path}: no such file; pass the .pth or .npz file that "
                                   "fastai's learn.save() or torch.save(model.state_dict()) wrote.")
    not_weights = (f"{path}: not a state_dict of weights (a dict of name -> tensor) that "
                   "torch.save(model.state_dict()) or learn.save() writes")
    if path.endswith(".npz"):
        with tf.io.gfile.GFile(path, "rb") as f:
            try:
                return dict(np.load(f))
            except (OSError, ValueError, EOFError) as e:
                raise PretrainedModelError(f"{not_weights} ({e}).") from None
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise PretrainedModelError(f"{path}: reading .pth files needs torch: "
                                   "pip install -e .[fastai] (or convert it to .npz).") from None
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            loaded = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip and torch's own errors: all mean "not weights"
            reason = str(e).splitlines()[0].split(". ")[0]  # torch's first sentence says it
            raise PretrainedModelError(f"{not_weights} ({type(e).__name__}: {reason}).") from None
    if isinstance(loaded, dict):
        loaded = loaded.get("model", loaded)  # learn.save() wraps it with the optimizer state
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in loaded.values()):
        raise PretrainedModelError(f"{not_weights}; it holds a {type(loaded).__name__}.")
    return {k: v.float().numpy() for k, v in loaded.items()}


def save_state_dict(state_dict, path):
    buffer = io.BytesIO()
    if path.endswith(".npz"):
        np.savez(buffer, **state_dict)
    else:
        import torch  # pylint: disable=g-import-not-at-top
        torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, buffer)
    write_atomically(path, buffer.getvalue())


def check_spm_model(spm_model_file, vocab_size, state_dict_path):
    """The SentencePiece model must number pieces as we do (load_sentencepiece checks the
    special ids) and have one piece per row of the weights' embedding."""
    pieces = load_sentencepiece(spm_model_file).get_piece_size()
    if pieces != vocab_size:
        raise PretrainedModelError(
            f"{spm_model_file} has {pieces} pieces but the embedding of "
            f"{state_dict_path} has {vocab_size} rows: pass the SentencePiece model the "
            "weights were trained with.")


def check_shapes(config, weights, state_dict_path):
    """Every weight has the shape the model that `config` describes needs."""
    model = AWDLSTMLanguageModel(**config)
    model(tf.zeros([1, 1], tf.int32))
    for name, variable in weights_by_path(model).items():
        if tuple(weights[name].shape) != tuple(variable.shape):
            raise PretrainedModelError(
                f"{state_dict_path}: {name} is {list(weights[name].shape)}, an AWD_LSTM with "
                f"embedding {config['emb_size']} and hidden {config['hidden_size']} needs "
                f"{variable.shape.as_list()}; the LSTM layers do not fit together.")


def import_fastai(state_dict_path, spm_model_file, output_dir, backwards=False):
    """Writes a model directory (checkpoint + lm_config.json + spm.model) from fastai weights
    (`backwards`: of a backward LM, fastai's backwards=True)."""
    if tf.io.gfile.exists(os.path.join(output_dir, "checkpoint")):
        raise PretrainedModelError(f"{output_dir}: already holds a checkpoint; pass a new "
                                   "--output (nothing was written).")
    config, weights, biases = weights_from_state_dict(load_state_dict(state_dict_path),
                                                      state_dict_path)
    check_spm_model(spm_model_file, config["vocab_size"], state_dict_path)
    check_shapes(config, weights, state_dict_path)
    variables = lambda arrays: tf.train.Checkpoint(
        **{k: tf.Variable(v) for k, v in arrays.items()})
    checkpoint = tf.train.Checkpoint(model=variables(weights), fastai_biases=variables(biases))
    write_pretrained_config(output_dir, config, spm_model_file, SPECIAL_IDS, backwards)
    # CheckpointManager writes the `checkpoint` index last: a killed import leaves no valid dir.
    tf.train.CheckpointManager(checkpoint, output_dir, max_to_keep=1).save(checkpoint_number=0)
    return output_dir


def export_fastai(checkpoint_path, output_path):
    """Writes the LM at `checkpoint_path` (model directory or prefix) as a fastai state_dict."""
    lm, _ = load_language_model(checkpoint_path)
    weights = {k: v.numpy() for k, v in weights_by_path(lm).items()}
    # Zeros unless the checkpoint came from import_fastai: then bias_ih = the summed bias.
    biases = {f"bias_{kind}_{i}": tf.Variable(tf.zeros([4 * units]))
              for i, units in enumerate(lm.encoder.units) for kind in ("ih", "hh")}
    _, checkpoint = model_dir_and_checkpoint(checkpoint_path)
    tf.train.Checkpoint(fastai_biases=tf.train.Checkpoint(**biases)).restore(
        checkpoint).expect_partial()
    biases = {k: v.numpy() for k, v in biases.items()}
    save_state_dict(state_dict_from_weights(weights, len(lm.encoder.units), biases), output_path)
    return output_path


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise app.UsageError("say `import` or `export`, e.g. python -m trainer.convert_fastai "
                             "import --state_dict=lm.pth --spm_model=spm.model --output=DIR")
    needed = ("state_dict", "spm_model") if argv[1] == "import" else ("checkpoint",)
    for name in needed:
        if not FLAGS[name].value:
            raise app.UsageError(f"{argv[1]} needs --{name}.")
    if argv[1] == "import":
        print(import_fastai(FLAGS.state_dict, FLAGS.spm_model, FLAGS.output, FLAGS.backwards))
    else:
        print(export_fastai(FLAGS.checkpoint, FLAGS.output))


if __name__ == "__main__":
    flags.DEFINE_string("state_dict", None, "import: fastai LM weights, .pth or .npz.")
    flags.DEFINE_string("spm_model", None, "import: the SentencePiece model of those weights "
                        "(ids unk 0, pad 1, bos 2, eos 3).")
    flags.DEFINE_boolean("backwards", False, "import: the weights are a backward LM's "
                         "(trained with fastai's backwards=True).")
    flags.DEFINE_string("checkpoint", None, "export: a model directory or checkpoint prefix.")
    flags.DEFINE_string("output", None, "import: the model directory to create; export: the "
                        ".pth or .npz file to write.", required=True)
    run_tool(main)
