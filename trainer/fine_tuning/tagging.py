"""ULMFiT stage 3 for sequence tagging: `train_tagger`, the job of gin_configs/tagger.gin (run
by trainer.main).

It fine-tunes a tagger (trainer/models/ulmfit_tagger.py: a softmax over tags at every piece) on a
pretrained encoder with ULMFiT's recipe (trainer/fine_tuning/recipe.py); a word's tag sits on its
first SentencePiece piece. `from_scratch=True` trains the same architecture from random weights.
"""
import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError
from data_pipeline import labeled_data as data
from data_pipeline.demo_tasks import demo_task_files
from data_pipeline.sources import SPLITS
from trainer.checkpoints.pretrained import encoder_source
from trainer.fine_tuning.recipe import fit_recipe
from trainer.fine_tuning.saved_run import describe, save_run
from trainer.fine_tuning.span_f1 import span_f1
from trainer.models.ulmfit_tagger import ulmfit_tagger


def predicted_tags(model, ids, word_starts, vocabulary, batch_size):
    """Per-word tag strings of each row of `ids`, read off each word's first piece. Rows go in
    evaluation's batches of similar lengths (each row's index rides along as its target): the
    shapes validation already compiled. Every row padded to the longest took 2.6 s for the
    demo task's 780 test sentences (new shapes, 10x the padding); padding after a text never
    changes its states."""
    pieces = [None] * len(ids)
    for x, rows in data.labelled_dataset(ids, list(range(len(ids))), batch_size):
        for row, predicted in zip(rows.numpy(), np.argmax(model.predict_on_batch(x), -1)):
            pieces[row] = predicted
    return [[vocabulary[p] for p in data.word_predictions(row, starts)]
            for row, starts in zip(pieces, word_starts)]


def train_tagger(model_dir, pretrained, files=None, from_scratch=False, max_len=128,
                 batch_size=32, epochs=4, outside_tag="O", seed=0, *, strategy=None,
                 model=ulmfit_tagger, recipe=fit_recipe):
    """Fine-tunes a sequence tagger; `files` {train, valid, test} are JSONL or TSV/CoNLL
    (default: the demo task). Returns span-level F1 on valid and test.

    The parts: `strategy` (default: TensorFlow's default strategy), `model(num_classes,
    pretrained_weights, spm_model_file, **sizes)` (dropouts and AR/TAR are its settings) and
    `recipe`, trainer.fine_tuning.recipe.fit_recipe or one with the same arguments."""
    files = files or demo_task_files("tag")
    keras.utils.set_random_seed(seed)
    weights, sizes, spm_model, backwards = encoder_source(pretrained, from_scratch)
    if backwards:
        raise UserError(f"train_tagger.pretrained={pretrained} is a backward language model; "
                        "the tagger reads words left to right: pass a forward one.")
    encoder = data.PieceEncoder(spm_model, max_len)
    sentences = {split: data.read_tagging(path) for split, path in files.items()}
    vocabulary = data.label_vocabulary([t for _, tags in sentences["train"] for t in tags],
                                       outside_tag)

    def encoded(split):
        ids, labels, starts = [], [], []
        for words, tags in sentences[split]:
            row, word_starts = encoder.word_ids(words)
            ids.append(row)
            labels.append(data.align_labels(data.label_ids(tags, vocabulary, files[split]),
                                            word_starts, len(row)))
            starts.append(word_starts)
        return ids, labels, starts

    splits = {split: encoded(split) for split in SPLITS}  # (ids, piece labels, word starts)
    train_ids = splits["train"][0]

    def dataset(split, shuffle_seed=None):
        ids, labels, _ = splits[split]
        return data.labelled_dataset(ids, labels, batch_size, data.IGNORE, shuffle_seed,
                                     drop_remainder=split == "train")

    with (strategy or tf.distribute.get_strategy()).scope():
        model = model(num_classes=len(vocabulary), pretrained_weights=weights,
                      spm_model_file=spm_model, **sizes)
        recipe(
            model, keras.losses.SparseCategoricalCrossentropy(ignore_class=data.IGNORE),
            dataset("train", seed), dataset("valid"), epochs,
            data.train_steps(len(train_ids), batch_size, files["train"]),
            model_dir=model_dir, tokens_per_epoch=sum(map(len, train_ids)))
    metrics = {"tags": vocabulary, "from_scratch": from_scratch}
    for split in ("valid", "test"):
        ids, _, starts = splits[split]
        predicted = predicted_tags(model, ids, starts, vocabulary, batch_size)
        truth = [tags for _, tags in sentences[split]]  # words cut off by max_len count as O
        metrics.update({f"{split}_{k}": v for k, v in span_f1(truth, predicted).items()})
    return save_run(model_dir, model, describe("tagger", model, vocabulary, max_len),
                    spm_model, metrics)
