"""Labelled examples for the downstream models: files in, SentencePiece ids and label ids out.

Classification: JSONL, one {"text": ..., "label": ...} per line.
Tagging: JSONL, one {"tokens": [...], "tags": [...]} per line; or TSV/CoNLL (`.tsv`, `.conll`,
`.txt`): one word per line, the word in the first column and its tag in the last, a blank line
between sentences, `-DOCSTART-` lines ignored.

Word-level tags meet SentencePiece pieces here: each word is encoded on its own (as it would be
inside the sentence, with its leading "▁"), its tag goes on its first piece, and every other
piece, BOS, EOS and padding get IGNORE, which the loss and the metrics skip. `word_starts` maps
piece predictions back to words.
"""
import itertools
import json

import numpy as np
import tensorflow as tf

from common.errors import CorpusError
from common.tokenizer import SPECIAL_IDS, load_sentencepiece, model_ids
from data_pipeline.untuned import untuned

IGNORE = -1
_TAGGING_SUFFIXES = (".tsv", ".conll", ".txt")


def read_jsonl(path, fields):
    rows = []
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{number}: not JSON ({e.msg}); write one JSON object "
                                  "per line.") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{path}:{number}: a JSON {type(row).__name__}, not an object; "
                                  f"write one object with the fields {fields} per line.")
            missing = [k for k in fields if k not in row]
            if missing:
                raise CorpusError(f"{path}:{number}: field {missing[0]!r} is missing; every "
                                  f"line needs {fields}.")
            rows.append((number, row))
    if not rows:
        raise CorpusError(f"{path}: no examples.")
    return rows


def read_classification(path, text_key="text", label_key="label"):
    """(texts, labels) of a JSONL file; labels are kept as strings."""
    rows = read_jsonl(path, [text_key, label_key])
    for number, row in rows:
        if not isinstance(row[text_key], str):
            raise CorpusError(f"{path}:{number}: field {text_key!r} is a JSON "
                              f"{type(row[text_key]).__name__}; it must be a string.")
    return [r[text_key] for _, r in rows], [str(r[label_key]) for _, r in rows]


def _conll(path):
    sentences, words, tags = [], [], []
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if len(columns) < 2:
                raise CorpusError(f"{path}:{number}: {line.strip()!r} has no tag column; write "
                                  "`word<TAB>tag`, a blank line between sentences.")
            words.append(columns[0])
            tags.append(columns[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise CorpusError(f"{path}: no sentences.")
    return sentences


def read_tagging(path, tokens_key="tokens", tags_key="tags"):
    """[(words, tags)] of a JSONL or TSV/CoNLL file."""
    if path.endswith(_TAGGING_SUFFIXES):
        return _conll(path)
    sentences = []
    for number, row in read_jsonl(path, [tokens_key, tags_key]):
        tokens, tags = row[tokens_key], row[tags_key]
        if not isinstance(tokens, list) or not all(isinstance(w, str) for w in tokens):
            raise CorpusError(f"{path}:{number}: field {tokens_key!r} must be a list of strings.")
        if not isinstance(tags, list):
            raise CorpusError(f"{path}:{number}: field {tags_key!r} must be a list, one tag per "
                              "token.")
        if len(row[tokens_key]) != len(row[tags_key]):
            raise CorpusError(f"{path}:{number}: {len(row[tokens_key])} tokens but "
                              f"{len(row[tags_key])} tags; give one tag per token.")
        sentences.append((tokens, [str(t) for t in tags]))  # tags are kept as strings
    return sentences


def label_vocabulary(labels, outside=None):
    """Sorted distinct labels; `outside` (e.g. "O") first when given, so it is id 0."""
    distinct = sorted(set(labels) - {outside})
    return ([outside] if outside is not None else []) + distinct


class PieceEncoder:
    """Texts and words to ids as the language model saw them (tokenizer.model_ids: BOS + pieces
    + EOS, a longer text cut to its first max_len ids)."""

    def __init__(self, spm_model_file, max_len):
        self.processor = load_sentencepiece(spm_model_file)
        self.max_len = max_len

    def text_ids(self, text):
        return model_ids(self.processor.encode(text), self.max_len)

    def word_ids(self, words):
        """(ids, word_starts): word_starts[k] is the index of word k's first piece, or -1 for
        words cut off by max_len and for words with no piece at all (e.g. a lone zero-width
        space, which SentencePiece's normalization removes)."""
        pieces, starts = [], []
        for word_pieces in self.processor.encode(list(words)):
            starts.append(1 + len(pieces) if word_pieces else -1)  # 1: after BOS
            pieces.extend(word_pieces)
        ids = model_ids(pieces, self.max_len)
        return ids, [s if s < len(ids) else -1 for s in starts]


def label_ids(labels, vocabulary, path):
    """Label strings to their ids in `vocabulary` (the train file's labels)."""
    index = {label: i for i, label in enumerate(vocabulary)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise CorpusError(f"{path}: labels {unknown[:5]} never occur in the train file; the "
                          "model has no class for them.")
    return [index[label] for label in labels]


def align_labels(word_labels, word_starts, length):
    """Per-piece label ids: a word's label on its first piece, IGNORE everywhere else."""
    labels = np.full(length, IGNORE, np.int32)
    for label, start in zip(word_labels, word_starts):
        if start >= 0:
            labels[start] = label
    return labels


def word_predictions(piece_predictions, word_starts, missing=0):
    """Per-word predictions read off each word's first piece (`missing` for cut-off words)."""
    return [piece_predictions[s] if s >= 0 else missing for s in word_starts]


def sorted_order(lengths, batch_size, rng=None):
    """fastai's SortedDL: the order that batches texts of similar lengths together.

    Without `rng` (evaluation): longest first. With it (training, a new order each epoch):
    shuffled, cut into megabatches of 50 batches, each sorted longest first and cut into
    batches; the batches are shuffled, except that the one with the longest text comes first
    (a too-large batch fails at once) and the last, shortest one stays last.
    """
    lengths = np.asarray(lengths)
    if rng is None:
        return np.argsort(-lengths, kind="stable")
    order = rng.permutation(len(lengths))
    first = int(np.flatnonzero(order == np.argmax(lengths))[0])
    order[[0, first]] = order[[first, 0]]
    size = batch_size * 50
    order = np.concatenate([sorted(order[i:i + size], key=lambda k: -lengths[k])
                            for i in range(0, len(order), size)])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 2:
        batches = [batches[0], *(batches[k] for k in 1 + rng.permutation(len(batches) - 2)),
                   batches[-1]]
    return np.concatenate(batches)


def train_steps(num_examples, batch_size, path):
    """Batches in a training epoch: whole ones only, as fastai's training DataLoader
    (drop_last) and labelled_dataset(drop_remainder=True) make them."""
    if num_examples < batch_size:
        raise CorpusError(f"{path}: {num_examples} training examples, fewer than one batch of "
                          f"{batch_size}: add examples or lower the batch size "
                          "(train_classifier.batch_size / train_tagger.batch_size).")
    return num_examples // batch_size


def labelled_dataset(ids, targets, batch_size, target_pad=None, shuffle_seed=None,
                     length_multiple=16, chunk_length=None, drop_remainder=False):
    """A tf.data pipeline of right-padded (ids [batch, time], targets) batches of similar
    lengths (sorted_order).

    `targets`: one int per row (classification) or one list per row, padded with `target_pad`
    (tagging). `shuffle_seed`: a new order every epoch, drawn from (seed, epoch); None:
    longest first. `time` is the batch's longest row rounded up to a multiple of
    `length_multiple`: the LSTM kernel is XLA-compiled once per shape, and a compilation
    costs as much as dozens of steps, so a few more padding tokens are cheaper than a new
    shape for every length. A model that reads rows `chunk_length` tokens at a time (the
    classifier's bptt) is not rounded past it: 72 tokens rounded to 80 would be two chunks.
    `drop_remainder`: no last, partial batch (fastai's training DataLoader drops it too); its
    odd batch size would also be one more compilation.

    Batches are padded in numpy and handed over whole: tf.data calls Python once per batch,
    not once per text (per text, an epoch of a few thousand texts cost a second of Python
    competing with the train step, and a new epoch's iterator waited seconds for the last one's).
    """
    per_token = target_pad is not None
    epochs, lengths = itertools.count(), [len(row) for row in ids]
    batches = len(ids) // batch_size if drop_remainder else -(-len(ids) // batch_size)

    def width(longest):
        rounded = -(-longest // length_multiple) * length_multiple
        if chunk_length and longest <= chunk_length:
            return min(rounded, chunk_length)
        return rounded

    def padded(rows):
        x = np.full((len(rows), width(max(lengths[k] for k in rows))), SPECIAL_IDS["pad"],
                    np.int32)
        y = np.full(x.shape, target_pad, np.int32) if per_token else np.asarray(
            [targets[k] for k in rows], np.int32)
        for i, k in enumerate(rows):
            x[i, :lengths[k]] = ids[k]
            if per_token:
                y[i, :len(targets[k])] = targets[k]
        return x, y

    def epoch():  # tf.data calls it anew for every pass over the data
        rng = None if shuffle_seed is None else np.random.default_rng([shuffle_seed,
                                                                       next(epochs)])
        order = sorted_order(lengths, batch_size, rng)
        return (padded(order[b * batch_size:(b + 1) * batch_size]) for b in range(batches))

    signature = (tf.TensorSpec([None, None], tf.int32),
                 tf.TensorSpec([None, None] if per_token else [None], tf.int32))
    return untuned(tf.data.Dataset.from_generator(epoch, output_signature=signature).apply(
        tf.data.experimental.assert_cardinality(batches)  # so Keras knows an epoch's steps
    ).prefetch(2))
