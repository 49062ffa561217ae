"""fastai's side of compare_fastai_finetune.py: ULMFiT stages 2 and 3 written as fastai's
course writes them, on ids the parent prepared (our SentencePiece ids, our splits).

  python benchmarks/fastai_finetune.py --stage=lm|classify|tag --data=DATA.pkl \
      --encoder=ENCODER.pth --result=RESULT.json --seed=0

lm: get_language_model(AWD_LSTM) with the pretrained state_dict (trainer.convert_fastai export),
  drop_mult 0.3, TextLearner (AR 2, TAR 1, moms 0.8/0.7/0.8), fit_one_cycle(2, 2e-3), gradient
  clipping 0.25 as our LM recipe; saves the encoder.
classify: get_text_classifier(AWD_LSTM, seq_len 72, max_len 72*20, drop_mult 0.5) on that
  encoder, SortedDL batches padded by pad_input_chunk, text_classifier_learner's TextLearner with
  awd_lstm_clas_split, and the course's gradual unfreezing (fit_one_cycle per stage).
tag: the same encoder under a Linear per token (fastai has no tagger; this one is built as its
  classifier is: classifier dropouts, TextLearner, the same split and stages).
"""
import json
import pickle
import time
from functools import partial

from absl import app, flags
import numpy as np
import torch
from fastai.callback.training import GradientClip
from fastai.data.core import DataLoaders
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.text.all import (AWD_LSTM, LMDataLoader, SortedDL, TensorText, TextLearner,
                             awd_lstm_clas_config, awd_lstm_clas_split, awd_lstm_lm_config,
                             awd_lstm_lm_split, get_language_model, get_text_classifier,
                             pad_input_chunk)
from fastai.torch_core import Module, params, set_seed
from torch import nn

flags.DEFINE_enum("stage", None, ["lm", "classify", "tag"], "Which ULMFiT stage to run.")
flags.DEFINE_string("data", None, "The parent's pickle of ids, labels and model sizes.")
flags.DEFINE_string("encoder", None, "lm: where to save the fine-tuned encoder; else: load it.")
flags.DEFINE_string("result", None, "Where to write the stage's metrics (JSON).")
flags.DEFINE_integer("seed", 0, "fastai's set_seed.")
flags.DEFINE_integer("batch_size", 32, "Rows per batch, every stage.")
FLAGS = flags.FLAGS

PAD, IGNORE = 1, -100  # fastai's padding id (ours) and CrossEntropyLossFlat's ignore_index
# The course's stages: (epochs, groups trained or None for all, lr); slice(lr / 2.6**4, lr).
COURSE = ((1, 1, 2e-2), (1, 2, 1e-2), (1, 3, 5e-3), (2, None, 1e-3))


def _config(defaults, sizes):
    return dict(defaults, emb_sz=sizes["emb_size"], n_hid=sizes["hidden_size"],
                n_layers=sizes["num_layers"], pad_token=PAD)


def _texts(rows):
    return [TensorText(torch.tensor(row, dtype=torch.long)) for row in rows]


def fine_tune_lm(data):
    lm = data["lm"]
    model = get_language_model(AWD_LSTM, data["sizes"]["vocab_size"],
                               _config(awd_lstm_lm_config, data["sizes"]), drop_mult=0.3)
    state = {k: torch.from_numpy(v) for k, v in np.load(data["state_dict"]).items()}
    model.load_state_dict(state)
    # Validation rows as our train_lm.eval_batch_size (16): the rows' length sets the context.
    loaders = [LMDataLoader(_texts(lm[split]), bs=bs, seq_len=70, shuffle=split == "train")
               for split, bs in (("train", FLAGS.batch_size), ("valid", 16))]
    learn = TextLearner(DataLoaders(*loaders), model, loss_func=CrossEntropyLossFlat(),
                        splitter=awd_lstm_lm_split, cbs=GradientClip(0.25))
    learn.unfreeze()
    learn.fit_one_cycle(2, 2e-3)
    torch.save(learn.model[0].state_dict(), FLAGS.encoder)
    return {"valid_perplexity": float(np.exp(learn.validate()[0]))}


def _course(learn):
    learn.freeze()
    for epochs, groups, lr in COURSE:
        if groups:
            learn.freeze_to(-groups)
        else:
            learn.unfreeze()
        learn.fit_one_cycle(epochs, slice(lr / 2.6 ** 4, lr) if groups != 1 else lr)


def _sorted_loaders(task, before_batch):
    def loader(split):
        items = list(zip(_texts(task[split]["ids"]), task[split]["labels"]))
        return SortedDL(items, before_batch=before_batch, bs=FLAGS.batch_size,
                        shuffle=split == "train", drop_last=split == "train")
    return DataLoaders(loader("train"), loader("valid")), loader("test")


def fine_tune_classifier(data):
    task = data["classify"]
    model = get_text_classifier(AWD_LSTM, data["sizes"]["vocab_size"], task["num_classes"],
                                seq_len=72, config=_config(awd_lstm_clas_config, data["sizes"]),
                                drop_mult=0.5, max_len=72 * 20)
    model[0].module.load_state_dict(torch.load(FLAGS.encoder))
    dls, test = _sorted_loaders(task, partial(pad_input_chunk, pad_idx=PAD, pad_first=True,
                                              seq_len=72))
    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                        splitter=awd_lstm_clas_split)
    _course(learn)
    return {"valid_accuracy": float(learn.validate()[1]),
            "test_accuracy": float(learn.validate(dl=test)[1])}


class TokenTagger(Module):
    """AWD_LSTM -> Linear at every position; returns (logits, out, out) as fastai's classifier
    does, so TextLearner's AR/TAR apply to the encoder's outputs."""

    def __init__(self, encoder, hidden, num_tags):
        self.encoder, self.head = encoder, nn.Linear(hidden, num_tags)

    def reset(self):
        self.encoder.reset()

    def forward(self, ids):
        self.encoder.reset()  # every batch starts from zero states
        out = self.encoder(ids)
        return self.head(out), out, out


def _tagger_split(model):
    encoder = model.encoder
    groups = [nn.Sequential(encoder.encoder, encoder.encoder_dp)]
    groups += [nn.Sequential(rnn, dp) for rnn, dp in zip(encoder.rnns, encoder.hidden_dps)]
    return [params(g) for g in groups + [model.head]]


def _padded(row, length, value):
    row = torch.as_tensor(row, dtype=torch.long)
    return torch.cat([row, row.new_full((length - len(row),), value)])


def _pad_right(samples):
    longest = max(len(ids) for ids, _ in samples)
    return [(TensorText(_padded(ids, longest, PAD)), _padded(labels, longest, IGNORE))
            for ids, labels in samples]


def _tag_predictions(model, rows):
    """Per-piece argmax of every row, in the rows' order; right padding never changes a row."""
    model.eval()
    order = np.argsort([-len(r) for r in rows], kind="stable")
    predicted = [None] * len(rows)
    with torch.no_grad():
        for start in range(0, len(rows), FLAGS.batch_size):
            batch = [rows[k] for k in order[start:start + FLAGS.batch_size]]
            ids = torch.stack([_padded(r, len(batch[0]), PAD) for r in batch])
            logits = model(ids)[0].argmax(-1)
            for k, row, tags in zip(order[start:], batch, logits):
                predicted[k] = tags[:len(row)].tolist()
    return predicted


def fine_tune_tagger(data):
    task, sizes = data["tag"], data["sizes"]
    config = _config(awd_lstm_clas_config, sizes)
    config = {k: v * 0.5 if k.endswith("_p") else v for k, v in config.items()}
    config.pop("output_p")
    encoder = AWD_LSTM(sizes["vocab_size"], **config)
    encoder.load_state_dict(torch.load(FLAGS.encoder))
    model = TokenTagger(encoder, sizes["emb_size"], task["num_tags"])
    dls, _ = _sorted_loaders(task, _pad_right)
    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(ignore_index=IGNORE),
                        splitter=_tagger_split)
    _course(learn)
    return {f"{split}_pieces": _tag_predictions(model, task[split]["ids"])
            for split in ("valid", "test")}


def main(argv):
    del argv
    set_seed(FLAGS.seed)
    with open(FLAGS.data, "rb") as f:
        data = pickle.load(f)
    start = time.perf_counter()
    stage = {"lm": fine_tune_lm, "classify": fine_tune_classifier, "tag": fine_tune_tagger}
    result = stage[FLAGS.stage](data)
    result["train_seconds"] = time.perf_counter() - start
    with open(FLAGS.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    app.run(main)
